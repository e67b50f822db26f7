"""One case of bench/gpu34_bench.py (issue 34) in a fresh process; prints one JSON line.

    python -m bench.gpu34_probe fp32 DIR OUT [--device cuda:0]
    python -m bench.gpu34_probe copy OUT [--device cuda:0]
    python -m bench.gpu34_probe compile DIR --cache C [--size 1024] [--steps 8] [--eager 2] [--max-wait 420]

fp32: OUT becomes DIR with its DiT stored in fp32, as the official Turbo repo stores it (24.6 GB at full
  scale): the transformer's shards cast on the device and written again, every other part a symlink to
  DIR's; kept when OUT is already whole (model_index.json is linked last); skipped with a reason when the
  disk lacks room for it and its later bf16 copy.
copy: the bf16 copy of OUT's fp32 DiT (engine/bf16_copy.make_copy, what the app makes in the background
  after its first bf16 load); its seconds and bytes, or that one was already there.
compile: the app's manager (compile auto, its compile cache under C: an empty C is an empty cache, the
  same C again a warm one). Requests are sent with the next one always queued, as a busy page sends
  them, in every phase: first the load and --eager images, the queue never empty, so the background
  compile (which waits for a quiet queue) has not started: eager s/image; then, once it has started,
  images until its compiled blocks are swapped in or --max-wait: s/image while compiling (an image that
  ended after the swap counts as compiled); then 3 compiled images. The timeline's marks (ready,
  compiling, compiled blocks in use) in seconds since the process started.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from bench.probe_common import app_manager, prompt_for

LINKED = ("text_encoder", "vae", "tokenizer", "scheduler")


def _args(argv: list[str]):
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("fp32", "copy", "compile"))
    p.add_argument("folder")
    p.add_argument("out", nargs="?", default="")
    p.add_argument("--cache", default="/tmp/gpu34-cache")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--eager", type=int, default=3)
    p.add_argument("--max-wait", type=float, default=420)
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


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def compile_case(a) -> dict:
    from zimage import startup
    from zimage.config import Settings
    from zimage.request import GenerationRequest

    fresh = not any(Path(a.cache).rglob("*")) if Path(a.cache).exists() else True
    settings = Settings(model=a.folder, outputs_dir="/tmp/gpu34-out", cache_dir=a.cache, idle_unload_s=0,
                        idle_drop_s=0, compile="auto", device=a.device)
    manager = app_manager(settings)

    def req(i: int) -> GenerationRequest:
        """A new prompt each image, all of one token length (seeds 10-99: two digits), so no image
        meets a new shape: a figure is eager, compiling or compiled, not a first shape's cost."""
        n = 10 + i % 90
        return GenerationRequest(prompt=prompt_for(n), seed=n, width=a.size, height=a.size, num_inference_steps=a.steps)

    def events() -> dict:
        return startup.timeline_dict()

    count = iter(range(10**6))

    def pipelined(more) -> list[tuple[float, float]]:
        """Requests with the next one always queued (as a busy page sends them) while `more(n sent)`:
        each one's (seconds, when it ended since the process started). The same pattern in every phase."""
        results, waiting, sent = [], [manager.submit(req(next(count)))], 1
        while waiting:
            if more(sent):
                waiting.append(manager.submit(req(next(count))))
                sent += 1
            r = waiting.pop(0).future.result(900)
            results.append((round(r.seconds, 3), round(startup.since_start_s(), 2)))
        return results

    def finished() -> bool:
        return bool({startup.COMPILED, startup.COMPILE_FAILED} & set(events()))

    # The first request loads the model. The queue never empties meanwhile, so the background compile
    # (it waits for a quiet queue) starts once these are done: eager images.
    eager = pipelined(lambda sent: sent < a.eager + 1)
    out: dict = {"case": "compile", "cache": a.cache, "cache_was_empty": fresh, "size": a.size, "steps": a.steps,
                 "first_image_s": eager[0][0], "eager_times": [s for s, _ in eager[1:]],
                 "eager_s": _median([s for s, _ in eager[1:]])}
    waited = time.monotonic()
    while startup.COMPILING not in events() and time.monotonic() - waited < 10:
        time.sleep(0.1)
    deadline = time.monotonic() + a.max_wait
    during = pipelined(lambda sent: not finished() and time.monotonic() < deadline) \
        if startup.COMPILING in events() else []
    while not finished() and startup.COMPILING in events() and time.monotonic() < deadline:
        time.sleep(0.2)
    e = events()
    swapped = e.get(startup.COMPILED)
    # an image that ended after the swap (a job between two requests) started after it: compiled
    compiled = [s for s, end in during if swapped is not None and end > swapped]
    during = [s for s, end in during if swapped is None or end <= swapped]
    out.update(while_compiling_times=during, while_compiling_s=_median(during), ready_at_s=e.get(startup.READY),
               compiling_at_s=e.get(startup.COMPILING), compiled_at_s=swapped,
               compile_failed=startup.COMPILE_FAILED in e)
    out["ratio_while_compiling_vs_eager"] = round(out["while_compiling_s"] / out["eager_s"], 3) \
        if out["while_compiling_s"] and out["eager_s"] else None
    if swapped is not None and out["compiling_at_s"] is not None:
        out["compile_s"] = round(swapped - out["compiling_at_s"], 2)
        out["compiled_after_ready_s"] = round(swapped - out["ready_at_s"], 2)
        compiled += [s for s, _ in pipelined(lambda sent: sent < 3)]
        out["compiled_times"] = compiled
        out["compiled_s"] = min(compiled)
    elif not out["compile_failed"]:
        out["compile_not_done_after_s"] = a.max_wait
    return out


def main() -> None:
    a = _args(sys.argv[1:])
    print(json.dumps({"fp32": fp32, "copy": copy, "compile": compile_case}[a.mode](a)), flush=True)
    os._exit(0)                 # no teardown of the weights, no wait for a background compile


if __name__ == "__main__":
    main()
