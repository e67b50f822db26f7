"""Running a validated request on a diffusers pipeline: one call (with riders), the decode the app
does itself (a stopped job is never decoded), the warm-up image and the cheap latent preview.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable

from ..errors import Cancelled
from ..request import GenerationRequest, batch_key

log = logging.getLogger(__name__)


Encoder = Callable[[Any, list], list]   # (pipe, prompts) -> one text embedding per prompt (PromptCache.embeds)
# (phase, done, total): "encoding" (0, prompts), "generating" (0, steps) as the denoising starts,
# "decoding" (images decoded so far, images in the call) before and after each image's VAE decode.
PhaseCallback = Callable[[str, int, int], None]


def run_pipeline(pipe, req: GenerationRequest, should_stop: Callable[[], bool],
                 on_step: Callable[..., None] | None = None, encode: Encoder | None = None,
                 on_phase: PhaseCallback | None = None) -> list:
    """Run the diffusers pipeline for an already seeded request; return PIL images.

    Raises Cancelled when `should_stop` turned true; the half-denoised latents are never decoded.
    """
    return _call(pipe, req, req.encoder_prompt, req.num_images, req.seeds(), should_stop, on_step, encode,
                 on_phase=on_phase)


def run_batch(pipe, reqs: list[GenerationRequest], should_stop: Callable[[], bool],
              on_step: Callable[..., None] | None = None, encode: Encoder | None = None,
              on_phase: PhaseCallback | None = None) -> list[list]:
    """Several seeded requests of one size, steps, guidance and negative prompt as one pipeline call
    (one prompt per image); returns each request's images. One request runs as run_pipeline does.
    The app runs run_per_image; this one pass is bench/batch_bench.py's baseline."""
    if len(reqs) == 1:
        return [run_pipeline(pipe, reqs[0], should_stop, on_step, encode, on_phase)]
    first = reqs[0]
    if any(batch_key(r) != batch_key(first) for r in reqs):
        raise ValueError("a batch must share size, steps, guidance and negative prompt")
    prompts = [r.encoder_prompt for r in reqs for _ in range(r.num_images)]
    images = _call(pipe, first, prompts, 1, [s for r in reqs for s in r.seeds()], should_stop, on_step, encode,
                   on_phase=on_phase)
    out, start = [], 0
    for r in reqs:
        out.append(images[start:start + r.num_images])
        start += r.num_images
    return out


def run_per_image(pipe, reqs: list[GenerationRequest], stopped: Callable[[int], bool],
                  on_step: Callable[..., None] | None = None, encode: Encoder | None = None,
                  on_phase: PhaseCallback | None = None,
                  on_pass: Callable[[int, list[int]], None] | None = None) -> list[list]:
    """Each request's images, one pipeline call per image (A1111's batch count, not its batch
    size): call k makes image k of every request that has one, so queued requests sharing a call
    (riders) still share it, and a request's own images never do. `stopped(i)` says request i was
    stopped: it keeps the images finished before its Stop, and the image being made is dropped; a
    call is interrupted (no decode) once every request in it was stopped. `on_pass(k, members)`
    before each call. The figures that chose this: bench/batch_bench.py, docs/BENCHMARKS.md."""
    first = reqs[0]
    if any(batch_key(r) != batch_key(first) for r in reqs):
        raise ValueError("a batch must share size, steps, guidance and negative prompt")
    seeds = [r.seeds() for r in reqs]
    out: list[list] = [[] for _ in reqs]
    for k in range(max(r.num_images for r in reqs)):
        members = [i for i, r in enumerate(reqs) if k < r.num_images and not stopped(i)]
        if not members:
            break
        if on_pass is not None:
            on_pass(k, members)
        try:
            images = _call(pipe, reqs[members[0]], [reqs[i].encoder_prompt for i in members], 1,
                           [seeds[i][k] for i in members], lambda: all(stopped(i) for i in members),
                           on_step, encode, on_phase=on_phase)
        except Cancelled:
            break
        for i, image in zip(members, images):
            if not stopped(i):               # stopped while this call ran: the image it was making is dropped
                out[i].append(image)
    return out


def uses_guidance(guidance_scale: float) -> bool:
    """ZImagePipeline runs classifier-free guidance (and needs the negative side) whenever the
    scale is above 0 (its `do_classifier_free_guidance`), not above 1 as in other pipelines."""
    return guidance_scale > 0


def decode_latents(pipe, latents, on_phase: PhaseCallback | None = None) -> list:
    """PIL images from the pipeline's final latents, exactly as ZImagePipeline.__call__ decodes them
    (diffusers 0.42: scaling and shift factors, vae.decode, image_processor.postprocess). All images
    in one decode, as the pipeline does: decoding them one at a time changed 0.005-0.02% of the
    pixels by one level on the tiny model (batched convolutions round differently) and saved no time
    (2.87 s vs 2.99 s for 4 images at 1024x1024 on the CPU), so progress goes from image 0 to n."""
    total = latents.shape[0]
    if on_phase is not None:
        on_phase("decoding", 0, total)
    latents = latents.to(pipe.vae.dtype)
    latents = (latents / pipe.vae.config.scaling_factor) + pipe.vae.config.shift_factor
    image = pipe.vae.decode(latents, return_dict=False)[0]
    images = to_pil(pipe.image_processor, image)
    if on_phase is not None:
        on_phase("decoding", total, total)
    return images


def to_pil(processor, image) -> list:
    """diffusers' `postprocess(image, "pil")` with its float arithmetic done where the image is:
    denormalize, float32, x255, round half to even, uint8, then one uint8 copy to the CPU, a quarter
    of the bytes of the float32 copy it makes. The same pixels (a test compares them); 25 ms of
    the 1024x1024 image's 1.03 s on the H200 went to doing this on the CPU
    (`python3 -m bench.profile_bench DIR 1024 --only=ours`, postprocess_ms)."""
    import torch
    from PIL import Image

    if image.ndim != 4 or image.shape[1] != 3:
        return processor.postprocess(image, output_type="pil")
    image = processor._denormalize_conditionally(image, None)
    pixels = (image.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p) for p in pixels]


def _call(pipe, req: GenerationRequest, prompt, per_prompt: int, seeds: list[int], should_stop: Callable[[], bool],
          on_step: Callable[..., None] | None, encode: Encoder | None = None,
          on_phase: PhaseCallback | None = None) -> list:
    import torch

    from . import edit
    from ..variety import noisy_steps

    stopped = False
    clean_embeds = None                 # with variety: the clean embeddings the late steps get back
    inputs = edit.prepare(req) if req.is_edit else None
    total = edit.denoise_steps(req.num_inference_steps, req.denoising_strength) if inputs else \
        req.num_inference_steps
    # with a ControlNet, pipe is already the mode's ControlNet pipeline (the manager's _control_pipeline)
    call_pipe = pipe if req.control is not None else edit.mode_pipeline(pipe, req.mode)

    def on_step_end(pipeline, step, _timestep, callback_kwargs):
        nonlocal stopped
        if on_step is not None:
            on_step(step + 1, total, callback_kwargs.get("latents"))
        if clean_embeds is not None and step + 1 == noisy_steps(total):
            callback_kwargs["prompt_embeds"] = clean_embeds     # the pipeline's loop pops it
        if should_stop():
            stopped = True
            pipeline._interrupt = True   # the pipeline's own interrupt flag, checked before each step
        return callback_kwargs           # the loop pops from what we return

    def phase(name: str, done: int, total: int) -> None:
        if on_phase is not None:
            on_phase(name, done, total)

    if should_stop():
        raise Cancelled()
    if inputs is not None and total == 0:
        # Strength 0 denoises nothing (diffusers raises on it): the input is the answer, with no
        # VAE round trip to blur it.
        phase("decoding", len(seeds), len(seeds))
        return [inputs.base.copy() for _ in seeds]
    # Noise drawn on the CPU: the same seed gives the same picture on every device.
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    with torch.inference_mode():
        texts = dict(prompt=prompt, negative_prompt=req.negative_prompt or None)
        if encode is not None:          # embeddings made (or kept) by the pipeline's own encode_prompt
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            phase("encoding", 0, len(prompts))
            texts = dict(prompt=None, prompt_embeds=encode(pipe, prompts))
            if uses_guidance(req.guidance_scale):
                texts["negative_prompt_embeds"] = encode(pipe, [req.negative_prompt] * len(prompts))
        if req.variety > 0:             # one noisy embedding per image, from its seed (engine/variety.py)
            from .variety import varied_texts

            texts, clean_embeds = varied_texts(pipe, prompt, per_prompt, seeds, req.variety, req.negative_prompt,
                                               uses_guidance(req.guidance_scale), encode)
            per_prompt = 1
        phase("generating", 0, total)
        extra = edit.call_kwargs(req, inputs, len(seeds)) if inputs is not None else {}
        window = contextlib.nullcontext()
        if req.control is not None:     # pipe is a ControlNet pipeline (engine/controlnet.py)
            from .controlnet import guidance_window

            window = guidance_window(pipe.controlnet, req.control, req.num_inference_steps)
            extra.setdefault("control_image", req.control.image)
            extra.update(controlnet_conditioning_scale=req.control.weight)
        # Latents out, decoded here: a stopped job skips the VAE (6 s for 4 images at 1024x1024 on
        # the GPU), so the worker is free at the step boundary where Stop was seen.
        with window:
            out = call_pipe(
                **texts, **extra,
                width=req.width, height=req.height,
                num_inference_steps=req.num_inference_steps,
                guidance_scale=req.guidance_scale,
                cfg_normalization=req.cfg_normalization,
                cfg_truncation=req.cfg_truncation,
                num_images_per_prompt=per_prompt,
                generator=generators,
                callback_on_step_end=on_step_end,
                output_type="latent",
            )
        if stopped:
            raise Cancelled()
        images = decode_latents(pipe, out.images, on_phase)
        return edit.finish(inputs, images) if inputs is not None else images


def warm_up(pipe, width: int = 1024, height: int = 1024, prompt: str = "warm-up") -> float:
    """One 1-step image at the default size, thrown away: CUDA kernels load, cuBLAS/cuDNN set up and
    the allocator's pool grows here, not in the user's first image (4.5 s instead of 1.6 s with
    plain diffusers on an H100). Returns the seconds it took."""
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        pipe(prompt=prompt, width=width, height=height, num_inference_steps=1, guidance_scale=0.0,
             generator=torch.Generator("cpu").manual_seed(0))
    return time.perf_counter() - started


# A linear map from the 16 latent channels of the Flux VAE (which Z-Image uses) to RGB: the cheap
# live preview ComfyUI and A1111 use instead of running the VAE. Values from ComfyUI's latent_formats.Flux.
FLUX_LATENT_RGB = [
    [-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433], [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115], [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180], [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499], [-0.1262, -0.0982, -0.0778]]
FLUX_LATENT_RGB_BIAS = [-0.0329, -0.0718, -0.0851]


def latent_preview_png(latent) -> bytes:
    """A small PNG preview of one (16, h, w) latent (1/8 of the image size), without the VAE."""
    import io

    import torch
    from PIL import Image

    factors = torch.tensor(FLUX_LATENT_RGB, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent.float().cpu(), factors) + torch.tensor(FLUX_LATENT_RGB_BIAS)
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()
