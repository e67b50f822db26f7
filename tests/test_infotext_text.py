"""infotext_text: what infotext writes into a PNG reads back the same through PNG info (quoted
values, a prompt line that looks like the negative's start, the negative left out where unused)."""
from __future__ import annotations

import pytest
from PIL import Image

from zimage.infotext import infotext
from zimage.infotext_text import escape_prompt, quote, unescape_line, unquote
from zimage.request import GenerationRequest
from zimage.store.outputs import OutputStore
from zimage.store.pnginfo import read_image_info

DEMO_LABEL = "Z-Image-Turbo (demo, random weights)"


def round_trip(tmp_path, req: GenerationRequest, model: str = "Z-Image-Turbo", seed: int = 5) -> dict:
    """Written into a PNG by the output store, read back as the PNG Info tab reads it."""
    path = OutputStore(tmp_path / "out").save(Image.new("RGB", (8, 8)), seed, infotext(req, seed, model))
    return read_image_info(path, 10**7, 10**7).parameters


def request(**fields) -> GenerationRequest:
    return GenerationRequest.from_mapping({"prompt": "a cat", "width": 256, "height": 256,
                                           "num_inference_steps": 2, **fields})


@pytest.mark.parametrize("model", [DEMO_LABEL, 'my "best" model', "a: b", "plain"])
def test_a_model_name_with_a_comma_colon_or_quote_reads_back_whole(tmp_path, model):
    got = round_trip(tmp_path, request(), model)
    assert got["model"] == model
    assert (got["seed"], got["steps"], got["width"]) == (5, 2, 256)       # the keys after it still read


def test_a_value_is_quoted_as_a1111_quotes_it():
    assert quote(DEMO_LABEL) == '"Z-Image-Turbo (demo, random weights)"'
    assert quote("plain") == "plain"
    assert unquote('"a, \\"b\\""') == 'a, "b"'
    assert unquote('"not json \\x"') == "not json \\x"        # an older writer's quotes are still dropped


@pytest.mark.parametrize("prompt", ["Negative prompt: is part of the prompt",
                                    "a cat\nNegative prompt: still the prompt\nthird line",
                                    "a cat\n  Negative prompt: indented",
                                    "\\Negative prompt: already a backslash"])
def test_a_prompt_line_like_the_negatives_start_stays_in_the_prompt(tmp_path, prompt):
    got = round_trip(tmp_path, request(prompt=prompt, negative_prompt="blurry\nNegative prompt: twice",
                                       guidance_scale=1.5))
    assert got["prompt"] == prompt
    assert got["negative_prompt"] == "blurry\nNegative prompt: twice"


def a1111_prompt_lines(text: str) -> tuple[str, str]:
    """A1111's parse_generation_parameters' prompt loop (modules/infotext_utils.py), last line dropped."""
    prompt, negative, done = "", "", False
    for line in text.strip().split("\n")[:-1]:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done, line = True, line[16:].strip()
        if done:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    return prompt, negative


def test_a1111_reads_the_escaped_line_as_prompt_text():
    text = infotext(request(prompt="a cat\nNegative prompt: x", negative_prompt="dog", guidance_scale=2), 1)
    assert a1111_prompt_lines(text) == ("a cat\n\\Negative prompt: x", "dog")
    assert unescape_line(escape_prompt("\\\\Negative prompt:")) == "\\\\Negative prompt:"


def test_the_negative_prompt_is_written_only_where_guidance_uses_it(tmp_path):
    unused = round_trip(tmp_path, request(negative_prompt="blurry", guidance_scale=0))
    assert unused["negative_prompt"] == "" and unused["guidance_scale"] == 0
    assert "Negative prompt" not in infotext(request(negative_prompt="blurry", guidance_scale=0), 1)
    used = round_trip(tmp_path, request(negative_prompt="blurry", guidance_scale=1.5))
    assert used["negative_prompt"] == "blurry" and used["guidance_scale"] == 1.5
