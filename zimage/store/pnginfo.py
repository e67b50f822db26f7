"""The generation parameters an uploaded image carries, read with caps on bytes and pixels.

Sources, in the order they are tried: a PNG `parameters` text chunk (ours, A1111's, Forge's,
SD.Next's: tEXt, zTXt or iTXt), ComfyUI's `prompt` (API graph) and `workflow` (UI graph) JSON
chunks, and the EXIF UserComment A1111 writes into JPEG and WebP files. The text is read back by
infotext.parse_infotext, so every source gives the same dict.

An upload is untrusted: its type is taken from its first bytes (not its name), its header size is
checked before any pixel is decoded, Pillow's decompression-bomb guard stays on, and the one full
decode (which finds a truncated file and the text chunks after the image data) runs only under
the pixel cap. Nothing here writes a file. No torch.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BodyTooLarge, InvalidRequest, UnsupportedMediaType, ZImageError
from ..infotext import parse_infotext
from ..request import finite_number

log = logging.getLogger(__name__)

# Pillow's own default: above it Image.open warns, above twice it raises DecompressionBombError.
PILLOW_MAX_IMAGE_PIXELS = 89_478_485
MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}        # WebP: RIFF....WEBP, below
EXIF_IFD, USER_COMMENT = 0x8769, 0x9286
FIELD = "image"                     # the field every refusal names: the upload itself

NOT_AN_IMAGE = "is not a PNG, JPEG or WebP image (its first bytes say {kind})"
EMPTY = "is empty (0 bytes)"
TOO_LARGE = "is {size:,} bytes; uploads may be at most {cap:,} bytes"
TOO_MANY_PIXELS = "is {w}x{h} pixels ({n:,}); uploads may have at most {cap:,} pixels"
BOMB = "has far more pixels than the {cap:,} an upload may have"
ANIMATED = "is animated ({frames} frames); upload a still image"
BROKEN = "could not be read: {why}"
UPLOAD_HINT = "Upload a PNG, JPEG or WebP image saved by an image generator."


def _sentence(what: str, field_name: str) -> str:
    """"The uploaded image (data[0]) is empty (0 bytes)." The field in brackets for API callers;
    the page shows the sentence as it is."""
    where = "" if field_name == FIELD else f" ({field_name})"
    return f"The uploaded {FIELD}{where} {what}."


class ImageRefused(InvalidRequest):
    """An upload that is not an image this page reads; `field` names the input."""

    def __init__(self, message: str, hint: str = UPLOAD_HINT, field_name: str = FIELD):
        super().__init__(field_name, message)
        self.message = _sentence(message, field_name)
        self.hint = hint
        self.what = message


class UploadTooLarge(BodyTooLarge):
    def __init__(self, size: int, cap: int, field_name: str = FIELD):
        super().__init__(_sentence(TOO_LARGE.format(size=size, cap=cap), field_name), "Upload a smaller file.",
                         field=field_name)
        self.what = TOO_LARGE.format(size=size, cap=cap)


class NotAnImage(UnsupportedMediaType):
    def __init__(self, kind: str, field_name: str = FIELD):
        super().__init__(_sentence(NOT_AN_IMAGE.format(kind=kind), field_name), UPLOAD_HINT, field=field_name)
        self.what = NOT_AN_IMAGE.format(kind=kind)


def named(err: ZImageError, subject: str) -> ZImageError:
    """The refusal's sentence about `subject`, the image as the page names it ("The Edit image could
    not be read: ..."); `field` keeps the input an API caller sent. Other errors are returned as they are."""
    what = getattr(err, "what", None)
    if what:
        err.message = f"{subject} {what}."
    return err


@dataclass(frozen=True)
class ImageInfo:
    """What an image says about how it was made."""
    format: str                             # PNG | JPEG | WEBP
    width: int
    height: int
    source: str                             # parameters | comfyui | exif | none
    raw: str                                # the text as found (ComfyUI: the JSON)
    parameters: dict[str, Any] = field(default_factory=dict)    # parse_infotext's shape


def sniff(head: bytes) -> str | None:
    """The image type by its first bytes, or None."""
    for magic, kind in MAGIC.items():
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def first_bytes(head: bytes) -> str:
    """The first bytes as printable text ("%PDF-1.4", "hello wo"), never blank."""
    shown = repr(head[:8])[2:-1].strip()
    return shown or "nothing"


@contextlib.contextmanager
def opened(source: bytes | str | Path, max_bytes: int, max_pixels: int, field_name: str = FIELD):
    """The one check every upload goes through (the PNG info tab, the edit images, the control
    images; a file or its bytes): bytes, type by its first bytes, then the image opened with its
    header only read, its pixels and frames checked. Yields (image, format); a decode inside the
    block (`im.load()`) that fails is refused the same way. Raises ImageRefused / UploadTooLarge /
    NotAnImage naming `field_name`."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(source, (bytes, bytearray)):
            size, head, stream = len(source), bytes(source[:16]), io.BytesIO(source)
        else:
            source = Path(source)
            size, stream = source.stat().st_size, source
            with open(source, "rb") as fh:
                head = fh.read(16)
        if size == 0:
            raise ImageRefused(EMPTY, field_name=field_name)
        if size > max_bytes:
            raise UploadTooLarge(size, max_bytes, field_name)
        kind = sniff(head)
        if kind is None:
            raise NotAnImage(first_bytes(head), field_name)
        _bomb_guard_on()
        with Image.open(stream, formats=[kind]) as im:        # reads the header only
            w, h = im.size
            if w * h > max_pixels:
                raise ImageRefused(TOO_MANY_PIXELS.format(w=w, h=h, n=w * h, cap=max_pixels), field_name=field_name)
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise ImageRefused(ANIMATED.format(frames=frames), field_name=field_name)
            yield im, kind
    except ZImageError:
        raise
    except Image.DecompressionBombError:       # Pillow's own guard, before ours (above twice its limit)
        raise ImageRefused(BOMB.format(cap=max_pixels), field_name=field_name) from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as e:
        log.info("refused an upload (%s): %s", field_name, e)
        raise ImageRefused(BROKEN.format(why=str(e)[:200] or type(e).__name__), field_name=field_name) from None


def check_upload(path: str | Path, max_bytes: int, max_pixels: int, field_name: str = FIELD) -> tuple[str, int, int]:
    """(format, width, height) of the file at `path` after the cheap checks (`opened`). Decodes no pixel."""
    with opened(path, max_bytes, max_pixels, field_name) as (im, kind):
        return kind, im.size[0], im.size[1]


def _bomb_guard_on() -> None:
    """Pillow's guard is module state another library may have switched off (None); put it back."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None:
        Image.MAX_IMAGE_PIXELS = PILLOW_MAX_IMAGE_PIXELS


def read_image_info(path: str | Path, max_bytes: int, max_pixels: int, field_name: str = FIELD) -> ImageInfo:
    """Check the upload (`opened`), decode it once under the caps, and read its parameters."""
    with opened(path, max_bytes, max_pixels, field_name) as (im, kind):
        im.load()               # a truncated file fails here; PNG text after the image data appears
        texts = {k: v for k, v in im.info.items() if isinstance(k, str) and isinstance(v, (str, bytes))}
        if kind == "PNG":
            texts.update(getattr(im, "text", {}) or {})
        comment = _exif_comment(im) if kind in ("JPEG", "WEBP") else ""
        w, h = im.size
    source, raw, params = parameters_of(texts, comment)
    return ImageInfo(format=kind, width=w, height=h, source=source, raw=raw, parameters=params)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else ""


def parameters_of(texts: dict[str, Any], exif_comment: str = "") -> tuple[str, str, dict[str, Any]]:
    """(source, raw text, parse_infotext dict) from an image's text chunks and EXIF comment. Pure."""
    text = _text(texts.get("parameters"))
    if text.strip():
        return "parameters", text, parse_infotext(text)
    for key in ("prompt", "workflow"):
        raw = _text(texts.get(key))
        graph = _json(raw)
        found = comfy_prompt(graph) if key == "prompt" else comfy_workflow(graph)
        if found:
            return "comfyui", raw, found
    if exif_comment.strip():
        return "exif", exif_comment, parse_infotext(exif_comment)
    return "none", "", {}


def _whole_or_text(digits: str) -> int | str:
    """A JSON integer; one over Python's 4,300-digit limit stays text (json.loads raised ValueError
    and the whole graph was lost), so only that field is left out."""
    try:
        return int(digits)
    except ValueError:
        return digits


def _json(raw: str) -> Any:
    try:
        return json.loads(raw, parse_int=_whole_or_text) if raw else None
    except (ValueError, RecursionError):
        return None


def _exif_comment(im) -> str:
    """A1111's JPEG/WebP parameters: EXIF UserComment, 8 bytes of charset then the text
    (piexif's "UNICODE" is UTF-16, big-endian unless a byte-order mark says otherwise)."""
    try:
        value = im.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except Exception:               # a broken EXIF block is no reason to refuse the image
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes) or len(value) < 8:
        return ""
    charset, body = value[:8], value[8:]
    if charset.startswith(b"UNICODE"):
        if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return body.decode("utf-16", "replace")
        return body.decode("utf-16-be", "replace")
    return body.decode("utf-8", "replace").rstrip("\x00")


# ComfyUI's graph, node types by role (the stock nodes, and the SD3/Flux empty latents).
SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom")
TEXT_ENCODERS = ("CLIPTextEncode", "CLIPTextEncodeSDXL", "CLIPTextEncodeFlux")
LATENTS = ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyHunyuanLatentVideo")
MODEL_LOADERS = {"CheckpointLoaderSimple": "ckpt_name", "UNETLoader": "unet_name", "CheckpointLoader": "ckpt_name"}
LORA_LOADERS = ("LoraLoader", "LoraLoaderModelOnly")
MAX_LINK_HOPS = 20                  # a prompt reaches its sampler through a few nodes; a loop must end


MAX_WHOLE = 2**64                   # ComfyUI's seeds go to 2**64 - 1; a larger "number" is not read


def _int(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and -MAX_WHOLE < value < MAX_WHOLE
    return value if ok else None


def _kind(node: dict, key: str = "class_type") -> str:
    """A node's type; "" when the graph gives something else (a list was a TypeError: unhashable)."""
    value = node.get(key)
    return value if isinstance(value, str) else ""


def _node_text(graph: dict, ref: Any, hops: int = 0) -> str:
    """The text a sampler's positive/negative input leads to: a CLIPTextEncode's `text` (a string, or
    a link to a node with a string input), followed through conditioning nodes."""
    if not (isinstance(ref, list) and ref and isinstance(graph.get(str(ref[0])), dict)) or hops > MAX_LINK_HOPS:
        return ""
    node = graph[str(ref[0])]
    inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
    if _kind(node) in TEXT_ENCODERS or "text" in inputs:
        text = inputs.get("text", inputs.get("text_g", inputs.get("clip_l")))
        if isinstance(text, str):
            return text
        if isinstance(text, list):           # a primitive or a string node feeding the text
            src = graph.get(str(text[0])) if text else None
            values = src.get("inputs", {}) if isinstance(src, dict) else {}
            return next((v for v in values.values() if isinstance(v, str)), "") if isinstance(values, dict) else ""
        return ""
    for key in ("conditioning", "conditioning_1", "positive"):
        if key in inputs:
            return _node_text(graph, inputs[key], hops + 1)
    return ""


def comfy_prompt(graph: Any) -> dict[str, Any]:
    """ComfyUI's `prompt` chunk ({node id: {"class_type", "inputs"}}) as parse_infotext's dict, or {}."""
    if not isinstance(graph, dict):
        return {}
    nodes = [n for n in graph.values() if isinstance(n, dict) and isinstance(n.get("inputs"), dict)]
    sampler = next((n for n in nodes if _kind(n) in SAMPLERS), None)
    if sampler is None:
        return {}
    inputs = sampler["inputs"]
    out: dict[str, Any] = {"prompt": _node_text(graph, inputs.get("positive")),
                           "negative_prompt": _node_text(graph, inputs.get("negative")), "params": {}}
    seed = _int(inputs.get("seed", inputs.get("noise_seed")))
    steps, cfg = _int(inputs.get("steps")), finite_number(inputs.get("cfg"))
    for key, value in (("seed", seed), ("steps", steps), ("guidance_scale", cfg)):
        if value is not None:
            out[key] = value
    for name in ("sampler_name", "scheduler", "denoise"):
        if isinstance(inputs.get(name), (str, int, float)):
            out["params"][name] = str(inputs[name])
    latent = next((n["inputs"] for n in nodes if _kind(n) in LATENTS), {})
    width, height = _int(latent.get("width")), _int(latent.get("height"))
    if width and height:
        out["width"], out["height"] = width, height
    for node in nodes:
        key = MODEL_LOADERS.get(_kind(node))
        if key and isinstance(node["inputs"].get(key), str):
            out["model"] = node["inputs"][key]
            break
    loras = {n["inputs"]["lora_name"]: str(n["inputs"].get("strength_model", 1.0)) for n in nodes
             if _kind(n) in LORA_LOADERS and isinstance(n["inputs"].get("lora_name"), str)}
    if loras:
        out["params"]["Loras"] = ", ".join(f"{k}: {v}" for k, v in loras.items())
    return out


def comfy_workflow(graph: Any) -> dict[str, Any]:
    """ComfyUI's `workflow` chunk (the UI graph: nodes with widgets_values), when there is no `prompt`
    chunk. The widgets' order is the node's: KSampler [seed, control, steps, cfg, sampler, scheduler,
    denoise], EmptyLatentImage [width, height, batch]. Positive and negative are told apart by the
    links into the sampler when they can be, else the first text is the prompt."""
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list):
        return {}
    nodes = [n for n in nodes if isinstance(n, dict) and isinstance(n.get("widgets_values"), list)]
    by_type = lambda types: [n for n in nodes if _kind(n, "type") in types]     # noqa: E731
    samplers = by_type(SAMPLERS)
    texts = [n for n in by_type(TEXT_ENCODERS) if n["widgets_values"] and isinstance(n["widgets_values"][0], str)]
    if not samplers and not texts:
        return {}
    out: dict[str, Any] = {"prompt": "", "negative_prompt": "", "params": {}}
    raw_links = graph.get("links")          # [link id, from node, ...]; ids are ints (strings tolerated)
    links = {link[0]: link[1] for link in raw_links if isinstance(link, list) and len(link) >= 2
             and isinstance(link[0], (int, str))} if isinstance(raw_links, list) else {}
    if samplers:
        sampler = samplers[0]
        values = sampler["widgets_values"]
        seed, steps, cfg = (values + [None] * 4)[0], (values + [None] * 4)[2], (values + [None] * 4)[3]
        for key, value in (("seed", _int(seed)), ("steps", _int(steps)), ("guidance_scale", finite_number(cfg))):
            if value is not None:
                out[key] = value
        for slot in sampler.get("inputs", []) if isinstance(sampler.get("inputs"), list) else []:
            if isinstance(slot, dict) and slot.get("name") in ("positive", "negative"):
                link = slot.get("link")
                src = links.get(link) if isinstance(link, (int, str)) else None
                text = next((n["widgets_values"][0] for n in texts if n.get("id") == src), None)
                if text is not None:
                    out["prompt" if slot["name"] == "positive" else "negative_prompt"] = text
    if not out["prompt"] and texts:
        out["prompt"] = texts[0]["widgets_values"][0]
    latent = by_type(LATENTS)
    if latent and len(latent[0]["widgets_values"]) >= 2:
        width, height = _int(latent[0]["widgets_values"][0]), _int(latent[0]["widgets_values"][1])
        if width and height:
            out["width"], out["height"] = width, height
    return out
