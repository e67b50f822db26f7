"""Low-VRAM benchmark: ours at several VRAM budgets (bf16 and --quantize int8) beside resident,
diffusers' model CPU offload and group offload, and torchao int8 weight-only; one run, a fresh
process each.

    python -m bench.lowvram_bench DIR [BUDGETS_GB ...] [--int8 GB,GB] [--baselines model_offload,group,torchao_int8]
      default budgets: 12 8 4; --int8 default: 8 (each int8 budget runs twice: the first start makes
      the quantized cache, the second loads it)

Compiled low-VRAM plans (issue 21), one command, a fresh process per case:

    python -m bench.lowvram_bench DIR --compiled [--budgets 12,8,4] [--int8 8] [--size 1024] [--steps 9]
                                  [--images 2] [--cases eager_resident,diffusers_compile,...] [--device cuda:0]

cases: eager_resident (plain diffusers, the quality reference), diffusers_compile (its
compile_repeated_blocks), ours_resident (the app, compiled in the background), eager_planB
(today's plans: --compile off), compiled_planB, int8_planB (--quantize int8, compiled; its first
start makes the int8 cache), switch (resident -> 8 GiB -> resident). One JSON line per case with
s/image, peak VRAM, ratio vs ours_resident (and vs eager_resident), PSNR / step-1 SQNR / NaN vs
eager_resident, graphs made during the timed images (recompiles) and, for switch, the switch times.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from bench.runner import run_probe

OUT = "/tmp/lowvram"


def probe(*args: str) -> dict:
    return run_probe("bench.lowvram_probe", list(args), {"mode": args[0], "budget_gb": args[2] if len(args) > 2 else None},
                     "wall_s", 1500)


def compare(name: str, ref: str = "resident", out_dir: str = OUT) -> dict:
    """Image PSNR and max pixel difference, first-step SQNR, NaN/Inf check of `name` against `ref`."""
    try:
        a = np.load(f"{out_dir}/{ref}.npy").astype(np.float64)
        b = np.load(f"{out_dir}/{name}.npy").astype(np.float64)
    except FileNotFoundError:
        return {}
    mse = float(((a - b) ** 2).mean())
    out = {"max_pixel_diff": int(np.abs(a - b).max()),
           "psnr_db": round(10 * np.log10(255**2 / mse), 2) if mse else "inf"}
    try:
        x = np.load(f"{out_dir}/{ref}.step1.npy").astype(np.float64)
        y = np.load(f"{out_dir}/{name}.step1.npy").astype(np.float64)
        noise = float(((x - y) ** 2).sum())
        out["step1_sqnr_db"] = round(10 * np.log10(float((x ** 2).sum()) / noise), 2) if noise else "inf"
        out["nan_or_inf"] = not (np.isfinite(y).all() and np.isfinite(b).all())
    except FileNotFoundError:
        pass
    return out


def _option(args: list[str], name: str, default: str) -> str:
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i:i + 2]
        return value
    return default


def compiled_suite(folder: str, args: list[str]) -> None:
    budgets = [float(x) for x in _option(args, "--budgets", "12,8,4").split(",") if x]
    int8 = [float(x) for x in _option(args, "--int8", "8").split(",") if x]
    common = ["--size", _option(args, "--size", "1024"), "--steps", _option(args, "--steps", "9"),
              "--images", _option(args, "--images", "2")]
    device = _option(args, "--device", "")
    if device:
        common += ["--device", device]
    cases = {"eager_resident": ["plain"], "diffusers_compile": ["plain", "--diffusers-compile"],
             "ours_resident": ["app"]}
    for b in budgets:
        cases[f"eager_plan{b:g}"] = ["app", "--budget", str(b), "--compile", "off"]
    for b in budgets:
        cases[f"compiled_plan{b:g}"] = ["app", "--budget", str(b)]
    for b in int8:
        cases[f"int8_plan{b:g}"] = ["app", "--budget", str(b), "--quantize", "int8"]
    cases["switch"] = ["app", "--switch"]
    wanted = [c for c in _option(args, "--cases", ",".join(cases)).split(",") if c]
    results = {}
    for name in wanted:
        kind, *rest = cases[name]
        results[name] = run_probe("bench.lowvram_probe", [kind, folder, name, *rest, *common],
                                  {"name": name}, "wall_s", 1500)
    base = results.get("ours_resident", {}).get("s_per_image")
    eager = results.get("eager_resident", {}).get("s_per_image")
    for name in wanted:
        r = results[name]
        fig = {"figure": name, "s_per_image": r.get("s_per_image"), "peak_vram_gb": r.get("peak_vram_gb"),
               "peak_reserved_gb": r.get("peak_reserved_gb"), "budget_gb": r.get("budget_gb"),
               "ratio_vs_ours_resident": round(r["s_per_image"] / base, 3) if r.get("s_per_image") and base else None,
               "ratio_vs_eager_resident": round(r["s_per_image"] / eager, 3) if r.get("s_per_image") and eager else None,
               "recompiles_in_timed_images": r.get("recompiles"), "ready_s": r.get("ready_s"),
               "compile_wait_s": r.get("compile_wait_s"), "plan": r.get("plan"), "wall_s": r.get("wall_s"),
               "error": r.get("error")}
        if name == "switch":
            fig.update({k: r.get(k) for k in ("to_plan_s", "plan_after_switch", "first_image_in_plan_s",
                                               "plan_compile_wait_s", "compiled_image_in_plan_s", "to_resident_s",
                                               "first_image_resident_again_s", "disk_loads")})
        elif name != "eager_resident":
            fig.update(compare(name, "eager_resident"))
        print(json.dumps(fig), flush=True)


def main() -> None:
    args = sys.argv[1:]
    folder = args.pop(0)
    if "--compiled" in args:
        args.remove("--compiled")
        return compiled_suite(folder, args)
    int8 = [8.0]
    if "--int8" in args:
        i = args.index("--int8")
        int8 = [float(x) for x in args[i + 1].split(",") if x]
        del args[i:i + 2]
    wanted = ["model_offload", "group", "torchao_int8"]
    if "--baselines" in args:
        i = args.index("--baselines")
        wanted = [x for x in args[i + 1].split(",") if x]
        del args[i:i + 2]
    budgets = [float(b) for b in args] or [12.0, 8.0, 4.0]
    resident = probe("resident", folder)
    base = resident.get("s_per_image")
    baselines = {m: probe(m, folder) for m in wanted}
    group = baselines.get("group", {})
    rows = [(f"budget {b:g} GiB", f"ours{b}", probe("ours", folder, str(b))) for b in budgets]
    for b in int8:
        first = probe("ours_int8", folder, str(b))
        rows.append((f"budget {b:g} GiB int8, first start (makes the cache)", f"ours_int8{b}", first))
        rows.append((f"budget {b:g} GiB int8, later start (cache)", f"ours_int8{b}", probe("ours_int8", folder, str(b))))
    if "torchao_int8" in baselines:
        fig = {"figure": "torchao int8 weight-only, resident (baseline)", **baselines["torchao_int8"]}
        fig.update(compare("torchao_int8"))
        fig["ratio_vs_resident"] = round(fig["s_per_image"] / base, 3) if fig.get("s_per_image") and base else None
        print(json.dumps(fig), flush=True)
    for label, name, r in rows:
        fig = {"figure": label, "ours_s_per_image": r.get("s_per_image"), "ours_first_image_s": (r.get("times") or [None])[0],
               "ours_setup_s": r.get("setup_s"), "load_to_ram_s": r.get("load_to_ram_s"),
               "pinned_gb": r.get("pinned_gb"), "pin_s": r.get("pin_s"),
               "ours_peak_vram_gb": r.get("peak_vram_gb"), "ours_peak_reserved_gb": r.get("peak_reserved_gb"),
               "plan": r.get("plan"), "error": r.get("error"), "resident_s_per_image": base,
               "ratio_vs_resident": round(r["s_per_image"] / base, 3) if r.get("s_per_image") and base else None,
               "group_offload_s_per_image": group.get("s_per_image"), "group_setup_s": group.get("setup_s"),
               "group_peak_vram_gb": group.get("peak_vram_gb"),
               "model_offload_s_per_image": baselines.get("model_offload", {}).get("s_per_image"),
               "torchao_int8_s_per_image": baselines.get("torchao_int8", {}).get("s_per_image")}
        fig.update(compare(name))
        print(json.dumps(fig), flush=True)


if __name__ == "__main__":
    main()
