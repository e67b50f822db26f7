"""Tiny random upscaler files (a few KB) for the tests and --demo: a 4x RRDBNet (ESRGAN / Real-
ESRGAN x4plus's layout), a 2x compact net (Real-ESRGAN's SRVGGNetCompact) and a 2x RRDBNet (the
x2plus layout: its input pixel-unshuffled), each saved as safetensors in basicsr's key names;
besides them a `.pth` whose bytes would crash torch.load if anything ever unpickled it, and a
safetensors file of another architecture. `python -m zimage make-tiny-upscaler DIR`.

`make_full_upscaler(DIR)` writes one random net of a real model's size instead (Real-ESRGAN
x2plus's RRDBNet: 64 features, 23 blocks, 67 MB), for the GPU benchmarks' hires and upscale
figures (`python -m zimage make-tiny-upscaler DIR --full`).
"""
from __future__ import annotations

from pathlib import Path

# a pickle that calls a function that does not exist (tiny_lora's): loud if ever unpickled
PTH_BYTES = b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x0cno_such_func\x93)R."
FILES = {"rrdb4": "tiny-rrdb-4x", "compact2": "tiny-compact-2x", "rrdb2": "tiny-rrdb-2x"}
FULL_NAME = "random-RealESRGAN_x2plus"          # RRDBNet(2, feat=64, blocks=23, grow=32)


def make_tiny_upscalers(folder: str | Path, seed: int = 0) -> dict[str, Path]:
    """{kind: path} of the files written into `folder`."""
    import torch
    from safetensors.torch import save_file

    from ..engine.esrgan_arch import RRDBNet, SRVGGNetCompact

    out_dir = Path(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    nets = {"rrdb4": RRDBNet(4, feat=8, blocks=1, grow=4), "compact2": SRVGGNetCompact(2, feat=8, convs=2),
            "rrdb2": RRDBNet(2, feat=8, blocks=1, grow=4)}
    with torch.no_grad():            # mid-grey out, not clamped to black: random weights stay visible
        for kind in ("rrdb4", "rrdb2"):
            nets[kind].conv_last.bias.fill_(0.5)
    paths = {}
    for kind, net in nets.items():
        path = out_dir / f"{FILES[kind]}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        paths[kind] = path
    paths["pickle"] = out_dir / "pickled-4x.pth"
    paths["pickle"].write_bytes(PTH_BYTES)
    paths["other"] = out_dir / "not-esrgan.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(paths["other"]))
    return paths


def make_full_upscaler(folder: str | Path, seed: int = 0) -> Path:
    """A random 2x RRDBNet of Real-ESRGAN x2plus's size in `folder` (kept if already there); its path.
    Its convolutions are scaled by 0.1 as basicsr initialises them, so 23 blocks stay finite."""
    import torch
    from safetensors.torch import save_file

    from ..engine.esrgan_arch import RRDBNet

    path = Path(folder) / f"{FULL_NAME}.safetensors"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = RRDBNet(2, feat=64, blocks=23, grow=32)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith("body.") and name.endswith(".weight"):
                p.mul_(0.1)
        net.conv_last.bias.fill_(0.5)
    tmp = path.with_name(f".tmp-{path.name}")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    tmp.rename(path)
    return path
