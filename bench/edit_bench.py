"""Edit modes benchmark (issue 20): img2img at strength 0.6 and inpaint at 1024x1024 against txt2img,
the app beside plain diffusers' own pipelines, resident and at an 8 GiB budget; one run, a fresh
process each (bench/edit_probe.py says what each measures).

    python -m bench.edit_bench DIR [SIZE] [CASE ...]   (cases: diffusers ours ours_8gib; default all)
Prints each case's JSON line, then one line per case of ratios against plain diffusers.
"""
from __future__ import annotations

import json
import sys

from bench.runner import run_probe

CASES = ("diffusers", "ours", "ours_8gib")
KEYS = ("txt2img_s_per_image", "img2img_s_per_image", "inpaint_s_per_image")


def main() -> None:
    folder = sys.argv[1]
    rest = sys.argv[2:]
    size = rest.pop(0) if rest and rest[0].isdigit() else "1024"
    cases = [c for c in rest if c in CASES] or list(CASES)
    runs = {c: run_probe("bench.edit_probe", [c, folder, size], {"case": c}, "process_s", 3000) for c in cases}
    ref = runs.get("diffusers", {})
    for name, r in runs.items():
        fig = {"figure": name, "size": int(size)}
        for key in KEYS:
            if r.get(key) is not None and ref.get(key):
                fig[f"{key}_vs_diffusers"] = round(r[key] / ref[key], 3)
        for key in ("img2img_vs_txt2img", "inpaint_vs_txt2img", "img2img_first_after_switch_s",
                    "inpaint_first_after_switch_s", "txt2img_first_after_switch_s", "peak_vram_gb", "plan",
                    "extra_loads", "error"):
            if key in r:
                fig[key] = r[key]
        print(json.dumps(fig), flush=True)


if __name__ == "__main__":
    main()
