"""The tiny random Z-Image model as the single files other apps keep, in their own trees.

`make_tiny_comfy(DIR)` writes ComfyUI's tree: DIR/models/diffusion_models (the DiT as one
.safetensors in ComfyUI's key layout: `model.diffusion_model.` prefix, fused `attention.qkv`; with
`gguf_type`, also as .gguf the way ComfyUI-GGUF's files are: no prefix, arch `lumina2`, 2-D weights
quantized by the gguf package), models/text_encoders (Qwen3 with HF key names, `model.` prefix, as
Comfy-Org's qwen_3_4b.safetensors) and models/vae (the Flux `ae.safetensors` LDM layout).
`make_tiny_a1111(DIR)` puts the same files where A1111/Forge keep them. Each file is the inverse
of diffusers' own single-file converter, and is checked against it when written: the weights are
the tiny diffusers model's of the same seed, so an image from these files equals one from that folder.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

DIT_FILE = "tiny_z_image_turbo_bf16.safetensors"
TE_FILE = "tiny_qwen_3_4b.safetensors"
VAE_FILE = "tiny_ae.safetensors"
# gguf-py writes the first four; Q4_K (which gguf-py only reads) is quantized by testing/gguf_quant.py
GGUF_TYPES = ("Q8_0", "Q5_0", "Q4_0", "BF16", "Q4_K")
COMFY_PREFIX = "model.diffusion_model."
# diffusers name -> ComfyUI name (the inverse of convert_z_image_transformer_checkpoint_to_diffusers)
_DIT_RENAMES = (("all_final_layer.2-1.", "final_layer."), ("all_x_embedder.2-1.", "x_embedder."),
                (".attention.to_out.0.", ".attention.out."), (".attention.norm_k.", ".attention.k_norm."),
                (".attention.norm_q.", ".attention.q_norm."))


def dit_to_comfy(state: dict) -> dict:
    """A diffusers ZImageTransformer2DModel state dict in ComfyUI's layout (q, k, v fused)."""
    import torch

    out = {}
    for key, value in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            k, v = key.replace(".to_q.", ".to_k."), key.replace(".to_q.", ".to_v.")
            value = torch.cat([value, state[k], state[v]], dim=0)
            key = key.replace(".attention.to_q.", ".attention.qkv.")
        for old, new in _DIT_RENAMES:
            key = key.replace(old, new)
        out[COMFY_PREFIX + key] = value
    return out


def vae_to_ldm(state: dict, config: dict) -> dict:
    """A diffusers AutoencoderKL state dict in the LDM/Flux `ae.safetensors` layout."""
    blocks = len(config["down_block_types"])
    renames = [("mid_block.attentions.0.", "mid.attn_1."), ("conv_norm_out.", "norm_out."),
               ("conv_shortcut.", "nin_shortcut.")]
    for i in range(2):
        renames.append((f"mid_block.resnets.{i}.", f"mid.block_{i + 1}."))
    for i in range(blocks):
        renames += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                    (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
                    (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{blocks - 1 - i}.block."),
                    (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{blocks - 1 - i}.upsample.")]
    attn = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out."))
    out = {}
    for key, value in state.items():
        new = key
        for old, repl in renames:
            new = new.replace(old, repl)
        if ".mid.attn_1." in new:
            for old, repl in attn:
                new = new.replace(".mid.attn_1." + old, ".mid.attn_1." + repl)
            if value.ndim == 2:                    # linear in diffusers, a 1x1 conv in LDM
                value = value[:, :, None, None]
        out[new] = value
    return out


def te_to_comfy(state: dict) -> dict:
    """A transformers Qwen3Model state dict with the `model.` prefix of Qwen3ForCausalLM files."""
    return {"model." + k: v for k, v in state.items()}


def _check_inverse(dit: dict, vae: dict, vae_config: dict, comfy_dit: dict, ldm_vae: dict) -> None:
    """diffusers' own converters must give the tiny model's tensors back, or the files are wrong."""
    from diffusers.loaders.single_file_utils import (convert_ldm_vae_checkpoint,
                                                     convert_z_image_transformer_checkpoint_to_diffusers)

    for name, mine, back in (("DiT", dit, convert_z_image_transformer_checkpoint_to_diffusers(dict(comfy_dit))),
                             ("VAE", vae, convert_ldm_vae_checkpoint(dict(ldm_vae), vae_config))):
        if set(back) != set(mine) or any(not back[k].equal(mine[k]) for k in mine):
            raise AssertionError(f"the {name} file does not convert back to the tiny model "
                                 f"(missing {sorted(set(mine) - set(back))[:3]}, extra {sorted(set(back) - set(mine))[:3]})")


def write_gguf(path: Path, comfy_dit: dict, gguf_type: str) -> Path:
    """The DiT as ComfyUI-GGUF writes it: no prefix, arch lumina2; 2-D weights whose rows fit the
    quant's blocks are quantized (testing/gguf_quant.py: in torch, on the tensors' device), the rest
    (norms, biases, pad tokens, odd widths) stay F32."""
    import gguf

    from .gguf_quant import block_size, quantize

    qtype = getattr(gguf.GGMLQuantizationType, gguf_type)
    block = block_size(gguf_type)
    writer = gguf.GGUFWriter(str(path), arch="lumina2")
    for key, value in comfy_dit.items():
        name = key.removeprefix(COMFY_PREFIX)
        if name.endswith(".weight") and value.ndim == 2 and value.shape[-1] % block == 0:
            writer.add_tensor(name, quantize(value, gguf_type), raw_dtype=qtype)
        else:
            writer.add_tensor(name, value.float().cpu().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _tiny_states(seed: int) -> tuple[dict, dict, dict, dict]:
    import json

    from safetensors.torch import load_file

    from .tiny_model import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = make_tiny_model(Path(tmp) / "tiny", seed=seed)

        def read(component: str) -> dict:
            state = {}
            for f in sorted((folder / component).glob("*.safetensors")):
                state.update(load_file(str(f)))
            return state
        vae_config = json.loads((folder / "vae" / "config.json").read_text())
        return read("transformer"), read("text_encoder"), read("vae"), vae_config


def _write_files(dit_dir: Path, te_dir: Path, vae_dir: Path, seed: int, gguf_type: str | None) -> dict[str, Path]:
    from safetensors.torch import save_file

    if gguf_type is not None and gguf_type not in GGUF_TYPES:
        raise ValueError(f"gguf type must be one of {', '.join(GGUF_TYPES)}, got {gguf_type!r}")
    dit, te, vae, vae_config = _tiny_states(seed)
    comfy_dit, ldm_vae = dit_to_comfy(dit), vae_to_ldm(vae, vae_config)
    _check_inverse(dit, vae, vae_config, comfy_dit, ldm_vae)
    for folder in (dit_dir, te_dir, vae_dir):
        folder.mkdir(parents=True, exist_ok=True)
    paths = {"dit": dit_dir / DIT_FILE, "text_encoder": te_dir / TE_FILE, "vae": vae_dir / VAE_FILE}
    save_file({k: v.contiguous() for k, v in comfy_dit.items()}, str(paths["dit"]))
    save_file(te_to_comfy(te), str(paths["text_encoder"]))
    save_file({k: v.contiguous() for k, v in ldm_vae.items()}, str(paths["vae"]))
    if gguf_type is not None:
        paths["gguf"] = write_gguf(dit_dir / f"tiny_z_image_turbo-{gguf_type}.gguf", comfy_dit, gguf_type)
    return paths


def make_tiny_comfy(out_dir: str | Path, seed: int = 0, gguf_type: str | None = None) -> dict[str, Path]:
    """ComfyUI's tree under `out_dir` (models/diffusion_models, text_encoders, vae); the paths written."""
    models = Path(out_dir) / "models"
    paths = _write_files(models / "diffusion_models", models / "text_encoders", models / "vae", seed, gguf_type)
    (models / "loras").mkdir(exist_ok=True)
    log.info("wrote the tiny model in ComfyUI's layout under %s", out_dir)
    return paths


def make_tiny_a1111(out_dir: str | Path, seed: int = 0, gguf_type: str | None = None) -> dict[str, Path]:
    """A1111/Forge's tree under `out_dir` (models/Stable-diffusion, text_encoder, VAE, Lora)."""
    models = Path(out_dir) / "models"
    paths = _write_files(models / "Stable-diffusion", models / "text_encoder", models / "VAE", seed, gguf_type)
    (models / "Lora").mkdir(exist_ok=True)
    return paths
