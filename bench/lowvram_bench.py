"""Low-VRAM benchmark: ours at several VRAM budgets beside resident, diffusers' model CPU offload
and group offload, one run, a fresh process each.

    python -m bench.lowvram_bench DIR [BUDGETS_GB ...]     (default budgets: 12 8 4)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def probe(*args: str) -> dict:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "bench.lowvram_probe", *args], cwd=HERE, capture_output=True,
                         text=True, timeout=600)
    lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
    out = json.loads(lines[-1]) if lines else {"mode": args[0], "budget_gb": args[2] if len(args) > 2 else None,
                                               "error": res.stderr[-1500:]}
    out["wall_s"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(out), flush=True)
    return out


def compare(name: str) -> dict:
    ref = np.load("/tmp/lowvram/resident.npy").astype(np.int16)
    try:
        img = np.load(f"/tmp/lowvram/{name}.npy").astype(np.int16)
    except FileNotFoundError:
        return {}
    mse = float(((img - ref) ** 2).mean())
    return {"max_pixel_diff": int(np.abs(img - ref).max()),
            "psnr_db": round(10 * np.log10(255**2 / mse), 2) if mse else "inf"}


def main() -> None:
    folder = sys.argv[1]
    if "--group-only" in sys.argv:      # re-measure the group-offload baseline alone
        probe("group", folder)
        return
    budgets = [float(b) for b in sys.argv[2:]] or [12.0, 8.0, 4.0]
    resident = probe("resident", folder)
    model_offload = probe("model_offload", folder)
    group = probe("group", folder)
    ours = {b: probe("ours", folder, str(b)) for b in budgets}
    base = resident.get("s_per_image")
    for b, r in ours.items():
        fig = {"figure": f"budget {b:g} GiB", "ours_s_per_image": r.get("s_per_image"),
               "ours_setup_s": r.get("setup_s"), "ours_peak_vram_gb": r.get("peak_vram_gb"),
               "ours_peak_reserved_gb": r.get("peak_reserved_gb"), "plan": r.get("plan"), "error": r.get("error"),
               "resident_s_per_image": base, "ratio_vs_resident": round(r["s_per_image"] / base, 3)
               if r.get("s_per_image") and base else None,
               "group_offload_s_per_image": group.get("s_per_image"), "group_setup_s": group.get("setup_s"),
               "group_peak_vram_gb": group.get("peak_vram_gb"),
               "model_offload_s_per_image": model_offload.get("s_per_image"),
               "model_offload_peak_vram_gb": model_offload.get("peak_vram_gb")}
        fig.update(compare(f"ours{b}"))
        print(json.dumps(fig), flush=True)


if __name__ == "__main__":
    main()
