"""Load time of a DiT stored in fp32: from the fp32 files vs from the bf16 copy, each in a fresh process.

    python -m bench.bf16_copy_bench [--repeat 3] [--dim 1024] [--layers 8]

The tiny pipeline with a bigger fp32 DiT (`--dim`, `--layers`: about 0.5 GB of fp32 at the
defaults), loaded at bf16 on the CPU through our loader. Baseline: the fp32 files (the background
copy switched off in that process); ours: the bf16 copy (engine/bf16_copy.py), made once before by
`make_copy`, whose time is reported too (the figure behind making it in the background rather than
inside the first load). The page cache is warm for both (the files were just written or read); one
JSON line per (source, run) with the machine and versions, then a summary line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from pathlib import Path
from zimage.engine import bf16_copy
from zimage.engine.loader import load_pipeline
mode, folder = sys.argv[1], Path(sys.argv[2])
t_import = time.perf_counter() - t0
if mode == "make":
    t1 = time.perf_counter()
    assert bf16_copy.make_copy(folder) is not None
    print(json.dumps({"make_s": time.perf_counter() - t1}))
    raise SystemExit
if mode == "fp32":
    bf16_copy.select = lambda _d, _t: None          # the baseline reads the fp32 files
    bf16_copy.start_copy = lambda _d: None          # and leaves no copy behind
else:
    assert bf16_copy.select(folder, torch.bfloat16) is not None
t1 = time.perf_counter()
pipe = load_pipeline(folder, torch.bfloat16, "cpu")
load_s = time.perf_counter() - t1
assert next(pipe.transformer.parameters()).dtype == torch.bfloat16
print(json.dumps({"import_s": t_import, "load_s": load_s, "process_s": time.perf_counter() - t0}))
"""


def child(mode: str, folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    import diffusers
    import torch

    from zimage.engine import bf16_copy
    from zimage.testing.tiny_model import make_tiny_model

    machine = {"machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
               "diffusers": diffusers.__version__, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    dit = {"dim": args.dim, "n_layers": args.layers, "n_heads": args.dim // 128, "n_kv_heads": args.dim // 128,
           "axes_dims": [32, 48, 48]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_model(Path(tmp) / "model", transformer_dtype="float32", dit=dit)
        fp32_bytes = dir_bytes(folder / "transformer")
        made = child("make", folder)
        copy = bf16_copy.select(folder, torch.bfloat16)
        copy_bytes = dir_bytes(copy / "transformer")
        print(json.dumps({**machine, "source": "make-copy", "make_s": round(made["make_s"], 3),
                          "fp32_bytes": fp32_bytes, "copy_bytes": copy_bytes}))
        times: dict[str, list[float]] = {"fp32": [], "copy": []}
        for i in range(args.repeat):
            for mode in times:                     # alternated, so a warmer page cache favours neither
                r = child(mode, folder)
                times[mode].append(r["load_s"])
                print(json.dumps({**machine, "source": mode, "run": i, "load_s": round(r["load_s"], 3),
                                  "import_s": round(r["import_s"], 3), "process_s": round(r["process_s"], 3),
                                  "dit_bytes_read": fp32_bytes if mode == "fp32" else copy_bytes}))
        fp32, ours = statistics.median(times["fp32"]), statistics.median(times["copy"])
        print(json.dumps({**machine, "summary": True, "dit_fp32_gb": round(fp32_bytes / 1e9, 3),
                          "dit_copy_gb": round(copy_bytes / 1e9, 3), "make_copy_s": round(made["make_s"], 3),
                          "load_from_fp32_s": round(fp32, 3), "load_from_copy_s": round(ours, 3),
                          "ratio": round(ours / fp32, 3)}))
        shutil.rmtree(folder / bf16_copy.COPY_DIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
