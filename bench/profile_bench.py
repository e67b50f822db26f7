"""Where one image's time goes (issue 21): the profile of each mode, each in a fresh process.

    python -m bench.profile_bench DIR [SIZE] [--only ours,ours_fp8,...]
Modes (bench/profile_probe.py): ours, ours_fp8, ours_8gib, fp8_layers.
Prints each probe's JSON line, then one line per mode with s/image and its ratio to `ours`.
"""
from __future__ import annotations

import json
import sys

from bench.runner import run_probe

MODES = ("ours", "ours_fp8", "ours_8gib", "fp8_layers")


def main() -> None:
    folder = sys.argv[1]
    size = next((a for a in sys.argv[2:] if a.isdigit()), "1024")
    only = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--only=")), None)
    modes = [m for m in MODES if only is None or m in only.split(",")]
    runs = {m: run_probe("bench.profile_probe", [m, folder, size], {"mode": m}, "wall_s", 3000) for m in modes}
    base = runs.get("ours", {}).get("s_per_image")
    for m, r in runs.items():
        if r.get("s_per_image"):
            print(json.dumps({"figure": m, "s_per_image": r["s_per_image"], "peak_vram_gb": r.get("peak_vram_gb"),
                              "ratio_vs_ours": round(r["s_per_image"] / base, 3) if base else None}), flush=True)


if __name__ == "__main__":
    main()
