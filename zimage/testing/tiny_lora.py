"""Small random LoRA files for the tiny Z-Image transformer, in each key layout people download.

The key shapes are the ones diffusers 0.42's `ZImageLoraLoaderMixin.lora_state_dict` reads (its
`_convert_non_diffusers_z_image_lora_to_diffusers` does the renaming): diffusers/PEFT
(`transformer.<module>.lora_A.weight`), kohya / sd-scripts (`lora_unet_<module with _>.lora_down.weight`,
`.lora_up.weight`, `.alpha`) and ComfyUI / ai-toolkit (`diffusion_model.<module>.lora_A.weight`).
Besides those: a LoRA for another model (SDXL keys), a half-matching one, one whose shapes are for a
larger model, a truncated file, a `.pt` whose bytes would crash `torch.load`, and one whose metadata
carries trigger words the way kohya and ModelSpec write them.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

RANK = 4
# The Linears a trainer targets in every block: attention and feed-forward (what ai-toolkit and
# sd-scripts train for Z-Image by default).
BLOCK_LINEARS = ("attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
                 "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
# Bytes that make torch.load fail loudly if anything ever unpickles the .pt file: a pickle that
# calls a function that does not exist.
PT_BYTES = b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x8c\x0cno_such_func\x93)R."


def target_shapes(transformer) -> dict[str, tuple[int, int]]:
    """module path -> (out_features, in_features) of the block Linears a LoRA trains."""
    import torch

    out = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(BLOCK_LINEARS) and \
                name.split(".")[0] in ("layers", "noise_refiner", "context_refiner"):
            out[name] = (module.out_features, module.in_features)
    return out


def _transformer(pipe_or_model_dir):
    """The transformer whose Linear shapes the files fit: a pipeline's, a transformer, a model
    folder's, or (None) one built from the tiny model's config, the same shapes as make_tiny_model's."""
    if pipe_or_model_dir is None:
        from diffusers import ZImageTransformer2DModel

        from .tiny_model import DIT_TINY

        return ZImageTransformer2DModel(**DIT_TINY)
    if hasattr(pipe_or_model_dir, "transformer"):
        return pipe_or_model_dir.transformer
    if hasattr(pipe_or_model_dir, "named_modules"):
        return pipe_or_model_dir
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel.from_pretrained(Path(pipe_or_model_dir) / "transformer")


def _pair(shape: tuple[int, int], generator, rank: int = RANK):
    import torch

    out_f, in_f = shape
    # Large enough that one LoRA visibly moves the tiny model's output, small enough to stay finite.
    down = torch.randn(rank, in_f, generator=generator) * 0.5
    up = torch.randn(out_f, rank, generator=generator) * 0.5
    return down.contiguous(), up.contiguous()


def kohya_name(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


def make_tiny_loras(out_dir, pipe_or_model_dir=None, seed: int = 0) -> dict[str, Path]:
    """Write the files; returns {kind: path}. Kinds: diffusers, kohya, comfy, other_model,
    half_match, wrong_shape, fused_qkv (kohya keys of one
    fused attention.qkv per block), corrupt, pickle, triggers (kohya keys with trigger-word metadata)."""
    import torch
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shapes = target_shapes(_transformer(pipe_or_model_dir))
    g = torch.Generator().manual_seed(seed)
    paths: dict[str, Path] = {}

    def write(kind: str, rel: str, tensors: dict, metadata: dict | None = None) -> Path:
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata or {"format": "pt"})
        paths[kind] = path
        return path

    diffusers = {}
    for module, shape in shapes.items():
        down, up = _pair(shape, g)
        diffusers[f"transformer.{module}.lora_A.weight"] = down
        diffusers[f"transformer.{module}.lora_B.weight"] = up
    write("diffusers", "diffusers_style.safetensors", diffusers)

    kohya = {}
    for module, shape in shapes.items():
        down, up = _pair(shape, g)
        base = kohya_name(module)
        kohya[f"{base}.lora_down.weight"] = down.to(torch.bfloat16)     # kohya saves in bf16/fp16
        kohya[f"{base}.lora_up.weight"] = up.to(torch.bfloat16)
        kohya[f"{base}.alpha"] = torch.tensor(float(RANK) / 2)         # scale alpha / rank = 0.5
    write("kohya", "kohya/kohya_style.safetensors", kohya)

    comfy = {}
    for module, shape in shapes.items():
        down, up = _pair(shape, g)
        comfy[f"diffusion_model.{module}.lora_A.weight"] = down.to(torch.float16)
        comfy[f"diffusion_model.{module}.lora_B.weight"] = up.to(torch.float16)
        comfy[f"diffusion_model.{module}.alpha"] = torch.tensor(float(RANK))
    write("comfy", "comfy_style.safetensors", comfy)

    sdxl = {}
    for i, (out_f, in_f) in enumerate([(640, 640), (640, 2048), (1280, 1280)]):
        base = f"lora_unet_down_blocks_{i}_attentions_0_transformer_blocks_0_attn1_to_q"
        down, up = _pair((out_f, in_f), g)
        sdxl[f"{base}.lora_down.weight"] = down
        sdxl[f"{base}.lora_up.weight"] = up
        sdxl[f"{base}.alpha"] = torch.tensor(float(RANK))
    write("other_model", "sdxl_style.safetensors", sdxl)

    half = {}
    modules = list(shapes)
    for module in modules[: len(modules) // 2]:
        down, up = _pair(shapes[module], g)
        half[f"transformer.{module}.lora_A.weight"] = down
        half[f"transformer.{module}.lora_B.weight"] = up
    for i in range(len(modules) - len(modules) // 2):      # as many modules this model lacks
        down, up = _pair((32, 32), g)
        half[f"transformer.single_blocks.{i}.attn.to_q.lora_A.weight"] = down
        half[f"transformer.single_blocks.{i}.attn.to_q.lora_B.weight"] = up
    write("half_match", "half_match.safetensors", half)

    wrong = {}
    for module, (out_f, in_f) in shapes.items():          # the same names, for a model twice as wide
        down, up = _pair((out_f * 2, in_f * 2), g)
        wrong[f"transformer.{module}.lora_A.weight"] = down
        wrong[f"transformer.{module}.lora_B.weight"] = up
    write("wrong_shape", "wrong_shape.safetensors", wrong)

    fused = {}                  # one fused qkv per block, as the original tree names it (diffusers splits it)
    blocks = sorted({m.rsplit(".attention.", 1)[0] for m in shapes if ".attention." in m})
    for block in blocks:
        out_f, in_f = shapes[f"{block}.attention.to_q"]
        down, up = _pair((3 * out_f, in_f), g)
        base = kohya_name(f"{block}.attention.qkv")
        fused[f"{base}.lora_down.weight"] = down
        fused[f"{base}.lora_up.weight"] = up
        fused[f"{base}.alpha"] = torch.tensor(float(RANK))
    write("fused_qkv", "kohya/fused_qkv.safetensors", fused)

    corrupt = out_dir / "corrupt.safetensors"
    save_file(diffusers, str(corrupt))
    data = corrupt.read_bytes()
    corrupt.write_bytes(data[: len(data) - len(data) // 3])     # a download that stopped
    paths["corrupt"] = corrupt

    pt = out_dir / "pickled.pt"
    pt.write_bytes(PT_BYTES)
    paths["pickle"] = pt

    tags = {"10_zkstyle": {"zkstyle": 40, "1girl": 25, "outdoors": 7},
            "5_reg": {"outdoors": 3, "landscape": 12}}
    meta = {"format": "pt", "ss_network_module": "networks.lora", "ss_network_dim": str(RANK),
            "ss_tag_frequency": json.dumps(tags), "modelspec.trigger_phrase": "zk style, glowing ink",
            "modelspec.architecture": "z-image-turbo/lora"}
    triggers = {k: v.clone() for k, v in kohya.items()}
    write("triggers", "styles/trigger_words.safetensors", triggers, meta)
    log.info("wrote %d tiny LoRA files under %s", len(paths), out_dir)
    return paths


def make_tagged_lora(src, dst, tags: int) -> Path:
    """`src`'s tensors (a file make_tiny_loras wrote) at `dst`, with kohya's `ss_tag_frequency`
    holding `tags` distinct training tags: tag_0 the most frequent, then falling counts. The
    red-team file of issue 36: 200,000 tags took 226 s to list, before the page could open."""
    from safetensors.torch import load_file, save_file

    freq = {"10_big": {f"tag_{i}": tags - i for i in range(tags)}}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(load_file(str(src)), str(dst), metadata={"format": "pt", "ss_tag_frequency": json.dumps(freq)})
    return dst
