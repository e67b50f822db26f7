"""Load time per model format on the tiny model, each load in a fresh process (CPU is enough).

    python -m bench.format_bench [--repeat 3]

Formats: the diffusers folder (our loader), the ComfyUI-layout bf16 and fp8 (e4m3fn) .safetensors and
the Q8_0 .gguf (ours: store/model_source + engine/single_file, the whole pipeline); the baseline is plain
diffusers doing the same thing by hand: `ZImageTransformer2DModel.from_single_file(config=folder)`
for the DiT plus `ZImagePipeline.from_pretrained(folder, transformer=...)` for the rest. One JSON
line per (format, loader, run) with the machine and versions, then one summary line per format; each
also gives the bytes the loaded DiT holds in memory (`dit_bytes`: the fp8 file's saving is there).
"""
from __future__ import annotations

import argparse
import json
import platform
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
kind, path, folder = sys.argv[1:4]
if kind == "ours":
    from zimage.engine.loader import load_pipeline
    from zimage.store.model_files import Catalog
    from zimage.store.model_source import ModelOptions, is_model_file, resolve_parts
    from pathlib import Path
    src = Path(path)
    if is_model_file(path):
        src = resolve_parts(path, ModelOptions(), catalog=Catalog(pipelines=[Path(folder)]))
    pipe = load_pipeline(src, torch.float32)
else:
    from bench.probe_common import plain_pipeline
    pipe = plain_pipeline(folder, "" if path == folder else path, torch.float32)
load_s = time.perf_counter() - t0
dit_bytes = sum(t.numel() * t.element_size() for t in [*pipe.transformer.parameters(), *pipe.transformer.buffers()])
print(json.dumps({"load_s": load_s, "dit_bytes": dit_bytes}))
"""


def run_once(kind: str, path: Path, folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(path), str(folder)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import diffusers
    import torch

    from zimage.testing.single_files import read_comfy_dit, write_format
    from zimage.testing.tiny_comfy import make_tiny_comfy
    from zimage.testing.tiny_model import make_tiny_model

    machine = {"machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
               "diffusers": diffusers.__version__, "cpus": __import__("os").cpu_count(),
               "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_model(Path(tmp) / "tiny")
        files = make_tiny_comfy(Path(tmp) / "comfy", gguf_type="Q8_0")
        fp8 = write_format(read_comfy_dit(folder), "fp8", Path(tmp) / "fp8")
        formats = {"diffusers-folder": folder, "comfyui-bf16-safetensors": files["dit"],
                   "comfyui-fp8-safetensors": fp8, "gguf-Q8_0": files["gguf"]}
        for fmt, path in formats.items():
            times, held = {"ours": [], "diffusers": []}, {}
            for i in range(args.repeat):
                for kind in times:          # alternated, so a warmer page cache favours neither
                    run = run_once(kind, path, folder)
                    times[kind].append(run["load_s"])
                    held[kind] = run["dit_bytes"]
                    print(json.dumps({**machine, "format": fmt, "loader": kind, "run": i,
                                      "load_s": round(run["load_s"], 3), "dit_bytes": run["dit_bytes"]}))
            ours, base = statistics.median(times["ours"]), statistics.median(times["diffusers"])
            print(json.dumps({**machine, "format": fmt, "summary": True, "ours_median_s": round(ours, 3),
                              "diffusers_median_s": round(base, 3), "ratio": round(ours / base, 3),
                              "ours_dit_bytes": held["ours"], "diffusers_dit_bytes": held["diffusers"],
                              "dit_bytes_ratio": round(held["ours"] / held["diffusers"], 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
