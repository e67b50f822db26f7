"""Low-VRAM mode: a plan that fits a VRAM budget, and streaming of transformer blocks.

Partial residency: as many transformer blocks as the budget allows stay on the GPU; the rest live
in one pinned RAM buffer and each is copied into one of two GPU slots just before it runs, on a
side CUDA stream, while the block before it computes (the next block's copy is issued from the
current block's pre-hook). Switching plans reuses the weights already in RAM or VRAM: no disk reads.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import ZImageError

log = logging.getLogger(__name__)

GiB = 2**30
# Activations of a 1024x1024 image beside the weights: resident peak 23.3 GB minus 20.5 GB of weights
# on the H100 (anchors). Most of it is the VAE decode.
WORKING_BYTES = int(2.8 * GiB)
SLOTS = 2


class DoesNotFit(ZImageError):
    http_status = 507
    code = "vram_budget_too_small"

    def __init__(self, budget_bytes: int, minimum_bytes: int):
        super().__init__(f"A {budget_bytes / GiB:.1f} GiB VRAM budget is below the {minimum_bytes / GiB:.1f} GiB "
                         "this model needs even with every block streamed from RAM.",
                         f"Set --vram-budget to at least {minimum_bytes / GiB:.1f} (GB).")
        self.budget_bytes, self.minimum_bytes = budget_bytes, minimum_bytes


@dataclass(frozen=True)
class Sizes:
    """Bytes of what a plan places: the transformer without its blocks and each block (in execution
    order), the text encoder likewise, the VAE."""
    core: int
    blocks: tuple[int, ...]
    vae: int
    text_core: int = 0
    text_blocks: tuple[int, ...] = ()

    @property
    def text_encoder(self) -> int:
        return self.text_core + sum(self.text_blocks)

    @property
    def total(self) -> int:
        return self.text_encoder + self.core + sum(self.blocks) + self.vae


@dataclass(frozen=True)
class Plan:
    budget_bytes: int | None
    resident_blocks: int          # the first blocks in execution order stay on the GPU
    streamed_blocks: int
    text_encoder_on_gpu: bool     # False: its layers are streamed too, while the prompt is encoded
    est_peak_bytes: int

    @property
    def is_resident(self) -> bool:
        return self.streamed_blocks == 0 and self.text_encoder_on_gpu

    def describe(self) -> str:
        budget = "no budget" if self.budget_bytes is None else f"budget {self.budget_bytes / GiB:.1f} GiB"
        if self.is_resident:
            return f"everything on the GPU ({budget}, about {self.est_peak_bytes / GiB:.1f} GiB)"
        te = "on the GPU" if self.text_encoder_on_gpu else "streamed while encoding"
        return (f"{self.resident_blocks} transformer blocks resident, {self.streamed_blocks} streamed from RAM; "
                f"text encoder {te} ({budget}, about {self.est_peak_bytes / GiB:.1f} GiB)")


def make_plan(sizes: Sizes, budget_bytes: int | None, working_bytes: int = WORKING_BYTES) -> Plan:
    """The fastest placement that fits: everything resident if it fits; else the text encoder's layers
    are streamed first (they run once per image, the transformer's nine times), then as many
    transformer blocks as fit stay resident and the rest are streamed."""
    n = len(sizes.blocks)
    everything = sizes.total + working_bytes
    if budget_bytes is None or everything <= budget_bytes:
        return Plan(budget_bytes, n, 0, True, everything)
    slot = max(sizes.blocks, default=0)
    text = sizes.text_core + SLOTS * max(sizes.text_blocks, default=0)
    for resident in range(n, -1, -1):
        streamed = n - resident
        peak = (sizes.core + sum(sizes.blocks[:resident]) + (SLOTS * slot if streamed else 0) + sizes.vae
                + text + working_bytes)
        if peak <= budget_bytes:
            return Plan(budget_bytes, resident, streamed, False, peak)
    raise DoesNotFit(budget_bytes, sizes.core + SLOTS * slot + sizes.vae + text + working_bytes)


def transformer_blocks(transformer) -> list:
    """The transformer's repeated blocks in the order its forward runs them."""
    return list(transformer.noise_refiner) + list(transformer.context_refiner) + list(transformer.layers)


def _tensor_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def sizes_of(pipe) -> Sizes:
    blocks = tuple(_tensor_bytes(b) for b in transformer_blocks(pipe.transformer))
    text_blocks = tuple(_tensor_bytes(b) for b in pipe.text_encoder.layers)
    return Sizes(core=_tensor_bytes(pipe.transformer) - sum(blocks), blocks=blocks, vae=_tensor_bytes(pipe.vae),
                 text_core=_tensor_bytes(pipe.text_encoder) - sum(text_blocks), text_blocks=text_blocks)


class BlockStreamer:
    """Keeps `blocks` in one pinned RAM buffer and brings each into a GPU slot just before it runs."""

    ALIGN = 64

    def __init__(self, blocks: list, device: str, persistent_slots: bool = True):
        """`persistent_slots=False` (the text encoder's visit): the GPU copy is made when the block
        runs and released right after, and nothing is prefetched."""
        import torch

        self.persistent = persistent_slots
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.blocks = blocks
        self.layouts = []          # per block: [(module, name, is_param, offset, dtype, shape)]
        offsets, total = [], 0
        for block in blocks:
            layout, start = [], total
            for module in block.modules():
                for name, t in list(module._parameters.items()) + list(module._buffers.items()):
                    if t is None:
                        continue
                    layout.append((module, name, name in module._parameters, total - start, t.dtype, t.shape))
                    total += -(-t.numel() * t.element_size() // self.ALIGN) * self.ALIGN
            self.layouts.append(layout)
            offsets.append((start, total - start))
        self.offsets = offsets
        self.host = torch.empty(total, dtype=torch.uint8, pin_memory=self.cuda)
        for block, layout, (start, _) in zip(blocks, self.layouts, offsets):
            for module, name, is_param, off, dtype, shape in layout:
                src = (module._parameters if is_param else module._buffers)[name]
                n = src.numel() * src.element_size()
                self.host[start + off:start + off + n].view(dtype).view(shape).copy_(src.detach().reshape(shape))
            self._point(block, layout, self.host, start)
        slot_bytes = max((size for _, size in offsets), default=0)
        self.slots = [torch.empty(slot_bytes, dtype=torch.uint8, device=self.device) if persistent_slots else None
                      for _ in range(SLOTS)]
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.ready: dict[int, object] = {}      # block index -> (slot, event) of its copy
        self.slot_free: list = [None] * SLOTS   # event: the block last in this slot has finished
        self.turn = 0
        self.handles = []
        for i, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(self._make_pre(i)))
            self.handles.append(block.register_forward_hook(self._make_post(i)))

    @staticmethod
    def _point(block, layout, buffer, start: int) -> None:
        import torch

        for module, name, is_param, off, dtype, shape in layout:
            n = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            view = buffer[start + off:start + off + n].view(dtype).view(shape)
            if is_param:
                module._parameters[name].data = view
            else:
                module._buffers[name] = view

    def _fetch(self, i: int) -> None:
        import torch

        slot = self.turn
        self.turn = (self.turn + 1) % SLOTS
        start, size = self.offsets[i]
        if not self.persistent:
            self.slots[slot] = torch.empty(size, dtype=torch.uint8, device=self.device)
        if self.cuda:
            with torch.cuda.stream(self.stream):
                if self.slot_free[slot] is not None:
                    self.stream.wait_event(self.slot_free[slot])
                self.slots[slot][:size].copy_(self.host[start:start + size], non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
        else:
            self.slots[slot][:size].copy_(self.host[start:start + size])
            event = None
        self.ready[i] = (slot, event)

    def _make_pre(self, i: int):
        def pre(module, args):
            import torch

            if i not in self.ready:
                self._fetch(i)                   # the first block of a pass, or after a plan change
            slot, event = self.ready.pop(i)
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
            self._point(module, self.layouts[i], self.slots[slot], 0)
            if self.persistent:
                self._fetch((i + 1) % len(self.blocks))   # the next block copies while this one computes
            self._current_slot = slot
        return pre

    def _make_post(self, i: int):
        def post(module, args, output):
            import torch

            slot = self._current_slot
            if self.cuda:
                event = torch.cuda.Event()
                event.record(torch.cuda.current_stream(self.device))
                self.slot_free[slot] = event
            self._point(module, self.layouts[i], self.host, self.offsets[i][0])
            if not self.persistent:
                self.slots[slot] = None          # the caching allocator reuses it for activations
            return output
        return post

    def remove(self, to_device: str) -> None:
        """Unhook and put every block's tensors on `to_device` as ordinary tensors."""
        import torch

        for h in self.handles:
            h.remove()
        if self.cuda:
            torch.cuda.synchronize(self.device)
        for block in self.blocks:
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


class LowVramRuntime:
    """A pipeline running under a Plan: resident parts on the GPU, streamed blocks in pinned RAM,
    the text encoder visiting the GPU only to encode (when the plan says so)."""

    def __init__(self, pipe, plan: Plan, device: str):
        self.pipe, self.plan, self.device = pipe, plan, device
        blocks = transformer_blocks(pipe.transformer)
        streamed = blocks[plan.resident_blocks:]
        self.streamers = []
        if streamed:
            self.streamers.append(BlockStreamer(streamed, device))
        text_layers = [] if plan.text_encoder_on_gpu else list(pipe.text_encoder.layers)
        if text_layers:
            self.streamers.append(BlockStreamer(text_layers, device))
        skip = {id(b) for b in streamed + text_layers}
        for name, component in pipe.components.items():
            if hasattr(component, "_parameters"):
                _move_own_tensors(component, device, skip)
        self._sync()

    def _sync(self) -> None:
        import torch

        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)

    def remove(self, to_device: str) -> None:
        for streamer in self.streamers:
            streamer.remove(to_device)
        for name, component in self.pipe.components.items():
            if hasattr(component, "to"):
                component.to(to_device)
        self._sync()
