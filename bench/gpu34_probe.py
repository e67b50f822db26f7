"""One case of bench/gpu34_bench.py (issue 34) in a fresh process; prints one JSON line.

    python -m bench.gpu34_probe fp32 DIR OUT [--device cuda:0]
    python -m bench.gpu34_probe copy OUT [--device cuda:0]

fp32: OUT becomes DIR with its DiT stored in fp32, as the official Turbo repo stores it (24.6 GB at full
  scale): the transformer's shards cast on the device and written again, every other part a symlink to
  DIR's; kept when OUT is already whole (model_index.json is linked last); skipped with a reason when the
  disk lacks room for it and its later bf16 copy.
copy: the bf16 copy of OUT's fp32 DiT (engine/bf16_copy.make_copy, what the app makes in the background
  after its first bf16 load); its seconds and bytes, or that one was already there.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

LINKED = ("text_encoder", "vae", "tokenizer", "scheduler")


def _args(argv: list[str]):
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("fp32", "copy"))
    p.add_argument("folder")
    p.add_argument("out", nargs="?", default="")
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def fp32(a) -> dict:
    from safetensors.torch import load_file, save_file

    from zimage.store.cache import weight_files

    src, dst = Path(a.folder), Path(a.out)
    out: dict = {"case": "write_fp32", "folder": str(dst)}
    if (dst / "model_index.json").exists():
        return {**out, "kept": True}
    files, problems = weight_files(src / "transformer")
    if problems or not files:
        return {**out, "skipped": f"{src}/transformer has no complete weights: {problems}"}
    bf16_bytes = sum(f.stat().st_size for f in files)
    need = 3 * bf16_bytes + 2**30              # the fp32 files (2x) and the app's bf16 copy of them later (1x)
    dst.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dst).free
    if free < need:
        return {**out, "skipped": f"{free / 1e9:.1f} GB free on its disk; the fp32 DiT and its bf16 copy need "
                                  f"about {need / 1e9:.1f} GB"}
    started = time.perf_counter()
    (dst / "transformer").mkdir(exist_ok=True)
    for f in (src / "transformer").iterdir():
        if f.suffix == ".json":
            shutil.copy(f, dst / "transformer" / f.name)
    for f in files:
        state = {k: v.float().contiguous().cpu() for k, v in load_file(str(f), device=a.device).items()}
        save_file(state, str(dst / "transformer" / f.name), metadata={"format": "pt"})
        del state
    for name in (*LINKED, "model_index.json"):          # model_index.json last: the folder is whole
        link = dst / name
        if not link.exists():
            link.symlink_to((src / name).resolve())
    return {**out, "fp32_bytes": sum(f.stat().st_size for f in (dst / "transformer").glob("*.safetensors")),
            "write_s": round(time.perf_counter() - started, 2)}


def copy(a) -> dict:
    import torch

    from zimage.engine import bf16_copy

    folder = Path(a.folder)
    out: dict = {"case": "make_copy", "folder": str(folder)}
    found = bf16_copy.select(folder, torch.bfloat16)
    if found is not None:
        return {**out, "kept": str(found)}
    started = time.perf_counter()
    made = bf16_copy.make_copy(folder)
    out["make_s"] = round(time.perf_counter() - started, 2)
    if made is None:
        return {**out, "error": "make_copy made no copy (the log says why)"}
    return {**out, "copy": str(made), "copy_bytes": sum(p.stat().st_size for p in Path(made).rglob("*.safetensors"))}


def main() -> None:
    a = _args(sys.argv[1:])
    print(json.dumps({"fp32": fp32, "copy": copy}[a.mode](a)), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
