"""LoRAs fused into the loaded transformer's Linear weights, and taken out again bit for bit.

Reading uses diffusers' own Z-Image converter (`ZImageLoraLoaderMixin.lora_state_dict`), so every
layout it knows (diffusers/PEFT, kohya, ComfyUI / ai-toolkit, the dotted Anime-Z keys, fused qkv)
works here the same, with kohya's alpha already folded into down/up. We fuse instead of loading a
PEFT adapter: no extra matmuls per step, and the modules stay plain Linears, so compiled blocks,
streamed blocks and the fast loader see the same objects.

A module's LoRAs become one (up, down) pair (`terms`: the strengths and scales folded into up, the
ranks side by side), added with one `addmm_` in the weight's dtype: a GEMM that accumulates in
float32 and rounds once, W + sum(strength * scale * up @ down), in place, so the parameter keeps its
storage and compiled blocks do not recompile.
- Weights that stay where they are (resident, or the resident blocks of a low-VRAM plan) are fused
  in place. Before the first change to one, an exact copy is kept (on the GPU when the VRAM budget
  has room for it, else in pinned RAM) and kept across switches: switching restores from it and fuses
  the new set, with no new copy. Subtracting the delta back would not be exact in bf16; the copy is.
- Weights a low-VRAM plan streams from RAM, and int8 weights (dequantized into a GPU slot as they
  run), are never changed: the streamer (`offload.BlockStreamer`, a `carrier`) adds the same terms
  to the slot right after the copy or dequantize, so they carry their LoRA with nothing to restore.
- Packed GGUF weights are never changed either: the LoRA runs beside them as an added low-rank path
  (lora_side.SidePaths), taken off by removing its hook.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import IllegalTransition, InvalidRequest, LoraMismatch, LoraNeedsFullWeights, LoraUnreadable, OutOfMemory
from .anatomy import SCALE
from .lora_side import SidePaths, compute_dtype, is_packed, weight_shape

log = logging.getLogger(__name__)

MODEL = "Z-Image's transformer"
_A, _B = ".lora_A.weight", ".lora_B.weight"


@dataclass(frozen=True)
class LoraModule:
    down: torch.Tensor              # [rank, in]   (lora_A / lora_down, kohya's alpha folded in)
    up: torch.Tensor                # [out, rank]  (lora_B / lora_up)
    alpha: float | None = None      # PEFT's lora_alpha from the file's metadata; None: scale 1
    rslora: bool = False            # PEFT's use_rslora: scale alpha / sqrt(rank)

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        if self.alpha is None:
            return 1.0
        return self.alpha / (self.rank ** 0.5 if self.rslora else self.rank)


@dataclass(frozen=True)
class LoraWeights:
    name: str                                   # the file's name, for messages
    path: Path
    modules: dict[str, LoraModule]              # transformer module path -> its pair
    other_keys: tuple[str, ...] = ()            # converted keys that are not lora_A/lora_B pairs
    metadata: dict = field(default_factory=dict)

    @property
    def total_keys(self) -> int:
        return 2 * len(self.modules) + len(self.other_keys)


@dataclass(frozen=True)
class Match:
    lora: str
    fits: dict[str, LoraModule]                 # module path -> pair, shapes checked
    missing: tuple[str, ...]                    # module paths the transformer does not have as a Linear
    wrong_shape: tuple[str, ...]                # modules it has, of another shape
    total_keys: int

    @property
    def matched_keys(self) -> int:
        return 2 * len(self.fits)

    @property
    def complete(self) -> bool:
        return self.matched_keys == self.total_keys

    def counts(self) -> str:
        return f"{self.matched_keys} of {self.total_keys} keys match {MODEL}"

    def note(self) -> str:
        """'' when everything fits; otherwise what did not (shown next to the picture)."""
        if self.complete:
            return ""
        parts = []
        if self.missing:
            parts.append(f"{2 * len(self.missing)} are for modules it does not have (e.g. {self.missing[0]})")
        if self.wrong_shape:
            parts.append(f"{2 * len(self.wrong_shape)} have other shapes (e.g. {self.wrong_shape[0]})")
        other = self.total_keys - self.matched_keys - 2 * (len(self.missing) + len(self.wrong_shape))
        if other:
            parts.append(f"{other} are not LoRA up/down weights")
        return f"LoRA {self.lora}: {self.counts()}; " + ", ".join(parts) + "."


def peft_config(metadata: dict) -> dict:
    """The PEFT adapter config diffusers writes beside PEFT-format weights (`lora_adapter_metadata`:
    {"transformer.r": 4, "transformer.lora_alpha": 8, ...} from a pipeline's save_lora_weights, or
    unprefixed from a model's save_lora_adapter); {} when the file has none (then alpha = rank, scale 1,
    as diffusers assumes)."""
    raw = (metadata or {}).get("lora_adapter_metadata")
    try:
        cfg = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        return {}
    if not isinstance(cfg, dict):
        return {}
    if any(k.startswith("transformer.") for k in cfg):
        cfg = {k.removeprefix("transformer."): v for k, v in cfg.items() if k.startswith("transformer.")}
    return cfg


def _alpha_for(module: str, cfg: dict) -> float | None:
    pattern = cfg.get("alpha_pattern") or {}
    if isinstance(pattern, dict):
        for key, value in pattern.items():
            if module == key or module.endswith("." + key):
                return float(value)
    alpha = cfg.get("lora_alpha")
    return float(alpha) if isinstance(alpha, (int, float)) else None


def read_lora(path: Path) -> LoraWeights:
    """Load a .safetensors LoRA and convert its keys with diffusers' Z-Image converter. Typed
    LoraUnreadable for anything that is not a readable, finite safetensors LoRA. Never unpickles."""
    from diffusers.loaders.lora_pipeline import ZImageLoraLoaderMixin
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    name = path.name
    if path.suffix.lower() != ".safetensors":
        raise LoraUnreadable(name, f"LoRA {name} refused: pickle files can run code; convert it to .safetensors.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise LoraUnreadable(name, f"LoRA {name} cannot be read: {e}.",
                             "The file is damaged or not a safetensors file; download it again.") from None
    if not state:
        raise LoraUnreadable(name, f"LoRA {name} holds no tensors.")
    try:
        converted = ZImageLoraLoaderMixin.lora_state_dict(dict(state))
    except (ValueError, KeyError, RuntimeError, AttributeError) as e:
        # the converter raises when keys are left over it does not know (another trainer's layout)
        log.info("diffusers' Z-Image converter refused %s: %s", path, e)
        raise LoraMismatch(name, f"LoRA {name}: 0 of {len(state)} keys match {MODEL} "
                           f"(diffusers' Z-Image converter does not know its layout).",
                           "It is probably a LoRA for another model.", matched=0, total=len(state)) from None
    cfg = peft_config(metadata)
    modules: dict[str, LoraModule] = {}
    other = []
    for key, down in converted.items():
        short = key.removeprefix("transformer.")
        if short.endswith(_A):
            up = converted.get(key[: -len(_A)] + _B)
            if up is None:
                other.append(short)
                continue
            if not (torch.isfinite(down).all() and torch.isfinite(up).all()):
                raise LoraUnreadable(name, f"LoRA {name} holds non-finite numbers (NaN or inf) "
                                     f"in {short[: -len(_A)]}.", "The file is damaged; download it again.")
            module = short[: -len(_A)]
            modules[module] = LoraModule(down, up, _alpha_for(module, cfg), bool(cfg.get("use_rslora")))
        elif short.endswith(_B):
            if (key[: -len(_B)] + _A) not in converted:
                other.append(short)
        else:
            other.append(short)
    return LoraWeights(name, path, modules, tuple(other), metadata)


def _linears(transformer) -> dict[str, torch.nn.Module]:
    out = {}
    for name, module in transformer.named_modules():
        # torch.compile wraps a module as `_orig_mod`; the names a LoRA uses are the plain ones
        name = name.replace("_orig_mod.", "")
        if isinstance(module, torch.nn.Linear) or _is_quantized(module):
            out[name] = module
    return out


def _is_quantized(module) -> bool:
    from .fp8 import Fp8Linear

    return isinstance(module, Fp8Linear) or SCALE in getattr(module, "_buffers", {})


def match(transformer, weights: LoraWeights) -> Match:
    """Which of the LoRA's modules are Linears of this transformer with fitting shapes."""
    linears = _linears(transformer)
    fits, missing, wrong = {}, [], []
    for module_name, pair in weights.modules.items():
        target = linears.get(module_name)
        if target is None:
            missing.append(module_name)
            continue
        out_f, in_f = weight_shape(target)
        if pair.up.ndim != 2 or pair.down.ndim != 2 or pair.up.shape[1] != pair.down.shape[0] or \
                (pair.up.shape[0], pair.down.shape[1]) != (out_f, in_f):
            wrong.append(module_name)
            continue
        fits[module_name] = pair
    return Match(weights.name, fits, tuple(sorted(missing)), tuple(sorted(wrong)), weights.total_keys)


def check_full_weights(transformer, names, lora: str = "") -> None:
    """Typed refusal when a Linear to fuse into is int8 (a `weight_scale` buffer beside int8 rows)
    or fp8 (`Fp8Linear`, or an fp8 file's weight kept in float8: engine/fp8_storage.py): W + delta
    there would be rounded to the quantized grid and could not be undone exactly."""
    from .fp8 import Fp8Linear
    from .fp8_storage import is_fp8_stored

    linears = _linears(transformer)
    for name in names:
        module = linears[name]
        dtype = module.weight.dtype
        if isinstance(module, Fp8Linear) or dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
            kind = "fp8"
        elif SCALE in module._buffers or not dtype.is_floating_point:
            kind = "int8"
        else:
            continue
        hint = ("The DiT file is fp8: load its bf16 or GGUF version to use LoRAs."
                if is_fp8_stored(module) else "Turn the int8 / fp8 setting off (bf16 weights) to use LoRAs.")
        raise LoraNeedsFullWeights(
            lora, f"LoRA {lora} cannot be applied while the transformer is {kind} ({name}): "
            f"fusing into quantized weights is not exact.", hint, weights=kind)


@dataclass(frozen=True)
class Applied:
    """One LoRA as fused: its strength and what of it matched."""
    lora: str
    strength: float
    match: Match

    @property
    def note(self) -> str:
        return self.match.note()


def terms(matches: list[tuple[Match, float]], name: str, dtype, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The LoRAs of one module as one (up [out, R], down [R, in]) pair in `dtype` on `device`, each
    up scaled by strength * scale (in float32, then cast) and the ranks concatenated: `W.addmm_(up,
    down)` then adds them all with one rounding. None when none of them touches the module."""
    ups, downs = [], []
    for m, strength in matches:
        pair = m.fits.get(name)
        if pair is not None and strength != 0.0:
            ups.append(pair.up.to(device, torch.float32) * (strength * pair.scale))
            downs.append(pair.down.to(device, torch.float32))
    if not ups:
        return None
    return torch.cat(ups, 1).to(dtype), torch.cat(downs, 0).to(dtype)


class LoraState:
    """The LoRAs fused into one transformer. Only its owner (the manager's worker) calls it, between
    pipeline calls. `apply` always starts from the exact base weights (restore, then fuse).

    `carrier` (a low-VRAM plan's block streamer, or None) takes the terms of the modules whose weights
    it streams or dequantizes (`carries(module)`, `set_loras({module: (up, down)})`). `backup_room(n)`
    says whether n more bytes of copies fit beside the model on its GPU."""

    def __init__(self, transformer, carrier=None, backup_room: Callable[[int], bool] | None = None):
        self.transformer = transformer
        self.carrier = carrier
        self.backup_room = backup_room or (lambda nbytes: False)
        self._saved: dict[str, torch.Tensor] = {}           # module path -> exact copy of the base weight
        self._fused: set[str] = set()                      # module paths whose weight holds LoRAs now
        self._carried = False
        self._side = SidePaths()                            # LoRAs beside packed GGUF layers
        self.applied: list[Applied] = []

    @property
    def active(self) -> bool:
        return bool(self._fused) or self._carried or self._side.active

    @property
    def saved_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._saved.values())

    def apply(self, items: list[tuple[LoraWeights, float]]) -> list[Applied]:
        """Fuse these LoRAs (replacing any fused now). All are matched and checked before any
        weight changes: a file that matches nothing raises LoraMismatch and the model keeps the
        weights it had before the call."""
        matches = []
        for weights, strength in items:
            if not math.isfinite(float(strength)):
                raise InvalidRequest("loras", f"the strength of {weights.name} must be a finite number")
            m = match(self.transformer, weights)
            if not m.fits:
                why = ""
                if any(".lokr_" in k for k in weights.other_keys):
                    why = " (it is a LoKr, which is not supported yet)"
                elif m.wrong_shape:
                    why = f" ({2 * len(m.wrong_shape)} have the names but other shapes: a LoRA for another size of model)"
                raise LoraMismatch(weights.name, f"LoRA {weights.name}: {m.counts()}{why}.",
                                   "It is a LoRA for another model; pick one made for Z-Image-Turbo.",
                                   matched=0, total=m.total_keys)
            matches.append((m, float(strength)))
        linears = _linears(self.transformer)
        touched = {n for m, s in matches if s != 0.0 for n in m.fits}
        side = {n for n in touched if is_packed(linears[n])}
        carried = {n for n in touched - side if self.carrier is not None and self.carrier.carries(linears[n])}
        in_place = sorted(touched - carried - side)
        # carried float8 weights too (an fp8 file's, streamed): their slot is float8 as well; carried
        # int8 ones are dequantized into a bf16 slot, where the terms are added exactly
        fp8 = {n for n in carried if linears[n].weight.dtype in (torch.float8_e4m3fn, torch.float8_e5m2)}
        for m, s in matches:
            check_full_weights(self.transformer, [n for n in m.fits if s != 0.0 and (n in in_place or n in fp8)], m.lora)
        self.restore()
        with torch.no_grad():
            try:
                self._back_up([n for n in in_place if n not in self._saved], linears)
                for name in in_place:                   # every copy first: a failure here changed nothing
                    w = linears[name].weight
                    up, down = terms(matches, name, w.dtype, w.device)
                    self._fused.add(name)
                    w.addmm_(up, down)
                if carried:
                    self.carrier.set_loras({linears[n]: terms(matches, n, self.carrier.compute_dtype,
                                                              self.carrier.device) for n in carried})
                    self._carried = True
                if side:
                    device = self.carrier.device if self.carrier is not None else None
                    self._side.set({linears[n]: terms(matches, n, compute_dtype(linears[n], torch.float32),
                                                      device or linears[n].weight.device) for n in side})
            except BaseException:
                self.restore()                          # half-fused is never left behind
                raise
        self.applied = [Applied(m.lora, s, m) for m, s in matches]
        for a in self.applied:
            log.info("LoRA %s fused at %.2f: %s", a.lora, a.strength, a.match.counts())
        if carried:
            log.info("LoRAs: %d weights fused in place, %d carried by the streamed blocks", len(in_place), len(carried))
        return self.applied

    def _back_up(self, names: list[str], linears: dict) -> None:
        if not names:
            return
        weights = [linears[n].weight for n in names]
        nbytes = sum(w.numel() * w.element_size() for w in weights)
        # On the GPU a restore is a device copy (2 TB/s on the H200, against ~25 GB/s from pinned RAM)
        on_gpu = weights[0].is_cuda and self.backup_room(nbytes)
        try:
            for name, w in zip(names, weights):
                self._saved[name] = self._backup(w, on_gpu)
        except (RuntimeError, MemoryError) as e:
            for name in names:
                self._saved.pop(name, None)
            raise OutOfMemory(f"Not enough memory to keep the base weights while LoRAs are applied ({e}).",
                              "Use fewer LoRAs, or free some RAM.") from None

    @staticmethod
    def _backup(w: torch.Tensor, on_gpu: bool = False) -> torch.Tensor:
        if on_gpu:
            return w.detach().clone()
        try:
            # pinned: the copy back to the GPU on restore runs at full PCIe speed
            copy = torch.empty(w.shape, dtype=w.dtype, device="cpu", pin_memory=w.is_cuda)
        except RuntimeError:
            copy = torch.empty(w.shape, dtype=w.dtype, device="cpu")
        copy.copy_(w.detach())
        return copy

    def restore(self) -> None:
        """Put the saved base weights back, bit for bit, into the same tensors; the copies are kept
        for the next set (`release` lets them go)."""
        if self._carried:
            self.carrier.set_loras({})
            self._carried = False
        self._side.clear()
        if not self._fused:
            self.applied = []
            return
        linears = _linears(self.transformer)
        for name in self._fused:
            saved = self._saved[name]
            w = linears[name].weight if name in linears else None
            if w is None or w.dtype != saved.dtype or w.shape != saved.shape:
                # fp8 / int8 swapped the module under the fused weights: the copies no longer fit
                raise IllegalTransition(f"LoRA restore: {name} changed while LoRAs were fused "
                                        f"(restore LoRAs before quantizing or swapping modules).")
        with torch.no_grad():
            for name in self._fused:
                linears[name].weight.copy_(self._saved[name])
        log.info("LoRAs removed: %d weights restored", len(self._fused))
        self._fused = set()
        self.applied = []

    def release(self) -> None:
        """Restore, then free the copies (before the pipeline is moved, re-planned or unloaded)."""
        try:
            self.restore()
        finally:
            self._saved = {}

    def notes(self) -> list[str]:
        return [a.note for a in self.applied if a.note]
