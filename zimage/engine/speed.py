"""The speed-up policy for a resident pipeline: the attention backend, fp8 matmuls, regional
compile and the warm-up images, and the undoing of fp8 before a low-VRAM plan streams the blocks.

Functions of the pipeline, the settings and the placement; the manager keeps the state changes
(it passes callbacks for what the page shows meanwhile).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from ..config import Settings
from .vram import is_oom

log = logging.getLogger(__name__)

COMPILE_BACKEND = "inductor"      # torch.compile's; "eager" (tracing, no code generation) in the CPU tests


def speed_up(pipe, settings: Settings, placement: Any, *, warm: bool, on_fp8: Callable[[str], None],
             on_warm_up: Callable[[], None]) -> tuple[str, bool]:
    """On the GPU with the model resident: the attention backend, fp8 (when wanted) and one eager
    warm-up image. The compile is not done here: it would hold readiness back (22 s with an empty
    inductor cache on the H100); the manager has it built in the background (compile_bg) when the
    second value returned is True. `on_fp8(note)` gets fp8's outcome for the page ("" when there is
    nothing to say) whenever fp8 is not off; `on_warm_up()` comes before the warm-up image.
    Returns (the attention backend in use, whether to compile in the background)."""
    import torch

    from . import accel
    from .generate import warm_up

    device = placement.gpu_device
    on_cuda = device is not None and torch.cuda.is_available()
    capability = torch.cuda.get_device_capability(device) if on_cuda else None
    attention = accel.set_attention(pipe, accel.choose_attention(settings.attention, capability))
    compiled = accel.want_compile(settings.compile, on_cuda)
    stored = fp8_stored_note(pipe, settings, compiled)
    compiled = compiled and not stored
    note = use_fp8(pipe, settings, placement, capability, compiled)
    if note is not None or stored:
        on_fp8("\n".join(filter(None, [stored, note])))
    if warm:
        on_warm_up()
        log.info("warm-up image in %.2f s (attention %s%s)", warm_up(pipe, prompt=accel.WARMUP_PROMPTS[0]),
                 attention, ", compiled blocks" if accel.is_compiled(pipe) else "")
    return attention, compiled and not accel.is_compiled(pipe)


def compile_cache_dir(settings: Settings):
    from ..store.cache import modelscope_cache_base
    from .accel import compile_cache_dir as under

    return under(modelscope_cache_base(settings.cache_dir))


def warm_compiled(pipe, size: int = 1024) -> None:
    """The background compile's warm-up: one image per prompt length, so the compiled blocks take
    any prompt length without compiling again (the shapes turn dynamic on the second)."""
    from .accel import WARMUP_PROMPTS
    from .generate import warm_up

    for prompt in WARMUP_PROMPTS:
        log.info("compiled warm-up image in %.2f s", warm_up(pipe, size, size, prompt=prompt))


def plan_compile_wanted(settings: Settings, placement: Any, pipe=None) -> bool:
    """Compile the blocks of a low-VRAM plan (under its streaming hooks)? The same rule as resident
    (never for a DiT kept in float8: fp8_stored_note)."""
    import torch

    from . import accel
    from .fp8_storage import is_fp8_stored

    if pipe is not None and is_fp8_stored(pipe.transformer):
        return False
    return accel.want_compile(settings.compile, placement.gpu_device is not None and torch.cuda.is_available())


def fp8_stored_note(pipe, settings: Settings, compile_wanted: bool) -> str:
    """The page's note when the DiT file's weights are kept in float8 (fp8_storage) and so the
    regional compile and `--fp8 on` step aside: diffusers' layerwise casting changes each layer's
    weight dtype inside its call, which the compiled blocks were never traced or measured with (no
    GPU here), and --fp8's own float8 Linears are made from bf16 weights. "" when neither applies."""
    from .fp8_storage import is_fp8_stored

    if not is_fp8_stored(pipe.transformer) or not (compile_wanted or settings.fp8 != "off"):
        return ""
    off = [what for what, on in (("compiled blocks", compile_wanted), ("--fp8 on", settings.fp8 != "off")) if on]
    note = (f"The DiT file is fp8 and its weights stay fp8 in memory (cast per layer as they run): "
            f"{' and '.join(off)} not used with it.")
    log.warning(note)
    return note


def warm_plan_piece(pipe, piece: int, size: int = 1024) -> bool:
    """Piece `piece` of a plan's compile: one 1-step image with the `piece`-th warm-up prompt length
    through the plan's hooks (the compiled forwards build their graphs here). Returns whether it was
    the last piece."""
    from .accel import WARMUP_PROMPTS
    from .generate import warm_up

    log.info("plan compile, warm-up image %d/%d in %.2f s", piece + 1, len(WARMUP_PROMPTS),
             warm_up(pipe, size, size, prompt=WARMUP_PROMPTS[piece]))
    return piece + 1 >= len(WARMUP_PROMPTS)


def use_fp8(pipe, settings: Settings, placement: Any, capability: tuple[int, int] | None,
            compiled: bool) -> str | None:
    """fp8 matmuls in the blocks when asked for and this GPU and setup can run them (before the
    compile, which then traces the fp8 blocks); otherwise bf16. Returns the note for the page
    ("" when fp8 runs or is not wanted), None when fp8 is off."""
    if settings.fp8 == "off":
        return None
    from . import fp8
    from .fp8_storage import is_fp8_stored

    if is_fp8_stored(pipe.transformer):
        return ""              # fp8_stored_note says why, once
    use, note = fp8.choose(settings.fp8, capability, compiled)
    if use:
        try:
            fp8.apply(pipe)
        except Exception as e:
            if not is_oom(e):
                raise
            note = "Not enough VRAM to convert the blocks to fp8 (it briefly needs 6 GB more); running bf16."
        if note:       # freed outside the except block: the traceback would keep the fp8 copies alive
            placement.free_memory()
    if note:
        log.warning(note)
    return note


def leave_fp8(pipe, settings: Settings, placement: Any) -> None:
    """Low-VRAM plans stream bf16 blocks: fp8 blocks go back to bf16 Linears first. In RAM, since
    the bf16 blocks take twice the VRAM of the fp8 ones and a plan is needed because VRAM is short."""
    if settings.fp8 == "off":
        return
    from . import fp8

    if fp8.is_applied(pipe):
        placement.move(pipe, "cpu")
        fp8.remove(pipe)


def resident_plan(pipe, settings: Settings) -> str:
    """The plan text the page shows for a resident pipeline."""
    if settings.fp8 != "off":
        from . import fp8

        if fp8.is_applied(pipe):
            return "everything on the GPU, fp8 matmuls in the transformer blocks"
    from .fp8_storage import is_fp8_stored

    if is_fp8_stored(pipe.transformer):
        return "everything on the GPU, fp8 weights in the transformer (cast per layer as they run)"
    return "everything on the GPU"
