"""Issue 35 on one GPU: model files, the base model, the 8 GiB plans, Turbo's steps, the prompt
enhancer, variety and hires; every case a fresh process, plain diffusers beside ours in the same run.

    python -m bench.gpu35_bench DIR --out OUTDIR [--files FILESDIR] [--items 1,2,3,4,5,6,7] [--size 1024]
        [--formats folder,bf16,fp8,Q8_0,Q4_K] [--write FORMATS] [--budget-s 540] [--images 2] [--steps 8]
        [--base-steps 50] [--vram-gb 8] [--tokens 200] [--compile off] [--device cuda:0|cpu] [--clean]

DIR is a diffusers Z-Image folder: the full-scale random checkpoint on the GPU machine
(`../shared/anchors/make_random_zimage.py DIR --scale full`), the tiny model on the CPU (`python -m
zimage make-tiny-model DIR`, with --size 256 or less and a few steps). FILESDIR (default OUTDIR; keep
it off the device tool's $OUT) gets the DiT as single files (FILESDIR/models/diffusion_models, written
from DIR by zimage/testing/single_files.py: ComfyUI bf16, fp8 e4m3fn, GGUF Q8_0 and Q4_K, converted and
quantized on the GPU; a whole file is kept for the next command) and the random upscaler; OUTDIR gets
gpu35.jsonl, every JSON line printed (appended). Progress goes to stderr. --write: the formats to write
first (default: what the items asked for need: --formats for item 1, Q8_0 for item 3), so that one
command can write every file and measure only some.

Items (issue 35's numbers; run in the order 1, 2, 4, 3, 5, 6, 7):
 1  per --formats (folder: the diffusers folder): on_device_s (process start to the weights on the
    GPU), s/image, peak VRAM, ours (the app's manager) vs plain diffusers (from_pretrained; a file:
    from_single_file, GGUFQuantizationConfig for GGUF), and ours' image against plain's (PSNR).
 2  the base model's settings (the app's model_defaults.BASE: guidance 4 with its negative prompt,
    two passes a step) at --base-steps, ours vs plain diffusers.
 4  Turbo at 8 and 9 steps, ours, one process, alternated.
 3  --vram-gb budget: the Q8_0 file's plan (quantized DiT resident) vs the bf16 folder's (blocks
    streamed), against resident (item 4's 8-step figure, else item 1's, else its own case).
 5  the prompt enhancer on the loaded text encoder, resident and under the --vram-gb plan.
 6  variety: spread between 4 seeds' images at varieties 0 (off, the baseline), 0.1, 0.3, 0.5, 1.
 7  hires fix to 2x --size and the Upscale action x2 with refine, resident and at --vram-gb.
Each case has a device-time estimate (GPU_ESTIMATE_S): a case that does not fit in what is left of
--budget-s is skipped with a JSON line saying so, and a running one is killed at the budget's end,
with a line saying so. --compile off (the default): ours runs eager as plain diffusers does, so a
figure is the format's or the plan's alone; auto is the app's default (a background compile per
process, 60-200 s). --clean deletes FILESDIR's single files at the end (28 GB at full scale).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from bench.budget import Bench, gpu_name, ratio, version
from bench.lowvram_bench import compare

ORDER = (1, 2, 4, 3, 5, 6, 7)
FORMATS = ("folder", "bf16", "fp8", "Q8_0", "Q4_K")
VARIETIES = "0,0.1,0.3,0.5,1"
# seconds a case takes on one H100/H200 with the full-scale checkpoint, warm page cache, process start
# (imports 10-15 s) included: what a case must have left of the budget to start
GPU_ESTIMATE_S = {"files": 100, "format": 40, "format_gguf": 55, "base": 60, "steps": 50, "plan": 55,
                  "enhance": 45, "enhance_plan": 90, "variety": 60, "hires": 70, "hires_plan": 110}


def write_files(b: Bench, formats: list[str]) -> None:
    if not formats:
        return
    cap = GPU_ESTIMATE_S["files"] * 2 if b.gpu else 60
    for line in b.case(1, "files", "bench.gpu35_probe", ["files", b.a.folder, b.a.files, "--formats",
                                                        ",".join(formats), "--max-s", str(cap)], "files"):
        if line.get("bytes") and line.get("format"):
            b.files[line["format"]] = line["path"]


def generation_args(b: Bench, fmt: str = "folder", steps: int | None = None, images: int | None = None) -> list[str]:
    a = b.a
    out = ["--compile", a.compile, "--size", str(a.size), "--steps", str(steps or a.steps),
           "--images", str(images or a.images)]
    return out + (["--dit", b.files[fmt]] if fmt != "folder" else [])


def item1(b: Bench) -> None:
    our_bf16 = None
    for fmt in b.a.formats:
        if fmt != "folder" and fmt not in b.files:
            b.emit({"item": 1, "format": fmt, "skipped": "its file was not written (see the files lines)"})
            continue
        estimate = "format_gguf" if fmt.startswith("Q") else "format"
        for side in ("ours", "plain"):
            b.case(1, f"{fmt}_{side}", "bench.lowvram_probe",
                   ["app" if side == "ours" else "plain", b.a.folder, f"g35_{fmt}_{side}", *generation_args(b, fmt)],
                   estimate)
        ours, plain = b.get(f"{fmt}_ours", "s_per_image"), b.get(f"{fmt}_plain", "s_per_image")
        our_bf16 = ours if fmt == "folder" else our_bf16
        line = {"item": 1, "figure": "load and s/image per format, ours vs plain diffusers", "format": fmt,
                "size": b.a.size, "steps": b.a.steps, "compile": b.a.compile,
                "ours_on_device_s": b.get(f"{fmt}_ours", "on_device_s"),
                "plain_on_device_s": b.get(f"{fmt}_plain", "on_device_s"),
                "ours_s_per_image": ours, "plain_s_per_image": plain, "ratio": ratio(ours, plain),
                "ours_peak_vram_gb": b.get(f"{fmt}_ours", "peak_vram_gb"),
                "plain_peak_vram_gb": b.get(f"{fmt}_plain", "peak_vram_gb"),
                "ours_vs_plain_image": compare(f"g35_{fmt}_ours", f"g35_{fmt}_plain"),
                "goal": "ours <= plain diffusers"}
        if fmt != "folder":             # the file's quantization against the bf16 weights
            line["ours_vs_plain_bf16_folder_image"] = compare(f"g35_{fmt}_ours", "g35_folder_plain")
        line["on_device_ratio"] = ratio(line["ours_on_device_s"], line["plain_on_device_s"])
        if fmt == "Q8_0":
            line.update(ratio_vs_our_bf16=ratio(ours, our_bf16), goal_vs_our_bf16="<= 1.1x")
        b.emit(line)


def item2(b: Bench) -> None:
    args = [*generation_args(b, steps=b.a.base_steps, images=1), "--base", "--no-reference"]
    for side in ("ours", "plain"):
        b.case(2, f"base_{side}", "bench.lowvram_probe",
               ["app" if side == "ours" else "plain", b.a.folder, f"g35_base_{side}", *args], "base")
    ours, plain = b.get("base_ours", "s_per_image"), b.get("base_plain", "s_per_image")
    b.emit({"item": 2, "figure": "base model settings: guidance with the negative prompt (two passes a step)",
            "steps": b.a.base_steps, "size": b.a.size, "ours_s_per_image": ours, "plain_s_per_image": plain,
            "ratio": ratio(ours, plain), "ours_peak_vram_gb": b.get("base_ours", "peak_vram_gb"),
            "plain_peak_vram_gb": b.get("base_plain", "peak_vram_gb")})


def item4(b: Bench) -> None:
    b.case(4, "turbo_steps", "bench.gpu35_probe",
           ["steps", b.a.folder, "--size", str(b.a.size), "--rounds", "2", "--compile", b.a.compile], "steps")


def item3(b: Bench) -> None:
    a = b.a
    resident, source = b.get("turbo_steps", "s_per_image_8"), "item 4 (8 steps)"
    if resident is None and a.steps == 8:
        resident, source = b.get("folder_ours", "s_per_image"), "item 1 (folder, ours)"
    if resident is None:
        b.case(3, "resident", "bench.lowvram_probe",
               ["app", a.folder, "g35_resident", *generation_args(b, steps=8), "--no-reference"], "plan")
        resident, source = b.get("resident", "s_per_image"), "its own case"
    plans = {"q8_plan": "Q8_0", "bf16_plan": "folder"}
    for name, fmt in plans.items():
        if fmt != "folder" and fmt not in b.files:
            b.emit({"item": 3, "case": name, "skipped": "the Q8_0 file was not written (see the files lines)"})
            continue
        b.case(3, name, "bench.lowvram_probe", ["app", a.folder, f"g35_{name}", *generation_args(b, fmt, steps=8),
                                                "--budget", str(a.vram_gb), "--no-reference"], "plan")
    line = {"item": 3, "figure": f"{a.vram_gb:g} GiB budget: quantized-resident plan vs streamed bf16",
            "resident_s_per_image": resident, "resident_from": source, "budget_gb": a.vram_gb,
            "goal": "<= 1.2x resident"}
    for name in plans:
        s = b.get(name, "s_per_image")
        peak = b.get(name, "peak_reserved_gb")
        line[name] = {"plan": b.get(name, "plan"), "s_per_image": s, "ratio_vs_resident": ratio(s, resident),
                      "peak_vram_gb": b.get(name, "peak_vram_gb"), "peak_reserved_gb": peak,
                      "under_budget": None if peak is None else peak <= a.vram_gb}
    b.emit(line)


def item5(b: Bench) -> None:
    args = ["enhance", b.a.folder, "--tokens", str(b.a.tokens), "--compile", b.a.compile]
    b.case(5, "enhance_resident", "bench.gpu35_probe", args, "enhance")
    b.case(5, "enhance_plan", "bench.gpu35_probe", [*args, "--budget", str(b.a.vram_gb)], "enhance_plan")


def item6(b: Bench) -> None:
    b.case(6, "variety", "bench.variety_bench", [b.a.folder, "--size", str(b.a.size), "--steps", str(b.a.steps),
                                                 "--seeds", "4", "--varieties", VARIETIES], "variety")


def item7(b: Bench) -> None:
    args = ["hires", b.a.folder, "--size", str(b.a.size), "--upscalers", str(Path(b.a.files) / "upscalers"),
            "--compile", b.a.compile]
    b.case(7, "hires_resident", "bench.gpu35_probe", args, "hires")
    b.case(7, "hires_plan", "bench.gpu35_probe", [*args, "--budget", str(b.a.vram_gb)], "hires_plan")


ITEMS = {1: item1, 2: item2, 3: item3, 4: item4, 5: item5, 6: item6, 7: item7}


def parse(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m bench.gpu35_bench")
    p.add_argument("folder", help="a diffusers Z-Image folder")
    p.add_argument("--out", required=True, help="gpu35.jsonl goes here")
    p.add_argument("--files", default="", help="the single files and the upscaler go here (default: --out)")
    p.add_argument("--write", default=None, help="formats whose files to write first (default: what the items need)")
    p.add_argument("--items", default="1,2,3,4,5,6,7")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=8, help="Turbo's steps (the app's default: 8)")
    p.add_argument("--base-steps", type=int, default=50)
    p.add_argument("--images", type=int, default=2, help="timed images per case (the figure is the fastest)")
    p.add_argument("--vram-gb", type=float, default=8.0)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--compile", choices=("off", "auto"), default="off")
    p.add_argument("--budget-s", type=float, default=540, help="this command's device time")
    p.add_argument("--device", default="cuda:0" if shutil.which("nvidia-smi") else "cpu")
    p.add_argument("--clean", action="store_true", help="delete the single files at the end")
    a = p.parse_args(argv)
    a.folder = str(Path(a.folder).resolve())
    a.items = [int(i) for i in a.items.split(",") if i]
    a.formats = [f for f in a.formats.split(",") if f]
    a.files = str(Path(a.files or a.out).resolve())
    a.write = None if a.write is None else [f for f in a.write.split(",") if f]
    bad = sorted(set(a.formats + (a.write or [])) - set(FORMATS)) + [str(i) for i in a.items if i not in ITEMS]
    if bad:
        p.error(f"unknown item or format: {', '.join(bad)}")
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    b = Bench(a, "gpu35", GPU_ESTIMATE_S)
    folder_gb = sum(f.stat().st_size for f in Path(a.folder).rglob("*.safetensors")) / 1e9
    b.emit({"figure": "machine", "date": time.strftime("%Y-%m-%d %H:%M"), "gpu": gpu_name(), "device": a.device,
            "python": sys.version.split()[0], **{p: version(p) for p in ("torch", "diffusers", "transformers", "gguf")},
            "folder": a.folder, "folder_gb": round(folder_gb, 2), "items": a.items, "formats": a.formats,
            "size": a.size, "steps": a.steps, "compile": a.compile, "budget_s": a.budget_s})
    wanted = [f for f in a.formats if f != "folder"] if 1 in a.items else []
    if 3 in a.items and "Q8_0" not in wanted:
        wanted.append("Q8_0")
    write_files(b, [f for f in dict.fromkeys(wanted if a.write is None else a.write + wanted) if f != "folder"])
    for item in ORDER:
        if item in a.items:
            ITEMS[item](b)
    if a.clean:
        shutil.rmtree(Path(a.files) / "models", ignore_errors=True)
    b.emit({"figure": "budget", "spent_s": round(time.monotonic() - b.t0, 1), "left_s": round(b.left(), 1)})
    b.log.close()


if __name__ == "__main__":
    main()
