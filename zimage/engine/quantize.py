"""The quantized cache (`--quantize int8`): weight-only int8 copies of the transformer blocks and the
text encoder's layers, made once, saved as safetensors next to the model, loaded directly later.

Each Linear weight inside the repeated blocks becomes int8 with one float32 scale per output row
(symmetric absmax, the same arithmetic as torchao's int8 weight-only); everything else stays bf16.
The int8 tensors are never multiplied directly: the low-VRAM runtime (offload.py) dequantizes a
whole block into a bf16 GPU slot just before the block runs (one multiply per weight, on a side
stream), so compute runs at bf16 speed while VRAM and the bytes read or streamed are about halved.

The cache folder is keyed by the sha256 of the source files: a changed or re-downloaded model gets
a new quantized copy, never a stale one. Hashes are recorded with size and mtime so later starts do
not re-read 20 GB (the same policy as the download manifest).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from ..errors import DiskFull, ModelLoadFailed
from ..store.cache import weight_files
from ..store.manifest import sha256_file
from .anatomy import SCALE, transformer_blocks

log = logging.getLogger(__name__)

QUANT_DIR = ".zimage-quant"
COMPONENTS = ("transformer", "text_encoder")
MIN_ELEMENTS = 1024               # tiny projections are not worth a kernel launch each
INT8_MAX = 127


def quantize_weight(weight) -> tuple:
    """(int8 weight, float32 scale per output row): weight ~= q * scale[:, None]."""
    import torch

    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / INT8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def dequantize_into(q, scale, out) -> None:
    """out (bf16, same shape as q) = q * scale[:, None], in one kernel."""
    import torch

    torch.mul(q, scale[:, None], out=out)


def repeated_blocks(name: str, module) -> list:
    """The blocks whose Linear weights are quantized: what the runtime streams block by block."""

    if name == "transformer":
        return transformer_blocks(module)
    if name == "text_encoder":
        return list(module.layers)
    return []


def quantizable_linears(blocks: Iterable) -> list:
    import torch

    return [m for block in blocks for m in block.modules()
            if isinstance(m, torch.nn.Linear) and m.weight.dim() == 2 and m.weight.numel() >= MIN_ELEMENTS]


def is_quantized(linear) -> bool:
    return SCALE in linear._buffers


def quantize_module(name: str, module, device: str | None = None) -> int:
    """Quantize the component's block Linears in place (weight -> int8 parameter, plus a float32
    `weight_scale` buffer on the weight's device), computing on `device` (a GPU makes it seconds).
    Returns the bytes saved."""
    import torch

    saved = 0
    for linear in quantizable_linears(repeated_blocks(name, module)):
        if is_quantized(linear):
            continue
        w = linear.weight
        q, scale = quantize_weight(w.to(device) if device else w)
        saved += w.numel() * w.element_size() - q.numel() - scale.numel() * 4
        linear._parameters["weight"] = torch.nn.Parameter(q.to(w.device), requires_grad=False)
        linear.register_buffer(SCALE, scale.to(w.device))
    return saved


def prepare_for_quantized_keys(module, keys: Iterable[str]) -> None:
    """On an empty (meta) module: give every Linear whose `<path>.weight_scale` is among `keys` an
    int8 weight and a scale buffer, so the quantized state dict loads into it key for key."""
    import torch

    prefixes = {k[: -len(SCALE) - 1] for k in keys if k.endswith("." + SCALE)}
    base = getattr(module, "base_model_prefix", "")
    for path, sub in module.named_modules():
        if not isinstance(sub, torch.nn.Linear):
            continue
        if path in prefixes or (base and f"{base}.{path}" in prefixes):
            shape = sub.weight.shape
            sub._parameters["weight"] = torch.nn.Parameter(torch.empty(shape, dtype=torch.int8, device="meta"),
                                                           requires_grad=False)
            sub.register_buffer(SCALE, torch.empty(shape[0], dtype=torch.float32, device="meta"))


def keep_dtype(key: str) -> bool:
    """State-dict keys the loader must not cast to the model dtype."""
    return key.endswith("." + SCALE)


# ---- the cache on disk ----------------------------------------------------------------------

def _source_files(model_dir: Path, components: tuple[str, ...] = COMPONENTS) -> list[Path]:
    files = []
    for name in components:
        found, _problems = weight_files(model_dir / name)
        files += found
    return files


def source_key(model_dir: Path, records_path: Path | None = None,
               on_bytes: Callable[[int], None] | None = None, components: tuple[str, ...] = COMPONENTS,
               recorded_only: bool = False) -> str | None:
    """sha256 over the `components`' weight files' own sha256 (re-hashed only when size or mtime
    changed since `records_path` was written). With `recorded_only`, nothing is read: None when a
    file would need hashing (the bf16 copy's check at launch must not read 25 GB to find its key)."""
    records = {}
    if records_path is not None and records_path.exists():
        try:
            records = json.loads(records_path.read_text())
        except ValueError:
            records = {}
    digest, fresh = hashlib.sha256(), {}
    for path in _source_files(model_dir, components):
        rel = str(path.relative_to(model_dir))
        st = path.stat()
        rec = records.get(rel)
        if rec and rec["size"] == st.st_size and rec["mtime_ns"] == st.st_mtime_ns:
            sha = rec["sha256"]
        elif recorded_only:
            return None
        else:
            sha = sha256_file(path, on_bytes)
        fresh[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
        digest.update(f"{rel}\0{sha}\n".encode())
    if records_path is not None and fresh != records:
        try:
            records_path.parent.mkdir(parents=True, exist_ok=True)
            records_path.write_text(json.dumps(fresh, indent=1))
        except OSError as e:           # a read-only model folder: the next start hashes again
            log.warning("could not record the source hashes in %s: %s", records_path, e)
    return digest.hexdigest()[:16]


def quant_root(model_dir: Path) -> Path:
    return model_dir / QUANT_DIR


def cache_dir_for(model_dir: Path, method: str, on_bytes: Callable[[int], None] | None = None) -> Path:
    """Where this model's `method` copy lives (it may not exist yet)."""
    root = quant_root(model_dir)
    key = source_key(model_dir, root / "sources.json", on_bytes)
    return root / f"{method}-{key}"


def complete(cache_dir: Path) -> bool:
    from ..store.cache import safetensors_problem

    files = [cache_dir / n / "model.safetensors" for n in COMPONENTS]
    return all(f.exists() and safetensors_problem(f) is None for f in files)


def save_quantized(pipe, cache_dir: Path, method: str) -> int:
    """Write the quantized components' state dicts (atomically: a temporary folder renamed at the
    end; the configs stay the model's own); older copies under other keys are removed. Returns the
    bytes written."""
    from safetensors.torch import save_file

    need = 0
    for name in COMPONENTS:
        need += sum(t.numel() * t.element_size() for t in getattr(pipe, name).state_dict().values())
    root = cache_dir.parent
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if free < need + 2**30:
        raise DiskFull(f"Not enough disk space for the quantized copy: {need / 1e9:.1f} GB needed, "
                       f"{free / 1e9:.1f} GB free in {root}.",
                       "Free disk space, or start without --quantize (the bf16 model works as it is).")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        for name in COMPONENTS:
            module = getattr(pipe, name)
            (tmp / name).mkdir()
            tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(tensors, str(tmp / name / "model.safetensors"), metadata={"zimage_quant": method})
        for old in root.glob(f"{method}-*"):
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("quantized cache written: %s (%.1f GB)", cache_dir, need / 1e9)
    return need


def load_quantized(model_dir: Path, dtype, load: Callable[..., object], method: str = "int8",
                   compute_device: str | None = None, on_quantize: Callable[[], None] | None = None):
    """The pipeline with int8 blocks, in RAM: from the cache when a complete copy for these source
    files exists, else from the bf16 model, quantized and saved for the next start. A copy that
    fails to load is removed and made again. Returns (pipeline, a sentence for the status panel).

    `load(model_dir, dtype, device, quant_dir=None)` is the pipeline loader."""
    cache = cache_dir_for(model_dir, method)
    if complete(cache):
        try:
            return load(model_dir, dtype, "cpu", quant_dir=cache), f"{method} copy loaded from {cache}"
        except ModelLoadFailed as e:
            log.warning("the quantized copy is unusable (%s): making it again", e)
            shutil.rmtree(cache, ignore_errors=True)
    pipe = load(model_dir, dtype, "cpu")
    if on_quantize:
        on_quantize()
    for name in COMPONENTS:
        quantize_module(name, getattr(pipe, name), compute_device)
    try:
        save_quantized(pipe, cache, method)
        note = f"{method} copy made and saved in {cache}"
    except (DiskFull, OSError) as e:
        log.warning("quantized copy not saved: %s", e)
        note = f"{method} copy made but not saved ({getattr(e, 'message', e)}); it is made again at the next start"
    return pipe, note
