"""What the probes share, so that no probe imports another: the prompt per image, the first
denoising step's output saved for SQNR, the wait for the app's compiled blocks, the app's manager
as the app builds it (the CPU as its GPU for a check on the CPU) and plain diffusers' pipeline for a
folder or a DiT file.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

PROMPT = "a red fox in the snow, golden hour, photo"
OUT_DIR = Path("/tmp/lowvram")       # seed-0 images and first steps, by name, for lowvram_bench.compare


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


def cpu_as_gpu():
    """On the CPU (a check of a command with the tiny model): a placement class whose "GPU" is the
    CPU (so plans are made and streamed), and torch.compile allowed, with a backend that needs no
    GPU (ZIMAGE_BENCH_BACKEND, default aot_eager)."""
    import os

    from zimage.engine import accel, speed
    from zimage.engine.placement import TorchPlacement

    class CpuAsGpu(TorchPlacement):
        def __init__(self):
            super().__init__("cpu")
            self.gpu_device = "cpu"

        def vram_budget_bytes(self) -> int:
            return 64 * 2**30

        def move(self, pipe, device: str, on_progress=None) -> None:
            self.move_modules(pipe, device, on_progress)        # no page-locked RAM without CUDA

    accel.want_compile = lambda setting, on_cuda, available=None: setting != "off"
    speed.COMPILE_BACKEND = os.environ.get("ZIMAGE_BENCH_BACKEND", "aot_eager")
    return CpuAsGpu


def model_settings(folder: str, dit: str = "") -> dict:
    """Settings fields for the model: the diffusers folder, or a DiT file (`dit`) with the folder's
    text encoder and VAE and the folder as its configs' companion (--models-from)."""
    if not dit:
        return {"model": folder}
    return {"model": dit, "text_encoder": str(Path(folder) / "text_encoder"), "vae": str(Path(folder) / "vae"),
            "models_from": (folder,)}


def app_manager(settings):
    """The app's PipelineManager for `settings`, built as engine/demo.local_manager builds it (a DiT
    file resolved with --text-encoder, --vae, --models-from), started; on the CPU with the CPU as its GPU."""
    from zimage.engine.manager import PipelineManager
    from zimage.store.model_source import ModelOptions, make_resolver

    factory = None if settings.device.startswith("cuda") else cpu_as_gpu()
    options = ModelOptions(settings.text_encoder, settings.vae, tuple(settings.models_from))
    return PipelineManager(settings, placement_factory=factory, resolver=make_resolver(options)).start()


def plain_pipeline(folder: str, dit: str, dtype):
    """Plain diffusers: `ZImagePipeline.from_pretrained(folder)`, or with a DiT file its
    `ZImageTransformer2DModel.from_single_file(config=folder)` (GGUF through GGUFQuantizationConfig)
    and the folder's other components; on the CPU, not moved."""
    from diffusers import ZImagePipeline

    if not dit:
        return ZImagePipeline.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    from diffusers import GGUFQuantizationConfig, ZImageTransformer2DModel

    kw = dict(config=folder, subfolder="transformer", local_files_only=True, torch_dtype=dtype)
    if dit.endswith(".gguf"):
        kw["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    transformer = ZImageTransformer2DModel.from_single_file(dit, **kw)
    return ZImagePipeline.from_pretrained(folder, transformer=transformer, torch_dtype=dtype, local_files_only=True)


def graphs_made() -> int:
    """Graphs dynamo has made in this process (a compile inside a request shows here)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def reset_peaks(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peaks(out: dict, device: str) -> None:
    import torch

    if device.startswith("cuda"):
        out["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)


def measure(out: dict, name: str, pipe, one, images: int, device: str, reference: bool = True) -> None:
    """With `reference`, the seed-0 image of PROMPT and its first step saved as OUT_DIR/NAME for the
    quality figures; then `images` timed images (`one(seed) -> (seconds, image)`, a new prompt each):
    s/image (the fastest), graphs compiled meanwhile, peak VRAM."""
    if reference:
        OUT_DIR.mkdir(exist_ok=True)
        handle = capture_first_step(pipe, name, OUT_DIR)
        _, image = one(0, PROMPT)
        handle.remove()
        np.save(OUT_DIR / f"{name}.npy", np.asarray(image))
        out["finite"] = bool(np.isfinite(np.load(OUT_DIR / f"{name}.step1.npy")).all())
    reset_peaks(device)
    graphs = graphs_made()
    times = [round(one(1 + i)[0], 3) for i in range(images)]
    out["recompiles"] = graphs_made() - graphs
    out["times"], out["s_per_image"] = times, min(times)
    peaks(out, device)


def base_request(req):
    """The request with the base model's defaults for guidance and negative prompt, as the app
    gives a request that leaves them out (model_defaults.with_model_defaults)."""
    from dataclasses import replace

    from zimage.model_defaults import with_model_defaults

    return with_model_defaults(replace(req, defaulted=frozenset({"guidance_scale", "negative_prompt"})), "base")
