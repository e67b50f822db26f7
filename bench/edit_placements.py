"""Every edit mode in every placement, on one model (the tiny one on a GPU is enough to check the
code paths): resident (compiled where the settings say), an 8 GiB low-VRAM plan, int8, fp8. Each in
a fresh process; one JSON line each: the modes that ran, s/image, load count, the refusal if any.
With a ControlNet (the 2.1 layout: `python -m zimage make-tiny-model DIR --controlnet
--controlnet-version 2.1`, or bench.make_random_controlnet) also ControlNet canny ("control") and
ControlNet inpaint ("control_inpaint"); without one the driver writes the tiny 2.1 ControlNet.

    python -m bench.edit_placements DIR [SIZE] [CONTROLNET_DIR]          (the driver)
    python -m bench.edit_placements DIR SIZE PLACEMENT [CONTROLNET_DIR]  (one placement, in this process)
"""
from __future__ import annotations

import json
import os
import sys
import time

from bench.runner import run_probe

PLACEMENTS = {"resident": {}, "low_vram_8gib": {"low_vram": True, "vram_budget": "8"},
              "int8": {"quantize": "int8"}, "fp8": {"fp8": "on"}}


def one(folder: str, size: int, placement: str, controlnet: str) -> dict:
    import dataclasses

    import numpy as np
    from PIL import Image

    from zimage.config import Settings
    from zimage.engine.manager import PipelineManager
    from zimage.errors import ZImageError
    from zimage.request import GenerationRequest
    from zimage.store.control_images import make_unit

    settings = Settings(model=folder, outputs_dir=f"/tmp/edit-place-{placement}", cache_dir="/tmp/edit-place-cache",
                        idle_unload_s=0, idle_drop_s=0, controlnet=controlnet, **PLACEMENTS[placement])
    manager = PipelineManager(settings).start()
    manager.ensure_ready(900)
    out: dict = {"placement": placement, "plan": manager.status().plan, "state": manager.status().state.value}
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    cases = {"txt2img": {}, "img2img": {"init_image": image, "strength": 0.6},
             "inpaint": {"init_image": image, "mask": mask, "strength": 1.0},
             "inpaint_only_masked": {"init_image": image, "mask": mask, "inpaint_full_res": True},
             "control": {}, "control_inpaint": {"init_image": image, "mask": mask},
             "txt2img_after_control": {}}
    unit = make_unit(image, "canny", "bench", 1.0, 0.0, 1.0)
    loads = None
    for name, extra in cases.items():
        req = GenerationRequest.from_mapping({"prompt": "a fox", "seed": 1, "width": size, "height": size,
                                              "num_inference_steps": 4, **extra})
        if name.startswith("control"):
            req = dataclasses.replace(req, control=unit)
        t = time.perf_counter()
        try:
            result = manager.generate(req, timeout=900)
            outside = None
            if "mask" in extra:
                a = np.asarray(result.images[0].image, int)
                outside = int(np.abs(a - np.asarray(image, int))[: size // 8].max())
            out[name] = {"s": round(time.perf_counter() - t, 3), "outside_max_diff": outside}
        except ZImageError as e:
            out[name] = {"refused": e.code, "message": e.message[:200]}
        except Exception as e:              # what the check is for: a mode that breaks a placement
            out[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        loads = manager.load_count if loads is None else loads
    out["extra_loads"] = manager.load_count - loads
    out["plan_after"] = manager.status().plan
    manager.close()
    return out


def main() -> None:
    folder = sys.argv[1]
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    if len(sys.argv) > 3 and sys.argv[3] in PLACEMENTS:
        print(json.dumps(one(folder, size, sys.argv[3], sys.argv[4])), flush=True)
        os._exit(0)
    controlnet = sys.argv[3] if len(sys.argv) > 3 else None
    if controlnet is None:
        from zimage.testing.tiny_controlnet import make_tiny_controlnet

        controlnet = str(make_tiny_controlnet("/tmp/edit-place-controlnet", version="2.1"))
    for placement in PLACEMENTS:
        run_probe("bench.edit_placements", [folder, str(size), placement, controlnet], {"placement": placement},
                  "process_s", 3000)


if __name__ == "__main__":
    main()
