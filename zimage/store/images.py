"""An uploaded image for editing (img2img, inpaint, outpaint), checked and decoded into a plain
RGB (or "L" for a mask) PIL image; and the canvas an outpaint extends.

One function, `load_image`, serves the page and every API (bytes, base64 or a data URL), the edit
images and the control images alike: the checks of store/pnginfo.opened (bytes, PNG/JPEG/WebP by
content, header pixels before any decode, one frame, Pillow's bomb guard on), then one decode under
the caps, then the colour mode made
explicit (EXIF rotation applied; RGBA/LA composited on white, palette, 16-bit, CMYK and the rest
converted), then the model's size limits with the field named. Metadata is read by nobody here and
not kept: the returned image is a fresh copy without `info`. Nothing here writes a file. No torch.
"""
from __future__ import annotations

import base64
import binascii
import logging
import re
from typing import Any

from ..errors import InvalidRequest
from ..request import MAX_SIZE
from .pnginfo import ImageRefused, UploadTooLarge, opened

log = logging.getLogger(__name__)

# The model's limits: an edit runs at a size in MIN_SIZE..MAX_SIZE, but an input is resized to it,
# so an upload may be smaller (down to 64 px a side, the VAE's 8x down-sampling leaves 8 latents) or
# larger (up to 4x MAX_SIZE a side: a phone photo, 4032x3024, is resized rather than refused).
MIN_UPLOAD_SIDE = 64
MAX_UPLOAD_SIDE = 4 * MAX_SIZE
MAX_OUTPAINT_PX = 1024               # per side: A1111's outpainting scripts stop at 256; the canvas cap is MAX_SIZE
TOO_SMALL = "is {w}x{h} pixels; an image to edit must be at least {lo}x{lo}"
TOO_BIG = "is {w}x{h} pixels; an image to edit may be at most {hi}x{hi}"
NOT_BASE64 = "is not valid base64 ({why})"
NOT_BYTES = "must be an image: base64 text or a file, got {kind}"
OUTPAINT_TOO_BIG = "would make a {w}x{h} canvas; at most {hi}x{hi}"
EDIT_HINT = "Upload a PNG, JPEG or WebP image between {lo} and {hi} pixels a side."
DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.I)
WHITE = (255, 255, 255)


def decode_base64(value: Any, field_name: str, max_bytes: int) -> bytes:
    """Bytes from base64 text (A1111's init_images, our /generate's image), a `data:image/...;base64,`
    prefix allowed; the size is checked on the text before it is decoded."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise ImageRefused(NOT_BYTES.format(kind=type(value).__name__), field_name=field_name)
    text = DATA_URL.sub("", value.strip(), count=1)
    if len(text) * 3 // 4 > max_bytes:
        raise UploadTooLarge(len(text) * 3 // 4, max_bytes, field_name)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageRefused(NOT_BASE64.format(why=str(e)[:80] or "bad characters"), field_name=field_name) from None


def load_image(data: Any, field_name: str, max_bytes: int, max_pixels: int, mask: bool = False):
    """A checked upload as a PIL image: RGB, or "L" when `mask` (white = change, as A1111; an
    alpha channel, where the image has one that is not all opaque, is the mask: transparent =
    change, as OpenAI's edits). Raises ImageRefused / UploadTooLarge / NotAnImage naming `field_name`."""
    im = _checked(data, field_name, max_bytes, max_pixels)
    return as_mask(im) if mask else as_rgb(im)


def drawn_mask(data: Any, field_name: str, max_bytes: int, max_pixels: int):
    """A layer drawn on the page's image editor as a mask: "L", 255 where anything was painted
    (its alpha above 0), whatever the brush colour."""
    im = _checked(data, field_name, max_bytes, max_pixels)
    if not _has_alpha(im):
        return as_rgb(im).convert("L").point(lambda v: 255 if v > 0 else 0)
    return im.convert("RGBA").getchannel("A").point(lambda v: 255 if v > 0 else 0)


def _checked(data: Any, field_name: str, max_bytes: int, max_pixels: int):
    """The upload decoded under the caps (store/pnginfo.opened), EXIF rotation applied; its own mode."""
    from PIL import ImageOps

    raw = decode_base64(data, field_name, max_bytes)
    with opened(raw, max_bytes, max_pixels, field_name) as (im, _kind):
        check_side(*im.size, field_name)
        im.load()                   # a truncated file fails here, under the caps above
        out = ImageOps.exif_transpose(im)    # a phone photo's rotation, as every viewer shows it
        return out if out is not im else im.copy()


def check_side(w: int, h: int, field_name: str) -> None:
    hint = EDIT_HINT.format(lo=MIN_UPLOAD_SIDE, hi=MAX_UPLOAD_SIDE)
    if min(w, h) < MIN_UPLOAD_SIDE:
        raise ImageRefused(TOO_SMALL.format(w=w, h=h, lo=MIN_UPLOAD_SIDE), hint, field_name)
    if max(w, h) > MAX_UPLOAD_SIDE:
        raise ImageRefused(TOO_BIG.format(w=w, h=h, hi=MAX_UPLOAD_SIDE), hint, field_name)


def _has_alpha(im) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def as_rgb(im):
    """8-bit RGB, whatever the file held: transparency on white (what a viewer shows on a page),
    16-bit greyscale scaled to 8 bits (Pillow's convert("L") clips "I;16" at 255), CMYK and YCbCr
    through Pillow's conversion. A new image: the file's metadata is not carried along."""
    from PIL import Image

    if im.mode.startswith("I"):             # 16-bit PNG greyscale opens as "I;16" or "I"
        import numpy as np

        arr = np.asarray(im).astype(np.int64)
        shift = 8 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 0
        im = Image.fromarray(np.clip(arr >> shift, 0, 255).astype(np.uint8), "L")
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    out = im.convert("RGB")
    return out.copy() if out is im else out


def as_mask(im):
    """"L", 255 = change. A mask with a partly transparent alpha channel is read as OpenAI's
    (transparent = change); otherwise as A1111's (white = change), its luminance."""
    from PIL import ImageOps

    if _has_alpha(im):
        alpha = im.convert("RGBA").getchannel("A")
        lo, hi = alpha.getextrema()
        if lo < 255:
            return ImageOps.invert(alpha)
    return as_rgb(im).convert("L")


def openai_mask(im):
    """OpenAI's edits mask: the transparent pixels of `im` are edited; an image without
    transparency edits nothing (OpenAI refuses it; the caller names the field)."""
    from PIL import ImageOps

    alpha = im.convert("RGBA").getchannel("A") if _has_alpha(im) else None
    return ImageOps.invert(alpha) if alpha is not None else None


def outpaint_canvas(image, left: int, right: int, top: int, bottom: int, field_name: str = "outpaint"):
    """(canvas, mask) for an outpaint: `image` on a canvas wider by left/right and taller by
    top/bottom px, the new border filled with the picture stretched to the canvas (the inpaint starts
    from colours that belong to the picture, not grey) and marked 255 in the mask."""
    from PIL import Image

    for name, value in (("left", left), ("right", right), ("top", top), ("bottom", bottom)):
        if not 0 <= value <= MAX_OUTPAINT_PX:     # the extents' own words: not an upload's ("The uploaded image ...")
            raise InvalidRequest(field_name, f"{name} must be 0-{MAX_OUTPAINT_PX} px, got {value}")
    if not any((left, right, top, bottom)):       # the page's sliders all at 0 too, not "the mask marks nothing"
        raise InvalidRequest(field_name, "extends no side (give left, right, top or bottom in px)")
    w, h = image.size
    cw, ch = w + left + right, h + top + bottom
    if max(cw, ch) > MAX_UPLOAD_SIDE:
        raise InvalidRequest(field_name, OUTPAINT_TOO_BIG.format(w=cw, h=ch, hi=MAX_UPLOAD_SIDE))
    canvas = image.convert("RGB").resize((cw, ch), Image.Resampling.BILINEAR)     # the picture stretched, as the fill
    canvas.paste(image.convert("RGB"), (left, top))
    mask = Image.new("L", (cw, ch), 255)
    mask.paste(0, (left, top, left + w, top + h))
    return canvas, mask
