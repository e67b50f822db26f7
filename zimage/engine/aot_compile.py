"""The transformer's repeated blocks compiled ahead of time, in a process of their own (issue 30, item 2).

The in-thread compile (compile_bg) traces the blocks with dynamo on a thread of the model worker:
its tracing holds the worker's GIL, and images served meanwhile took 1.646 s instead of 1.34 s eager
on the H100 (1024², 8 steps), for 52-142 s after launch. Here the model worker starts
`python -m zimage.engine.aot_compile SPEC` (aot_blocks.PackageCompile), at the lowest CPU priority;
this process imports torch and diffusers' block class only (no pipeline, no weights), exports one
`ZImageTransformerBlock` of each kind with torch.export and compiles it with AOTInductor into a
`.pt2` package per kind, which the worker loads between two images (aot_blocks: seconds), and every
later launch loads from the disk without compiling.

The exported program is the block as a function of its weights, `f(weights, x, pairs[, adaln])`:
the weights are inputs, not constants, so one package serves every block of a kind with the block's
own tensors (no copy: the worker passes its parameters), and whatever changes them in place (a
fused LoRA) or moves them (unload to RAM and back) is read at each call. The block is built on the
meta device and exported over fake tensors of the worker's weights' shapes and dtypes (`spec`):
this process allocates nothing for weights, on the GPU or in RAM. Two kinds: the modulated block
(noise refiner and main layers) and the plain one (context refiner), each with batch and sequence
length dynamic, with no attention mask (batch 1, or prompts of one padded length); a masked call, or
any other input a package does not cover, runs the block eagerly (aot_blocks.PackagedForward).

The rotary embedding comes in as real (cos, sin) pairs (accel.rotate_pairs): an exported program
takes no complex input; the worker passes `torch.view_as_real(freqs_cis)`, a view.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

CODE_VERSION = 1          # part of the package key: bump when the exported function changes
MANIFEST = "manifest.json"
KINDS = {"mod": True, "plain": False}      # the kind's `modulation`: noise refiner and layers, context refiner
BATCH_MAX = 64                             # the dynamic ranges a package covers; larger runs eagerly
SEQ_MAX = 1 << 16                          # 2048² is 16384 image tokens
# The sizes the compile assumes (its size hints): a 1024² image is 4096 tokens, a caption ~128 after
# padding. Batch 2, not 1: torch.export specializes an example size of 1 (then no other batch runs).
BATCH_HINT = 2
SEQ_HINT = {"mod": 4096 + 128, "plain": 128}
NICE = 19                                  # the lowest CPU priority: the worker's serving threads come first
INDUCTOR_CONFIGS = {"aot_inductor.package_constants_in_so": False}    # no weights in the package


def pairs_processor():
    """accel's real-arithmetic attention processor, with the rotation given as real pairs."""
    from .accel import real_rope_processor, rotate_pairs

    class PairsAttnProcessor(real_rope_processor()):
        rotate = staticmethod(rotate_pairs)

    return PairsAttnProcessor


def meta_block(config: dict, modulation: bool, attention: str | None):
    """One block of the transformer's `config` on the meta device (no memory), with the pairs processor."""
    import torch
    from diffusers.models.transformers.transformer_z_image import ZImageTransformerBlock

    with torch.device("meta"):
        block = ZImageTransformerBlock(0, config["dim"], config["n_heads"], config["n_kv_heads"], config["norm_eps"],
                                       config["qk_norm"], modulation=modulation)
    processor = pairs_processor()()
    processor._attention_backend = attention
    block.attention.processor = processor
    return block.eval()


def exported_block(block, names: list[str]):
    """`block` as a function of its weights (in `names`' order): forward(weights, x, pairs[, adaln])."""
    import torch

    class BlockOfWeights(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block = block

        def forward(self, weights, x, pairs, adaln=None):
            return torch.func.functional_call(self.block, dict(zip(names, weights)), (x, None, pairs, adaln))

    return BlockOfWeights()


def export_kind(config: dict, kind: str, weights: list, dtype: str, device: str, attention: str | None):
    """torch.export of one kind over fake tensors: `weights` is [[name, shape, dtype], ...] as the
    worker's blocks have them."""
    import torch
    from diffusers.models.transformers.transformer_z_image import ADALN_EMBED_DIM
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.export import Dim

    modulation = KINDS[kind]
    block = meta_block(config, modulation, attention)
    names = [name for name, _, _ in weights]
    dim, pairs = config["dim"], config["dim"] // config["n_heads"] // 2
    batch, seq = BATCH_HINT, SEQ_HINT[kind]
    with FakeTensorMode():
        fake_weights = [torch.empty(shape, dtype=getattr(torch, d), device=device) for _, shape, d in weights]
        x = torch.empty(batch, seq, dim, dtype=getattr(torch, dtype), device=device)
        rope = torch.empty(batch, seq, pairs, 2, dtype=torch.float32, device=device)
        adaln = torch.empty(batch, min(dim, ADALN_EMBED_DIM), dtype=getattr(torch, dtype), device=device)
    b, s = Dim("batch", min=1, max=BATCH_MAX), Dim("seq", min=2, max=SEQ_MAX)
    args = (fake_weights, x, rope) + ((adaln,) if modulation else ())
    shapes = ([None] * len(weights), {0: b, 1: s}, {0: b, 1: s}) + (({0: b},) if modulation else ())
    with torch.no_grad():
        return torch.export.export(exported_block(block, names), args, dynamic_shapes=shapes, strict=False)


def build(spec: dict) -> Path:
    """Compile every kind of `spec` into its folder: written beside it, renamed into place when all
    are done, so a folder with a manifest is complete. Returns the folder."""
    import torch

    final = Path(spec["folder"])
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    kinds = {}
    for kind, weights in spec["kinds"].items():
        started = time.perf_counter()
        program = export_kind(spec["config"], kind, weights, spec["dtype"], spec["device"], spec.get("attention"))
        exported = time.perf_counter()
        torch._inductor.aoti_compile_and_package(program, package_path=str(tmp / f"{kind}.pt2"),
                                                 inductor_configs=INDUCTOR_CONFIGS)
        log.info("block kind %s: exported in %.1f s, compiled in %.1f s", kind, exported - started,
                 time.perf_counter() - exported)
        kinds[kind] = {"file": f"{kind}.pt2", "weights": weights}
    manifest = {"key": spec["key"], "code_version": CODE_VERSION, "torch": torch.__version__, "dtype": spec["dtype"],
                "device": spec["device"], "batch_max": BATCH_MAX, "seq_max": SEQ_MAX, "kinds": kinds,
                "pid": os.getpid()}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    try:
        tmp.rename(final)
    except OSError:            # another process finished the same key first: keep its package
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _end_with_parent() -> None:
    """The worker holds our stdin open: EOF means it ended (kill -9 too), and so does this process."""
    def watch() -> None:
        while os.read(0, 4096):       # the raw fd: a buffered stdin's lock would abort the interpreter's exit
            pass
        os._exit(3)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.nice(NICE)
    _end_with_parent()
    spec = json.loads(argv[0])
    started = time.perf_counter()
    folder = build(spec)
    log.info("compiled blocks package %s in %.1f s (pid %d)", folder, time.perf_counter() - started, os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
