"""One case of bench/gpu35_bench.py (issue 35) in a fresh process; prints JSON lines.

    python -m bench.gpu35_probe files DIR OUT --formats bf16,fp8,Q8_0,Q4_K [--max-s 240] [--device cuda:0]
    python -m bench.gpu35_probe steps DIR [--size 1024] [--rounds 2] [--compile off] [--device D]
    python -m bench.gpu35_probe enhance DIR [--budget GB] [--tokens 200] [--compile off] [--device D]
    python -m bench.gpu35_probe hires DIR --upscalers UPDIR [--budget GB] [--size 1024] [--compile off]

files: DIR's DiT written as ComfyUI single files (zimage/testing/single_files.py) under OUT, converted and
  quantized on the device; one line per format: its path, bytes and seconds, or why it was skipped (a file
  already whole is kept; not enough free disk; --max-s spent).
steps: Turbo at 8 and at 9 steps (the old default) in one process, alternated, through the app's manager.
enhance: the prompt enhancer on the loaded text encoder (engine/enhance.py) resident or under a VRAM plan:
  a rewrite of exactly --tokens new tokens (the app's sampling, min_new_tokens so that random weights
  cannot end it early): seconds, tokens/s, VRAM added over the loaded model and whether the LM head is
  the embedding's own tensor; then the app's own job (manager.enhance_prompt), whose answer on random
  weights may be empty (the random checkpoint's tokenizer knows 400 of the model's 151936 ids).
hires: a first pass at --size, the hires fix to 2x (upscaler then refine, engine/hires.py) and the Upscale
  action x2 with refine (web/hires_fields.upscale_request) on its picture; seconds and peak VRAM each. The
  upscaler is a random Real-ESRGAN x2plus-sized RRDBNet (testing/tiny_upscaler.make_full_upscaler).
--budget GB: the app's low-VRAM plan for that budget, enforced with set_per_process_memory_fraction.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench.probe_common import PROMPT, app_manager, model_settings, prompt_for

REFINE = 0.3            # the Upscale action's refine strength here: hires' default (hires_request.DEFAULT_STRENGTH)


def _args(argv: list[str]):
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("files", "steps", "enhance", "hires"))
    p.add_argument("folder")
    p.add_argument("out", nargs="?", default="")
    p.add_argument("--formats", default="bf16,fp8,Q8_0,Q4_K")
    p.add_argument("--max-s", type=float, default=240)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--compile", default="off")
    p.add_argument("--upscalers", default="/tmp/gpu35-upscalers")
    p.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def _cuda(a) -> bool:
    return a.device.startswith("cuda")


def _gib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**30, 3)


def files(a) -> None:
    """Each wanted format's file, skipped with a reason where it cannot be written now."""
    from zimage.testing import single_files as sf

    started = time.perf_counter()
    comfy = None
    for fmt in [f for f in a.formats.split(",") if f]:
        path = sf.file_path(a.out, fmt)
        line = {"item": 1, "case": "write", "format": fmt, "path": str(path)}
        if path.is_file():
            print(json.dumps({**line, "bytes": path.stat().st_size, "kept": True}), flush=True)
            continue
        if time.perf_counter() - started > a.max_s:
            print(json.dumps({**line, "skipped": f"{a.max_s:.0f} s for writing the files are spent"}), flush=True)
            continue
        t = time.perf_counter()
        if comfy is None:
            comfy = sf.read_comfy_dit(a.folder, a.device)
            line["read_s"] = round(time.perf_counter() - t, 2)
        need = int(sf.param_count(comfy) * sf.BYTES_PER_PARAM[fmt]) + 2**30
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if free < need:
            print(json.dumps({**line, "skipped": f"{free / 1e9:.1f} GB free on its disk, the file needs about "
                                                 f"{need / 1e9:.1f} GB"}), flush=True)
            continue
        sf.write_format(comfy, fmt, a.out)
        print(json.dumps({**line, "bytes": path.stat().st_size, "write_s": round(time.perf_counter() - t, 2)}),
              flush=True)


def _manager(a, **extra):
    """The app's manager on DIR (resident, or the plan for --budget), ready."""
    import torch

    from zimage.config import Settings

    if a.budget and _cuda(a):
        torch.cuda.set_per_process_memory_fraction(a.budget * 2**30 / torch.cuda.get_device_properties(0).total_memory)
    settings = Settings(**model_settings(a.folder), outputs_dir="/tmp/gpu35-out", cache_dir="/tmp/gpu35-cache",
                        idle_unload_s=0, idle_drop_s=0, compile=a.compile, device=a.device,
                        vram_budget=str(a.budget) if a.budget else "auto", low_vram=bool(a.budget), **extra)
    manager = app_manager(settings)
    manager.ensure_ready(900)
    return manager


def steps(a) -> dict:
    from zimage.request import GenerationRequest

    manager = _manager(a)
    times: dict[int, list[float]] = {8: [], 9: []}
    for n in (8, 9):                                  # one untimed image each first
        manager.generate(GenerationRequest(prompt="warm-up", seed=0, width=a.size, height=a.size,
                                           num_inference_steps=n), timeout=900)
    for r in range(a.rounds):
        for n in ((8, 9) if r % 2 == 0 else (9, 8)):
            res = manager.generate(GenerationRequest(prompt=prompt_for(1 + r * 2 + n), seed=r, width=a.size,
                                                     height=a.size, num_inference_steps=n), timeout=900)
            times[n].append(round(res.seconds, 3))
    best = {n: min(t) for n, t in times.items()}
    return {"item": 4, "case": "turbo_8_vs_9_steps", "size": a.size, "plan": manager.status().plan,
            "times_8": times[8], "times_9": times[9], "s_per_image_8": best[8], "s_per_image_9": best[9],
            "ratio_9_vs_8": round(best[9] / best[8], 3)}


def enhance(a) -> dict:
    import torch

    from zimage.engine.enhance import REPETITION_PENALTY, TEMPERATURE, TOP_P, causal_lm
    from zimage.enhance_request import DEFAULT_SYSTEM_PROMPT, EnhanceRequest

    manager = _manager(a)
    pipe = manager._pipe
    out: dict = {"item": 5, "case": "enhance", "budget_gb": a.budget, "plan": manager.status().plan,
                 "tokens_asked": a.tokens}
    te = pipe.text_encoder
    out["text_encoder_gb"] = _gib(sum(p.numel() * p.element_size() for p in te.parameters()))
    lm = causal_lm(te)
    out["head_is_embedding"] = lm.lm_head.weight.data_ptr() == te.embed_tokens.weight.data_ptr()
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": PROMPT}]
    text = pipe.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                              enable_thinking=False)
    inputs = pipe.tokenizer(text, return_tensors="pt").to(pipe._execution_device)
    out["prompt_tokens"] = int(inputs["input_ids"].shape[1])

    def rewrite(n: int) -> tuple[float, int]:
        """The rewrite's generate as enhance_local runs it, exactly n new tokens."""
        if _cuda(a):
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            torch.manual_seed(1)
            made = lm.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=True, temperature=TEMPERATURE,
                               top_p=TOP_P, repetition_penalty=REPETITION_PENALTY,
                               pad_token_id=pipe.tokenizer.pad_token_id or pipe.tokenizer.eos_token_id)
        if _cuda(a):
            torch.cuda.synchronize()
        return time.perf_counter() - t, int(made.shape[1] - inputs["input_ids"].shape[1])

    rewrite(8)                                             # warm-up: kernels, the allocator
    if _cuda(a):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    seconds, made = rewrite(a.tokens)
    out.update(rewrite_s=round(seconds, 3), tokens_made=made, tokens_per_s=round(made / seconds, 2))
    if _cuda(a):
        out["model_vram_gb"] = _gib(before)
        out["peak_added_vram_gb"] = _gib(torch.cuda.max_memory_allocated() - before)
        out["after_added_vram_gb"] = _gib(torch.cuda.memory_allocated() - before)
        out["second_copy_of_weights"] = (torch.cuda.max_memory_allocated() - before) > 0.5 * sum(
            p.numel() * p.element_size() for p in te.parameters() if p.device.type == "cuda")
    del lm
    job = manager.enhance_prompt(EnhanceRequest(prompt=PROMPT, max_new_tokens=a.tokens, seed=1))
    t = time.perf_counter()
    try:
        r = job.future.result(900)
        out.update(app_job_s=round(r.seconds, 3), app_job_tokens=r.tokens)
    except Exception as e:          # random weights: the answer may decode to nothing
        out.update(app_job_s=round(time.perf_counter() - t, 3), app_job_error=f"{e.__class__.__name__}: {e}"[:300])
    return out


def hires(a) -> dict:
    import torch

    from zimage.hires_request import parse_hires
    from zimage.request import GenerationRequest
    from zimage.store import upscalers
    from zimage.testing.tiny_upscaler import FULL_NAME, make_full_upscaler
    from zimage.web.hires_fields import upscale_request

    make_full_upscaler(a.upscalers)
    manager = _manager(a, upscaler_dir=a.upscalers)
    paths = upscalers.usable_paths(Path(a.upscalers))
    out: dict = {"item": 7, "case": "hires", "budget_gb": a.budget, "plan": manager.status().plan, "size": a.size,
                 "upscaler": FULL_NAME}

    def run(req, key: str = ""):
        """The request through the manager: its wall time (PNG saved), the job's own seconds and the
        process's peak VRAM under `key`; the picture."""
        if _cuda(a):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        r = manager.generate(req, timeout=900)
        if key:
            out[f"{key}_s"] = round(time.perf_counter() - t, 3)
            out[f"{key}_job_s"] = round(r.seconds, 3)
            out[f"{key}_peak_vram_gb"] = _gib(torch.cuda.max_memory_allocated()) if _cuda(a) else None
            out[f"{key}_size"] = list(r.images[0].image.size)
        return r.images[0]

    def spec(size: int, **more):
        return parse_hires({"scale": 2, "upscaler": FULL_NAME, **more}, size, size, paths)

    half = max(256, a.size // 2 // 16 * 16)              # warm-up: the same path at half the size
    run(GenerationRequest(prompt="warm-up", seed=0, width=half, height=half, hires=spec(half)))
    first = run(GenerationRequest(prompt=PROMPT, seed=1, width=a.size, height=a.size), "first_pass")
    run(GenerationRequest(prompt=prompt_for(2), seed=2, width=a.size, height=a.size, hires=spec(a.size)), "hires")
    # the page's Upscale action on that picture: its prompt, seed and steps from its own parameters
    run(upscale_request(first.image, {"scale": 2, "upscaler": FULL_NAME, "strength": REFINE}, manager.settings,
                        infotext=first.infotext), "upscale_refine")
    out["hires_strength"], out["upscale_strength"] = spec(a.size).strength, REFINE
    return out


def main() -> None:
    a = _args(sys.argv[1:])
    if a.mode == "files":
        files(a)
    else:
        print(json.dumps({"steps": steps, "enhance": enhance, "hires": hires}[a.mode](a)), flush=True)
    os._exit(0)                 # no teardown of the weights: not part of any figure


if __name__ == "__main__":
    main()
