"""Edit modes benchmark (issue 20): img2img at strength 0.6, inpaint and (with --controlnet)
ControlNet canny and ControlNet inpaint at 1024x1024 against txt2img, the app beside plain
diffusers' own pipelines, resident and at an 8 GiB budget; one run, a fresh process each
(bench/edit_probe.py says what each measures).

    python -m bench.edit_bench DIR [SIZE] [CASE ...] [--controlnet CN_DIR]
    (cases: diffusers ours ours_8gib; default all)
Prints each case's JSON line, then one line per case of ratios against plain diffusers.
"""
from __future__ import annotations

import json
import sys

from bench.runner import run_probe

CASES = ("diffusers", "ours", "ours_8gib")
KEYS = ("txt2img_s_per_image", "img2img_s_per_image", "inpaint_s_per_image", "control_s_per_image",
        "control_inpaint_s_per_image")


def main() -> None:
    folder = sys.argv[1]
    rest = sys.argv[2:]
    controlnet = []
    if "--controlnet" in rest:
        at = rest.index("--controlnet")
        controlnet = [rest[at + 1]]
        del rest[at:at + 2]
    size = rest.pop(0) if rest and rest[0].isdigit() else "1024"
    cases = [c for c in rest if c in CASES] or list(CASES)
    runs = {c: run_probe("bench.edit_probe", [c, folder, size, *controlnet], {"case": c}, "process_s", 3000)
            for c in cases}
    ref = runs.get("diffusers", {})
    for name, r in runs.items():
        fig = {"figure": name, "size": int(size)}
        for key in KEYS:
            if r.get(key) is not None and ref.get(key):
                fig[f"{key}_vs_diffusers"] = round(r[key] / ref[key], 3)
        for key in ("img2img_vs_txt2img", "inpaint_vs_txt2img", "control_vs_txt2img", "control_inpaint_vs_txt2img",
                    "img2img_first_after_switch_s", "inpaint_first_after_switch_s", "txt2img_first_after_switch_s",
                    "control_first_after_switch_s", "control_inpaint_first_after_switch_s", "switch_s",
                    "switch_extra_loads", "switch_new_graphs", "peak_vram_gb", "budget_gb", "plan",
                    "plan_with_controlnet", "extra_loads", "error"):
            if key in r:
                fig[key] = r[key]
        print(json.dumps(fig), flush=True)


if __name__ == "__main__":
    main()
