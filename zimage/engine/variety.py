"""Variety's noise on the prompt embeddings (the policy and its numbers: zimage/variety.py).

The embeddings are ZImagePipeline's unpadded list, one (tokens, dim) tensor per image, so no padding
row needs protecting. Each image's noise comes from its own seed on a CPU generator: the same seed
and variety give the same picture on every device, and image k of a batch is the picture its seed
gives alone. The clean list comes back through the pipeline's step callback (its loop pops
`prompt_embeds` from what the callback returns), so the pipeline is not patched.
"""
from __future__ import annotations

from ..variety import NOISE_STD_SCALE, SHARE

# Added to the image seed so the embedding noise is not drawn from the same stream as the latents'.
SEED_OFFSET = 0x5EED


def noisy_embeds(embeds: list, seeds: list[int], variety: float) -> list:
    """One new tensor per image: `embeds[i]` with uniform noise of amplitude variety x 2 x std on
    SHARE of its values, drawn from seeds[i]. The inputs (the prompt cache's) are never changed."""
    import torch

    out = []
    for embedding, seed in zip(embeds, seeds):
        gen = torch.Generator(device="cpu").manual_seed((seed + SEED_OFFSET) % 2**63)
        shape = tuple(embedding.shape)
        noise = torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1
        keep = torch.rand(shape, generator=gen, dtype=torch.float32) < SHARE
        amplitude = variety * NOISE_STD_SCALE * float(embedding.float().std())
        noise = (noise * keep * amplitude).to(device=embedding.device, dtype=embedding.dtype)
        out.append(embedding + noise)
    return out


def varied_texts(pipe, prompt, per_prompt: int, seeds: list[int], variety: float, negative: str | None,
                 guided: bool, encode=None) -> tuple[dict, list]:
    """(the pipeline's text arguments with one noisy embedding per image, the clean list to restore).
    `encode` is the prompt cache's (pipe, prompts) -> embeddings; without it the pipeline's own."""
    prompts = [prompt] * per_prompt if isinstance(prompt, str) else [p for p in prompt for _ in range(per_prompt)]

    def embed(texts: list[str]) -> list:
        if encode is not None:
            return encode(pipe, texts)
        return pipe.encode_prompt(list(texts), do_classifier_free_guidance=False)[0]   # it rewrites the list

    clean = embed(prompts)
    texts = dict(prompt=None, prompt_embeds=noisy_embeds(clean, seeds, variety))
    if guided:
        texts["negative_prompt_embeds"] = embed([negative or ""] * len(prompts))
    return texts, clean
