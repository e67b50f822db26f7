"""Low-VRAM mode: carrying out a plan (planning.py) by streaming transformer blocks.

Partial residency: as many transformer blocks as the budget allows stay on the GPU; the others stay
where the loader put them in RAM, and each is copied into one of two GPU slots just before it runs,
on a side CUDA stream, while the block before it computes (the next block's copy is issued from the
current block's pre-hook). That RAM is page-locked in the background (cudaHostRegister in place, no
copy), so a plan is ready as soon as the resident part is on the GPU; until a range is locked its
copies are ordinary (slower) ones. Quantized blocks (quantize.py) are dequantized into the slot the
same way, from int8 in VRAM or int8 streamed from RAM. When memory is short the VAE decodes in tiles.
Switching plans reuses the weights already in RAM or VRAM: no disk reads.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from .anatomy import SCALE, controlnet_blocks, text_encoder_layers, transformer_blocks
from .host_pin import PINNABLE_BYTES, HostPinner, address_ranges, big_storages, is_pinnable, pipeline_tensors
from .planning import SLOTS, Plan

log = logging.getLogger(__name__)

VAE_TILE_PIXELS = 512


@dataclass
class _Entry:
    module: object
    name: str
    is_param: bool
    src: object                  # the tensor at rest: on the GPU, or in RAM
    slot_off: int | None         # where it goes in a slot (None: used where it is, on the GPU)
    stage_off: int | None = None  # int8 from RAM lands here before it is dequantized into the slot
    scale: object = None         # per-row scale (on the GPU) of an int8 weight
    lora: tuple | None = None    # (up, down) on the GPU: added to the weight in its slot (engine.lora.terms)
    at_rest: tuple | None = None  # a dense block's (int8 weight in RAM, scale): put back when the plan goes


class BlockStreamer:
    """Brings each of `blocks` into a GPU slot just before it runs: a copy from RAM, a dequantize
    of int8 weights (from VRAM or from RAM), or both. The first `on_device` blocks keep their
    (int8) weights on the GPU; the others stay in RAM."""

    ALIGN = 64

    def __init__(self, blocks: list, device: str, compute_dtype, persistent_slots: bool = True, on_device: int = 0,
                 pack_small: bool | None = None, locked: frozenset[int] = frozenset(), dense: int = 0):
        """`persistent_slots=False` (the text encoder's visit): the GPU copy is made when the block
        runs and released right after, and nothing is prefetched. `dense`: the first blocks (of the
        `on_device` ones) have their int8 weights dequantized once, on the GPU, and used there as
        bf16 ones (planning.with_dense_blocks); their int8 stays in RAM. `pack_small` (default: on a GPU)
        gathers a streamed block whose tensors are on the GPU or in small allocations into one RAM
        allocation of its own, so it can be page-locked whole (HostPinner). `locked`: addresses of
        allocations already page-locked (by the runtime); only the others are locked here."""
        import torch

        from .quantize import dequantize_into

        self.persistent = persistent_slots
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.blocks = blocks
        self.layouts: list[list[_Entry]] = []
        self._slotted: dict[int, _Entry] = {}        # id(module) -> its weight's entry, when that goes through a slot
        self.slot_sizes, self.stage_sizes = [], []
        align = lambda n: -(-n // self.ALIGN) * self.ALIGN   # noqa: E731
        pack_small = self.cuda if pack_small is None else pack_small
        for index, block in enumerate(blocks):
            streamed = index >= on_device
            entries, slot_off, stage_off = [], 0, 0
            for module in block.modules():
                scale = module._buffers.get(SCALE)
                if scale is not None:
                    scale = module._buffers[SCALE] = scale.to(self.device)   # a few KB per weight
                for name, t in list(module._parameters.items()) + list(module._buffers.items()):
                    if t is None or name == SCALE:
                        continue
                    src = t.detach()
                    quant = scale is not None and name == "weight"
                    entry = _Entry(module, name, name in module._parameters, src, None, None, scale if quant else None)
                    if quant and index < dense:
                        entry.at_rest, entry.scale = (src, scale), None
                        entry.src = torch.empty(src.shape, dtype=compute_dtype, device=self.device)
                        dequantize_into(src.to(self.device), scale, entry.src)
                    elif quant or streamed:
                        entry.slot_off = slot_off
                        slot_off += align(src.numel() * (torch.empty((), dtype=compute_dtype).element_size()
                                                         if quant else src.element_size()))
                        if quant and streamed:
                            entry.stage_off = stage_off
                            stage_off += align(src.numel())
                    entries.append(entry)
            if not streamed:
                for e in entries:
                    e.src = e.src.to(self.device)
            elif pack_small and not all(is_pinnable(e.src) for e in entries):
                self._pack(entries)
            else:
                for e in entries:
                    e.src = e.src.to("cpu")
            self.layouts.append(entries)
            self._slotted.update({id(e.module): e for e in entries
                                  if e.name == "weight" and (e.slot_off is not None or e.at_rest is not None)})
            self.slot_sizes.append(slot_off)
            self.stage_sizes.append(stage_off)
            self._point_rest(index)
        self.compute_dtype = compute_dtype
        self.slot_bytes, self.stage_bytes = max(self.slot_sizes, default=0), max(self.stage_sizes, default=0)
        self.slots = [self._new_slot() for _ in range(SLOTS)] if persistent_slots else [None] * SLOTS
        host = {(e.src.untyped_storage().data_ptr(), e.src.untyped_storage().nbytes())
                for layout in self.layouts for e in layout if e.src.device.type == "cpu" and is_pinnable(e.src)}
        host = {(ptr, n) for ptr, n in host if ptr not in locked}
        self.pinner = HostPinner(sorted(host)) if self.cuda else None
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.ready: dict[int, object] = {}      # block index -> (slot, event) of its copy
        self.slot_free: list = [None] * SLOTS   # event: the block last in this slot has finished
        self.turn = 0
        self._current_slot = 0
        self.handles = []
        for i, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(self._make_pre(i)))
            self.handles.append(block.register_forward_hook(self._make_post(i)))

    def carries(self, module) -> bool:
        """Whether `module`'s weight reaches the GPU through a slot (streamed, or int8 dequantized),
        so a LoRA is added there instead of to the weight at rest."""
        return id(module) in self._slotted

    def set_loras(self, loras: dict) -> None:
        """{module: (up, down)} (engine.lora.terms, on this device): each carried module's slot gets
        `weight.addmm_(up, down)` after its copy; {} takes them all away. The weights at rest are
        never changed. Called between pipeline calls only."""
        for entry in self._slotted.values():
            entry.lora = None
        for module, pair in loras.items():
            self._slotted[id(module)].lora = pair
        for entry in self._slotted.values():
            if entry.at_rest is not None:       # a dense weight: made again from its int8, plus the terms
                from .quantize import dequantize_into

                q, scale = entry.at_rest
                dequantize_into(q.to(self.device), scale, entry.src)
                if entry.lora is not None:
                    entry.src.addmm_(*entry.lora)
        self.ready.clear()              # a copy made before the change would lack (or keep) them
        if self.cuda:                   # the side stream adds them: it must see them made first
            import torch

            self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def _pack(self, entries: list[_Entry]) -> None:
        """One RAM allocation for the block's tensors (copied from wherever they are)."""
        import torch

        sizes = [-(-e.src.numel() * e.src.element_size() // self.ALIGN) * self.ALIGN for e in entries]
        flat = torch.empty(max(sum(sizes), PINNABLE_BYTES), dtype=torch.uint8)
        offset = 0
        for e, size in zip(entries, sizes):
            view = self._view(flat, offset, e.src)
            view.copy_(e.src)
            e.src = view
            offset += size

    def _new_slot(self):
        import torch

        stage = torch.empty(self.stage_bytes, dtype=torch.uint8, device=self.device) if self.stage_bytes else None
        return torch.empty(self.slot_bytes, dtype=torch.uint8, device=self.device), stage

    @staticmethod
    def _view(buffer, offset: int, like, dtype=None):
        import torch

        dtype = dtype or like.dtype
        n = like.numel() * torch.empty((), dtype=dtype).element_size()
        return buffer[offset:offset + n].view(dtype).view(like.shape)

    @staticmethod
    def _set(entry: _Entry, tensor) -> None:
        if entry.is_param:
            entry.module._parameters[entry.name].data = tensor
        else:
            entry.module._buffers[entry.name] = tensor

    def _point_rest(self, i: int) -> None:
        for e in self.layouts[i]:
            self._set(e, e.src)

    def _point_slot(self, i: int, slot) -> None:
        import torch

        buf, _stage = slot
        # Views made outside inference mode, like the resident weights: a compiled block's graphs
        # guard on the dispatch keys of its weights, and an inference-mode view's differ, so every
        # plan change recompiled (accel.compile_block_forwards; tests/test_accel.py counts graphs).
        with torch.inference_mode(False):
            for e in self.layouts[i]:
                if e.slot_off is None:
                    self._set(e, e.src)
                else:
                    self._set(e, self._view(buf, e.slot_off, e.src, self.compute_dtype if e.scale is not None else None))

    def _fill(self, i: int, slot) -> None:
        if self.pinner is None:
            return self._fill_unlocked(i, slot)
        with self.pinner.lock:             # never copy from an allocation while it is being registered
            self._fill_unlocked(i, slot)

    def _fill_unlocked(self, i: int, slot) -> None:
        from .quantize import dequantize_into

        buf, stage = slot
        for e in self.layouts[i]:
            if e.slot_off is None:
                continue
            if e.scale is None:
                out = self._view(buf, e.slot_off, e.src)
                out.copy_(e.src, non_blocking=True)
            else:
                q = e.src
                if e.stage_off is not None:
                    q = self._view(stage, e.stage_off, e.src)
                    q.copy_(e.src, non_blocking=True)
                out = self._view(buf, e.slot_off, e.src, self.compute_dtype)
                dequantize_into(q, e.scale, out)
            if e.lora is not None:
                out.addmm_(*e.lora)             # the same arithmetic as a weight fused in place

    def _fetch(self, i: int) -> None:
        import torch

        k = self.turn
        self.turn = (self.turn + 1) % SLOTS
        if not self.persistent:
            self.slots[k] = self._new_slot()
        if self.cuda:
            with torch.cuda.stream(self.stream):
                if self.slot_free[k] is not None:
                    self.stream.wait_event(self.slot_free[k])
                self._fill(i, self.slots[k])
                event = torch.cuda.Event()
                event.record(self.stream)
        else:
            self._fill(i, self.slots[k])
            event = None
        self.ready[i] = (k, event)

    def _make_pre(self, i: int):
        def pre(module, args):
            import torch

            if i not in self.ready:
                self._fetch(i)                   # the first block of a pass, or after a plan change
            k, event = self.ready.pop(i)
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
            self._point_slot(i, self.slots[k])
            if self.persistent:
                self._fetch((i + 1) % len(self.blocks))   # the next block copies while this one computes
            self._current_slot = k
        return pre

    def _make_post(self, i: int):
        def post(module, args, output):
            import torch

            k = self._current_slot
            if self.cuda:
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(self.device))
                self.slot_free[k] = event
            self._point_rest(i)
            if not self.persistent:
                self.slots[k] = None             # the caching allocator reuses it for activations
            return output
        return post

    def remove(self, to_device: str) -> None:
        """Unhook and put every block's tensors on `to_device` as ordinary tensors."""
        import torch

        for h in self.handles:
            h.remove()
        if self.cuda:
            torch.cuda.synchronize(self.device)
        if self.pinner is not None:
            self.pinner.close()
        for i, block in enumerate(self.blocks):
            self._point_rest(i)
            for e in self.layouts[i]:
                if e.at_rest is not None:         # int8 again, as the plan found it
                    self._set(e, e.at_rest[0])
            block.to(to_device)
        self.ready.clear()


def _move_own_tensors(module, device: str, skip: set[int]) -> None:
    """Move the tensors of `module` and its submodules to `device`, except inside modules in `skip`."""
    stack = [module]
    while stack:
        m = stack.pop()
        if id(m) in skip:
            continue
        for name, p in m._parameters.items():
            if p is not None:
                p.data = p.data.to(device)
        for name, b in m._buffers.items():
            if b is not None:
                m._buffers[name] = b.to(device)
        stack.extend(m.children())


def set_vae_tiling(vae, on: bool) -> None:
    """Decode in 512-pixel tiles (blended at the seams) or whole."""
    if not hasattr(vae, "enable_tiling"):
        return
    if on:
        vae.enable_tiling()
        vae.tile_sample_min_size = VAE_TILE_PIXELS
        vae.tile_latent_min_size = VAE_TILE_PIXELS // 2 ** (len(vae.config.block_out_channels) - 1)
    else:
        vae.disable_tiling()


def torch_device_is_cuda(device: str) -> bool:
    import torch

    return torch.device(device).type == "cuda"


class LowVramRuntime:
    """A pipeline running under a Plan: resident parts on the GPU, streamed blocks in RAM, int8
    blocks dequantized as they run, the text encoder visiting the GPU only to encode (when the
    plan says so). The weights may start anywhere (GPU or RAM): nothing is read from disk.

    A loaded `controlnet` is placed by the same plan: its first `plan.control_resident` blocks and
    its control embedder on the GPU, its other blocks streamed by a BlockStreamer of their own (they
    run between the transformer's shared refiners and its layers, so they cannot share its slots).
    Its shared embedders and refiners are the transformer's, placed with it."""

    def __init__(self, pipe, plan: Plan, device: str, controlnet=None):
        self.pipe, self.plan, self.device, self.controlnet = pipe, plan, device, controlnet
        # The loader's RAM, page-locked first (0.35-0.9 s for 5-20 GB on the GPU machine), so that
        # the resident part goes to the GPU by DMA instead of pageable copies (2.5 s for 9 GB).
        # Held until the setup is done: RAM whose tensors move to the GPU is unlocked before it is freed.
        control_tensors = list(controlnet.parameters()) + list(controlnet.buffers()) if controlnet is not None else []
        loader_ram = big_storages(pipeline_tensors(pipe) + control_tensors)
        self.pinner = HostPinner(address_ranges(loader_ram)).wait() if torch_device_is_cuda(device) else None
        locked = frozenset(self.pinner.locked) if self.pinner is not None else frozenset()
        streamer = functools.partial(BlockStreamer, device=device, compute_dtype=pipe.vae.dtype, locked=locked)
        quantized = lambda block: any(SCALE in m._buffers for m in block.modules())   # noqa: E731
        blocks = transformer_blocks(pipe.transformer)
        resident = plan.resident_blocks
        if any(quantized(b) for b in blocks):
            handled = blocks
            self.streamers = [streamer(blocks, on_device=resident, dense=plan.dense_blocks)]
        else:
            handled = blocks[resident:]
            self.streamers = [streamer(handled)] if handled else []
        # the transformer's streamer carries LoRAs for the weights it streams or dequantizes (engine.lora)
        self.lora_carrier = self.streamers[0] if self.streamers else None
        text_layers = text_encoder_layers(pipe.text_encoder)
        if not plan.text_encoder_on_gpu:
            self.streamers.append(streamer(text_layers, persistent_slots=False))
            handled = handled + text_layers
        elif any(quantized(b) for b in text_layers):
            self.streamers.append(streamer(text_layers, on_device=len(text_layers)))
            handled = handled + text_layers
        skip = {id(b) for b in handled}
        for name, component in pipe.components.items():
            if hasattr(component, "_parameters"):
                _move_own_tensors(component, device, skip)
        if controlnet is not None:
            control = controlnet_blocks(controlnet)
            streamed = control[plan.control_resident:]
            if streamed:
                self.streamers.append(streamer(streamed))
            # its own tensors only: the shared modules are the transformer's (placed above)
            shared = {id(m) for m in pipe.transformer.modules()}
            _move_own_tensors(controlnet, device, shared | {id(b) for b in streamed})
        set_vae_tiling(pipe.vae, plan.vae_tiling)
        self._sync()
        if self.pinner is not None:
            self.pinner.release(set(loader_ram) - set(self.ram_in_use()))
        del loader_ram                  # RAM of the parts now on the GPU is freed here

    def ram_in_use(self) -> dict[int, object]:
        """The big RAM allocations the plan still reads: streamed blocks' tensors, and any left in RAM."""
        streamed = [t for s in self.streamers for entries in s.layouts for e in entries
                    for t in (e.src, e.at_rest[0] if e.at_rest else None) if t is not None]
        control = list(self.controlnet.parameters()) if self.controlnet is not None else []
        return big_storages(streamed + pipeline_tensors(self.pipe) + control)

    @property
    def pinning(self) -> tuple[int, int]:
        """(bytes page-locked so far, bytes to lock): the loader's RAM, then blocks packed since."""
        pinners = [p for p in [self.pinner, *(s.pinner for s in self.streamers)] if p is not None]
        return sum(p.bytes_done for p in pinners), sum(p.bytes_total for p in pinners)

    def _sync(self) -> None:
        import torch

        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)

    def remove(self, to_device: str) -> None:
        self._sync()
        if self.pinner is not None:     # unlocked before the moves below can free that RAM
            self.pinner.close()
        for streamer in self.streamers:
            streamer.remove(to_device)
        set_vae_tiling(self.pipe.vae, False)
        for name, component in self.pipe.components.items():
            if hasattr(component, "to"):
                component.to(to_device)
        if self.controlnet is not None:
            self.controlnet.to(to_device)
        self._sync()
