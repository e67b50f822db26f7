"""The model worker's side of the compiled blocks package (aot_compile): when to use it, its key,
the compile process, and the swap of each block's forward between two images.

The manager (manager_compile) uses a `PackageCompile` where it would use compile_bg's
`BackgroundCompile` (the same face: start, cancel, swap_into), for a resident pipeline whose blocks
are plain (`unpackable` says why not otherwise). With a package for this key on the disk, the swap
follows at once; else a compile process builds it (another pid, lowest CPU priority) while the
eager blocks serve, and the swap is queued when it ends. Kept on today's in-thread compile:
- low-VRAM plans (their streaming hooks around each block's forward; manager_compile's plan compile),
- fp8 or int8 blocks and GGUF layers with LoRA side paths (not plain Linears: `unpackable`),
- the VAE decoder, which this path leaves eager: compiled (in-thread, accel.compiled_extras) it
  saved ~50 ms an image at 1024² on the H200, but compiling it here would take the GIL again,
- any compile process that fails (manager_compile falls back to the in-thread compile, logged).
A package that cannot be loaded is removed (the next launch compiles it afresh) and the blocks stay
eager (startup COMPILE_FAILED, the log says why).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ..config import PROJECT_ROOT
from .aot_compile import CODE_VERSION, KINDS, MANIFEST

log = logging.getLogger(__name__)

AOT_DIR = "aot"                  # under the compile cache folder (speed.compile_cache_dir)
LOG_TAIL_CHARS = 3000            # of the compile process's log, in the warning when it fails


def kind_of(block) -> str:
    return "mod" if block.modulation else "plain"


def weight_slots(block) -> list[tuple[str, dict, str]]:
    """(full name, the dict holding the tensor, its key there) for each parameter and buffer, in
    named_parameters' order: the tensor is looked up at each call, so a replaced or moved one is
    the one passed."""
    slots = []
    for full, _ in [*block.named_parameters(), *block.named_buffers()]:
        prefix, _, name = full.rpartition(".")
        module = block.get_submodule(prefix)
        slots.append((full, module._parameters if name in module._parameters else module._buffers, name))
    return slots


def signature(block) -> list[list]:
    """[[name, shape, dtype], ...] of the block's weights, as the package was compiled for them."""
    return [[full, list(store[name].shape), str(store[name].dtype).removeprefix("torch.")]
            for full, store, name in weight_slots(block)]


def unpackable(transformer) -> str | None:
    """Why these blocks cannot run from a package (None when they can): each is diffusers' plain
    block, its layers plain Linears and RMSNorms with float weights, no hooks inside it (LoRA side
    paths are hooks), one dtype and device for all."""
    import torch
    from diffusers.models.transformers.transformer_z_image import ZImageTransformerBlock, ZSingleStreamAttnProcessor

    from .anatomy import transformer_blocks

    blocks = transformer_blocks(transformer)
    if not blocks:
        return "no blocks"
    for block in blocks:
        if type(block) is not ZImageTransformerBlock:
            return f"a block of another class ({type(block).__name__})"
        if not isinstance(block.attention.processor, ZSingleStreamAttnProcessor):
            return f"another attention processor ({type(block.attention.processor).__name__})"
        for name, module in block.named_modules():
            if "Linear" in type(module).__name__ and type(module) is not torch.nn.Linear:
                return f"{type(module).__name__} layers (fp8, int8 or GGUF)"
            if name and (module._forward_hooks or module._forward_pre_hooks):
                return "hooks inside the blocks (a LoRA side path or a plan's streaming)"
    tensors = [t for b in blocks for t in [*b.parameters(), *b.buffers()]]
    if any(not t.is_floating_point() for t in tensors):
        return "non-float weights"
    if len({(t.dtype, t.device) for t in tensors}) != 1:
        return "weights of several dtypes or devices"
    return None


def wanted(setting: str, transformer) -> bool:
    """Compile in a process of its own? `off` never; `auto` for blocks on a CUDA GPU; `on` on the
    CPU too (the tests); and only for blocks a package can run."""
    if setting == "off":
        return False
    from .anatomy import transformer_blocks

    blocks = transformer_blocks(transformer)
    if setting == "auto" and (not blocks or next(blocks[0].parameters()).device.type != "cuda"):
        return False
    why = unpackable(transformer)
    if why is not None:
        log.info("blocks compiled in the worker's thread, not in a process: %s", why)
    return why is None


def device_words(device) -> str:
    """What a package's code is only valid for: the GPU and its compute capability, or the CPU's ISA."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} cc{torch.cuda.get_device_capability(device)}"
    return f"cpu {torch.backends.cpu.get_cpu_capability()}"


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_spec(transformer, cache_dir: Path) -> dict:
    """What the compile process builds (and the key its folder is named by): torch, Triton, the
    device, the attention backend, our code version and each kind's weights (shapes and dtypes)."""
    import torch

    from .anatomy import transformer_blocks

    blocks = transformer_blocks(transformer)
    weight = next(blocks[0].parameters())
    kinds = {}
    for block in blocks:
        kinds.setdefault(kind_of(block), signature(block))
    config = {k: transformer.config[k] for k in ("dim", "n_heads", "n_kv_heads", "norm_eps", "qk_norm")}
    attention = blocks[0].attention.processor._attention_backend
    attention = None if attention is None else str(getattr(attention, "value", attention))
    spec = {"config": config, "kinds": kinds, "dtype": str(weight.dtype).removeprefix("torch."),
            "device": str(weight.device), "attention": attention}
    words = json.dumps([CODE_VERSION, torch.__version__, _version("triton"), device_words(weight.device), spec],
                       sort_keys=True)
    spec["key"] = hashlib.sha1(words.encode()).hexdigest()[:16]
    spec["folder"] = str(Path(cache_dir) / AOT_DIR / spec["key"])
    return spec


class PackagedForward:
    """A block's forward through its kind's package; the block's own (eager) forward for a call
    the package does not cover: an attention or noise mask, grad mode, another dtype or device,
    a batch or length out of range, or weights no longer of the compiled shapes."""

    def __init__(self, block, run: Callable, weights: list[list], manifest: dict):
        self.block, self._run = block, run
        self._slots = [(store, name) for _, store, name in weight_slots(block)]
        self._expected = [(tuple(shape), dtype) for _, shape, dtype in weights]
        self._modulated = block.modulation
        self._dtype, self._device = manifest["dtype"], manifest["device"]
        self._batch_max, self._seq_max = manifest["batch_max"], manifest["seq_max"]
        self._ptrs: list[int] | None = None
        self.packaged_calls = self.eager_calls = 0

    def _weights(self, device) -> list | None:
        """The block's tensors now, or None when they no longer fit the package (checked again only
        when one of them moved: a data pointer changes with every move, in place or not)."""
        tensors = [store[name] for store, name in self._slots]
        ptrs = [t.data_ptr() for t in tensors]
        if ptrs != self._ptrs:
            fits = all(tuple(t.shape) == shape and str(t.dtype).removeprefix("torch.") == dtype
                       and t.device == device and t.is_contiguous() for t, (shape, dtype) in zip(tensors, self._expected))
            if not fits:
                return None
            self._ptrs = ptrs
        return tensors

    def _covers(self, x, attn_mask, freqs_cis, adaln_input, noise_mask) -> bool:
        import torch

        return (attn_mask is None and noise_mask is None and not torch.is_grad_enabled()
                and (adaln_input is not None) == self._modulated and x.dim() == 3
                and (adaln_input is None or (adaln_input.dtype == x.dtype and adaln_input.shape[0] == x.shape[0]))
                and 1 <= x.shape[0] <= self._batch_max and 2 <= x.shape[1] <= self._seq_max
                and str(x.dtype).removeprefix("torch.") == self._dtype and str(x.device) == self._device
                and freqs_cis.dtype == torch.complex64 and freqs_cis.shape[:2] == x.shape[:2])

    def __call__(self, x, attn_mask, freqs_cis, adaln_input=None, noise_mask=None, adaln_noisy=None, adaln_clean=None):
        import torch

        weights = self._weights(x.device) if self._covers(x, attn_mask, freqs_cis, adaln_input, noise_mask) else None
        if weights is None:
            self.eager_calls += 1
            return type(self.block).forward(self.block, x, attn_mask, freqs_cis, adaln_input, noise_mask,
                                            adaln_noisy, adaln_clean)
        self.packaged_calls += 1
        inputs = [*weights, x.contiguous(), torch.view_as_real(freqs_cis).contiguous()]
        if self._modulated:
            inputs.append(adaln_input.contiguous())
        return self._run(inputs)[0]


def load_runners(folder: Path) -> tuple[dict, dict]:
    """(the manifest, {kind: its loaded package's run function}); raises on anything unreadable."""
    import torch

    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("code_version") != CODE_VERSION or set(manifest["kinds"]) - set(KINDS):
        raise ValueError(f"a package of another version ({manifest.get('code_version')})")
    index = torch.device(manifest["device"]).index
    index = -1 if index is None else index
    return manifest, {kind: _load(str(folder / entry["file"]), index) for kind, entry in manifest["kinds"].items()}


def _load(path: str, device_index: int) -> Callable:
    """A package's run function (flat tensors in, flat tensors out). Its loader directly: torch's
    aoti_load_package first compares the package's device facts with this machine's, for a warning
    (the key did that already), and finding the CPU's vector ISA compiled ten probe programs, 1.5-3 s
    on the 2-core test machine (the load itself took 10 ms)."""
    import torch

    try:
        loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, device_index)
    except TypeError:                # another torch's signature: its public path
        loader = torch._inductor.aoti_load_package(path, device_index=device_index).loader
    return loader.boxed_run


def swap_in(transformer, folder: Path) -> int:
    """Each block's forward through its kind's package; returns how many blocks. Raises (nothing
    swapped) when the package cannot be loaded, does not fit these blocks, or a kind's first block
    answers a check input otherwise than its eager forward (check_against_eager)."""
    from .anatomy import transformer_blocks

    manifest, runners = load_runners(folder)
    blocks = transformer_blocks(transformer)
    for block in blocks:
        kind = kind_of(block)
        if kind not in runners or signature(block) != manifest["kinds"][kind]["weights"]:
            raise ValueError(f"the package does not fit the {kind} blocks' weights")
    forwards = [PackagedForward(block, runners[kind_of(block)], manifest["kinds"][kind_of(block)]["weights"], manifest)
                for block in blocks]
    checked: set[str] = set()
    for block, forward in zip(blocks, forwards):
        if kind_of(block) not in checked:
            check_against_eager(block, forward)
            checked.add(kind_of(block))
    for block, forward in zip(blocks, forwards):
        block.forward = forward
    return len(blocks)


CHECK_TOKENS = 32               # the check input's length: a few milliseconds, any model size
CHECK_TOLERANCE = 0.05          # of the eager output's largest magnitude (bf16 fused kernels round once, not per op)


def check_against_eager(block, forward: "PackagedForward") -> None:
    """One small input through the package and through the block's eager forward: the package must
    run (a loader or kernel fault shows here, before any request) and agree."""
    import torch
    from diffusers.models.transformers.transformer_z_image import ADALN_EMBED_DIM

    weight = next(block.parameters())
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(1, CHECK_TOKENS, block.dim, generator=gen).to(weight.device, weight.dtype)
    angles = torch.rand(1, CHECK_TOKENS, block.head_dim // 2, generator=gen) * 6.28
    freqs = torch.polar(torch.ones_like(angles), angles).to(weight.device)
    adaln = (torch.randn(1, min(block.dim, ADALN_EMBED_DIM), generator=gen).to(weight.device, weight.dtype)
             if block.modulation else None)
    with torch.no_grad():
        before = forward.packaged_calls
        got = forward(x, None, freqs, adaln)
        if forward.packaged_calls == before:
            raise ValueError("the package does not cover the check input")
        want = type(block).forward(block, x, None, freqs, adaln)
    scale = want.float().abs().max().item()
    err = (got.float() - want.float()).abs().max().item()
    if not err <= CHECK_TOLERANCE * scale + 1e-3:
        raise ValueError(f"the package's output differs from the eager block's (max {err:.3g}, scale {scale:.3g})")
    forward.packaged_calls = 0


def packaged(transformer) -> list[PackagedForward]:
    from .anatomy import transformer_blocks

    return [b.forward for b in transformer_blocks(transformer) if isinstance(b.__dict__.get("forward"), PackagedForward)]


class PackageCompile:
    """The package for `pipe`'s blocks: from the disk, or built by a compile process; `on_done(self)`
    comes when it is there or the process failed (from the process's watcher thread, or at once)."""

    replaces_transformer = False      # the blocks stay the pipeline's own (compile_bg's twin replaces them)

    def __init__(self, pipe, cache_dir: Path, on_done: Callable[["PackageCompile"], None]):
        self.pipe, self._on_done = pipe, on_done
        self.spec = package_spec(pipe.transformer, cache_dir)
        self.folder = Path(self.spec["folder"])
        self.log_path = self.folder.with_name(self.folder.name + ".log")
        # Written before a swap (the load and its check run), removed after: found by a later worker, it
        # says the last one died loading or running it (a SIGSEGV in torch 2.11's CUDA package loader, H100,
        # 2026-12-06: every restarted worker loaded the package again and died again). Then `.crashed`
        # keeps this package key off, for this launch and the next: the in-thread compile serves instead.
        self.trying = self.folder.with_name(self.folder.name + ".trying")
        self.crashed = self.folder.with_name(self.folder.name + ".crashed")
        self.process: subprocess.Popen | None = None
        self.error: BaseException | None = None
        self.process_failed = False       # the compile process failed (not the load): the in-thread compile may go on
        self.loaded_artifacts = False     # compile_bg's word for "from the disk"; the manager logs it
        self.cancelled, self.done = threading.Event(), threading.Event()
        self.swap_s: float | None = None

    def start(self) -> "PackageCompile":
        if self.trying.exists():
            os.replace(self.trying, self.crashed)
            shutil.rmtree(self.folder, ignore_errors=True)
            log.warning("a model worker died while loading or checking the compiled blocks package %s: "
                        "it is removed and the blocks compile in the worker's thread (delete %s to try the "
                        "package again)", self.folder, self.crashed)
        if self.crashed.exists():
            self.process_failed = True
            self.error = RuntimeError(f"the compiled blocks package crashed a worker before ({self.crashed})")
            self._finish()
            return self
        if (self.folder / MANIFEST).is_file():
            self.loaded_artifacts = True
            self._finish()
            return self
        try:
            self.process = self._spawn()
        except OSError as e:             # no process (a full disk, a fork refused): the in-thread compile
            self.process_failed, self.error = True, e
            self._finish()
            return self
        log.info("compiling the blocks in process %d (log %s)", self.process.pid, self.log_path)
        threading.Thread(target=self._watch, name="zimage-compile-process", daemon=True).start()
        return self

    def _spawn(self) -> subprocess.Popen:
        """`python -m zimage.engine.aot_compile SPEC`, its output appended to the log beside the package."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])))
        env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.folder.parent.parent))    # as accel._use_cache_dir
        with open(self.log_path, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "zimage.engine.aot_compile", json.dumps(self.spec)],
                                    stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)     # one group with its inductor workers, to end together

    def _watch(self) -> None:
        code = self.process.wait()
        self.process.stdin.close()           # its end-with-the-worker pipe (aot_compile._end_with_parent)
        if code != 0 and not self.cancelled.is_set():
            self.process_failed = True
            self.error = RuntimeError(f"the compile process ended with status {code}: ...{self._log_tail()}")
        self._finish()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return ""

    def _finish(self) -> None:
        self.done.set()
        self._on_done(self)

    def cancel(self) -> None:
        """The pipeline moved or went (plan, unload): the process ends, with its inductor workers."""
        self.cancelled.set()
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def swap_into(self, pipe) -> bool:
        """On the worker, between two images: the blocks' forwards through the package. A package
        that cannot be loaded is removed (False, `error` says why); the blocks stay eager."""
        if self.error is not None or self.cancelled.is_set() or pipe is not self.pipe:
            return False
        started = time.perf_counter()
        try:
            self.trying.write_text(str(os.getpid()))
            count = swap_in(pipe.transformer, self.folder)      # a crash here leaves `trying` for the next worker
        except Exception as e:
            self.error = e
            log.warning("compiled blocks package %s unusable (%s): removed, the blocks stay eager", self.folder, e)
            shutil.rmtree(self.folder, ignore_errors=True)
            return False
        finally:
            self.trying.unlink(missing_ok=True)
        self.swap_s = time.perf_counter() - started
        log.info("compiled blocks package loaded and %d blocks swapped in %.2f s", count, self.swap_s)
        return True
