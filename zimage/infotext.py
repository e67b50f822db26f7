"""A1111's `parameters` infotext: written for a generated image (`infotext`) and read back from
ours, A1111's, Forge's and SD.Next's (`parse_infotext`). Pure: no torch, no files; the quoting and
escaping rules are infotext_text's.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from .infotext_text import NEGATIVE, escape_prompt, is_negative_start, quote, unescape_line, unquote, version_text
from .model_defaults import cfg_infotext
from .prompt_origin import original_prompt_part, parse_original_prompt
from .request import GenerationRequest
from .variety import infotext_part as variety_part, parse_variety

MODEL_LABEL = "Z-Image-Turbo"
# request.RESIZE_MODES and request.INPAINT_FILLS as A1111 writes them
RESIZE_LABELS = {0: "Just resize", 1: "Crop and resize", 2: "Resize and fill"}
INPAINT_FILL_LABELS = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}
SAMPLER_LABEL = "Euler (flow match)"


def infotext(req: GenerationRequest, seed: int, model: str = MODEL_LABEL,
             lora_hashes: Mapping[str, str] | None = None, model_hash: str = "") -> str:
    """A1111's `parameters` text, which PNG Info, SD.Next, Forge and others read back. `lora_hashes`
    (name as the prompt writes it -> A1111 autov3 hash, from the files) adds A1111's and Civitai's
    `Lora hashes: "NAME: hash, ..."`."""
    lines = [escape_prompt(req.prompt)]
    # Left out where it had no effect (guidance 0 runs no negative side): read back, it would
    # claim a part in the image and be sent on to the next generation.
    if req.negative_prompt and req.guidance_scale > 0:
        lines.append(f"{NEGATIVE} {escape_prompt(req.negative_prompt)}")
    lines.append(f"Steps: {req.num_inference_steps}, Sampler: {quote(SAMPLER_LABEL)}, "
                 f"CFG scale: {req.guidance_scale:g}, Seed: {seed}, Size: {req.width}x{req.height}, "
                 + (f"Model hash: {model_hash}, " if model_hash else "") + f"Model: {quote(model)}"
                 + cfg_infotext(req.cfg_normalization, req.cfg_truncation)
                 + _edit_text(req) + (req.hires.infotext(req.is_edit, req.num_inference_steps) if req.hires else "")
                 + _lora_hashes_text(req, lora_hashes)
                 + (f", {req.control.infotext()}" if req.control is not None else "")
                 + variety_part(req.variety) + original_prompt_part(req.original_prompt, req.prompt)
                 + (f", Wildcard prompt: {quote(req.wildcard_prompt)}" if req.wildcard_prompt else "") + version_text())
    return "\n".join(lines)


def _edit_text(req: GenerationRequest) -> str:
    """A1111's img2img keys, in its order: Denoising strength, then (inpaint) Mask blur and, for
    "only masked", Inpaint area and Masked area padding; ours: Mode (A1111 tells the tabs apart by
    these keys; readers ignore a key they do not know)."""
    if not req.is_edit:
        return ""
    text = f", Mode: {req.mode}, Denoising strength: {req.denoising_strength:g}"
    if req.resize_mode:
        text += f", Resize mode: {RESIZE_LABELS[req.resize_mode]}"
    if req.mode == "inpaint":
        text += f", Mask blur: {req.mask_blur}"
        if req.inpainting_fill != 1:
            text += f", Masked content: {INPAINT_FILL_LABELS[req.inpainting_fill]}"
        if req.inpaint_full_res:
            text += f", Inpaint area: Only masked, Masked area padding: {req.inpaint_full_res_padding}"
    return text


def _lora_hashes_text(req: GenerationRequest, hashes: Mapping[str, str] | None) -> str:
    pairs = [(name, hashes[name]) for name in dict.fromkeys(n for n, _ in req.loras) if hashes and hashes.get(name)]
    if not pairs:
        return ""
    # A1111 quotes the list (always: it holds ": "); its infotext parser splits on ", " and ": " inside it
    return ", Lora hashes: " + quote(", ".join(f"{n.replace(':', '').replace(',', '')}: {h}" for n, h in pairs))


# A1111's own pattern (modules/infotext_utils.py, re_param): `Key: value` or `Key: "quoted, value"`,
# with the key bounded to 128 characters: A1111's unbounded `[\w \-/]+` backtracks over the whole
# line at every position, so a PNG whose parameters were one 900,000-character line held a worker
# for about an hour (bench/infotext_bench.py: at 64 KB 21.3 s against 0.087 s bounded; 8,000 characters
# 0.31 s against 0.013 s).
_PARAM = re.compile(r'\s*(\w[\w \-/]{0,127}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
MAX_PARAMS_LINE = 64 * 1024    # a longer last line is read as prompt text (A1111's run to a few KB)
# ASCII digits, few of them: `\d` and str.isdigit() take "²" and "٣" (int("²") raises), and int()
# refuses 4301+ digits; a longer number is left as text in "params".
_SIZE = re.compile(r"([0-9]{1,6})x([0-9]{1,6})")
_WHOLE = re.compile(r"-?[0-9]{1,20}")       # a seed is at most 2**64 (20 digits)


def parse_infotext(text: str) -> dict[str, Any]:
    """The inverse of `infotext`, for A1111's, Forge's, SD.Next's and our own `parameters` text:
    {"prompt", "negative_prompt", "params": {key: raw value}, plus typed "steps", "seed",
    "guidance_scale", "width", "height", "model", "lora_hashes" where present and well formed}.
    Never raises: text that is not infotext gives {"prompt": text, "negative_prompt": "", "params": {}}."""
    text = text if isinstance(text, str) else ""
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    last = lines[-1] if lines else ""
    found = _PARAM.findall(last) if len(last) <= MAX_PARAMS_LINE else []
    if len(found) >= 3:                     # A1111's test: fewer is a prompt line with a colon in it
        lines = lines[:-1]
        params = {k.strip(): unquote(v) for k, v in found}
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if is_negative_start(line):         # as A1111 reads it: the line stripped first
            in_negative = True
            line = line.strip()[len(NEGATIVE):].lstrip()
        (negative if in_negative else prompt).append(unescape_line(line))
    out: dict[str, Any] = {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip(),
                           "params": params}
    for key, name in (("Steps", "steps"), ("Seed", "seed")):
        if _WHOLE.fullmatch(params.get(key, "")):
            out[name] = int(params[key])
    try:
        guidance = float(params.get("CFG scale", "nan"))
        if math.isfinite(guidance):
            out["guidance_scale"] = guidance
    except ValueError:
        pass
    size = _SIZE.fullmatch(params.get("Size", ""))
    if size:
        out["width"], out["height"] = int(size.group(1)), int(size.group(2))
    if params.get("Model"):
        out["model"] = params["Model"]
    if params.get("Lora hashes"):
        pairs = (p.partition(":") for p in params["Lora hashes"].split(","))
        out["lora_hashes"] = {n.strip(): h.strip() for n, _, h in pairs if n.strip() and h.strip()}
    for name, value in (("variety", parse_variety(params)), ("original_prompt", parse_original_prompt(params))):
        if value is not None:
            out[name] = value
    return out
