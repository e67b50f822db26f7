"""Issue 35 on one GPU: model files, the base model, the 8 GiB plans, Turbo's steps, the prompt
enhancer, variety and hires; plain diffusers beside ours in the same run, each side a fresh process.

    python -m bench.gpu35_bench DIR --out OUTDIR [--files FILESDIR] [--items 1,2,3,4,5,6,7] [--size 1024]
        [--formats folder,bf16,fp8,Q8_0,Q4_K] [--write FORMATS] [--budget-s 540] [--images 2] [--steps 8]
        [--base-steps 50] [--vram-gb 8] [--tokens 200] [--compile off] [--device cuda:0|cpu] [--clean]

DIR is a diffusers Z-Image folder: the full-scale random checkpoint on the GPU machine
(`../shared/anchors/make_random_zimage.py DIR --scale full`), the tiny model on the CPU (`python -m
zimage make-tiny-model DIR`, with --size 256 and a few steps). FILESDIR (default OUTDIR; keep it off
the device tool's $OUT) gets the DiT as single files (FILESDIR/models/diffusion_models, written from DIR
by zimage/testing/single_files.py: ComfyUI bf16, fp8 e4m3fn, GGUF Q8_0 and Q4_K, converted and
quantized on the GPU; a whole file is kept for the next command) and the random upscaler; OUTDIR gets
gpu35.jsonl, every JSON line printed (appended). Progress goes to stderr. --write: the formats to
write first (default: what the items need: --formats for item 1, Q8_0 for item 3), so that one command
can write every file and measure only some.

Items (issue 35's numbers):
 1  per --formats (folder: the diffusers folder): on_device_s (process start to the weights on the
    GPU), s/image, peak VRAM, ours (the app's manager) vs plain diffusers (from_pretrained; a file:
    from_single_file, GGUFQuantizationConfig for GGUF), and ours' image against plain's (PSNR).
 2  the base model's settings (the app's model_defaults.BASE: guidance 4 with its negative prompt,
    two passes a step) at --base-steps, ours vs plain diffusers.
 3  --vram-gb budget: the Q8_0 file's plan (quantized DiT resident) vs the bf16 folder's (blocks
    streamed), against ours resident on the folder (its images task, else item 4's 8-step figure).
 4  Turbo at 8 and 9 steps, ours, alternated.
 5  the prompt enhancer on the loaded text encoder, resident and under the --vram-gb plan.
 6  variety: spread between 4 seeds' images at varieties 0 (off, the baseline), 0.1, 0.3, 0.5, 1.
 7  hires fix to 2x --size and the Upscale action x2 with refine, resident and at --vram-gb.
The processes, in this order: the files; plain diffusers on the folder (item 1, then item 2's base
settings; bench/lowvram_probe); ours on the folder resident, one process for its items' tasks
(bench/gpu35_probe session: item 1's folder images, 4, 2, 5, 6, 7); per single-file format ours then
plain (lowvram_probe); ours on the Q8_0 file under the budget (item 3); ours on the folder under the
budget, one process (items 3, 5, 7).
Every case has a device-time estimate (GPU_ESTIMATE_S; a session the sum of its tasks'): one that does
not fit in what is left of --budget-s is skipped (a session drops its last tasks) with a JSON line
saying so, and a running one is killed at the budget's end, with a line saying so. --compile off (the
default): ours runs eager as plain diffusers does, so a figure is the format's or the plan's alone;
auto is the app's default (a background compile per process, 60-200 s). --clean deletes FILESDIR's
single files at the end (28 GB at full scale).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from bench.budget import Bench, gpu_name, ratio, version
from bench.lowvram_bench import compare

FORMATS = ("folder", "bf16", "fp8", "Q8_0", "Q4_K")
# seconds on one H100/H200 with the full-scale checkpoint, warm page cache: a process (imports 10-15 s,
# loading included), or a session's task: what a case must have left of the budget to start
GPU_ESTIMATE_S = {"files": 100, "format": 40, "format_gguf": 55, "plain_base": 45, "q8_plan": 40, "session": 25,
                  "images": 10, "steps": 15, "base": 22, "enhance": 15, "variety": 35, "hires": 30,
                  "images_plan": 12, "enhance_plan": 55, "hires_plan": 70}
TASK_ITEMS = {"images": 1, "steps": 4, "base": 2, "enhance": 5, "variety": 6, "hires": 7}


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


def file_cases(b: Bench) -> None:
    """Item 1 for each single-file format: ours, then plain diffusers."""
    for fmt in [f for f in b.a.formats if f != "folder"]:
        if fmt not in b.files:
            b.emit({"item": 1, "format": fmt, "skipped": "its file was not written (see the files lines)"})
            continue
        for side in ("ours", "plain"):
            b.case(1, f"{fmt}_{side}", "bench.lowvram_probe",
                   ["app" if side == "ours" else "plain", b.a.folder, f"g35_{fmt}_{side}", *generation_args(b, fmt)],
                   "format_gguf" if fmt.startswith("Q") else "format")


def plain_cases(b: Bench) -> None:
    a = b.a
    if 1 in a.items and "folder" in a.formats:
        b.case(1, "folder_plain", "bench.lowvram_probe", ["plain", a.folder, "g35_folder_plain", *generation_args(b)],
               "format")
    if 2 in a.items:
        b.case(2, "base_plain", "bench.lowvram_probe", ["plain", a.folder, "g35_base_plain", "--base", "--no-reference",
                                                        *generation_args(b, steps=a.base_steps, images=1)],
               "plain_base")


def session(b: Bench, name: str, tasks: list[str], budget: float | None = None) -> None:
    """Ours on the folder, one process, its tasks in order: the last ones dropped (with a line) when
    the whole does not fit in what is left of the budget; each task's line kept as NAME:TASK."""
    if not tasks:
        return
    suffix = "_plan" if budget else ""
    cost = [b.need("session")] + [b.need(t + suffix if t + suffix in GPU_ESTIMATE_S else t) for t in tasks]
    while tasks and sum(cost) > b.left():
        dropped = tasks.pop()
        cost.pop()
        b.emit({"item": 3 if dropped == "images" and budget else TASK_ITEMS[dropped], "case": name,
                "task": dropped, "skipped": f"{b.left():.0f} s of --budget-s left, the session with it needs about "
                                            f"{sum(cost) + b.need(dropped):.0f} s"})
    if not tasks:
        return
    a = b.a
    args = ["session", a.folder, "--tasks", ",".join(tasks), "--size", str(a.size), "--steps", str(a.steps),
            "--images", str(a.images), "--base-steps", str(a.base_steps), "--tokens", str(a.tokens),
            "--compile", a.compile, "--upscalers", str(Path(a.files) / "upscalers")]
    items = ",".join(str(3 if t == "images" and budget else TASK_ITEMS[t]) for t in tasks)
    lines = b.case(items, name, "bench.gpu35_probe", [*args, *(["--budget", str(budget)] if budget else [])], sum(cost))
    for line in lines:
        if line.get("task"):
            b.results[f"{name}:{line['task']}"] = line


def summaries(b: Bench) -> None:
    a = b.a
    if 1 in a.items:
        for fmt in a.formats:
            ours = b.results.get("resident:images", {}) if fmt == "folder" else b.results.get(f"{fmt}_ours", {})
            if fmt == "folder":
                ours = {**ours, "on_device_s": b.get("resident:load", "on_device_s")}
            plain = b.results.get(f"{fmt}_plain", {})
            line = {"item": 1, "figure": "load and s/image per format, ours vs plain diffusers", "format": fmt,
                    "size": a.size, "steps": a.steps, "compile": a.compile,
                    "ours_on_device_s": ours.get("on_device_s"), "plain_on_device_s": plain.get("on_device_s"),
                    "ours_s_per_image": ours.get("s_per_image"), "plain_s_per_image": plain.get("s_per_image"),
                    "ratio": ratio(ours.get("s_per_image"), plain.get("s_per_image")),
                    "ours_peak_vram_gb": ours.get("peak_vram_gb"), "plain_peak_vram_gb": plain.get("peak_vram_gb"),
                    "ours_vs_plain_image": compare(f"g35_{fmt}_ours", f"g35_{fmt}_plain"),
                    "goal": "ours <= plain diffusers"}
            line["on_device_ratio"] = ratio(line["ours_on_device_s"], line["plain_on_device_s"])
            if fmt != "folder":             # the file's rounding against the bf16 weights
                line["ours_vs_plain_bf16_folder_image"] = compare(f"g35_{fmt}_ours", "g35_folder_plain")
            if fmt == "Q8_0":
                line.update(ratio_vs_our_bf16=ratio(ours.get("s_per_image"), b.get("resident:images", "s_per_image")),
                            goal_vs_our_bf16="<= 1.1x")
            b.emit(line)
    if 2 in a.items:
        ours, plain = b.get("resident:base", "s_per_image"), b.get("base_plain", "s_per_image")
        b.emit({"item": 2, "figure": "base model settings: guidance with the negative prompt (two passes a step)",
                "steps": a.base_steps, "size": a.size, "ours_s_per_image": ours, "plain_s_per_image": plain,
                "ratio": ratio(ours, plain), "ours_peak_vram_gb": b.get("resident:base", "peak_vram_gb"),
                "plain_peak_vram_gb": b.get("base_plain", "peak_vram_gb")})
    if 3 in a.items:
        resident, source = b.get("resident:images", "s_per_image"), f"ours on the folder, resident, {a.steps} steps"
        if resident is None and a.steps == 8:
            resident, source = b.get("resident:steps", "s_per_image_8"), "item 4 (8 steps)"
        line = {"item": 3, "figure": f"{a.vram_gb:g} GiB budget: quantized-resident plan vs streamed bf16",
                "resident_s_per_image": resident, "resident_from": source, "budget_gb": a.vram_gb,
                "goal": "<= 1.2x resident"}
        for name, key in (("q8_plan", "q8_plan"), ("bf16_plan", "plan:images")):
            r = b.results.get(key, {})
            peak = r.get("peak_reserved_gb")
            line[name] = {"plan": r.get("plan") or b.get("plan:load", "plan"), "s_per_image": r.get("s_per_image"),
                          "ratio_vs_resident": ratio(r.get("s_per_image"), resident),
                          "peak_vram_gb": r.get("peak_vram_gb"), "peak_reserved_gb": peak,
                          "under_budget": None if peak is None else peak <= a.vram_gb}
        b.emit(line)


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
    bad = sorted(set(a.formats + (a.write or [])) - set(FORMATS)) + [str(i) for i in a.items if not 1 <= i <= 7]
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
    wanted += ["Q8_0"] if 3 in a.items else []
    write_files(b, [f for f in dict.fromkeys((a.write or []) + wanted) if f != "folder"])
    plain_cases(b)
    tasks = [t for t, item in TASK_ITEMS.items() if item in a.items and (t != "images" or "folder" in a.formats)]
    if 3 in a.items and "images" not in tasks and not ("steps" in tasks and a.steps == 8):
        tasks.insert(0, "images")                    # item 3's resident figure
    session(b, "resident", tasks)
    if 1 in a.items:
        file_cases(b)
    if 3 in a.items:
        if "Q8_0" in b.files:
            b.case(3, "q8_plan", "bench.lowvram_probe", ["app", a.folder, "g35_q8_plan", "--budget", str(a.vram_gb),
                                                         "--no-reference", *generation_args(b, "Q8_0")], "q8_plan")
        else:
            b.emit({"item": 3, "case": "q8_plan", "skipped": "the Q8_0 file was not written (see the files lines)"})
    session(b, "plan", [t for t, item in (("images", 3), ("enhance", 5), ("hires", 7)) if item in a.items], a.vram_gb)
    summaries(b)
    if a.clean:
        shutil.rmtree(Path(a.files) / "models", ignore_errors=True)
    b.emit({"figure": "budget", "spent_s": round(time.monotonic() - b.t0, 1), "left_s": round(b.left(), 1)})
    b.log.close()


if __name__ == "__main__":
    main()
