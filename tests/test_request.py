"""request.py: the one validator every route shares, seeds; infotext.py: A1111's infotext, written and read back."""
import pytest

from zimage.errors import InvalidRequest
from zimage.infotext import infotext
from zimage.request import GenerationRequest

OK = {"prompt": "a cat", "width": 512, "height": 768, "num_inference_steps": 4, "seed": 7}


def test_seed_request_shape_and_turbo_defaults():
    r = GenerationRequest.from_mapping({"prompt": "warmup", "width": 512, "height": 512,
                                        "num_inference_steps": 1, "seed": 1})
    assert (r.width, r.height, r.num_inference_steps, r.seed) == (512, 512, 1, 1)
    d = GenerationRequest.from_mapping({"prompt": "x"})
    assert (d.width, d.height, d.num_inference_steps, d.guidance_scale, d.seed, d.num_images) == \
        (1024, 1024, 8, 0.0, -1, 1)


@pytest.mark.parametrize("patch,field", [
    ({"prompt": None}, "prompt"), ({"prompt": ["a"]}, "prompt"), ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 4001}, "prompt"), ({"prompt": "a\x00b"}, "prompt"),
    ({"width": 500}, "width"), ({"width": 128}, "width"), ({"width": 4096}, "width"),
    ({"height": "512"}, "height"), ({"height": None}, "height"), ({"height": 512.5}, "height"),
    ({"width": True}, "width"),
    ({"num_inference_steps": 0}, "num_inference_steps"), ({"num_inference_steps": 51}, "num_inference_steps"),
    ({"num_inference_steps": "ten"}, "num_inference_steps"),
    ({"seed": -2}, "seed"), ({"seed": 2**40}, "seed"), ({"seed": 1.5}, "seed"),
    ({"guidance_scale": float("nan")}, "guidance_scale"), ({"guidance_scale": -1}, "guidance_scale"),
    ({"guidance_scale": "high"}, "guidance_scale"),
    ({"num_images": 0}, "num_images"), ({"num_images": 5}, "num_images"),
    ({"negative_prompt": 3}, "negative_prompt"), ({"steps": 9}, "steps"),
])
def test_bad_fields_are_named(patch, field):
    data = dict(OK, **patch)
    with pytest.raises(InvalidRequest) as e:
        GenerationRequest.from_mapping(data)
    assert e.value.field == field and field in e.value.message


def test_integral_floats_are_integers():
    # JSON has one number type: 512.0 is 512 (JSON Schema's "integer" says so too; found by the schema fuzz).
    r = GenerationRequest.from_mapping(dict(OK, width=512.0, num_inference_steps=4.0, seed=7.0, num_images=2.0))
    assert (r.width, r.num_inference_steps, r.seed, r.num_images) == (512, 4, 7, 2)
    assert all(type(v) is int for v in (r.width, r.num_inference_steps, r.seed, r.num_images))


def test_missing_prompt_and_non_object_body():
    with pytest.raises(InvalidRequest, match="prompt: is required"):
        GenerationRequest.from_mapping({"width": 512})
    with pytest.raises(InvalidRequest, match="body"):
        GenerationRequest.from_mapping(["prompt"])


def test_unicode_prompt_is_accepted():
    r = GenerationRequest.from_mapping(dict(OK, prompt="一只猫 🐈 \u202eRTL"))
    assert "🐈" in r.prompt


def test_random_seed_is_resolved_and_images_get_consecutive_seeds():
    r = GenerationRequest.from_mapping(dict(OK, seed=-1, num_images=3)).with_resolved_seed()
    assert r.seed >= 0
    assert r.seeds() == [r.seed, r.seed + 1, r.seed + 2]
    fixed = GenerationRequest.from_mapping(OK)
    assert fixed.with_resolved_seed() is fixed


def test_infotext_follows_a1111():
    r = GenerationRequest.from_mapping(dict(OK, negative_prompt="blurry", guidance_scale=1.5))
    text = infotext(r, 7)
    assert text.splitlines()[0] == "a cat"
    assert text.splitlines()[1] == "Negative prompt: blurry"
    assert "Steps: 4" in text and "Seed: 7" in text and "Size: 512x768" in text and "CFG scale: 1.5" in text


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_lone_surrogate_names_its_field(field):
    with pytest.raises(InvalidRequest) as e:
        GenerationRequest.from_mapping({**OK, field: "a \udfff b"})
    assert e.value.field == field and "surrogate at character 2" in e.value.message


def test_parse_infotext_reads_back_what_infotext_writes():
    from zimage.infotext import infotext, parse_infotext
    from zimage.request import GenerationRequest

    req = GenerationRequest.from_mapping({"prompt": "a cat, on a mat: <lora:style:0.8>\nsecond line",
                                          "negative_prompt": "blurry", "width": 768, "height": 512,
                                          "num_inference_steps": 7, "guidance_scale": 1.5})
    text = infotext(req, 42, lora_hashes={"style": "0123456789ab"})
    got = parse_infotext(text)
    assert got["prompt"] == req.prompt
    assert got["negative_prompt"] == "blurry"
    assert (got["steps"], got["seed"], got["guidance_scale"], got["width"], got["height"]) == (7, 42, 1.5, 768, 512)
    assert got["model"] == "Z-Image-Turbo"
    assert got["lora_hashes"] == {"style": "0123456789ab"}


def test_parse_infotext_takes_a1111_text_and_leaves_plain_prompts_alone():
    from zimage.infotext import parse_infotext

    a1111 = ("masterpiece, 1girl\nNegative prompt: lowres, bad hands\nSteps: 20, Sampler: DPM++ 2M, "
             'Schedule type: Karras, CFG scale: 7, Seed: 3735928559, Size: 512x768, Model hash: abc, '
             'Model: sdxl, Lora hashes: "add_detail: 7c6bad76eb54, other: 0123"')
    got = parse_infotext(a1111)
    assert got["prompt"] == "masterpiece, 1girl" and got["negative_prompt"] == "lowres, bad hands"
    assert got["params"]["Sampler"] == "DPM++ 2M" and got["seed"] == 3735928559
    assert (got["width"], got["height"], got["steps"]) == (512, 768, 20)
    assert got["lora_hashes"] == {"add_detail": "7c6bad76eb54", "other": "0123"}
    plain = parse_infotext("a note: not parameters")
    assert plain == {"prompt": "a note: not parameters", "negative_prompt": "", "params": {}}
    assert parse_infotext(None)["prompt"] == ""
    assert "seed" not in parse_infotext("p\nSteps: x, Seed: y, Size: 9x, CFG scale: nan")


def test_parse_infotext_takes_time_in_proportion_to_the_text():
    """A1111's unbounded key pattern backtracked over the whole last line at each position: a PNG
    whose parameters were one 900,000-character line held a worker for about an hour (20,000 characters
    took 2.1 s here). Keys are bounded now, and a last line over 64 KB is prompt text."""
    import time

    from zimage.infotext import MAX_PARAMS_LINE, parse_infotext

    started = time.perf_counter()
    assert parse_infotext("x" * 20_000)["params"] == {}
    assert parse_infotext("x" * 900_000)["prompt"] == "x" * 900_000
    assert time.perf_counter() - started < 1.5
    long_params = "a cat\nSteps: 9, Seed: 4, Size: 256x256, Notes: " + "n" * (MAX_PARAMS_LINE - 100)
    assert parse_infotext(long_params)["seed"] == 4          # a long line under the cap still parses


def test_turbo_defaults_are_8_steps_and_no_guidance():
    """diffusers >= 0.39 counts steps as transformer passes: Turbo's card's 8 forwards are 8 steps (9 cost one more)."""
    req = GenerationRequest.from_mapping({"prompt": "a cat"})
    assert req.num_inference_steps == 8 and req.guidance_scale == 0.0


def test_cfg_options_of_the_base_model_are_fields():
    req = GenerationRequest.from_mapping({"prompt": "a cat", "guidance_scale": 4, "cfg_normalization": True,
                                          "cfg_truncation": 0.5})
    assert req.cfg_normalization is True and req.cfg_truncation == 0.5
    assert "CFG normalization: True, CFG truncation: 0.5" in infotext(req, 1)
    assert "CFG normalization" not in infotext(GenerationRequest.from_mapping({"prompt": "a cat"}), 1)
    for bad, field in (({"cfg_normalization": "yes"}, "cfg_normalization"), ({"cfg_truncation": 1.5}, "cfg_truncation"),
                       ({"cfg_truncation": float("nan")}, "cfg_truncation"), ({"cfg_truncation": True}, "cfg_truncation")):
        with pytest.raises(InvalidRequest) as e:
            GenerationRequest.from_mapping({"prompt": "a cat", **bad})
        assert e.value.field == field
