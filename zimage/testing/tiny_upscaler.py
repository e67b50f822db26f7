"""Tiny random upscaler files (a few KB) for the tests and --demo: a 4x RRDBNet (ESRGAN / Real-
ESRGAN x4plus's layout), a 2x compact net (Real-ESRGAN's SRVGGNetCompact) and a 2x RRDBNet (the
x2plus layout: its input pixel-unshuffled), each saved as safetensors in basicsr's key names;
besides them a `.pth` whose bytes would crash torch.load if anything ever unpickled it, and a
safetensors file of another architecture. `python -m zimage make-tiny-upscaler DIR`.
"""
from __future__ import annotations

from pathlib import Path

# a pickle that calls a function that does not exist (tiny_lora's): loud if ever unpickled
PTH_BYTES = b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x0cno_such_func\x93)R."
FILES = {"rrdb4": "tiny-rrdb-4x", "compact2": "tiny-compact-2x", "rrdb2": "tiny-rrdb-2x"}


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
