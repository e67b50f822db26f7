"""LoRA benchmark (issue 17): plain diffusers' LoRA API beside the app, resident compiled and at an
8 GiB budget; one run, a fresh process each (bench/lora_probe.py says what each measures).

    python -m bench.lora_bench DIR [CASE ...]      (cases: diffusers ours ours_8gib; default all)
Prints each case's JSON line, then one line of ratios against plain diffusers.
"""
from __future__ import annotations

import json
import sys

from bench.runner import run_probe

CASES = ("diffusers", "ours", "ours_8gib")


def main() -> None:
    folder = sys.argv[1]
    cases = [c for c in sys.argv[2:] if c in CASES] or list(CASES)
    runs = {c: run_probe("bench.lora_probe", [c, folder], {"case": c}, "process_s", 3000) for c in cases}
    ref = runs.get("diffusers", {})
    for name, r in runs.items():
        fig = {"figure": name}
        for key in ("none_s_per_image", "one_lora_s_per_image", "three_loras_s_per_image", "switch_s"):
            if r.get(key) is not None and ref.get(key):
                fig[f"{key}_vs_diffusers"] = round(r[key] / ref[key], 3)
        for key in ("one_lora_ratio", "three_loras_ratio", "switch_s", "recompiled_frames_during_switches",
                    "strength0_max_pixel_diff", "back_to_none_max_pixel_diff", "error"):
            if key in r:
                fig[key] = r[key]
        print(json.dumps(fig), flush=True)


if __name__ == "__main__":
    main()
