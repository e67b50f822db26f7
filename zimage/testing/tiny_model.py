"""Write a tiny Z-Image pipeline with random weights, in the real diffusers layout.

Same classes and folder layout as Tongyi-MAI/Z-Image-Turbo (ZImagePipeline, ZImageTransformer2DModel,
Qwen3Model, AutoencoderKL, FlowMatchEulerDiscreteScheduler, a Qwen-style tokenizer with a chat
template), a few MB in all, so the whole app runs on a CPU: `--demo` and the test suite use it.
Its images are noise.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)

QWEN3_TINY = dict(
    architectures=["Qwen3Model"], attention_bias=False, attention_dropout=0.0,
    bos_token_id=0, eos_token_id=2, head_dim=8, hidden_act="silu",
    hidden_size=32, initializer_range=0.02, intermediate_size=64,
    max_position_embeddings=40960, max_window_layers=2, model_type="qwen3",
    num_attention_heads=4, num_hidden_layers=2, num_key_value_heads=2,
    rms_norm_eps=1e-6, rope_theta=1000000, tie_word_embeddings=True,
    torch_dtype="bfloat16", use_cache=True, use_sliding_window=False, vocab_size=512,
)
DIT_TINY = dict(all_patch_size=[2], all_f_patch_size=[1], in_channels=16, dim=32,
                n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5,
                qk_norm=True, cap_feat_dim=32, rope_theta=256.0, t_scale=1000.0,
                axes_dims=[8, 4, 4], axes_lens=[1536, 512, 512])
VAE_TINY = dict(act_fn="silu", block_out_channels=[8, 8, 16, 16],
                down_block_types=["DownEncoderBlock2D"] * 4, in_channels=3,
                latent_channels=16, layers_per_block=1, mid_block_add_attention=True,
                norm_num_groups=4, out_channels=3, sample_size=1024,
                scaling_factor=0.3611, shift_factor=0.1159,
                up_block_types=["UpDecoderBlock2D"] * 4, use_post_quant_conv=False,
                use_quant_conv=False, force_upcast=True)
SCHEDULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
             "use_dynamic_shifting": False, "shift": 3.0}
MODEL_INDEX = {"_class_name": "ZImagePipeline", "_diffusers_version": "0.42.1",
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "text_encoder": ["transformers", "Qwen3Model"],
               "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
               "transformer": ["diffusers", "ZImageTransformer2DModel"],
               "vae": ["diffusers", "AutoencoderKL"]}
# Two shards for the transformer so the sharded-checkpoint code paths (index.json) are exercised.
TRANSFORMER_SHARDS = 2


def _random_state_dict(model, generator) -> dict:
    import torch

    out = {}
    # A norm's scale by its module's class as well as its name: the DiT's cap_embedder.0 is an RMSNorm,
    # and its zero weight made every caption embed to zeros (the tiny model ignored the prompt).
    norms = {f"{n}.weight" for n, m in model.named_modules() if "Norm" in type(m).__name__}
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if len(shape) == 1 and ("norm" in name or name.endswith("scale") or name in norms):
            value = torch.ones(shape)
        elif len(shape) == 1:
            value = torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:]) or 1
            value = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
        out[name] = value.to(torch.bfloat16).contiguous()
    return out


def _write_shards(folder: Path, stem: str, state: dict, shards: int) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    names = list(state)
    if shards <= 1:
        save_file(state, str(folder / f"{stem}.safetensors"), metadata={"format": "pt"})
        return
    per_shard = math.ceil(len(names) / shards)
    weight_map = {}
    for i in range(shards):
        part = names[i * per_shard:(i + 1) * per_shard]
        fname = f"{stem}-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in part})
    total = sum(t.numel() * t.element_size() for t in state.values())
    (folder / f"{stem}.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def _write_tokenizer(folder: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    trainer = trainers.BpeTrainer(vocab_size=min(vocab_size, 400), special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = ["a photo of a cat sitting on a red sofa, golden light", "user assistant system",
              "一只猫坐在红色沙发上", "portrait, landscape, city at night, neon, watercolor"] * 50
    tok.train_from_iterator(corpus, trainer)
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=131072)
    fast.chat_template = template
    fast.padding_side = "right"
    fast.save_pretrained(str(folder))


def make_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny pipeline into `out_dir` (created) and return it. Deterministic for a seed."""
    import torch
    from diffusers import AutoencoderKL, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)

    with torch.device("meta"):
        transformer = ZImageTransformer2DModel(**DIT_TINY)
        vae = AutoencoderKL(**VAE_TINY)
        qwen_cfg = Qwen3Config(**QWEN3_TINY)
        text_encoder = Qwen3Model(qwen_cfg)

    _write_shards(out / "transformer", "diffusion_pytorch_model",
                  _random_state_dict(transformer, generator), TRANSFORMER_SHARDS)
    transformer.save_config(str(out / "transformer"))
    _write_shards(out / "vae", "diffusion_pytorch_model", _random_state_dict(vae, generator), 1)
    vae.save_config(str(out / "vae"))
    text_state = _random_state_dict(text_encoder, generator)
    _write_shards(out / "text_encoder", "model", text_state, 1)
    qwen_cfg.save_pretrained(str(out / "text_encoder"))
    _write_tokenizer(out / "tokenizer", QWEN3_TINY["vocab_size"])
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
    # model_index.json last: its presence marks the folder complete.
    (out / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2))
    log.info("wrote tiny random Z-Image pipeline to %s", out)
    return out
