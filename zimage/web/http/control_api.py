"""The ControlNet unit in the HTTP bodies: our `/generate`'s `control` object and the A1111
ControlNet extension's `alwayson_scripts.controlnet.args` (as webuiapi's ControlNetUnit sends it),
mapped to one checked ControlUnit (store/control_images). img2img (issue 20's Edit routes) calls
`a1111_control` the same way.
"""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Mapping

from ...config import Settings
from ...errors import InvalidRequest
from ...request import CONTROL_MODULES, ControlUnit, GenerationRequest
from ...store.control_images import CANNY_HIGH, CANNY_LOW, make_unit, model_label, parse_control

ARGS_FIELD = "alwayson_scripts.controlnet.args"
# A1111's preprocessor names that mean "the image is already the map"
PASS_THROUGH = {"none", "None", ""}


async def with_control(req: GenerationRequest, data: Any, settings: Settings,
                       prefix: str = "control") -> GenerationRequest:
    """`req` with our body's `control` object, checked off the event loop (decoding and canny take
    tens of ms for a large image)."""
    if data is None:
        return req
    unit = await asyncio.to_thread(parse_control, data, settings.max_upload_bytes, settings.max_upload_pixels,
                                   model_label(settings), prefix)
    return replace(req, control=unit)


def _a1111_unit(raw: Any, index: int, settings: Settings) -> ControlUnit | None:
    prefix = f"{ARGS_FIELD}[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidRequest(prefix, "must be an object (a ControlNet unit)")
    if raw.get("enabled", True) is False or not (raw.get("input_image") or raw.get("image")):
        return None                 # webuiapi and the extension send disabled or empty units
    module = raw.get("module", "none")
    if not isinstance(module, str):
        raise InvalidRequest(f"{prefix}.module", f"must be one of {', '.join(CONTROL_MODULES)}")
    module = "none" if module in PASS_THROUGH else module
    if module not in CONTROL_MODULES:
        raise InvalidRequest(f"{prefix}.module", f"{module!r} is not computed here: only canny is; send the "
                             "depth, pose or other map you made with module 'none'")
    low, high = raw.get("threshold_a", CANNY_LOW), raw.get("threshold_b", CANNY_HIGH)
    thresholds = (int(low), int(high)) if all(isinstance(v, (int, float)) and 1 <= v <= 255 and not isinstance(v, bool)
                                              for v in (low, high)) and low < high else (CANNY_LOW, CANNY_HIGH)
    unit = {k: raw[k] for k in ("input_image", "image", "weight", "guidance_start", "guidance_end") if k in raw}
    if isinstance(unit.get("image"), Mapping):       # the extension's {"image": b64, "mask": b64 | None} form
        unit["image"] = unit["image"].get("image")
    plain = parse_control(dict(unit, module="none"), settings.max_upload_bytes, settings.max_upload_pixels,
                          model_label(settings), prefix, image_keys=("input_image", "image"))
    if module == "none":
        return plain
    return make_unit(plain.image, module, plain.model, plain.weight, plain.guidance_start, plain.guidance_end,
                     prefix, thresholds)


def _controlnet_script(scripts: Any) -> Any:
    """The ControlNet script's entry of an A1111 body's alwayson_scripts (its key in any case, as
    A1111 matches script names), or None."""
    if not isinstance(scripts, Mapping):
        return None
    return next((v for k, v in scripts.items() if isinstance(k, str) and k.lower() == "controlnet"), None)


def a1111_unit_images(body: Any) -> list[str]:
    """The base64 strings an A1111 body's ControlNet units carry (input_image, image, or the older
    {"image", "mask"} object): what the body cap lets through beside the ordinary fields."""
    script = _controlnet_script(body.get("alwayson_scripts") if isinstance(body, Mapping) else None)
    args = script.get("args") if isinstance(script, Mapping) else None
    texts: list[str] = []
    for unit in args if isinstance(args, list) else ():
        for key in ("input_image", "image", "mask"):
            value = unit.get(key) if isinstance(unit, Mapping) else None
            values = list(value.values()) if isinstance(value, Mapping) else [value]
            texts += [v for v in values if isinstance(v, str)]
    return texts


def a1111_control_sync(body: Mapping, settings: Settings) -> ControlUnit | None:
    """The one enabled unit of an A1111 body's ControlNet script (its key in any case, as A1111
    matches script names), or None."""
    scripts = body.get("alwayson_scripts")
    if scripts is None:
        return None
    if not isinstance(scripts, Mapping):
        raise InvalidRequest("alwayson_scripts", "must be an object")
    script = _controlnet_script(scripts)
    if script is None:
        return None
    args = script.get("args") if isinstance(script, Mapping) else None
    if not isinstance(args, list):
        raise InvalidRequest(ARGS_FIELD, "must be a list of ControlNet units")
    units = [u for i, raw in enumerate(args) if (u := _a1111_unit(raw, i, settings)) is not None]
    if len(units) > 1:
        raise InvalidRequest(ARGS_FIELD, f"has {len(units)} enabled units; Z-Image's ControlNet takes one "
                             "(the union model reads every control type from one map)")
    return units[0] if units else None


async def a1111_control(req: GenerationRequest, body: Mapping, settings: Settings) -> GenerationRequest:
    """`req` with the A1111 body's ControlNet unit, if it has an enabled one (txt2img, img2img)."""
    unit = await asyncio.to_thread(a1111_control_sync, body, settings)
    return req if unit is None else replace(req, control=unit)
