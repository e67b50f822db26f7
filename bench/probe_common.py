"""What the probes share, so that no probe imports another: the prompt per image, the first
denoising step's output saved for SQNR, and the wait for the app's compiled blocks.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

PROMPT = "a red fox in the snow, golden hour, photo"


def prompt_for(seed: int) -> str:
    """A different prompt per image (the seed 0 one is PROMPT): the app keeps text embeddings per
    prompt, plain diffusers does not, so a repeated prompt would favour the app."""
    return PROMPT if seed == 0 else f"{PROMPT}, take {seed}"


def capture_first_step(pipe, name: str, out_dir: Path):
    """Save the transformer's output at its first call (the first denoising step) as
    `<out_dir>/<name>.step1.npy`; returns the hook's handle."""
    state = {"done": False}

    def hook(_module, _args, output):
        if not state["done"]:
            state["done"] = True
            x = output[0] if isinstance(output, (tuple, list)) else output
            x = x[0] if isinstance(x, (tuple, list)) else x
            np.save(out_dir / f"{name}.step1.npy", x.float().cpu().numpy())
        return output
    return pipe.transformer.register_forward_hook(hook)


def wait_compiled(manager, compile_setting: str, timeout_s: float = 240) -> float | None:
    """Seconds until the compiled blocks are in use (None: compile off or it never came): a plan
    says so in its text, a resident compile marks the startup timeline."""
    from zimage import startup
    from zimage.state import LoadState

    if compile_setting == "off":
        return None
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        events = startup.timeline_dict()
        status = manager.status()
        if ("compiled blocks" in status.plan if status.state == LoadState.OFFLOADED else startup.COMPILED in events):
            return round(time.perf_counter() - t0, 2)
        if startup.COMPILE_FAILED in events:
            return None
        time.sleep(0.2)
    return None
