"""The app's side of bench/gpu35_bench.py (issue 35) in a fresh process; prints JSON lines.

    python -m bench.gpu35_probe files DIR OUT --formats bf16,fp8,Q8_0,Q4_K [--max-s 240] [--device cuda:0]
    python -m bench.gpu35_probe session DIR --tasks images,steps,base,enhance,variety,hires [--budget GB]
        [--size 1024] [--steps 8] [--images 2] [--base-steps 50] [--tokens 200] [--compile off]
        [--upscalers UPDIR] [--device cuda:0]

files: DIR's DiT written as ComfyUI single files (zimage/testing/single_files.py) under OUT, converted and
  quantized on the device; one line per format: its path, bytes and seconds, or why it was skipped (a file
  already whole is kept; not enough free disk; --max-s spent).
session: the app's manager on DIR, resident or under the low-VRAM plan for --budget GB (enforced with
  set_per_process_memory_fraction), loaded once; then the tasks in order, one JSON line each (a task that
  fails says so in its line, and the next one runs). The first line is the load: on_device_s (process start
  to the weights on the device) and the plan. Tasks, each with its item of the issue:
  images (1, or 3 under a budget): the seed-0 image saved for the quality figures (resident only), then
    --images timed images at --steps: s/image, peak VRAM.
  steps (4): Turbo at 8 and at 9 steps (the old default), alternated.
  base (2): one image at --base-steps with the base model's defaults for guidance and negative prompt
    (model_defaults.BASE: two passes a step).
  enhance (5): the prompt enhancer on the loaded text encoder (engine/enhance.py): a rewrite of exactly
    --tokens new tokens (the app's sampling, min_new_tokens so that random weights cannot end it early):
    seconds, tokens/s, VRAM added over the loaded model and whether the LM head is the embedding's own
    tensor; then the app's own job (manager.enhance_prompt), whose answer on random weights may be empty
    (the random checkpoint's tokenizer knows 400 of the model's 151936 ids).
  variety (6): the spread between 4 seeds' images at varieties 0 (off), 0.1, 0.3, 0.5, 1 (variety_bench),
    after setting norm scales that are all zeros to ones (the random checkpoint's caption norm: see the task).
  hires (7): a first pass at --size, the hires fix to 2x (upscaler, then refine: engine/hires.py) and the
    Upscale action x2 with refine on that picture (web/hires_fields.upscale_request, its own parameters);
    seconds and peak VRAM each. The upscaler: a random Real-ESRGAN x2plus-sized RRDBNet.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench.probe_common import PROMPT, app_manager, base_request, measure, model_settings, prompt_for

REFINE = 0.3            # the Upscale action's refine strength here: hires' default (hires_request.DEFAULT_STRENGTH)
VARIETIES = (0.0, 0.1, 0.3, 0.5, 1.0)
TASKS = ("images", "steps", "base", "enhance", "variety", "hires")


def _args(argv: list[str]):
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("files", "session"))
    p.add_argument("folder")
    p.add_argument("out", nargs="?", default="")
    p.add_argument("--formats", default="bf16,fp8,Q8_0,Q4_K")
    p.add_argument("--max-s", type=float, default=240)
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--base-steps", type=int, default=50)
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
        line = {"item": 1, "format": fmt, "path": str(path)}
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


class Session:
    """The app's manager, loaded once; each task a method returning its line."""

    def __init__(self, a):
        import torch

        from zimage import startup
        from zimage.config import Settings
        from zimage.testing.tiny_upscaler import make_full_upscaler

        self.a = a
        if "hires" in a.tasks:
            make_full_upscaler(a.upscalers)
        if a.budget and _cuda(a):
            fraction = a.budget * 2**30 / torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(fraction)
        settings = Settings(**model_settings(a.folder), outputs_dir="/tmp/gpu35-out", cache_dir="/tmp/gpu35-cache",
                            idle_unload_s=0, idle_drop_s=0, compile=a.compile, device=a.device,
                            vram_budget=str(a.budget) if a.budget else "auto", low_vram=bool(a.budget),
                            upscaler_dir=a.upscalers)
        t0 = time.perf_counter()
        self.manager = app_manager(settings)
        self.manager.ensure_ready(900)
        events = startup.timeline_dict()
        self.load = {"task": "load", "item": 0, "budget_gb": a.budget, "plan": self.manager.status().plan,
                     "ready_s": round(time.perf_counter() - t0, 2), "on_device_s": events.get(startup.ON_DEVICE),
                     "compile": a.compile}

    def request(self, seed: int, prompt: str | None = None, **more):
        from zimage.request import GenerationRequest

        fields = {"width": self.a.size, "height": self.a.size, "num_inference_steps": self.a.steps, **more}
        return GenerationRequest(prompt=prompt or prompt_for(seed), seed=seed, **fields)

    def images(self) -> dict:
        a = self.a
        out: dict = {"item": 3 if a.budget else 1, "size": a.size, "steps": a.steps}

        def one(seed: int, prompt: str | None = None):
            r = self.manager.generate(self.request(seed, prompt), timeout=900)
            return r.seconds, r.images[0].image
        name = "g35_bf16_plan" if a.budget else "g35_folder_ours"
        measure(out, name, self.manager._pipe, one, a.images, a.device, reference=not a.budget)
        return out

    def steps(self) -> dict:
        times: dict[int, list[float]] = {8: [], 9: []}
        for n in (8, 9):                                  # one untimed image each first
            self.manager.generate(self.request(0, "warm-up", num_inference_steps=n), timeout=900)
        for r in range(2):
            for n in ((8, 9) if r % 2 == 0 else (9, 8)):
                res = self.manager.generate(self.request(1 + r * 2 + n, num_inference_steps=n), timeout=900)
                times[n].append(round(res.seconds, 3))
        best = {n: min(t) for n, t in times.items()}
        return {"item": 4, "size": self.a.size, "times_8": times[8], "times_9": times[9], "s_per_image_8": best[8],
                "s_per_image_9": best[9], "ratio_9_vs_8": round(best[9] / best[8], 3)}

    def base(self) -> dict:
        from zimage.model_defaults import BASE

        out: dict = {"item": 2, "steps": self.a.base_steps, "guidance": BASE.guidance_scale, "size": self.a.size}
        self._reset()
        r = self.manager.generate(base_request(self.request(1, num_inference_steps=self.a.base_steps)), timeout=900)
        out.update(s_per_image=round(r.seconds, 3), peak_vram_gb=self._peak())
        return out

    def enhance(self) -> dict:
        import torch

        from zimage.engine.enhance import REPETITION_PENALTY, TEMPERATURE, TOP_P, causal_lm
        from zimage.enhance_request import DEFAULT_SYSTEM_PROMPT, EnhanceRequest

        a, pipe = self.a, self.manager._pipe
        te = pipe.text_encoder
        te_bytes = sum(p.numel() * p.element_size() for p in te.parameters())
        lm = causal_lm(te)
        out: dict = {"item": 5, "tokens_asked": a.tokens, "text_encoder_gb": _gib(te_bytes),
                     "head_is_embedding": lm.lm_head.weight.data_ptr() == te.embed_tokens.weight.data_ptr()}
        messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": PROMPT}]
        text = pipe.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=False)
        inputs = pipe.tokenizer(text, return_tensors="pt").to(pipe._execution_device)
        out["prompt_tokens"] = int(inputs["input_ids"].shape[1])

        def rewrite(n: int) -> tuple[float, int]:
            """The rewrite's generate as enhance_local runs it, exactly n new tokens."""
            self._sync()
            t = time.perf_counter()
            with torch.inference_mode():
                torch.manual_seed(1)
                made = lm.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=True,
                                   temperature=TEMPERATURE, top_p=TOP_P, repetition_penalty=REPETITION_PENALTY,
                                   pad_token_id=pipe.tokenizer.pad_token_id or pipe.tokenizer.eos_token_id)
            self._sync()
            return time.perf_counter() - t, int(made.shape[1] - inputs["input_ids"].shape[1])

        rewrite(8)                                             # warm-up: kernels, the allocator
        self._reset()
        before = torch.cuda.memory_allocated() if _cuda(a) else 0
        seconds, made = rewrite(a.tokens)
        out.update(rewrite_s=round(seconds, 3), tokens_made=made, tokens_per_s=round(made / seconds, 2))
        if _cuda(a):
            added = torch.cuda.max_memory_allocated() - before
            out.update(model_vram_gb=_gib(before), peak_added_vram_gb=_gib(added),
                       after_added_vram_gb=_gib(torch.cuda.memory_allocated() - before),
                       second_copy_of_weights=added > 0.5 * te_bytes)
        del lm
        job = self.manager.enhance_prompt(EnhanceRequest(prompt=PROMPT, max_new_tokens=a.tokens, seed=1))
        t = time.perf_counter()
        try:
            r = job.future.result(900)
            out.update(app_job_s=round(r.seconds, 3), app_job_tokens=r.tokens)
        except Exception as e:          # random weights: the answer may decode to nothing
            out.update(app_job_s=round(time.perf_counter() - t, 3), app_job_error=f"{e.__class__.__name__}: {e}"[:300])
        return out

    def variety(self) -> list[dict]:
        """Norm layers whose scale is all zeros are set to ones first: ../shared/anchors/make_random_zimage.py
        fills 1-D weights named "norm" with ones and other 1-D weights with zeros, and the caption
        embedder's RMSNorm (cap_embedder.0) is not named so: every prompt then embeds to the same
        tokens, and noise on the prompt's embeddings (variety) changes nothing. Named in the lines."""
        import torch

        from bench.variety_bench import spread_lines

        pipe, fixed = self.manager._pipe, []
        with torch.no_grad():
            for name, module in pipe.transformer.named_modules():
                weight = getattr(module, "weight", None)
                if "Norm" in type(module).__name__ and weight is not None and weight.ndim == 1 and not weight.any():
                    weight.fill_(1)
                    fixed.append(name)
        return [{"item": 6, **line, "zero_norms_set_to_one": fixed}
                for line in spread_lines(pipe, self.a.size, self.a.steps, 4, list(VARIETIES))]

    def hires(self) -> dict:
        from zimage.hires_request import parse_hires
        from zimage.store import upscalers
        from zimage.testing.tiny_upscaler import FULL_NAME
        from zimage.web.hires_fields import upscale_request

        a = self.a
        paths = upscalers.usable_paths(Path(a.upscalers))
        out: dict = {"item": 7, "size": a.size, "upscaler": FULL_NAME, "strength": REFINE}

        def run(req, key: str = ""):
            """The request through the manager: its wall time (PNG saved), the job's own seconds and the
            process's peak VRAM under `key`; the picture."""
            self._reset()
            t = time.perf_counter()
            r = self.manager.generate(req, timeout=900)
            if key:
                out.update({f"{key}_s": round(time.perf_counter() - t, 3), f"{key}_job_s": round(r.seconds, 3),
                            f"{key}_peak_vram_gb": self._peak(), f"{key}_size": list(r.images[0].image.size)})
            return r.images[0]

        def spec(size: int):
            return parse_hires({"scale": 2, "upscaler": FULL_NAME, "strength": REFINE}, size, size, paths)

        half = max(256, a.size // 2 // 16 * 16)              # warm-up: the same path at half the size
        run(self.request(0, "warm-up", width=half, height=half, hires=spec(half)))
        first = run(self.request(1, PROMPT), "first_pass")
        run(self.request(2, hires=spec(a.size)), "hires")
        # the page's Upscale action on that picture: its prompt, seed and steps from its own parameters
        run(upscale_request(first.image, {"scale": 2, "upscaler": FULL_NAME, "strength": REFINE},
                            self.manager.settings, infotext=first.infotext), "upscale_refine")
        return out

    def _sync(self) -> None:
        import torch

        if _cuda(self.a):
            torch.cuda.synchronize()

    def _reset(self) -> None:
        import torch

        if _cuda(self.a):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def _peak(self) -> float | None:
        import torch

        return _gib(torch.cuda.max_memory_allocated()) if _cuda(self.a) else None


def session(a) -> None:
    s = Session(a)
    print(json.dumps(s.load), flush=True)
    items = {"images": 3 if a.budget else 1, "steps": 4, "base": 2, "enhance": 5, "variety": 6, "hires": 7}
    for task in a.tasks:
        started = time.perf_counter()
        try:
            lines = getattr(s, task)()
        except Exception as e:          # the next task still runs
            lines = {"item": items[task], "error": f"{e.__class__.__name__}: {e}"[:1000]}
        for line in lines if isinstance(lines, list) else [lines]:
            print(json.dumps({"task": task, **line, "task_s": round(time.perf_counter() - started, 2),
                              "budget_gb": a.budget}), flush=True)


def main() -> None:
    a = _args(sys.argv[1:])
    a.tasks = [t for t in a.tasks.split(",") if t]
    if set(a.tasks) - set(TASKS):
        raise SystemExit(f"--tasks: {', '.join(TASKS)}")
    files(a) if a.mode == "files" else session(a)
    os._exit(0)                 # no teardown of the weights: not part of any figure


if __name__ == "__main__":
    main()
