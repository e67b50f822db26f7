"""The fast loader: empty modules, then safetensors bytes streamed straight into device memory.

Plain diffusers reads every shard into RAM, builds the model on the CPU, then copies it to the GPU
(4.3 s for the 20.5 GB checkpoint on an H100 from a warm page cache, 16.4 s cold). Here each
component is built without allocating its weights (accelerate's `init_empty_weights`), and 8
threads read byte ranges of all shards of all components at once: through small pinned staging
buffers into one device buffer per shard (a CUDA stream per thread, so disk reads and copies
overlap), or straight into RAM on the CPU. Parameters become views into those buffers, so peak host
RAM is the staging buffers, not the checkpoint. Progress is reported in bytes.

Anything this path does not cover (a key it cannot place, an unknown class) raises FastLoadUnsupported
and the caller falls back to the plain diffusers path for that component.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 2**20
READ_THREADS = 8
ST_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64", "I64": "int64",
             "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
             "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


class FastLoadUnsupported(Exception):
    """This component cannot take the fast path; load it the plain way."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str          # torch dtype name
    shape: tuple[int, ...]
    begin: int          # byte offsets inside the shard's data section
    end: int


@dataclass(frozen=True)
class Shard:
    path: Path
    data_offset: int    # where the data section starts in the file
    data_bytes: int
    tensors: tuple[TensorSpec, ...]


def read_shard(path: Path) -> Shard:
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_len))
    specs = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in ST_DTYPES:
            raise FastLoadUnsupported(f"{path.name}: dtype {info['dtype']} of {name}")
        begin, end = info["data_offsets"]
        specs.append(TensorSpec(name, ST_DTYPES[info["dtype"]], tuple(info["shape"]), begin, end))
    data_bytes = max((s.end for s in specs), default=0)
    return Shard(path, 8 + header_len, data_bytes, tuple(specs))


IMPORT_PACKAGES = ("torch", "nvidia", "triton")
MIN_LIBRARY_BYTES = 1 << 20


def import_files(packages: tuple[str, ...] = IMPORT_PACKAGES) -> list[Path]:
    """The shared libraries that importing torch (and the first CUDA kernels) read, found without
    importing anything: biggest first."""
    import importlib.util

    files = []
    for name in packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        for root in (spec.submodule_search_locations or []) if spec else []:
            for path in Path(root).rglob("*"):
                if (path.suffix == ".so" or ".so." in path.name) and path.stat().st_size >= MIN_LIBRARY_BYTES:
                    files.append(path)
    return sorted(files, key=lambda p: -p.stat().st_size)


def _read_all(files: list[Path], threads: int) -> None:
    def read_one(path: Path) -> None:
        try:
            with open(path, "rb", buffering=0) as fh:
                buf = bytearray(CHUNK_BYTES)
                while fh.readinto(buf):
                    pass
        except OSError as e:
            log.debug("prefetch of %s stopped: %s", path, e)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read_one, files))


def _advise_willneed(files: list[Path]) -> None:
    """Ask the kernel to read files ahead (one call per file: no reading loop in Python, so the
    importing thread keeps the GIL)."""
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
        except (OSError, AttributeError) as e:
            log.debug("no readahead for %s: %s", path, e)


def prefetch(files: list[Path], threads: int = 2, libraries_first: bool = False) -> threading.Thread:
    """Read files into the page cache in the background, so the load that follows reads from RAM.

    With `libraries_first`, the libraries the imports need are read first: on a cold start the
    imports and the weights compete for one disk, and an import waits on each small read (measured
    on the GPU machine: torch's import took 16 s instead of 4 s behind a 20 GB weight read). They
    are handed to the kernel's readahead: reading thousands of files from Python threads starved
    the importing thread of the GIL. Returns the (daemon) thread."""
    def run() -> None:
        if libraries_first:
            _advise_willneed(import_files())
        _read_all(files, threads)
    t = threading.Thread(target=run, name="zimage-prefetch", daemon=True)
    t.start()
    return t


class _Progress:
    def __init__(self, total: int, on_bytes: Callable[[int, int], None] | None):
        self.total, self.done, self.on_bytes = total, 0, on_bytes
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            done = self.done
        if self.on_bytes:
            self.on_bytes(done, self.total)


def _pread_into(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        n = os.preadv(fd, [view], offset)
        if n <= 0:
            raise OSError(f"unexpected end of file at byte {offset}")
        view, offset = view[n:], offset + n


def stream_shards(shards: list[Shard], device: str, on_bytes: Callable[[int, int], None] | None = None,
                  threads: int = READ_THREADS) -> dict[Path, "torch.Tensor"]:
    """Read every shard's data section into one uint8 buffer per shard on `device`."""
    import torch

    buffers = {s.path: torch.empty(s.data_bytes, dtype=torch.uint8, device=device) for s in shards}
    tasks = [(s, off, min(CHUNK_BYTES, s.data_bytes - off)) for s in shards
             for off in range(0, s.data_bytes, CHUNK_BYTES)]
    # Big chunks first spread the files over the threads; order does not matter for correctness.
    progress = _Progress(sum(s.data_bytes for s in shards), on_bytes)
    on_gpu = torch.device(device).type == "cuda"
    local = threading.local()
    fds: dict[Path, int] = {s.path: os.open(s.path, os.O_RDONLY) for s in shards}

    def cpu_task(task) -> None:
        shard, off, n = task
        view = memoryview(buffers[shard.path].numpy()).cast("B")[off:off + n]
        _pread_into(fds[shard.path], view, shard.data_offset + off)
        progress.add(n)

    def gpu_task(task) -> None:
        shard, off, n = task
        if not hasattr(local, "stream"):
            local.stream = torch.cuda.Stream(device=device)
            local.staging = [torch.empty(CHUNK_BYTES, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
            local.events = [None, None]
            local.turn = 0
        i = local.turn
        local.turn ^= 1
        if local.events[i] is not None:
            local.events[i].synchronize()          # the copy out of this staging buffer is done
        staging = local.staging[i]
        _pread_into(fds[shard.path], memoryview(staging.numpy()).cast("B")[:n], shard.data_offset + off)
        with torch.cuda.stream(local.stream):
            buffers[shard.path][off:off + n].copy_(staging[:n], non_blocking=True)
            event = torch.cuda.Event()
            event.record(local.stream)
        local.events[i] = event
        progress.add(n)

    def finish_thread(_) -> None:
        if hasattr(local, "stream"):
            local.stream.synchronize()

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(gpu_task if on_gpu else cpu_task, tasks))
            if on_gpu:
                list(pool.map(finish_thread, range(threads)))
        if on_gpu:
            torch.cuda.synchronize(device)
    finally:
        for fd in fds.values():
            os.close(fd)
    return buffers


def start_streaming(shards: list[Shard], device: str, on_bytes: Callable[[int, int], None] | None = None):
    """stream_shards in a background thread, so the caller can import and build the modules
    meanwhile (importing diffusers takes 10-15 s: about as long as reading 20 GB from a cold disk)."""
    from concurrent.futures import Future

    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(stream_shards(shards, device, on_bytes))
        except BaseException as e:
            future.set_exception(e)
    threading.Thread(target=run, name="zimage-stream", daemon=True).start()
    return future


def tensors_of(shard: Shard, buffer) -> dict[str, "torch.Tensor"]:
    """Typed views into a shard's buffer (a copy only where an offset is not aligned to the dtype)."""
    import torch

    out = {}
    for spec in shard.tensors:
        dtype = getattr(torch, spec.dtype)
        raw = buffer[spec.begin:spec.end]
        itemsize = torch.empty((), dtype=dtype).element_size()
        if spec.begin % itemsize:
            raw = raw.clone()
        out[spec.name] = raw.view(dtype).view(spec.shape)
    return out


def component_shards(component_dir: Path) -> list[Shard]:
    from ..store.cache import weight_files

    files, problems = weight_files(component_dir)
    if problems:
        raise FastLoadUnsupported(f"{component_dir.name}: {problems[0].path} {problems[0].reason}")
    return [read_shard(f) for f in files]


def build_empty(library: str, cls, component_dir: Path):
    """The module with its parameters on the meta device and its buffers on the CPU (computed there,
    as from_pretrained computes them: rotary tables made on a GPU differ in the last bits)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        if library == "diffusers":
            return cls.from_config(cls.load_config(str(component_dir)))
        if library == "transformers":
            config = cls.config_class.from_pretrained(str(component_dir))
            return cls._from_config(config)
    raise FastLoadUnsupported(f"library {library}")


def assign_weights(module, tensors: dict, dtype, device: str, keep: Callable[[str], bool] = lambda _k: False) -> None:
    """Make `tensors` the module's parameters and persistent buffers (cast to `dtype` where they are
    floating point and differ, unless `keep(key)`), and move the remaining buffers to `device`.
    Raises FastLoadUnsupported unless every key matches exactly."""
    expected = set(module.state_dict().keys())
    prefix = getattr(module, "base_model_prefix", "") + "."
    if set(tensors) != expected and prefix != "." and all(k.startswith(prefix) for k in tensors):
        tensors = {k[len(prefix):]: v for k, v in tensors.items()}   # saved from a wrapper (e.g. *ForCausalLM)
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors))[:3], sorted(set(tensors) - expected)[:3]
        raise FastLoadUnsupported(f"{type(module).__name__}: keys differ (missing {missing}, unexpected {extra})")
    cast = {k: (v.to(dtype) if v.is_floating_point() and v.dtype != dtype and not keep(k) else v)
            for k, v in tensors.items()}
    module.load_state_dict(cast, strict=True, assign=True)
    module.to(device)   # only the non-persistent buffers move: the parameters are already there
    if any(p.is_meta for p in module.parameters()) or any(b.is_meta for b in module.buffers()):
        raise FastLoadUnsupported(f"{type(module).__name__}: tensors left on the meta device")
    module.eval()
    module.requires_grad_(False)
