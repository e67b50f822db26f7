"""store/pnginfo: an image's generation parameters from every place generators write them."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from zimage.errors import ZImageError
from zimage.infotext import parse_infotext
from zimage.store.pnginfo import comfy_prompt, comfy_workflow, parameters_of, read_image_info
from zimage.web.page.ui_params import gallery_caption, generate_values

A1111 = ("masterpiece, a castle <lora:detail:0.6>\nNegative prompt: lowres, bad hands\n"
         "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3141592653, Size: 512x768, "
         "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: \"detail: abc123\", Version: v1.9.4")
FORGE = ("a cat on a sofa\nSteps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, "
         "Seed: 42, Size: 1024x1024, Model: flux1-dev-bnb-nf4-v2, Version: f2.0.1v1.10.1-previous-313")
COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 156680208700286, "steps": 20, "cfg": 8.0,
                                               "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                               "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
                                               "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode",
          "inputs": {"text": "beautiful scenery nature glass bottle", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
}


def png_bytes(tmp_path, name="a.png", size=(40, 30), after_idat=False, **texts) -> str:
    meta = PngInfo()
    for key, value in texts.items():
        meta.add_itxt(key, value) if key == "itxt" else meta.add_text(key, value, zip=key == "prompt")
    path = tmp_path / name
    Image.new("RGB", size).save(path, format="PNG", pnginfo=meta)
    if after_idat:                  # move the text chunks after IDAT, where some writers put them
        data = path.read_bytes()
        i, j = data.index(b"IDAT") - 4, data.index(b"IEND") - 4
        head, text_at = data[:33], data[33:i]
        path.write_bytes(head + data[i:j] + text_at + data[j:])
    return str(path)


def read(path, max_bytes=10**7, max_pixels=10**7):
    return read_image_info(path, max_bytes, max_pixels)


def test_a1111_png(tmp_path):
    info = read(png_bytes(tmp_path, parameters=A1111))
    p = info.parameters
    assert info.source == "parameters" and info.raw == A1111 and info.format == "PNG"
    assert p["prompt"] == "masterpiece, a castle <lora:detail:0.6>" and p["negative_prompt"] == "lowres, bad hands"
    assert (p["steps"], p["seed"], p["guidance_scale"], p["width"], p["height"]) == (28, 3141592653, 7.0, 512, 768)
    assert p["model"] == "v1-5-pruned-emaonly" and p["lora_hashes"] == {"detail": "abc123"}


def test_forge_text_after_the_image_data(tmp_path):
    info = read(png_bytes(tmp_path, parameters=FORGE, after_idat=True))
    assert info.parameters["prompt"] == "a cat on a sofa" and info.parameters["seed"] == 42


def test_comfyui_prompt_chunk(tmp_path):
    info = read(png_bytes(tmp_path, prompt=json.dumps(COMFY_PROMPT), workflow="{}"))
    p = info.parameters
    assert info.source == "comfyui"
    assert p["prompt"] == "beautiful scenery nature glass bottle" and p["negative_prompt"] == "text, watermark"
    assert (p["seed"], p["steps"], p["guidance_scale"]) == (156680208700286, 20, 8.0)
    assert (p["width"], p["height"]) == (512, 512)
    assert p["model"] == "v1-5-pruned-emaonly.safetensors" and p["params"]["sampler_name"] == "euler"


def test_comfyui_workflow_only_and_sd3_latent():
    workflow = {"nodes": [
        {"id": 3, "type": "KSampler", "widgets_values": [7, "fixed", 30, 4.5, "euler", "simple", 1],
         "inputs": [{"name": "positive", "link": 11}, {"name": "negative", "link": 12}]},
        {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["unused negative"]},
        {"id": 8, "type": "CLIPTextEncode", "widgets_values": ["a red panda"]},
        {"id": 9, "type": "EmptySD3LatentImage", "widgets_values": [1024, 576, 1]}],
        "links": [[11, 8, 0, 3, 1, "CONDITIONING"], [12, 6, 0, 3, 2, "CONDITIONING"]]}
    p = comfy_workflow(workflow)
    assert p["prompt"] == "a red panda" and p["negative_prompt"] == "unused negative"
    assert (p["seed"], p["steps"], p["guidance_scale"], p["width"], p["height"]) == (7, 30, 4.5, 1024, 576)
    sd3 = dict(COMFY_PROMPT, **{"5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1344, "height": 768}}})
    assert comfy_prompt(sd3)["width"] == 1344


@pytest.mark.parametrize("graph", [None, [], "x", {"1": "x"}, {"1": {"class_type": "KSampler", "inputs": []}},
                                   {"3": {"class_type": "KSampler", "inputs": {"positive": ["3", 0], "seed": "x"}}},
                                   {"3": {"class_type": "KSampler", "inputs": {"positive": [None]}}}])
def test_comfyui_odd_graphs_give_what_they_can_and_never_raise(graph):
    out = comfy_prompt(graph)
    assert out == {} or "seed" not in out
    assert comfy_workflow(graph) == {} or isinstance(comfy_workflow(graph), dict)
    assert parameters_of({"prompt": json.dumps(graph)})[0] in ("comfyui", "none")


SAMPLER_NODE = {"type": "KSampler", "widgets_values": [1, "fixed", 2, 3.0]}


@pytest.mark.parametrize("graph", [
    {"nodes": [SAMPLER_NODE], "links": 5},                       # were TypeErrors: the PNG Info tab and
    {"nodes": [SAMPLER_NODE], "links": [[[1], 2]]},              # png-info failed on these workflows
    {"nodes": [dict(SAMPLER_NODE, inputs=[{"name": "positive", "link": [1]}])], "links": []},
])
def test_comfyui_workflows_with_odd_links_still_give_the_sampler(graph):
    found = comfy_workflow(graph)
    assert (found["seed"], found["steps"], found["guidance_scale"]) == (1, 2, 3.0)
    assert parameters_of({"workflow": json.dumps(graph)})[0] == "comfyui"


@pytest.mark.parametrize("odd, typed", [
    ("Steps: ², Seed: --5, CFG scale: 2, Size: ²x³", {"guidance_scale": 2.0}),       # isdigit() yes, int() no
    (f"Steps: 3, Seed: {'9' * 5000}, Size: {'9' * 5000}x1", {"steps": 3}),             # past int()'s 4300 digits
    ("Steps: 4, Seed: 99999999999999999999, Size: 64x32", {"steps": 4, "seed": 99999999999999999999, "width": 64}),
])
def test_odd_figures_in_a_foreign_png_are_left_out_not_raised(tmp_path, odd, typed):
    p = read(png_bytes(tmp_path, parameters=f"a foreign one\n{odd}")).parameters
    assert p["prompt"] == "a foreign one"
    assert {k: p[k] for k in ("steps", "seed", "guidance_scale", "width") if k in p} == typed


BIG = "9" * 5000                    # over Python's 4,300-digit limit for int()
# Crafted metadata: (the image's text chunks, what must be read). Each was a ValueError, TypeError
# or OverflowError: a 500 in png-info and the PNG Info tab.
CRAFTED = [
    ({"parameters": "a cat\nSteps: ², Seed: ³, Size: ²x³, CFG scale: 2"}, {"steps": None, "seed": None, "width": None}),
    ({"parameters": "a cat\nSteps: ٣, Seed: ٣٣, Size: ٣٢٠x٣٢٠, CFG scale: 2"}, {"steps": None, "width": None}),
    ({"parameters": f"a cat\nSteps: {BIG}, Seed: -{BIG}, Size: {BIG}x{BIG}, CFG scale: {BIG}"},
     {"steps": None, "seed": None, "width": None, "guidance_scale": None}),
    ({"prompt": json.dumps({"1": {"class_type": ["CheckpointLoaderSimple"], "inputs": {}},
                            "3": {"class_type": "KSampler", "inputs": {"steps": 3}},
                            "4": {"class_type": ["LoraLoader"], "inputs": {"lora_name": "x"}},
                            "5": {"class_type": {"a": 1}, "inputs": {}}})}, {"steps": 3}),
    ({"prompt": '{"3": {"class_type": "KSampler", "inputs": {"steps": 4, "seed": %s, "cfg": 1%s}}, '
                '"5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1%s, "height": 64}}}'
                % (BIG, "0" * 400, "0" * 400)}, {"steps": 4, "seed": None, "guidance_scale": None, "width": None}),
    ({"workflow": json.dumps({"nodes": [{"id": 2, "type": ["KSampler"], "widgets_values": [1]},
                                        {"id": 3, "type": "KSampler", "widgets_values": [10**400, "f", 5, 1]},
                                        {"id": 9, "type": "EmptyLatentImage", "widgets_values": [10**400, 64]}]})},
     {"steps": 5, "seed": None, "width": None}),
]


@pytest.mark.parametrize("texts, expected", CRAFTED)
def test_crafted_numbers_and_node_types_are_read_as_far_as_they_go(tmp_path, texts, expected):
    src, _, params = parameters_of(texts)
    assert src in ("parameters", "comfyui")
    for key, value in expected.items():
        assert params.get(key) == value, (key, params)
    values = generate_values(params)          # the PNG Info tab's Send to Generate
    assert all(not isinstance(v, int) or abs(v) < 2**64 for v in values.values())
    json.dumps(params)                          # png-info's answer


def test_itxt_and_no_parameters(tmp_path):
    assert read(png_bytes(tmp_path, itxt="x")).source == "none"
    meta = PngInfo()
    meta.add_itxt("parameters", "一只猫\nSteps: 9, Seed: 5, Size: 256x256")
    path = tmp_path / "i.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=meta)
    assert read(path).parameters["prompt"] == "一只猫"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a1111_jpeg_and_webp_exif_user_comment(tmp_path, fmt):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + A1111.encode("utf-16-be")
    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (64, 64)).save(path, format=fmt, exif=exif.tobytes())
    info = read(path)
    assert info.source == "exif" and info.format == fmt and info.parameters["seed"] == 3141592653


def test_the_caps_apply_before_decoding(tmp_path):
    path = png_bytes(tmp_path, size=(300, 200), parameters=A1111)
    with pytest.raises(ZImageError, match="300x200 pixels"):
        read(path, max_pixels=50_000)
    with pytest.raises(ZImageError, match="bytes; uploads may be at most 100"):
        read(path, max_bytes=100)


def test_generate_values_fit_the_controls():
    values = generate_values({"prompt": "p", "negative_prompt": "n", "steps": 80, "seed": 2**40, "width": 500,
                              "height": 100_000, "guidance_scale": 30.0})
    assert values == {"prompt": "p", "negative": "n", "steps": 50, "seed": -1, "width": 496, "height": 2048,
                      "guidance": 20.0, "variety": 0.0}       # it names its seed but no variety: made without
    assert generate_values({"prompt": "only"}) == {"prompt": "only"}
    assert generate_values({"params": {}, "prompt": ""}) == {}
    assert generate_values({"prompt": "p", "seed": 5, "variety": 0.35})["variety"] == 0.35
    assert generate_values(parse_infotext("a fox\nSteps: 2, Seed: 5, Size: 256x256, Variety: 0.4"))["variety"] == 0.4
    for odd in ("3", "-0.5", "nan", "x" * 40):          # out of range or not a number: the image made without
        assert generate_values(parse_infotext(f"a\nSteps: 2, Seed: 5, Size: 256x256, Variety: {odd}"))["variety"] == 0.0


def test_gallery_caption_names_the_parameters():
    caption = gallery_caption("a very long prompt about a lighthouse standing on a cliff <lora:ink:0.8>", 7, 9,
                              832, 1216, (("ink", 0.8),), 1.234)
    assert caption == ("a very long prompt about a lighthouse s… · seed 7 · 9 steps · 832x1216 · LoRA ink 0.8"
                       " · 1.23 s")
