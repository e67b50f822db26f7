"""Compiled transformer blocks built beside a serving pipeline, then swapped in between requests.

A compile took the load 22 s (empty inductor cache) or ~7 s (warm) on the H100 before the model
was ready, and a request waited for it. Here the model is ready eagerly as soon as its weights are
in place; a thread of its own builds a twin of the transformer (new module objects over the same
weight tensors: no VRAM is copied), compiles the twin's repeated blocks and runs the warm-up images
through a twin pipeline (its own scheduler, the text encoder and VAE shared: inference only reads
them), while the worker keeps serving with the eager blocks. When it is done, the manager's worker
puts the twin in as `pipe.transformer` between two requests (`swap_into`), with the VAE decoder's
forward compiled over the same weights (accel.compiled_extras).

The compile's products outlive the process twice over: inductor's cache folder (accel.compile_blocks)
and PyTorch's cache artifacts (torch.compiler.save_cache_artifacts: the FX graph, AOTAutograd and
autotune entries in one blob), kept beside it under a key of torch, Triton and the GPU, loaded
before the next start's compile so that it is fast from the first warm-up image on.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import threading
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

ARTIFACTS_NAME = "cache-artifacts-{key}.bin"


def twin_module(module):
    """A copy of `module` and its submodules that shares every tensor (parameters, buffers and
    plain tensor attributes, e.g. fp8 scales): its compile state and processors are its own."""
    twin = copy.copy(module)
    for name in ("_parameters", "_buffers", "_non_persistent_buffers_set", "_forward_hooks",
                 "_forward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks"):
        if name in module.__dict__:
            twin.__dict__[name] = copy.copy(module.__dict__[name])
    twin.__dict__["_modules"] = {k: (twin_module(v) if v is not None else None) for k, v in module._modules.items()}
    for name, value in module.__dict__.items():     # attention processors are objects with their own state
        if name == "processor":
            twin.__dict__[name] = copy.copy(value)
    return twin


def twin_pipeline(pipe, transformer):
    """The same pipeline with `transformer` and a scheduler of its own (it keeps step state)."""
    twin = copy.copy(pipe)
    twin.__dict__["transformer"] = transformer
    twin.__dict__["scheduler"] = copy.deepcopy(pipe.scheduler)
    return twin


def artifact_key(torch_version: str, triton_version: str | None, device_name: str,
                 capability: tuple[int, int] | None) -> str:
    """Cache artifacts are only valid for the torch, Triton and GPU that made them."""
    text = f"torch={torch_version};triton={triton_version};gpu={device_name};cc={capability}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def artifact_path(cache_dir: Path, device: str | None) -> Path:
    import importlib.util

    import torch

    triton = None
    if importlib.util.find_spec("triton") is not None:
        import triton as _triton

        triton = _triton.__version__
    on_cuda = device is not None and device.startswith("cuda") and torch.cuda.is_available()
    name = torch.cuda.get_device_name(device) if on_cuda else "cpu"
    capability = torch.cuda.get_device_capability(device) if on_cuda else None
    return Path(cache_dir) / ARTIFACTS_NAME.format(key=artifact_key(torch.__version__, triton, name, capability))


def load_artifacts(path: Path) -> bool:
    """Hand a previous start's compile products to PyTorch; False when there are none (or broken)."""
    if not path.is_file():
        return False
    import torch

    try:
        torch.compiler.load_cache_artifacts(path.read_bytes())
        return True
    except Exception as e:      # a torch that cannot read them recompiles; the file is replaced after
        log.warning("compile cache artifacts %s unusable (%s): compiling afresh", path.name, e)
        return False


def save_artifacts(path: Path) -> int:
    import torch

    saved = torch.compiler.save_cache_artifacts()
    if not saved:
        return 0
    blob = saved[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return len(blob)


class BackgroundCompile:
    """One compile of `pipe`'s blocks on its own thread. `compile_twin(transformer)` compiles a twin
    in place (accel.compile_transformer), `warm(pipeline)` runs the warm-up images on the twin
    pipeline, `on_done(self)` is called from the thread when it has finished or failed."""

    def __init__(self, pipe, compile_twin: Callable, warm: Callable, on_done: Callable[["BackgroundCompile"], None],
                 artifacts: Path | None = None, compile_extras: Callable | None = None):
        """`compile_extras(pipe)`: [(module, its compiled and warmed forward)] (accel.compiled_extras:
        the VAE decoder), made after the blocks and put in with them."""
        self.pipe = pipe
        self._compile_twin, self._warm, self._on_done = compile_twin, warm, on_done
        self._compile_extras = compile_extras
        self.artifacts = artifacts
        self.transformer = None           # the compiled twin, once built and warmed
        self.extras: list = []            # (module, compiled forward), once built and warmed
        self.error: BaseException | None = None
        self.loaded_artifacts = False
        self.cancelled = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zimage-compile", daemon=True)

    def start(self) -> "BackgroundCompile":
        self._thread.start()
        return self

    def cancel(self) -> None:
        """The pipeline moved (low-VRAM plan, unload): the twin would be of no use."""
        self.cancelled.set()

    def _run(self) -> None:
        try:
            if self.artifacts is not None:
                self.loaded_artifacts = load_artifacts(self.artifacts)
            twin = twin_module(self.pipe.transformer)
            self._compile_twin(twin)
            self._warm(twin_pipeline(self.pipe, twin))
            if self._compile_extras is not None and not self.cancelled.is_set():
                self.extras = self._compile_extras(self.pipe)
            if self.artifacts is not None and not self.cancelled.is_set():
                log.info("compile cache artifacts: %d bytes saved", save_artifacts(self.artifacts))
            self.transformer = twin
        except BaseException as e:      # the eager blocks keep serving; the manager says why
            if not self.cancelled.is_set():
                log.exception("background compile failed")
            self.error = e
        finally:
            self.done.set()
            self._on_done(self)

    def swap_into(self, pipe) -> bool:
        """On the worker, between requests: the compiled twin becomes the pipeline's transformer.
        False when there is nothing to swap (failed, cancelled, or another pipeline now)."""
        if self.transformer is None or self.cancelled.is_set() or pipe is not self.pipe:
            return False
        pipe.transformer = self.transformer
        from .accel import use_forward

        for module, forward in self.extras:
            use_forward(module, forward)
        return True
