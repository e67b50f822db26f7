"""Image to image and inpaint on the loaded model: the mode's diffusers pipeline made from the
loaded one's components (no second copy, no disk read), the inputs prepared as A1111 prepares them
(resize mode, mask blur, masked-content fill, "only masked" crop) and the result put back together
(the pixels outside the mask pasted from the input, A1111's overlay).

Each call builds its pipeline from the loaded pipeline's components (the same module objects), so
every placement (resident, compiled blocks, a low-VRAM plan's hooks, int8, fp8) and the fused
LoRAs are the ones txt2img uses, and the load count is unchanged. Not `from_pipe`: in diffusers
0.42 it ends with `new_pipeline.to(dtype=float32)` unless given a dtype, which casts the shared
bf16 modules (and fp8 weights, a floating type) to float32 in place, for txt2img too. Building it
per call (not caching it) means a component the manager swaps later is never stale here.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

from ..request import GenerationRequest

log = logging.getLogger(__name__)

GREY = (127, 127, 127)       # "latent nothing": A1111 fills the masked area with the VAE's zero, mid-grey
FILL_BLUR_PX = 64            # "fill": the masked area painted with the picture blurred this much


def mode_pipeline(pipe, mode: str):
    """The pipeline that runs `mode` on `pipe`'s components: `pipe` itself for txt2img."""
    if mode == "txt2img":
        return pipe
    from diffusers import ZImageImg2ImgPipeline, ZImageInpaintPipeline

    cls = ZImageImg2ImgPipeline if mode == "img2img" else ZImageInpaintPipeline
    wanted = inspect.signature(cls.__init__).parameters
    out = cls(**{name: module for name, module in pipe.components.items() if name in wanted})
    if hasattr(pipe, "_progress_bar_config"):
        out.set_progress_bar_config(**pipe._progress_bar_config)     # the loader's (off)
    return out


def denoise_steps(steps: int, strength: float) -> int:
    """The steps an img2img/inpaint call runs, as diffusers' get_timesteps counts them (steps 9,
    strength 0.6: 6): what the progress bar counts to. 0 at strength 0."""
    start = int(max(steps - min(steps * strength, steps), 0))
    return steps - start


def resize_to(image, width: int, height: int, resize_mode: int, fill: Any = None):
    """A1111's resize modes: 0 just resize (stretch), 1 crop and resize (cover, centre crop),
    2 resize and fill (fit inside; the borders `fill`, or the picture stretched behind it)."""
    from PIL import Image

    if image.size == (width, height):
        return image
    resample = Image.Resampling.LANCZOS if image.mode == "RGB" else Image.Resampling.BILINEAR
    if resize_mode == 0:
        return image.resize((width, height), resample)
    w, h = image.size
    ratio = max(width / w, height / h) if resize_mode == 1 else min(width / w, height / h)
    sw, sh = max(1, round(w * ratio)), max(1, round(h * ratio))
    scaled = image.resize((sw, sh), resample)
    if resize_mode == 1:
        left, top = (sw - width) // 2, (sh - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    canvas = Image.new(image.mode, (width, height), fill) if fill is not None else image.resize((width, height), resample)
    canvas.paste(scaled, ((width - sw) // 2, (height - sh) // 2))
    return canvas


def crop_region(mask, padding: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A1111's "only masked" region: the mask's box, grown by `padding` px, then grown to the
    output's aspect ratio, within the image. (left, top, right, bottom)."""
    iw, ih = mask.size
    left, top, right, bottom = mask.point(lambda v: 255 if v > 0 else 0).getbbox() or (0, 0, iw, ih)
    left, top = max(0, left - padding), max(0, top - padding)
    right, bottom = min(iw, right + padding), min(ih, bottom + padding)
    w, h = right - left, bottom - top
    target = width / height
    if w / h < target:                 # too tall: widen
        grow = round(h * target) - w
        left, right = left - grow // 2, right + grow - grow // 2
    else:
        grow = round(w / target) - h
        top, bottom = top - grow // 2, bottom + grow - grow // 2
    # shift back inside, then clip (a region wider than the image stays the image's width)
    if left < 0:
        left, right = 0, right - left
    if right > iw:
        left, right = max(0, left - (right - iw)), iw
    if top < 0:
        top, bottom = 0, bottom - top
    if bottom > ih:
        top, bottom = max(0, top - (bottom - ih)), ih
    return left, top, right, bottom


@dataclass
class EditInputs:
    """What the pipeline call gets (image, mask at the call's size) and what puts the result
    back together (the input at the output size, the blurred mask, the "only masked" region)."""
    image: Any                     # RGB, width x height: the pipeline's input
    mask: Any | None               # L, width x height, blurred; None for img2img
    base: Any                      # RGB, the input at the output size (the overlay's source)
    overlay: Any | None            # L, base's size: where the result shows (inpaint)
    region: tuple[int, int, int, int] | None    # "only masked": the crop of base that was run


def prepare(req: GenerationRequest) -> EditInputs:
    """The request's image and mask made ready for one call, as A1111's img2img prepares them."""
    from PIL import Image, ImageFilter

    base = resize_to(req.init_image, req.width, req.height, req.resize_mode)
    if req.mode != "inpaint":
        return EditInputs(image=base, mask=None, base=base, overlay=None, region=None)
    mask = resize_to(req.mask, req.width, req.height, req.resize_mode, fill=0)
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    overlay = mask.filter(ImageFilter.GaussianBlur(req.mask_blur)) if req.mask_blur else mask
    source = base
    if req.inpainting_fill == 0:
        source = Image.composite(base.filter(ImageFilter.GaussianBlur(FILL_BLUR_PX)), base, mask)
    elif req.inpainting_fill == 3:
        source = Image.composite(Image.new("RGB", base.size, GREY), base, mask)
    region = None
    image, call_mask = source, overlay
    if req.inpaint_full_res:
        region = crop_region(mask, req.inpaint_full_res_padding, req.width, req.height)
        size = (req.width, req.height)
        image = source.crop(region).resize(size, Image.Resampling.LANCZOS)
        call_mask = overlay.crop(region).resize(size, Image.Resampling.BILINEAR)
    return EditInputs(image=image, mask=call_mask, base=base, overlay=overlay, region=region)


def finish(inputs: EditInputs, images: list) -> list:
    """The call's images as the user's pictures: for inpaint, the result shown only where the
    (blurred) mask is, the input everywhere else; "only masked" scaled back into its region."""
    from PIL import Image

    if inputs.overlay is None:
        return images
    out = []
    for image in images:
        full = inputs.base.copy()
        if inputs.region is not None:
            left, top, right, bottom = inputs.region
            full.paste(image.convert("RGB").resize((right - left, bottom - top), Image.Resampling.LANCZOS),
                       (left, top))
        else:
            full = image.convert("RGB")
        out.append(Image.composite(full, inputs.base, inputs.overlay))
    return out


def call_kwargs(req: GenerationRequest, inputs: EditInputs, images: int = 1) -> dict:
    """The mode's extra arguments to a pipeline call that makes `images` images."""
    if req.control is not None:           # ZImageControlNetInpaintPipeline: no strength argument
        # and (diffusers 0.42) its mask is not repeated to the batch as its picture and map are:
        # with one mask for two images torch.cat failed ("Expected size 2 but got size 1"); one each
        return dict(image=inputs.image, mask_image=[inputs.mask] * images, control_image=control_image(req, inputs))
    kwargs = dict(image=inputs.image, strength=req.denoising_strength)
    if req.mode == "inpaint":
        kwargs["mask_image"] = inputs.mask
    return kwargs


def control_image(req: GenerationRequest, inputs: EditInputs):
    """The control map for an edit call: the unit's map, or for "only masked" the same crop of it
    as of the picture (the map is laid over the output, as the picture is), at the call's size."""
    from PIL import Image

    image = req.control.image
    if inputs.region is None:
        return image
    size = (req.width, req.height)
    return image.resize(size, Image.Resampling.BILINEAR).crop(inputs.region).resize(size, Image.Resampling.BILINEAR)
