"""Enhance on the text encoder already loaded: Z-Image's text encoder checkpoint is a whole
Qwen3ForCausalLM with tied embeddings (text_encoder/config.json: architectures Qwen3ForCausalLM,
tie_word_embeddings true), and diffusers loads it as Qwen3Model, the same network without its head.
A Qwen3ForCausalLM is built around that module on the meta device (no memory) and its head is
embed_tokens' own weight: no download and no second copy of the weights.

Runs on the manager's worker (one job at a time, never beside a generation on the same weights).
Stop and the timeout are checked before each new token (a StoppingCriteria).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..enhance_request import EnhanceRequest, EnhanceResult, clean_answer
from ..errors import Cancelled, EnhancerFailed, EnhancerTimeout

log = logging.getLogger(__name__)

TEMPERATURE, TOP_P, REPETITION_PENALTY = 0.7, 0.8, 1.05   # the official Space's sampling; ComfyUI's penalty
MAX_ANSWER_CHARS = 20000


def causal_lm(text_encoder):
    """A Qwen3ForCausalLM whose body is `text_encoder` and whose head shares its embedding weight."""
    from accelerate import init_empty_weights
    from transformers import Qwen3ForCausalLM

    with init_empty_weights():
        lm = Qwen3ForCausalLM(text_encoder.config)
    lm.model = text_encoder
    lm.lm_head.weight = text_encoder.embed_tokens.weight      # tied, as the checkpoint has it
    return lm.eval()


def _stopper(cancel: threading.Event, deadline: float, clock: Callable[[], float]):
    import torch
    from transformers import StoppingCriteria

    class Stop(StoppingCriteria):
        reason = ""

        def __call__(self, input_ids, scores, **kwargs):
            if cancel.is_set():
                self.reason = "cancelled"
            elif clock() > deadline:
                self.reason = "timeout"
            return torch.full((input_ids.shape[0],), bool(self.reason), dtype=torch.bool, device=input_ids.device)

    return Stop()


def enhance_local(pipe, req: EnhanceRequest, cancel: threading.Event, timeout_s: float,
                  clock: Callable[[], float] = time.monotonic) -> EnhanceResult:
    """The rewrite of `req.prompt` by the pipeline's own text encoder. Raises Cancelled on Stop,
    EnhancerTimeout past `timeout_s`."""
    import torch
    from transformers import StoppingCriteriaList

    started = clock()
    if cancel.is_set():
        raise Cancelled()
    lm = causal_lm(pipe.text_encoder)
    messages = [{"role": "system", "content": req.system_prompt}, {"role": "user", "content": req.prompt}]
    text = pipe.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                              enable_thinking=False)
    inputs = pipe.tokenizer(text, return_tensors="pt").to(pipe._execution_device)
    stop = _stopper(cancel, started + timeout_s, clock)
    cuda = [pipe._execution_device] if pipe._execution_device.type == "cuda" else []
    with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(req.seed)
        out = lm.generate(**inputs, max_new_tokens=req.max_new_tokens, do_sample=True, temperature=TEMPERATURE,
                          top_p=TOP_P, repetition_penalty=REPETITION_PENALTY,
                          stopping_criteria=StoppingCriteriaList([stop]),
                          pad_token_id=pipe.tokenizer.pad_token_id or pipe.tokenizer.eos_token_id)
    if stop.reason == "cancelled":
        raise Cancelled()
    if stop.reason == "timeout":
        raise EnhancerTimeout(timeout_s)
    new = out[0, inputs["input_ids"].shape[1]:]
    answer = clean_answer(pipe.tokenizer.decode(new, skip_special_tokens=True), MAX_ANSWER_CHARS)
    if not answer:
        raise EnhancerFailed("The text encoder's answer was empty.", "Try again (another seed), or edit the prompt.")
    return EnhanceResult(prompt=answer, original_prompt=req.prompt, seed=req.seed,
                         seconds=clock() - started, tokens=int(new.shape[0]), backend="text-encoder")
