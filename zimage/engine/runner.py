"""One pipeline call for a generation and its riders: the progress each job shows (phase, step,
images), the measured decode and save figures its ETA uses, and the saving of its images on the
saver thread.

The manager decides when to call (loaded, on the right plan) and what to do after an
out-of-memory; `call` only reports one (None) after the exception is gone.
"""
from __future__ import annotations

from pathlib import Path

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable

from ..errors import Cancelled, GenerationFailed, ZImageError
from ..jobs import Job
from ..request import GenerationResult
from ..store.outputs import OutputStore, save_result
from .generate import run_per_image
from .vram import is_oom

log = logging.getLogger(__name__)


class _CountingStore:
    """The output store, counting a job's saved images into `job.images_done` ("image 2 of 4")."""

    def __init__(self, store: OutputStore, job: Job):
        self._store, self._job = store, job

    def save(self, *args, **kwargs):
        path = self._store.save(*args, **kwargs)
        self._job.images_done += 1
        return path

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def stopped_note(kept: int, asked: int) -> str:
    """The warning of a result that a Stop cut short: the images finished before it are kept."""
    return f"Stopped after {kept} of {asked} images; the finished ones were kept."


@dataclass
class ModelIdentity:
    """What a PNG names: the model's name, its file or folder, and its hash once read (on the saver
    thread). A switch makes a new one, so images made before it keep the model they were made on."""
    name: str
    path: Path
    sha256: str = ""


class GenerationRunner:
    """Owned by the manager. Its two figures are written by the worker (decode) and the saver
    thread (save) alone and only copied into a job when it starts: a float's assignment is atomic,
    so they take no lock."""

    def __init__(self, store: OutputStore, model_label: str, model: tuple[str, str] | None = None):
        self._store = store
        self._model_label = model_label
        self._model: ModelIdentity | None = None       # the model the PNGs name
        if model is not None:
            self.identify(*model)
        self.decode_s_per_image: float | None = None  # last measured VAE decode and PNG save, for Job.eta_s
        self.save_s_per_image: float | None = None
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zimage-save")   # PNG files, in order

    def identify(self, model: str, cache_dir: str, name: str = "") -> None:
        """The PNGs name this model (--model's value), as the model list does, with its hash."""
        from ..store.model_list import name_and_path

        listed, path = name_and_path(model, cache_dir)
        self._model = ModelIdentity(name or listed, path)

    def model_identity(self, model: ModelIdentity | None) -> tuple[str, str]:
        """(the PNG's Model, its Model hash or "") of `model`, the one an image was made on: a big
        file's hash once its background hashing ends."""
        if model is None:
            return self._model_label, ""
        if not model.sha256 and model.path.exists():
            from ..store.model_hash import sha256_listing, short

            model.sha256 = short(sha256_listing(model.path, self._store.root / ".index"))
        return model.name, model.sha256

    def close(self) -> None:
        self._saver.shutdown(wait=True)           # images already made are written before we return

    def start(self, members: list[Job]) -> None:
        """The members' image counts and the figures their ETAs start from."""
        for member in members:
            member.images_total, member.images_done = member.request.num_images, 0
            member.decode_s_per_image, member.save_s_per_image = self.decode_s_per_image, self.save_s_per_image

    def call(self, pipe, members: list[Job], embeds: Callable[..., Any]) -> tuple[list | None, float]:
        """Run the members' requests, one pipeline call per image (generate.run_per_image): each
        member's images (a stopped member's: those finished before its Stop) and the seconds it
        took. (None, 0) after an out-of-memory (the exception, and the step's tensors its
        traceback holds, already dropped)."""
        started = {}                  # phase -> when it began in this call (perf_counter)
        in_pass: list[Job] = []       # the members of the call running now

        def on_pass(k: int, indexes: list[int]) -> None:
            in_pass[:] = [members[i] for i in indexes]
            for member in in_pass:
                member.images_done, member.step = k, 0    # k finished; "image k+1 of n" is being made

        def on_phase(name: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if done == 0:
                started[name] = now
            if name == "decoding" and done == total and total and name in started:
                self.decode_s_per_image = (now - started[name]) / total
            for member in in_pass:
                member.phase = name

        def on_step(step: int, total: int, latents=None) -> None:
            elapsed = time.perf_counter() - started.get("generating", time.perf_counter())
            for member in in_pass:
                member.step, member.total_steps = step, total
                member.step_seconds = elapsed / step if step else 0.0
            if latents is not None and in_pass:
                in_pass[0].latest_latent = latents[0].detach().to("cpu", copy=True)   # for live previews

        def stopped(i: int) -> bool:
            return members[i].cancelled

        try:
            began = time.perf_counter()
            batches = run_per_image(pipe, [m.request for m in members], stopped, on_step, embeds,
                                    on_phase=on_phase, on_pass=on_pass)
            if any(m.request.hires for m in members):      # riders share it (batch_key)
                batches = self._hires(pipe, members, batches, on_step, embeds, on_phase, in_pass)
            return batches, time.perf_counter() - began
        except ZImageError:
            raise                     # Cancelled, and the other typed errors, as they are
        except Exception as e:
            if not is_oom(e):
                log.exception("generation failed")
                raise GenerationFailed(
                    f"The generation failed: {e.__class__.__name__}: {str(e)[:300]}",
                    "Try again; if it fails again, the server log has the details (try Unload, then Preload).") from e
        return None, 0.0

    @staticmethod
    def _hires(pipe, members: list[Job], batches: list, on_step, embeds, on_phase, in_pass: list) -> list:
        """Each member's pictures upscaled and refined (engine/hires.py); a member stopped before
        its first was done keeps none (runner.save answers Cancelled)."""
        from .hires import apply

        out = []
        for member, images in zip(members, batches):
            in_pass[:] = [member]
            try:
                out.append(apply(pipe, member.request, images, lambda m=member: m.cancelled, on_step, embeds, on_phase)
                           if images else images)
            except Cancelled:
                out.append([])
        return out

    def save(self, members: list[Job], batches: list, seconds: float, warning: str,
             peak: int | None, lora_hashes: dict[str, str] | None = None) -> list[Future | BaseException]:
        """Each member's outcome: a Future of its result (a stopped member's: the images finished
        before its Stop, with a warning saying so), or Cancelled for a member stopped before its
        first image was finished. Saved on the saver thread: PNG encoding (about 0.2 s an image) never
        holds up the next generation. Each member's Future resolves once its files are written."""
        total = sum(len(images) for images in batches)
        shared = total if len(members) > 1 else 0
        outcomes = []
        for m, images in zip(members, batches):
            if not images:                # stopped before its first image was finished
                outcomes.append(Cancelled())
                continue
            note = warning
            if len(images) < m.request.num_images:
                note = "\n".join(filter(None, [warning, stopped_note(len(images), m.request.num_images)]))
            m.phase, m.images_done = "saving", 0
            # the model is taken now, on the worker: a switch queued behind this job may run before the save
            outcomes.append(self._saver.submit(self._save, m, images, seconds, shared, note, peak,
                                                lora_hashes, self._model))
        return outcomes

    def _save(self, job: Job, images: list, seconds: float, shared: int, warning: str,
              peak: int | None, lora_hashes: dict[str, str] | None, model: ModelIdentity | None) -> GenerationResult:
        try:
            started = time.perf_counter()
            label, model_hash = self.model_identity(model)
            result = save_result(job.request, images, seconds, _CountingStore(self._store, job),
                                 label, batch_images=shared, lora_hashes=lora_hashes, model_hash=model_hash)
            if images:
                self.save_s_per_image = (time.perf_counter() - started) / len(images)
            return replace(result, warning="\n".join(filter(None, [warning, result.warning])), peak_vram_bytes=peak)
        finally:
            job.phase = "done"
