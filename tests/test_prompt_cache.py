"""Text-encoder outputs kept per prompt (CPU, tiny model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zimage.engine.generate import run_pipeline
from zimage.engine.loader import load_pipeline
from zimage.engine.prompt_cache import PromptCache
from zimage.request import GenerationRequest


@pytest.fixture
def pipe(tiny_model_dir):
    return load_pipeline(tiny_model_dir, torch.float32, "cpu")


def encoder_calls(pipe) -> list:
    calls = []
    pipe.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    return calls


def image(pipe, encode=None, **kw) -> np.ndarray:
    req = GenerationRequest.from_mapping(dict({"prompt": "a cat", "width": 256, "height": 256,
                                               "num_inference_steps": 2, "seed": 3}, **kw))
    return np.stack([np.asarray(i) for i in run_pipeline(pipe, req, lambda: False, encode=encode)])


def test_same_prompt_new_seed_skips_the_text_encoder_with_the_same_pictures(pipe):
    plain = [image(pipe, seed=s) for s in (3, 4)]
    cache = PromptCache()
    calls = encoder_calls(pipe)
    cached = [image(pipe, cache.embeds, seed=s) for s in (3, 4)]
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert all(np.array_equal(a, b) for a, b in zip(plain, cached))          # bit for bit
    image(pipe, cache.embeds, prompt="a dog")
    assert len(calls) == 2


def test_guidance_and_several_images_use_cached_negative_and_repeat_embeddings(pipe):
    kw = dict(guidance_scale=4.0, negative_prompt="blurry", num_images=2)
    plain = image(pipe, **kw)
    cache = PromptCache()
    assert np.array_equal(image(pipe, cache.embeds, **kw), plain)
    assert np.array_equal(image(pipe, cache.embeds, **kw), plain)
    assert cache.misses == 2 and cache.hits == 2                              # "a cat" and "blurry", once each


def test_least_recently_used_prompts_go_first_and_a_new_pipeline_empties_it(pipe, tiny_model_dir):
    cache = PromptCache(max_entries=2)
    calls = encoder_calls(pipe)
    for prompt in ["a", "b", "a", "c", "a", "b"]:                             # b is evicted by c, then re-encoded
        cache.embeds(pipe, [prompt])
    assert len(calls) == 4
    other = load_pipeline(tiny_model_dir, torch.float32, "cpu")
    other_calls = encoder_calls(other)
    cache.embeds(other, ["a"])
    assert len(other_calls) == 1                                               # not the first pipeline's "a"
