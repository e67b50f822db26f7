"""Where one image's time goes (issue 21), measured in a fresh process (driven by profile_bench.py).

    python -m bench.profile_probe MODE DIR [SIZE]
MODE: ours (the app's resident compiled path, after the background compile is swapped in),
ours_fp8 (--fp8 on), ours_8gib (the 8 GiB low-VRAM plan, as the app runs it), fp8_layers (the
per-Linear SQNR of fp8 against bf16 on the first step's real inputs, and the first step's SQNR with
the worst layers kept in bf16).

A request goes through PipelineManager.generate (a new prompt each image, as a user types one).
CUDA events around each phase (prompt encoding, each transformer call, the scheduler's step, the
VAE decode, postprocess to PIL on the CPU), the PNG save from the runner's measured figure, and a
torch.profiler trace of one image: the GPU's busy time (union of kernel intervals), the idle time
between kernels, and the kernel time by kind (matmul, attention, fused Triton, other).
Prints one JSON line.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time

PROMPT = "a red fox in the snow, golden hour, photo, take {}"
KINDS = (("attention", re.compile(r"flash_fprop|fmha|sdpa_sm90|flash_fwd|attention_kernel", re.I)),
         ("conv", re.compile(r"conv|fprop_implicit|winograd|nchwToNhwc|cudnn::", re.I)),
         ("matmul", re.compile(r"gemm|nvjet|cutlass|scaled_mm|cublas|wgmma", re.I)),
         ("triton", re.compile(r"^triton_", re.I)),
         ("norm", re.compile(r"RowwiseMoments|group_norm|layer_norm", re.I)),
         ("copy", re.compile(r"memcpy|memset|copy", re.I)))


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if pattern.search(name):
            return kind
    return "other"


def busy_us(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of [start, end) intervals."""
    total, end = 0.0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


class Phases:
    """CUDA events around the pipeline's phases, per image (wrappers on the live objects)."""

    def __init__(self, pipe):
        import torch

        self.torch = torch
        self.marks: list[tuple[str, object, object]] = []
        self._undo = []
        self._wrap(pipe, "encode_prompt", "encode")
        self._wrap(pipe.scheduler, "step", "scheduler")
        self._wrap(pipe.vae, "decode", "vae_decode")
        self._wrap(pipe.image_processor, "postprocess", "postprocess")
        starts = {}

        def pre(_m, _a):
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            starts["t"] = e

        def post(_m, _a, _o):
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(("transformer", starts.pop("t"), e))
        self._undo += [pipe.transformer.register_forward_pre_hook(pre).remove,
                       pipe.transformer.register_forward_hook(post).remove]

    def _wrap(self, owner, attr: str, name: str) -> None:
        torch, original = self.torch, getattr(owner, attr)

        def timed(*args, **kwargs):
            a = torch.cuda.Event(enable_timing=True)
            a.record()
            out = original(*args, **kwargs)
            b = torch.cuda.Event(enable_timing=True)
            b.record()
            self.marks.append((name, a, b))
            return out
        setattr(owner, attr, timed)
        self._undo.append(lambda: delattr(owner, attr) if attr in owner.__dict__ else None)

    def summary(self) -> dict:
        self.torch.cuda.synchronize()
        out: dict = {}
        for name, a, b in self.marks:
            ms = a.elapsed_time(b)
            out.setdefault(name, []).append(ms)
        self.marks.clear()
        res = {f"{k}_ms": round(sum(v), 2) for k, v in out.items()}
        if "transformer" in out:
            res["transformer_calls"] = len(out["transformer"])
            res["transformer_step_ms"] = [round(v, 2) for v in out["transformer"]]
        return res

    def remove(self) -> None:
        for undo in self._undo:
            undo()


def trace(generate) -> dict:
    """One image under torch.profiler: GPU busy and idle time and the kernel time by kind."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        generate()
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - t) * 1000
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    intervals = [(e.time_range.start, e.time_range.end) for e in kernels]
    by_kind: dict[str, float] = {}
    for e in kernels:
        by_kind[kind_of(e.name)] = by_kind.get(kind_of(e.name), 0.0) + (e.time_range.end - e.time_range.start)
    span = (max(e for _, e in intervals) - min(s for s, _ in intervals)) if intervals else 0.0
    ordered = sorted(kernels, key=lambda e: e.time_range.start)
    gaps, reach = [], None
    for before, after in zip(ordered, ordered[1:]):
        reach = before.time_range.end if reach is None else max(reach, before.time_range.end)
        if after.time_range.start - reach > 200:            # idle stretches over 0.2 ms
            gaps.append((round((after.time_range.start - reach) / 1000, 2),
                         round((reach - ordered[0].time_range.start) / 1000, 1), before.name[:50], after.name[:50]))
    busy = busy_us(intervals)
    top: dict[str, float] = {}
    for e in kernels:
        top[e.name[:80]] = top.get(e.name[:80], 0.0) + (e.time_range.end - e.time_range.start)
    return {"traced_wall_ms": round(wall_ms, 1), "gpu_span_ms": round(span / 1000, 1),
            "gpu_busy_ms": round(busy / 1000, 1), "gpu_idle_in_span_ms": round((span - busy) / 1000, 1),
            "idle_over_0.2ms_ms": round(sum(g[0] for g in gaps), 1), "idle_stretches_over_0.2ms": len(gaps),
            "largest_idle_stretches": sorted(gaps, reverse=True)[:15],
            "kernels": len(kernels), "kernel_ms_by_kind": {k: round(v / 1000, 1) for k, v in sorted(by_kind.items())},
            "top_kernels_ms": {k: round(v / 1000, 1) for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:12]}}


def app_mode(mode: str, folder: str, size: int) -> dict:
    import torch

    from zimage import startup
    from zimage.config import Settings
    from zimage.engine.manager import PipelineManager
    from zimage.request import GenerationRequest

    extra = {"ours_fp8": {"fp8": "on"}, "ours_8gib": {"low_vram": True, "vram_budget": "8"}}.get(mode, {})
    settings = Settings(model=folder, outputs_dir=f"/tmp/profile-out-{mode}", idle_unload_s=0, idle_drop_s=0,
                        cache_dir="/tmp/profile-cache", **extra)
    manager = PipelineManager(settings).start()
    manager.ensure_ready(900)
    counter = iter(range(10_000))

    def generate():
        return manager.generate(GenerationRequest(prompt=PROMPT.format(next(counter)), seed=1, width=size,
                                                  height=size), timeout=600)
    deadline = time.monotonic() + 300
    compiled_wanted = mode != "ours_8gib" and torch.cuda.is_available()
    while compiled_wanted and time.monotonic() < deadline:
        timeline = startup.timeline_dict()
        if startup.COMPILED in timeline or startup.COMPILE_FAILED in timeline:
            break
        time.sleep(0.5)
    pipe = manager._pipe
    for _ in range(3):
        generate()
    out = {"plan": manager.status().plan, "attention": manager._attention,
           "compiled": startup.COMPILED in startup.timeline_dict()}
    walls = []
    phases = Phases(pipe)
    per_image = []
    for _ in range(3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        r = generate()
        walls.append(time.perf_counter() - t)
        per_image.append(dict(phases.summary(), job_s=round(r.seconds, 3)))
    phases.remove()
    best = min(range(3), key=lambda i: walls[i])
    out.update(s_per_image=round(min(walls), 3), phases=per_image[best],
               png_save_s=manager._runner.save_s_per_image, decode_s=manager._runner.decode_s_per_image)
    out.update(trace(generate))
    out["peak_vram_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def sqnr_db(ref, x) -> float:
    noise = (ref.float() - x.float()).pow(2).sum().item()
    return round(10 * __import__("math").log10(ref.float().pow(2).sum().item() / noise), 2) if noise else float("inf")


def fp8_layers(folder: str, size: int) -> dict:
    """Per-Linear fp8 error on the first step's real inputs, and the first step with the worst
    layers kept in bf16."""
    from pathlib import Path

    import torch

    from zimage.engine import fp8
    from zimage.engine.loader import load_pipeline

    pipe = load_pipeline(Path(folder), torch.bfloat16, "cuda:0")
    pipe.set_progress_bar_config(disable=True)
    captured = {}

    class Captured(Exception):
        pass

    def grab(_m, args, kwargs):
        captured["call"] = (args, kwargs)
        raise Captured
    h = pipe.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.inference_mode():
            pipe(prompt=PROMPT.format(0), width=size, height=size, num_inference_steps=9, guidance_scale=0.0,
                 generator=torch.Generator("cpu").manual_seed(0))
    except Captured:
        pass
    h.remove()
    args, kwargs = captured["call"]

    def step():
        with torch.inference_mode():
            o = pipe.transformer(*args, **kwargs)
        o = o[0] if isinstance(o, (tuple, list)) else o
        o = o[0] if isinstance(o, (tuple, list)) else o
        return o.float().clone()
    ref = step()
    targets = fp8._targets(pipe, torch.nn.Linear)
    names = {id(lin): f"{i}:{name}" for i, (_, name, lin) in enumerate(targets)}
    inputs = {}
    hooks = [lin.register_forward_pre_hook(lambda m, a: inputs.__setitem__(id(m), a[0].detach().clone()))
             for _, _, lin in targets]
    step()
    for hk in hooks:
        hk.remove()
    per_layer = []
    with torch.inference_mode():
        for parent, name, lin in targets:
            x = inputs[id(lin)]
            per_layer.append((sqnr_db(lin(x), fp8.Fp8Linear.from_linear(lin)(x)), names[id(lin)], parent, name, lin))
    per_layer.sort(key=lambda r: r[0])
    out = {"layers": len(per_layer), "worst_layers_db": [(n, d) for d, n, *_ in per_layer[:12]],
           "median_layer_db": per_layer[len(per_layer) // 2][0], "best_layer_db": per_layer[-1][0]}
    inputs.clear()
    swapped = []
    with torch.inference_mode():
        for d, n, parent, name, lin in per_layer:
            setattr(parent, name, fp8.Fp8Linear.from_linear(lin))
            swapped.append((d, n, parent, name, lin))
    keep_results = {}
    kept = 0
    for keep in [k for k in (0, 7, 14, 28, 42) if k <= len(swapped)]:
        while kept < keep:
            _, _, parent, name, lin = swapped[kept]
            setattr(parent, name, lin)
            kept += 1
        keep_results[str(keep)] = sqnr_db(ref, step())
    out["step1_sqnr_db_keeping_worst_bf16"] = keep_results
    return out


def main() -> None:
    mode, folder = sys.argv[1], sys.argv[2]
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    t0 = time.perf_counter()
    out = {"mode": mode, "size": size}
    out.update(fp8_layers(folder, size) if mode == "fp8_layers" else app_mode(mode, folder, size))
    out["process_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
