"""Planning for a VRAM budget: which transformer blocks stay on the GPU, which stream from RAM,
whether the text encoder visits the GPU only to encode and the VAE decodes in tiles. Pure
arithmetic on the component sizes as loaded (bf16; int8 with bf16 slots; a GGUF DiT's packed bytes,
dequantized per layer as it runs; an fp8 file's float8 bytes, cast per layer as it runs: fp8_storage), so every budget is tested on the CPU; offload.py carries a plan out.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ZImageError
from .anatomy import SCALE, controlnet_blocks, text_encoder_layers, transformer_blocks

GiB = 2**30
# Activations of a 1024x1024 image beside the weights. The resident peak is 23.3 GB for 20.5 GB of
# weights on the H100 (anchors); most of it is the VAE decode, which tiles of 512 pixels shrink.
DENOISE_WORKING_BYTES = int(1.0 * GiB)
VAE_WORKING_BYTES = int(2.8 * GiB)
VAE_TILED_WORKING_BYTES = int(1.0 * GiB)
WORKING_BYTES = max(DENOISE_WORKING_BYTES, VAE_WORKING_BYTES)
# The ControlNet's pass beside the denoise: its hints for 15 layers stacked at 1024x1024 (16 x 4608
# tokens x 3840 x 2 bytes = 0.57 GB, briefly twice while the stack grows, plus the scaled copies).
# Estimated from those shapes, not measured yet (bench/edit_bench.py reports the peak).
CONTROL_WORKING_BYTES = int(1.5 * GiB)
SLOTS = 2


class DoesNotFit(ZImageError):
    http_status = 507
    code = "vram_budget_too_small"

    def __init__(self, budget_bytes: int, minimum_bytes: int):
        super().__init__(f"A {budget_bytes / GiB:.1f} GiB VRAM budget is below the {minimum_bytes / GiB:.1f} GiB "
                         "this model needs even with every block streamed from RAM.",
                         f"Set --vram-budget to at least {minimum_bytes / GiB:.1f} (GB), or use --quantize int8.")
        self.budget_bytes, self.minimum_bytes = budget_bytes, minimum_bytes


@dataclass(frozen=True)
class Sizes:
    """Bytes of what a plan places: the transformer without its blocks and each block (in execution
    order) as stored, the text encoder likewise, the VAE. With quantized blocks, `block_slots` and
    `text_slots` are each block's bytes once dequantized (what a GPU slot must hold). A loaded
    ControlNet adds its own weights: `control_core` (its control embedder) and `control_blocks`
    (its control noise refiners and control layers, in execution order; bf16 in every placement,
    int8 and fp8 included, so a streamed one needs a slot of its own size and no staging)."""
    core: int
    blocks: tuple[int, ...]
    vae: int
    text_core: int = 0
    text_blocks: tuple[int, ...] = ()
    block_slots: tuple[int, ...] = ()
    text_slots: tuple[int, ...] = ()
    control_core: int = 0
    control_blocks: tuple[int, ...] = ()
    dit_format: str = ""          # how the DiT's block weights are held: bf16, fp32, int8, Q8_0, Q4_K...

    @property
    def quantized(self) -> bool:
        return bool(self.block_slots)

    @property
    def dit(self) -> int:
        return self.core + sum(self.blocks)

    @property
    def text_encoder(self) -> int:
        return self.text_core + sum(self.text_blocks)

    @property
    def total(self) -> int:
        return self.text_encoder + self.core + sum(self.blocks) + self.vae + self.control_core + sum(self.control_blocks)

    def peak(self, resident: int, text_on_gpu: bool, working: int, control_resident: int | None = None, *,
             dense: int = 0) -> int:
        """VRAM at the peak for `resident` blocks on the GPU (the rest streamed), the first `dense`
        of them (int8) held dequantized instead (no slot needed for them), and `control_resident`
        of the ControlNet's blocks (default: all of them)."""
        streamed = len(self.blocks) - resident
        q = self.quantized
        slot = max(self.block_slots or self.blocks, default=0)
        stage = max(self.blocks, default=0) if q and streamed else 0      # int8 copied in before dequantizing
        tslot = max(self.text_slots or self.text_blocks, default=0)
        encode = 0
        if text_on_gpu:
            text = self.text_encoder + (SLOTS * tslot if q else 0)
        else:
            # Its visiting layers' slots live only while the prompt is encoded (made per layer and
            # freed after it: offload.BlockStreamer without persistent slots), never beside the
            # denoise's or the decode's working memory; the encoder's own activations (a 512-token
            # prompt: tens of MB) are left in the slack. Counted as one phase, not on top.
            text = self.text_core
            encode = SLOTS * (tslot + (max(self.text_blocks, default=0) if q else 0))
        slots = SLOTS * (slot + stage) if (streamed or (q and resident > dense)) else 0
        weights = sum((self.block_slots or self.blocks)[:dense]) + sum(self.blocks[dense:resident])
        cn = len(self.control_blocks) if control_resident is None else control_resident
        control = self.control_core + sum(self.control_blocks[:cn])
        if cn < len(self.control_blocks):      # its own two slots: its blocks run between the transformer's
            control += SLOTS * max(self.control_blocks)
        return self.core + weights + slots + self.vae + text + max(working, encode) + control


@dataclass(frozen=True)
class Plan:
    budget_bytes: int | None
    resident_blocks: int          # the first blocks in execution order stay on the GPU
    streamed_blocks: int
    text_encoder_on_gpu: bool     # False: its layers are streamed too, while the prompt is encoded
    est_peak_bytes: int
    vae_tiling: bool = False
    quantized: bool = False
    control_resident: int = 0     # the ControlNet's first blocks that stay on the GPU
    control_streamed: int = 0
    dense_blocks: int = 0         # int8 plans: the first resident blocks held dequantized (bf16), see with_dense_blocks
    dit_format: str = ""          # Sizes.dit_format, for the description
    dit_bytes: int = 0            # the DiT's bytes as loaded (its quantized bytes for GGUF and int8)

    @property
    def is_resident(self) -> bool:
        return (self.streamed_blocks == 0 and self.text_encoder_on_gpu and not self.quantized
                and self.control_streamed == 0)

    def describe(self) -> str:
        """Which plan and why, for the page's status panel: what is resident, what visits or
        streams, and the DiT's format and size (what decides whether it fits)."""
        budget = "no budget" if self.budget_bytes is None else f"budget {self.budget_bytes / GiB:.1f} GiB"
        dit = f"{self.dit_format} DiT {self.dit_bytes / GiB:.1f} GiB".lstrip() if self.dit_bytes else ""
        extra = ((", int8 weights" if self.quantized else "")
                 + (", fp8 weights cast per layer" if self.dit_format == "fp8" and not self.quantized else "")
                 + (f" ({self.dense_blocks} resident blocks kept in bf16)" if self.dense_blocks else "")
                 + (", VAE in tiles" if self.vae_tiling else ""))
        control = self.control_resident + self.control_streamed
        if control:
            extra += (f", ControlNet: {self.control_resident} of {control} blocks resident" if self.control_streamed
                      else ", ControlNet resident")
        peak = f"about {self.est_peak_bytes / GiB:.1f} GiB"
        if self.streamed_blocks == 0 and self.text_encoder_on_gpu and self.control_streamed == 0:
            return f"everything on the GPU{': ' + dit if dit else ''} ({budget}, {peak}{extra})"
        if self.streamed_blocks == 0 and dit:
            vae = "VAE in tiles" if self.vae_tiling else "VAE"
            fits = "no budget" if self.budget_bytes is None else f"the {self.budget_bytes / GiB:.1f} GiB budget"
            extra = extra.replace(", VAE in tiles", "")
            te = "text encoder" if self.text_encoder_on_gpu else "text encoder visits (its layers streamed while encoding)"
            return f"resident: {dit} + {te} + {vae} fit {fits} ({peak}{extra})"
        te = "on the GPU" if self.text_encoder_on_gpu else "streamed while encoding"
        why = f": the {dit} does not fit whole beside the rest" if dit and self.streamed_blocks else ""
        return (f"{self.resident_blocks} transformer blocks resident, {self.streamed_blocks} streamed from RAM; "
                f"text encoder {te} ({budget}, {peak}{extra}){why}")


def working_bytes(vae_tiling: bool, control: bool = False) -> int:
    denoise = DENOISE_WORKING_BYTES + (CONTROL_WORKING_BYTES if control else 0)
    return max(denoise, VAE_TILED_WORKING_BYTES if vae_tiling else VAE_WORKING_BYTES)


def _best_fit(sizes: Sizes, budget_bytes: int | None, tiling: bool) -> Plan | None:
    m = len(sizes.control_blocks)
    n, q, work = len(sizes.blocks), sizes.quantized, working_bytes(tiling, control=bool(m))
    everything = sizes.peak(n, True, work)
    if budget_bytes is None or everything <= budget_bytes:
        return Plan(budget_bytes, n, 0, True, everything, tiling, q, m, 0)
    # The text encoder's layers are streamed first (they run once per image), then the ControlNet's
    # blocks (they run only for a control request; text to image keeps its resident blocks), then
    # the transformer's. 35 x 18 peaks for the real sizes: arithmetic, no search worth pruning.
    for resident in range(n, -1, -1):
        for control in range(m, -1, -1):
            peak = sizes.peak(resident, False, work, control)
            if peak <= budget_bytes:
                return Plan(budget_bytes, resident, n - resident, False, peak, tiling, q, control, m - control)
    return None


def make_plan(sizes: Sizes, budget_bytes: int | None) -> Plan:
    """The fastest placement that fits: everything resident if it fits; else the text encoder's
    layers are streamed, then as many transformer blocks as fit stay resident and the rest are
    streamed. The VAE decodes in tiles only where that keeps more blocks resident (tiles change the
    picture slightly at their seams). int8: resident blocks in bf16 with the room left (with_dense_blocks).
    The DiT is sized as loaded, so a quantized one (GGUF, int8, an fp8 file kept in float8) that
    fits stays whole on the GPU."""
    whole = _best_fit(sizes, budget_bytes, tiling=False)
    tiled = None
    if not (whole is not None and whole.streamed_blocks == 0 and whole.text_encoder_on_gpu):
        tiled = _best_fit(sizes, budget_bytes, tiling=True)
    if tiled is not None and (whole is None or tiled.resident_blocks > whole.resident_blocks):
        plan = tiled
    elif whole is not None:
        plan = whole
    else:
        raise DoesNotFit(budget_bytes, minimum_bytes(sizes))
    return replace(with_dense_blocks(sizes, plan), dit_format=sizes.dit_format, dit_bytes=sizes.dit)


def minimum_bytes(sizes: Sizes) -> int:
    """The smallest budget any plan fits: every block streamed, the VAE in tiles."""
    return sizes.peak(0, False, working_bytes(True, control=bool(sizes.control_blocks)), 0)


def with_dense_blocks(sizes: Sizes, plan: Plan) -> Plan:
    """An int8 plan with as many of its resident blocks as the budget's room left holds dequantized
    once (bf16, the same values) instead of dequantized into a slot at every step; with all of
    them and nothing streamed the two slots go too. Never at the cost of a resident block: on the
    H200 a full-size block streamed is 181 MB of PCIe a step (~3.6 ms at ~50 GB/s, about a compiled
    block's compute), its dequantize 543 MB of HBM (~0.15 ms at ~3.5 TB/s). At 8 GiB the room left
    beside 26 int8 resident blocks is below one block's extra 181 MB, so that plan is unchanged;
    at 12 GiB all 34 blocks are int8-resident and about half of them fit in bf16 too."""
    if not plan.quantized or plan.budget_bytes is None:
        return plan
    work = working_bytes(plan.vae_tiling, control=bool(sizes.control_blocks))
    for dense in range(plan.resident_blocks, 0, -1):
        peak = sizes.peak(plan.resident_blocks, plan.text_encoder_on_gpu, work, plan.control_resident, dense=dense)
        if peak <= plan.budget_bytes:
            return replace(plan, dense_blocks=dense, est_peak_bytes=peak)
    return plan


def _tensor_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def _slot_bytes(module, itemsize: int) -> int:
    """Bytes of the block once its int8 weights are dequantized to the compute dtype (`itemsize`
    bytes per element): what a GPU slot holds."""
    total = 0
    for m in module.modules():
        for name, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is None or name == SCALE:
                continue
            total += t.numel() * (itemsize if SCALE in m._buffers and name == "weight" else t.element_size())
    return total


DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8"}


def weight_format(blocks: list) -> str:
    """How the blocks' weights are held, by the bytes of each kind: a GGUF quant type's name
    (diffusers' GGUFParameter carries it), int8 (ours, a scale beside the weight), else the dtype."""
    by_kind: dict[str, int] = {}
    for block in blocks:
        for m in block.modules():
            for name, t in m._parameters.items():
                if t is None or t.ndim < 2:
                    continue
                kind = _quant_name(t) or ("int8" if SCALE in m._buffers else DTYPE_NAMES.get(str(t.dtype)[6:], str(t.dtype)[6:]))
                by_kind[kind] = by_kind.get(kind, 0) + t.numel() * t.element_size()
    return max(by_kind, key=by_kind.get) if by_kind else ""


def _quant_name(t) -> str:
    quant = getattr(t, "quant_type", None)
    if quant is None:
        return ""
    import gguf           # present wherever a GGUF file loaded (diffusers' GGUF support needs it)

    name = gguf.GGMLQuantizationType(int(quant)).name
    return {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}.get(name, name)


def sizes_of(pipe, controlnet=None) -> Sizes:
    """The pipeline's sizes, and a loaded ControlNet's own (its shared modules are the transformer's).
    Every tensor counts its bytes as held: a GGUF weight its packed bytes (diffusers' GGUFLinear
    dequantizes one layer at a time as it runs, a transient inside the working memory), an fp8
    file's weight kept in float8 its float8 bytes (likewise cast one layer at a time: fp8_storage),
    an int8 one its int8 bytes with its bf16 slot beside."""
    blocks_list = transformer_blocks(pipe.transformer)
    text_list = text_encoder_layers(pipe.text_encoder)
    blocks = tuple(_tensor_bytes(b) for b in blocks_list)
    text_blocks = tuple(_tensor_bytes(b) for b in text_list)
    quantized = any(SCALE in m._buffers for b in blocks_list + text_list for m in b.modules())
    itemsize = next(pipe.vae.parameters()).element_size()      # the VAE is never quantized
    return Sizes(core=_tensor_bytes(pipe.transformer) - sum(blocks), blocks=blocks, vae=_tensor_bytes(pipe.vae),
                 text_core=_tensor_bytes(pipe.text_encoder) - sum(text_blocks), text_blocks=text_blocks,
                 block_slots=tuple(_slot_bytes(b, itemsize) for b in blocks_list) if quantized else (),
                 text_slots=tuple(_slot_bytes(b, itemsize) for b in text_list) if quantized else (),
                 dit_format=weight_format(blocks_list),
                 **(_control_sizes(controlnet) if controlnet is not None else {}))


def controlnet_own_modules(controlnet) -> list:
    """The ControlNet's modules that are its own (not the transformer's shared embedders and refiners)."""
    return [controlnet.control_all_x_embedder, *controlnet_blocks(controlnet)]


def _control_sizes(controlnet) -> dict:
    blocks = tuple(_tensor_bytes(b) for b in controlnet_blocks(controlnet))
    return dict(control_core=_tensor_bytes(controlnet.control_all_x_embedder), control_blocks=blocks)
