"""The upscaler folder (--upscaler-dir, default models/upscalers beside the outputs): which model
files are there, which can be used (ESRGAN's RRDBNet and Real-ESRGAN's compact net, in
safetensors) and their scale, plus the built-in resamplers. A1111's `/sdapi/v1/upscalers` lists it.

No torch here: a file is described from its safetensors header (tensor names and shapes) alone,
and pickle files (.pth, .pt, .ckpt, .bin) are listed as refused without being opened: unpickling a
downloaded file can run any code. A name from a request is looked up among the listed names, never
joined onto a path, so no name reaches outside the folder.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ZImageError
from .lora_names import PICKLE_SUFFIXES, SUFFIX
from .loras import check_complete, read_header

log = logging.getLogger(__name__)

LANCZOS, NEAREST = "Lanczos", "Nearest"
BUILT_IN = (LANCZOS, NEAREST)            # A1111's names for its resampling upscalers
PICKLE_REFUSED = "pickle files can run code when loaded; convert it to .safetensors"
MAX_LISTED = 500                         # files listed from one folder (a wrong --upscaler-dir could be huge)


@dataclass(frozen=True)
class NetShape:
    """What a state dict's tensor shapes say: the architecture and its sizes, or why it is refused."""
    arch: str = ""
    scale: int = 0
    features: int = 0
    blocks: int = 0        # RRDB blocks, or the compact net's middle convs
    grow: int = 0
    refused: str = ""


_OLD_RDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)")
_OLD_NAMES = {"model.0": "conv_first", "model.3": "conv_up1", "model.6": "conv_up2", "model.8": "conv_hr",
              "model.10": "conv_last"}


def rename_old_esrgan(state: dict) -> dict:
    """The original ESRGAN layout (`model.N...`, 4x models) in basicsr's names (what spandrel and
    basicsr do); any other layout unchanged. Works on tensors or shapes alike."""
    if "model.0.weight" not in state:
        return state
    blocks = max((int(m[1]) for k in state if (m := _OLD_RDB.fullmatch(k))), default=-1) + 1
    out = {}
    for key, value in state.items():
        m = _OLD_RDB.fullmatch(key)
        stem, _, kind = key.rpartition(".")
        if m:
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
        elif stem == f"model.1.sub.{blocks}":
            out[f"conv_body.{kind}"] = value
        else:
            out[f"{_OLD_NAMES[stem]}.{kind}" if stem in _OLD_NAMES else key] = value
    return out


def describe_shapes(shapes: dict[str, tuple]) -> NetShape:
    """The network a state dict's {name: shape} is for (RRDBNet or SRVGGNetCompact, basicsr's
    names), or a NetShape with `refused` saying why it is neither."""
    shapes = rename_old_esrgan(shapes)
    first = shapes.get("conv_first.weight")
    if first is not None and len(first) == 4:
        scale = {3: 4, 12: 2, 48: 1}.get(first[1])
        grow = shapes.get("body.0.rdb1.conv1.weight")
        blocks = len({k.split(".")[1] for k in shapes if k.startswith("body.")})
        if scale is None or grow is None or "conv_last.weight" not in shapes:
            return NetShape(refused="an RRDBNet whose input or layers this app does not know")
        return NetShape("RRDBNet", scale, first[0], blocks, grow[0])
    convs = sorted(int(k.split(".")[1]) for k in shapes if re.fullmatch(r"body\.\d+\.weight", k)
                   and len(shapes[k]) == 4)
    if convs and shapes.get("body.1.weight") is not None and len(shapes["body.1.weight"]) == 1:
        feat, out_ch = shapes[f"body.{convs[0]}.weight"][0], shapes[f"body.{convs[-1]}.weight"][0]
        scale = round((out_ch / 3) ** 0.5)
        if shapes[f"body.{convs[0]}.weight"][1] != 3 or 3 * scale * scale != out_ch or scale < 1:
            return NetShape(refused="a compact net whose input or output this app does not know")
        return NetShape("SRVGGNetCompact", scale, feat, len(convs) - 2)
    return NetShape(refused="not an ESRGAN (RRDBNet) or Real-ESRGAN compact model: other architectures "
                            "(SwinIR, DAT, HAT...) are not supported")


@dataclass(frozen=True)
class UpscalerFile:
    name: str              # the file name without .safetensors: what hr_upscaler / upscaler_1 name
    path: Path
    scale: int = 0
    arch: str = ""
    refused_reason: str = ""

    @property
    def usable(self) -> bool:
        return not self.refused_reason


def describe_file(path: Path) -> UpscalerFile:
    name = path.name[: -len(SUFFIX)] if path.name.lower().endswith(SUFFIX) else path.stem
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return UpscalerFile(name, path, refused_reason=PICKLE_REFUSED)
    try:
        n, header = read_header(path)
        check_complete(path, n, header, path.stat().st_size)
    except ZImageError as e:
        return UpscalerFile(name, path, refused_reason=e.message)
    except OSError as e:
        return UpscalerFile(name, path, refused_reason=f"cannot be read: {e.strerror or e}")
    shapes = {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    shape = describe_shapes(shapes)
    return UpscalerFile(name, path, shape.scale, shape.arch, shape.refused)


def scan(folder: Path) -> list[UpscalerFile]:
    """The folder's model files (top level), sorted by name; [] when it does not exist."""
    try:
        paths = sorted(p for p in Path(folder).iterdir()
                       if p.is_file() and p.suffix.lower() in (SUFFIX, *PICKLE_SUFFIXES))[:MAX_LISTED]
    except OSError:
        return []
    return [describe_file(p) for p in paths]


def usable_paths(folder: Path) -> dict[str, str]:
    """Every name a request may use -> its file: the built-in resamplers ("") first, then the usable files."""
    return {**{n: "" for n in BUILT_IN}, **{f.name: str(f.path) for f in scan(folder) if f.usable}}


def a1111_list(folder: Path) -> list[dict]:
    """A1111's /sdapi/v1/upscalers entries: built-ins, then the files (refused ones with their reason)."""
    out = [{"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4, "usable": True}
           for n in BUILT_IN]
    for f in scan(folder):
        out.append({"name": f.name, "model_name": f.arch or None, "model_path": f.path.name, "model_url": None,
                    "scale": f.scale or None, "usable": f.usable, "refused_reason": f.refused_reason})
    return out
