"""One generation: the validated request, running it on a pipeline, and saving PNGs with metadata.

`GenerationRequest.from_mapping` is the one validator that the page and every HTTP route share.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import Cancelled, InvalidRequest

log = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE, SIZE_MULTIPLE = 256, 2048, 16
MIN_STEPS, MAX_STEPS = 1, 50
MAX_IMAGES = 4
MAX_GUIDANCE = 20.0
MAX_SEED = 2**32 - 1
MODEL_LABEL = "Z-Image-Turbo"
SAMPLER_LABEL = "Euler (flow match)"


def as_int(value: Any) -> int | None:
    """An integer from JSON: 512, or 512.0 (JSON has one number type, and JSON Schema's "integer"
    includes 512.0); None for anything else (True, 1.5, "512", NaN)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _int_field(data: Mapping, name: str, default: int, lo: int, hi: int) -> int:
    raw = data.get(name, default)
    value = as_int(raw)
    if value is None:
        raise InvalidRequest(name, f"must be an integer, got {type(raw).__name__}")
    if not lo <= value <= hi:
        raise InvalidRequest(name, f"must be between {lo} and {hi}, got {value}")
    return value


def _size_field(data: Mapping, name: str, default: int) -> int:
    value = _int_field(data, name, default, MIN_SIZE, MAX_SIZE)
    if value % SIZE_MULTIPLE:
        raise InvalidRequest(name, f"must be a multiple of {SIZE_MULTIPLE}, got {value}")
    return value


def _str_field(data: Mapping, name: str, default: str | None, max_chars: int) -> str:
    if name not in data and default is None:
        raise InvalidRequest(name, "is required")
    value = data.get(name, default)
    if value is None and default is not None:
        value = default
    if not isinstance(value, str):
        raise InvalidRequest(name, f"must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise InvalidRequest(name, f"is too long ({len(value)} characters, at most {max_chars})")
    if "\x00" in value:
        raise InvalidRequest(name, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:   # JSON's "\ud800" decodes to a lone surrogate; the tokenizer raises on it
        raise InvalidRequest(name, f"must be valid Unicode text (a lone UTF-16 surrogate at character {e.start})") \
            from None
    return value


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    width: int = 1024
    height: int = 1024
    num_inference_steps: int = 9
    guidance_scale: float = 0.0
    seed: int = -1                 # -1 = random
    num_images: int = 1

    FIELDS = ("prompt", "negative_prompt", "width", "height", "num_inference_steps",
              "guidance_scale", "seed", "num_images")

    @classmethod
    def from_mapping(cls, data: Any, max_prompt_chars: int = 4000) -> "GenerationRequest":
        """Validate untrusted input (a JSON body or the page's fields). Errors name the field."""
        if not isinstance(data, Mapping):
            raise InvalidRequest("body", "must be a JSON object")
        unknown = sorted(set(data) - set(cls.FIELDS))
        if unknown:
            raise InvalidRequest(unknown[0], f"is not a known field (known: {', '.join(cls.FIELDS)})")
        prompt = _str_field(data, "prompt", None, max_prompt_chars)
        if not prompt.strip():
            raise InvalidRequest("prompt", "must not be empty")
        guidance = data.get("guidance_scale", 0.0)
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
            raise InvalidRequest("guidance_scale", "must be a finite number")
        if not 0.0 <= guidance <= MAX_GUIDANCE:
            raise InvalidRequest("guidance_scale", f"must be between 0 and {MAX_GUIDANCE:g}, got {guidance}")
        seed = as_int(data.get("seed", -1))
        if seed is None or not (seed == -1 or 0 <= seed <= MAX_SEED):
            raise InvalidRequest("seed", f"must be -1 (random) or an integer 0-{MAX_SEED}")
        return cls(
            prompt=prompt,
            negative_prompt=_str_field(data, "negative_prompt", "", max_prompt_chars),
            width=_size_field(data, "width", 1024),
            height=_size_field(data, "height", 1024),
            num_inference_steps=_int_field(data, "num_inference_steps", 9, MIN_STEPS, MAX_STEPS),
            guidance_scale=float(guidance),
            seed=seed,
            num_images=_int_field(data, "num_images", 1, 1, MAX_IMAGES),
        )

    def with_resolved_seed(self) -> "GenerationRequest":
        """Replace seed -1 with a concrete random seed, so the result can be reproduced."""
        if self.seed >= 0:
            return self
        return replace(self, seed=secrets.randbelow(MAX_SEED - MAX_IMAGES))

    def seeds(self) -> list[int]:
        """One seed per image, A1111-style: seed, seed+1, ..."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.num_images)]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GeneratedImage:
    image: Any          # PIL.Image.Image
    seed: int
    infotext: str
    path: Path | None   # where it was saved, None when saving failed


@dataclass(frozen=True)
class GenerationResult:
    request: GenerationRequest
    images: list[GeneratedImage]
    seconds: float
    warning: str = ""
    peak_vram_bytes: int | None = None   # the GPU's peak allocation during this generation
    batch_images: int = 0                # images in the pipeline call it shared with queued requests (0: alone)

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, self.batch_images or len(self.images))


def infotext(req: GenerationRequest, seed: int, model: str = MODEL_LABEL) -> str:
    """A1111's `parameters` text, which PNG Info, SD.Next, Forge and others read back."""
    lines = [req.prompt]
    if req.negative_prompt:
        lines.append(f"Negative prompt: {req.negative_prompt}")
    lines.append(f"Steps: {req.num_inference_steps}, Sampler: {SAMPLER_LABEL}, CFG scale: {req.guidance_scale:g}, "
                 f"Seed: {seed}, Size: {req.width}x{req.height}, Model: {model}")
    return "\n".join(lines)


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
    return _call(pipe, req, req.prompt, req.num_images, req.seeds(), should_stop, on_step, encode, on_phase=on_phase)


def run_batch(pipe, reqs: list[GenerationRequest], should_stop: Callable[[], bool],
              on_step: Callable[..., None] | None = None, encode: Encoder | None = None,
              on_phase: PhaseCallback | None = None) -> list[list]:
    """Several seeded requests of one size, steps, guidance and negative prompt as one pipeline call
    (one prompt per image); returns each request's images. One request runs as run_pipeline does."""
    if len(reqs) == 1:
        return [run_pipeline(pipe, reqs[0], should_stop, on_step, encode, on_phase)]
    first = reqs[0]
    if any(batch_key(r) != batch_key(first) for r in reqs):
        raise ValueError("a batch must share size, steps, guidance and negative prompt")
    prompts = [r.prompt for r in reqs for _ in range(r.num_images)]
    images = _call(pipe, first, prompts, 1, [s for r in reqs for s in r.seeds()], should_stop, on_step, encode,
                   on_phase=on_phase)
    out, start = [], 0
    for r in reqs:
        out.append(images[start:start + r.num_images])
        start += r.num_images
    return out


def batch_key(req: GenerationRequest) -> tuple:
    """Requests with the same key can share one pipeline call."""
    return (req.width, req.height, req.num_inference_steps, req.guidance_scale, req.negative_prompt)


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
    images = pipe.image_processor.postprocess(image, output_type="pil")
    if on_phase is not None:
        on_phase("decoding", total, total)
    return images


def _call(pipe, req: GenerationRequest, prompt, per_prompt: int, seeds: list[int], should_stop: Callable[[], bool],
          on_step: Callable[..., None] | None, encode: Encoder | None = None,
          on_phase: PhaseCallback | None = None) -> list:
    import torch

    stopped = False

    def on_step_end(pipeline, step, _timestep, callback_kwargs):
        nonlocal stopped
        if on_step is not None:
            on_step(step + 1, req.num_inference_steps, callback_kwargs.get("latents"))
        if should_stop():
            stopped = True
            pipeline._interrupt = True   # the pipeline's own interrupt flag, checked before each step
        return callback_kwargs           # the loop pops from what we return

    def phase(name: str, done: int, total: int) -> None:
        if on_phase is not None:
            on_phase(name, done, total)

    if should_stop():
        raise Cancelled()
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
        phase("generating", 0, req.num_inference_steps)
        # Latents out, decoded here: a stopped job skips the VAE (6 s for 4 images at 1024x1024 on
        # the GPU), so the worker is free at the step boundary where Stop was seen.
        out = pipe(
            **texts,
            width=req.width, height=req.height,
            num_inference_steps=req.num_inference_steps,
            guidance_scale=req.guidance_scale,
            num_images_per_prompt=per_prompt,
            generator=generators,
            callback_on_step_end=on_step_end,
            output_type="latent",
        )
        if stopped:
            raise Cancelled()
        return decode_latents(pipe, out.images, on_phase)


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"    # the IEND chunk every complete PNG ends with
TEMP_SUFFIX = ".part"                               # ".<final name>.<random>.part" while being written
QUARANTINE_DIR = ".quarantine"
# Test seam (tests/test_generate.py): the path of a file to create once half a PNG is written, after
# which the write blocks, so a test can kill the process mid-write.
BLOCK_WRITE_ENV = "ZIMAGE_TEST_BLOCK_PNG_WRITE"


class OutputStore:
    """Saves images under one folder and nowhere else; never overwrites an existing file; a file
    under its final name is always a complete PNG (written to a temporary name, fsynced, then linked)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.recover()

    def recover(self) -> None:
        """Clean what a killed process left: temporary files are removed; a final-named PNG without
        its end chunk (written by a version before the temporary names, or by hand) moves to
        .quarantine/ as .png.partial, out of the page's and /outputs' way but not destroyed: it is
        the user's folder. Only the last 12 bytes of each PNG are read (10,000 images in well
        under a second), not a full decode."""
        if not self.root.is_dir():
            return
        for temp in self.root.glob(f"*/.*{TEMP_SUFFIX}"):
            log.info("removing %s, left by an interrupted save", temp)
            temp.unlink(missing_ok=True)
        for png in self.root.glob("*/*.png"):
            try:
                with open(png, "rb") as fh:
                    size = fh.seek(0, 2)
                    fh.seek(max(0, size - len(PNG_END)))
                    complete = fh.read() == PNG_END
                if complete:
                    continue
                target = self.root / QUARANTINE_DIR / png.parent.name / f"{png.name}.partial"
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(png, target)
                log.warning("moved the incomplete image %s to %s", png, target)
            except OSError as e:
                log.warning("could not check %s: %s", png, e)

    def save(self, image, seed: int, text: str) -> Path:
        import io

        from PIL.PngImagePlugin import PngInfo

        meta = PngInfo()
        meta.add_text("parameters", text)
        buf = io.BytesIO()
        image.save(buf, format="PNG", pnginfo=meta)
        return self._write(seed, buf.getvalue())

    def save_png(self, data: bytes, seed: int) -> Path:
        """Save an encoded PNG as it is (one made by a Ray replica, metadata included)."""
        return self._write(seed, data)

    def _write(self, seed: int, data: bytes) -> Path:
        day = self.root / datetime.now().strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%H%M%S")
        temp = day / f".{stamp}-{seed}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            # "xb": exclusive create. The bytes reach the disk before any final name points at them,
            # so a kill -9 or a full disk leaves only a temporary file (removed here or at start).
            with open(temp, "xb") as fh:
                _write_bytes(fh, data)
                fh.flush()
                os.fsync(fh.fileno())
            for n in range(10_000):
                path = day / f"{stamp}-{seed}{'-' + str(n) if n else ''}.png"
                try:
                    _link(temp, path)
                    return path
                except FileExistsError:
                    continue
            raise OSError(f"no free file name in {day}")
        finally:
            temp.unlink(missing_ok=True)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))


def _link(temp: Path, path: Path) -> None:
    """Give the written file its final name; FileExistsError if that name is taken (never overwrites)."""
    try:
        os.link(temp, path)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # No hard links here (FAT/exFAT drives, some network shares): claim the name, then swap the
        # bytes in. A kill between the two leaves an empty file, which recover() quarantines.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        os.replace(temp, path)


def _write_bytes(fh, data: bytes) -> None:
    marker = os.environ.get(BLOCK_WRITE_ENV)
    if not marker:
        fh.write(data)
        return
    fh.write(data[:len(data) // 2])
    fh.flush()
    Path(marker).touch()
    threading.Event().wait()          # until the test kills this process


def save_result(req: GenerationRequest, images: list, seconds: float, store: OutputStore,
                model_label: str = MODEL_LABEL, batch_images: int = 0) -> GenerationResult:
    """Save a request's images (with their infotext) and make its result."""
    results, warning = [], ""
    for image, seed in zip(images, req.seeds()):
        text = infotext(req, seed, model_label)
        path = None
        if not warning:
            try:
                path = store.save(image, seed, text)
            except OSError as e:
                warning = unsaved_warning(store, e)
        results.append(GeneratedImage(image=image, seed=seed, infotext=text, path=path))
    return GenerationResult(request=req, images=results, seconds=seconds, warning=warning, batch_images=batch_images)


def unsaved_warning(store: OutputStore, e: OSError) -> str:
    log.warning("saving output failed: %s", e)
    return (f"Could not save to {store.root}: {e.strerror or e}. "
            "The image is shown but not saved; free disk space or pick another --outputs folder.")


def png_bytes(item: GeneratedImage) -> bytes:
    """The PNG as saved (metadata included); re-encoded only when saving failed."""
    if item.path is not None and item.path.exists():
        return item.path.read_bytes()
    import io

    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("parameters", item.infotext)
    buf = io.BytesIO()
    item.image.save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


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
