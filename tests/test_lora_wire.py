"""LoRAs from the prompt (`<lora:NAME:w>`, A1111's syntax) through the validator, the manager and
every generation route, and the A1111 list routes, on the tiny model and tiny LoRA files."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import re

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from zimage.config import Settings
from zimage.config_load import load_settings
from zimage.engine.manager import PipelineManager
from zimage.errors import (InvalidRequest, LoraMismatch, LoraModeUnsupported, LoraNameRefused, LoraNotFound,
                           LoraUnreadable)
from zimage.infotext import infotext, parse_infotext
from zimage.request import GenerationRequest, batch_key
from zimage.store.loras import autov3_hash
from zimage.testing.tiny_lora import make_tiny_loras
from conftest import page_client

SMALL = {"width": 256, "height": 256, "num_inference_steps": 2, "seed": 7}


@pytest.fixture(scope="module")
def lora_files(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return folder, make_tiny_loras(folder, tiny_model_dir)


@pytest.fixture
def settings(settings, lora_files) -> Settings:
    """conftest's (the model in the test's process), on the tiny LoRAs' folder."""
    return dataclasses.replace(settings, lora_dir=str(lora_files[0]))


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def b64_pixels(text: str) -> np.ndarray:
    return pixels(Image.open(io.BytesIO(base64.b64decode(text))))


# ---- the validator ------------------------------------------------------------------------------
def test_prompt_tags_become_the_lora_set_and_leave_the_encoder_prompt():
    req = GenerationRequest.from_mapping({"prompt": "a cat, <lora:styles/trigger_words:0.5>, red <lora:kohya_style>"})
    assert req.loras == (("styles/trigger_words", 0.5), ("kohya_style", 1.0))
    assert req.prompt == "a cat, <lora:styles/trigger_words:0.5>, red <lora:kohya_style>"    # the infotext keeps them
    assert req.encoder_prompt == "a cat, red"
    plain = GenerationRequest.from_mapping({"prompt": "  a  cat \n"})
    assert plain.loras == () and plain.encoder_prompt == "  a  cat \n"      # no tags: the prompt as it was


@pytest.mark.parametrize("prompt", ["<lora::1>", "<lora:x:2.5>", "<lora:x:-3>", "<lora:x:strong>",
                                    "a <lora:x:1", "<lora:x:1:1>", "<lora:x:nan>"])
def test_a_malformed_tag_or_strength_is_refused_naming_the_prompt(prompt):
    with pytest.raises(InvalidRequest) as e:
        GenerationRequest.from_mapping({"prompt": prompt})
    assert e.value.field == "prompt" and e.value.http_status == 422


def test_different_lora_sets_never_share_a_batch_and_the_infotext_has_their_hashes():
    a = GenerationRequest.from_mapping({"prompt": "cat <lora:a:1>"})
    b = GenerationRequest.from_mapping({"prompt": "dog <lora:a:0.5>"})
    c = GenerationRequest.from_mapping({"prompt": "dog <lora:a:1>"})
    assert batch_key(a) != batch_key(b) and batch_key(a) == batch_key(c)
    assert batch_key(a) != batch_key(GenerationRequest.from_mapping({"prompt": "cat"}))
    text = infotext(a, 3, lora_hashes={"a": "0123456789ab"})
    assert text.splitlines()[0] == "cat <lora:a:1>"
    # an A1111 entry of the parameters line (A1111 closes the line with Version:, as we do)
    assert ', Lora hashes: "a: 0123456789ab",' in text.splitlines()[-1]
    assert parse_infotext(text)["lora_hashes"] == {"a": "0123456789ab"}
    assert "Lora hashes" not in infotext(GenerationRequest.from_mapping({"prompt": "cat"}), 3)


def test_lora_dir_defaults_beside_the_outputs_and_has_a_flag(tmp_path):
    s = Settings(outputs_dir=str(tmp_path / "out"))
    assert s.lora_folder == tmp_path / "models" / "loras"
    flagged = load_settings(["--lora-dir", str(tmp_path / "mine")], env={}, default_config=None)
    assert flagged.lora_folder == tmp_path / "mine"


# ---- the manager ---------------------------------------------------------------------------------
@pytest.fixture
def manager(settings):
    m = PipelineManager(settings).start()
    yield m
    m.close()


def gen(manager, prompt: str, **kw):
    req = GenerationRequest.from_mapping({"prompt": prompt, **SMALL, **kw})
    return manager.generate(req, timeout=300)


def test_manager_fuses_switches_and_restores_without_reloading(manager, lora_files):
    folder, paths = lora_files
    base = gen(manager, "a cat")
    lora = gen(manager, "a cat <lora:diffusers_style:1>")
    assert np.abs(pixels(lora.images[0].image) - pixels(base.images[0].image)).max() > 0
    # the same file, read again: the same picture; the infotext names it with A1111's hash
    assert parse_infotext(lora.images[0].infotext)["lora_hashes"] == {"diffusers_style": autov3_hash(paths["diffusers"])}
    other = gen(manager, "a cat <lora:kohya/kohya_style:1>")
    assert np.abs(pixels(other.images[0].image) - pixels(lora.images[0].image)).max() > 0
    # strength 0 fuses nothing, and the encoder never sees the tag: the base model's pixels
    zero = gen(manager, "a cat, <lora:diffusers_style:0>")
    assert np.array_equal(pixels(zero.images[0].image), pixels(base.images[0].image))
    again = gen(manager, "a cat")
    assert np.array_equal(pixels(again.images[0].image), pixels(base.images[0].image))
    assert "Lora hashes" not in again.images[0].infotext
    back = gen(manager, "a cat <lora:diffusers_style:1>")
    assert np.array_equal(pixels(back.images[0].image), pixels(lora.images[0].image))
    assert manager.load_count == 1


def test_a_file_replaced_under_the_same_name_is_read_again(settings, tmp_path):
    """The same `<lora:swap:1>` twice, with the file replaced in between (what a user does after
    downloading a new version): the second image is the new file's, not the first one's still fused."""
    import shutil

    folder = tmp_path / "loras"
    folder.mkdir()
    srcs = make_tiny_loras(tmp_path / "src", settings.model)
    m = PipelineManager(dataclasses.replace(settings, lora_dir=str(folder))).start()
    try:
        want = {}
        for kind in ("diffusers", "comfy"):
            shutil.copy(srcs[kind], folder / f"{kind}_only.safetensors")
            want[kind] = pixels(gen(m, f"a cat <lora:{kind}_only:1>").images[0].image)
        assert np.abs(want["diffusers"] - want["comfy"]).max() > 0
        swap = folder / "swap.safetensors"
        shutil.copy(srcs["diffusers"], swap)
        assert np.array_equal(pixels(gen(m, "a cat <lora:swap:1>").images[0].image), want["diffusers"])
        shutil.copy(srcs["comfy"], folder / "tmp.safetensors")
        (folder / "tmp.safetensors").replace(swap)          # another size and time under the same name
        assert np.array_equal(pixels(gen(m, "a cat <lora:swap:1>").images[0].image), want["comfy"])
        assert m.load_count == 1
    finally:
        m.close()


@pytest.mark.parametrize("tag, error", [("sdxl_style", LoraMismatch), ("no_such_lora", LoraNotFound),
                                        ("../../etc/passwd", LoraNameRefused), ("corrupt", LoraUnreadable),
                                        ("pickled", LoraUnreadable), ("wrong_shape", LoraMismatch)])
def test_a_lora_error_reaches_the_caller_and_the_next_image_is_the_base_models(manager, tag, error):
    base = gen(manager, "a cat")
    gen(manager, "a cat <lora:diffusers_style:1>")          # another set fused before the failing one
    with pytest.raises(error):
        gen(manager, f"a cat <lora:{tag}:1>")
    after = gen(manager, "a cat")
    assert np.array_equal(pixels(after.images[0].image), pixels(base.images[0].image))
    assert manager.load_count == 1


def test_a_prompt_of_tags_alone_gives_the_encoder_an_empty_prompt(manager):
    assert gen(manager, "<lora:diffusers_style:1>").images[0].infotext.startswith("<lora:diffusers_style:1>\n")


def test_a_half_matching_lora_is_used_with_a_note(manager):
    result = gen(manager, "a cat <lora:half_match:1>")
    assert "LoRA half_match" in result.warning and "do" in result.warning


def test_fp8_weights_refuse_loras_by_name_and_bf16_weights_take_them(settings):
    """Rounding W + delta to e4m3 would leave mostly noise (manager._lora_refusal), so a transformer
    whose blocks are fp8 refuses; `--fp8 on` where fp8 cannot run (no CUDA here) runs bf16, and
    there LoRAs work. fp8's matmul needs CUDA, so its modules are put in by hand after the load."""
    from types import SimpleNamespace

    from zimage.engine import fp8

    m = PipelineManager(dataclasses.replace(settings, fp8="on")).start()
    try:
        base = gen(m, "a cat")
        assert np.abs(pixels(gen(m, "a cat <lora:diffusers_style:1>").images[0].image)
                      - pixels(base.images[0].image)).max() > 0
        m._loras.drop()                # what the manager does before it converts to fp8 (_run_apply_placement)
        fp8.apply(SimpleNamespace(transformer=m._pipe.transformer))
        with pytest.raises(LoraModeUnsupported) as e:
            gen(m, "a cat <lora:diffusers_style:1>")
        assert e.value.http_status == 409 and "--fp8 on" in e.value.message and "diffusers_style" in e.value.message
        fp8.remove(SimpleNamespace(transformer=m._pipe.transformer))
        assert gen(m, "a cat").images
    finally:
        m.close()


class CpuStreaming:
    """A low-VRAM plan carried out for real on the CPU (offload.LowVramRuntime with device "cpu"):
    block 0 resident, blocks 1-3 streamed through slots, as on a GPU; the manager believes it has one."""

    gpu_device = "cpu"

    def __init__(self):
        from zimage.engine.placement import TorchPlacement

        self.real = TorchPlacement("cpu")
        self.plans = 0

    def move(self, pipe, device, on_progress=None):
        pass

    def vram_budget_bytes(self):
        return 80 * 2**30

    def enable_offload(self, pipe, budget_bytes):
        from zimage.engine.offload import LowVramRuntime
        from zimage.engine.planning import Plan

        self.plans += 1
        self.real._runtime = LowVramRuntime(pipe, Plan(None, 1, 3, True, 0), "cpu")
        return "1 block resident, 3 streamed"

    def disable_offload(self, pipe):
        self.real.disable_offload(pipe)

    def lora_carrier(self):
        return self.real.lora_carrier()

    def free_memory(self):
        pass

    def release_pinned(self):
        pass


def streaming_manager(settings, **change):
    from test_manager import cpu_loader

    return PipelineManager(dataclasses.replace(settings, **change), placement_factory=CpuStreaming,
                           loader=cpu_loader).start()


def test_streamed_blocks_carry_their_lora_and_give_the_resident_picture(settings):
    """Low VRAM: the streamed blocks' weights at rest are never touched; the LoRA is added in their
    slot with the same arithmetic as fused in place, so the picture is the resident one's, pixel for
    pixel. Switching and going back to no LoRA need no new plan and no load."""
    from test_manager import FakeGpuPlacement, cpu_loader

    from zimage.state import LoadState

    # resident on the stand-in GPU: the same bf16 weights, fused in place
    resident = PipelineManager(settings, placement_factory=FakeGpuPlacement, loader=cpu_loader).start()
    try:
        want = {p: pixels(gen(resident, p).images[0].image)
                for p in ("a cat", "a cat <lora:diffusers_style:1>", "a cat <lora:diffusers_style:0.5> <lora:comfy_style:-1>")}
    finally:
        resident.close()
    m = streaming_manager(settings, low_vram=True)
    try:
        assert np.array_equal(pixels(gen(m, "a cat").images[0].image), want["a cat"])
        assert m.status().state == LoadState.OFFLOADED
        streamed = [p.detach().clone() for b in m._pipe.transformer.layers[1:] for p in b.parameters()]
        for prompt in list(want)[1:] + ["a cat", "a cat <lora:diffusers_style:1>"]:
            assert np.array_equal(pixels(gen(m, prompt).images[0].image), want[prompt]), prompt
        assert all(torch.equal(a, p) for a, p in
                   zip(streamed, [p for b in m._pipe.transformer.layers[1:] for p in b.parameters()]))
        assert np.array_equal(pixels(gen(m, "a cat").images[0].image), want["a cat"])
        assert m.load_count == 1 and m._placement.plans == 1
    finally:
        m.close()


def test_int8_blocks_carry_a_lora_through_their_dequantized_slots(settings, model_copy):
    from zimage.state import LoadState

    m = streaming_manager(settings, quantize="int8", model=str(model_copy))   # the int8 copy goes beside it
    try:
        base = gen(m, "a cat")
        assert m.status().state == LoadState.OFFLOADED
        lora = gen(m, "a cat <lora:diffusers_style:1>")
        assert np.abs(pixels(lora.images[0].image) - pixels(base.images[0].image)).max() > 0
        assert np.array_equal(pixels(gen(m, "a cat <lora:diffusers_style:0>").images[0].image),
                              pixels(base.images[0].image))
        assert np.array_equal(pixels(gen(m, "a cat <lora:diffusers_style:1>").images[0].image),
                              pixels(lora.images[0].image))
        assert m.load_count == 1
    finally:
        m.close()


class CpuStreamingDense(CpuStreaming):
    """An int8 plan whose first two resident blocks are kept dequantized (planning.with_dense_blocks)."""

    def enable_offload(self, pipe, budget_bytes):
        from zimage.engine.offload import LowVramRuntime
        from zimage.engine.planning import Plan

        self.plans += 1
        self.real._runtime = LowVramRuntime(pipe, Plan(None, 3, 1, True, 0, quantized=True, dense_blocks=2), "cpu")
        return "3 blocks resident (2 in bf16), 1 streamed"


def test_int8_blocks_kept_in_bf16_carry_a_lora_with_the_pictures_of_the_slots(settings, model_copy):
    """Issue 21: int8 blocks held dequantized take a LoRA too (made again from their int8 plus the
    terms), and give the pixels the plan that dequantizes them into slots gives."""
    want = {}
    m = streaming_manager(settings, quantize="int8", model=str(model_copy))
    try:
        for prompt in ("a cat", "a cat <lora:diffusers_style:1>"):
            want[prompt] = pixels(gen(m, prompt).images[0].image)
    finally:
        m.close()
    m = PipelineManager(dataclasses.replace(settings, quantize="int8", model=str(model_copy)),
                        placement_factory=CpuStreamingDense, loader=cpu_loader_for_tests()).start()
    try:
        for prompt in ("a cat", "a cat <lora:diffusers_style:1>", "a cat"):
            assert np.array_equal(pixels(gen(m, prompt).images[0].image), want[prompt]), prompt
        assert m.load_count == 1
    finally:
        m.close()


def cpu_loader_for_tests():
    from test_manager import cpu_loader

    return cpu_loader


# ---- the routes ------------------------------------------------------------------------------------
def post(srv, path: str, body) -> requests.Response:
    return requests.post(srv.url + path, data=json.dumps(body), headers={"Content-Type": "application/json"},
                         timeout=300)


ROUTES = {
    "/generate": (lambda p: {"prompt": p, **SMALL}, lambda r: r.json()["images"][0]),
    "/sdapi/v1/txt2img": (lambda p: {"prompt": p, "width": 256, "height": 256, "steps": 2, "seed": 7},
                          lambda r: r.json()["images"][0]),
    # OpenAI's body has no seed or steps (a random seed, 8 steps): the PNG's infotext says which
    "/v1/images/generations": (lambda p: {"prompt": p, "size": "256x256", "response_format": "b64_json"},
                               lambda r: r.json()["data"][0]["b64_json"]),
}


def without_lora(srv, png_b64: str) -> np.ndarray:
    """The same seed and steps as that image, prompt "a cat" without LoRA, through /generate."""
    text = Image.open(io.BytesIO(base64.b64decode(png_b64))).info["parameters"]
    seed, steps = int(re.search(r"Seed: (\d+)", text)[1]), int(re.search(r"Steps: (\d+)", text)[1])
    r = post(srv, "/generate", {"prompt": "a cat", "width": 256, "height": 256, "num_inference_steps": steps,
                                "seed": seed})
    assert r.status_code == 200, r.text
    assert "Lora hashes" not in r.json()["info"]
    return b64_pixels(r.json()["images"][0])


@pytest.mark.parametrize("path", list(ROUTES))
def test_each_route_honours_the_prompt_syntax(server, path, lora_files):
    body, image = ROUTES[path]
    r = post(server, path, body("a cat <lora:comfy_style:1.5>"))
    assert r.status_code == 200, r.text
    png = image(r)
    assert np.abs(b64_pixels(png) - without_lora(server, png)).max() > 0
    params = Image.open(io.BytesIO(base64.b64decode(png))).info["parameters"]
    assert params.startswith("a cat <lora:comfy_style:1.5>")
    assert f'Lora hashes: "comfy_style: {autov3_hash(lora_files[1]["comfy"])}"' in params
    r = post(server, path, body("a cat <lora:comfy_style:0>"))
    assert r.status_code == 200, r.text
    png = image(r)
    assert np.array_equal(b64_pixels(png), without_lora(server, png))
    r = post(server, path, body("a cat <lora:../../etc/passwd:1>"))
    assert 400 <= r.status_code < 500 and "passwd" in r.text and "refused" in r.text
    r = post(server, path, body("a cat <lora:comfy_style:9>"))
    assert r.status_code in (400, 422) and "prompt" in r.text
    assert server.manager.load_count == 1


def test_a1111_lora_list_with_the_real_client_and_refresh(server, lora_files):
    import webuiapi

    folder, paths = lora_files
    api = webuiapi.WebUIApi(host="127.0.0.1", port=server.settings.port)
    listed = {e["name"]: e for e in api.get_loras()}
    entry = listed["styles/trigger_words"]
    assert entry["alias"] == "styles/trigger_words" and entry["path"] == str(paths["triggers"])
    assert entry["metadata"]["modelspec.trigger_phrase"] == "zk style, glowing ink"
    assert entry["autov3"] == autov3_hash(paths["triggers"])
    assert listed["pickled"]["usable"] is False and "pickle" in listed["pickled"]["refused_reason"]
    assert "truncated" in listed["corrupt"]["refused_reason"]
    assert post(server, "/sdapi/v1/refresh-loras", {}).status_code == 200
    assert requests.post(server.url + "/sdapi/v1/refresh-loras", timeout=30).status_code == 200    # no body
    bad = requests.post(server.url + "/sdapi/v1/refresh-loras", data="[]",
                        headers={"Content-Type": "application/json"}, timeout=30)
    assert bad.status_code == 422 and "body" in bad.text


def test_queued_requests_with_other_lora_sets_are_not_batched_together(settings):
    m = PipelineManager(dataclasses.replace(settings, batch_max=4)).start()
    try:
        base = gen(m, "a cat")
        lora = gen(m, "a cat <lora:diffusers_style:1>")
        reqs = [GenerationRequest.from_mapping({"prompt": p, **SMALL})
                for p in ("a dog", "a cat <lora:diffusers_style:1>", "a cat")]
        jobs = [m.submit(r) for r in reqs]
        out = [j.future.result(300).images[0].image for j in jobs]
        # a shared call decodes in one batch (a level on a few pixels may differ), so: near, or far
        assert np.abs(pixels(out[2]) - pixels(base.images[0].image)).mean() < 0.5
        assert np.abs(pixels(out[1]) - pixels(lora.images[0].image)).mean() < 0.5
        assert np.abs(pixels(out[1]) - pixels(out[2])).mean() > 5
        assert m.load_count == 1
    finally:
        m.close()


def test_the_ray_backend_lists_the_local_lora_folder(settings, manager):
    from zimage.scale.ray_backend import RayBackend

    listed = RayBackend(settings).loras()           # never started: the list needs no cluster
    assert [e["name"] for e in listed] == [e["name"] for e in manager.loras()]
    assert {e["name"]: e["autov3"] for e in listed} == {e["name"]: e["autov3"] for e in manager.loras(refresh=True)}
    assert "styles/trigger_words" in {e["name"] for e in listed}


def test_the_page_honours_the_prompt_syntax(server):
    client = page_client(server.url)

    def page(prompt: str):
        gallery, _info = client.predict(prompt, "", 256, 256, 2, 0.0, 7, 1, [], api_name="/generate")
        image = gallery[0]["image"]
        return Image.open(image if isinstance(image, str) else image["path"])

    base, lora = page("a cat"), page("a cat <lora:kohya/kohya_style:1>")
    assert np.abs(pixels(lora) - pixels(base)).max() > 0
    assert 'Lora hashes: "kohya/kohya_style: ' in lora.text["parameters"]
    assert np.array_equal(pixels(page("a cat <lora:kohya/kohya_style:0>")), pixels(base))
    with pytest.raises(Exception, match="refused"):
        page("a cat <lora:../../etc/passwd:1>")
    assert server.manager.load_count == 1
