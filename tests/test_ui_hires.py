"""ui_hires without a browser: the accordion's values per session make Generate's hires spec, a
bad value names the page's control in both languages, and Upscale's picture is only ever one of
this browser's own results or a listed History entry."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from zimage.config import Settings
from zimage.errors import InvalidRequest
from zimage.request import GenerationRequest
from zimage.web.page.page_jobs import PageJobs, Result
from zimage.web.page.ui_hires import HiresPicks, gallery_path, page_refusal, with_page_hires


def req() -> GenerationRequest:
    return GenerationRequest.from_mapping({"prompt": "x", "width": 512, "height": 256})


def session(name: str):
    return SimpleNamespace(session_hash=name)


def test_generate_gets_the_ticked_accordion_of_its_own_session(tmp_path):
    settings = Settings(outputs_dir=str(tmp_path / "outputs"))
    picks = HiresPicks()
    assert with_page_hires(req(), picks, session("a"), settings).hires is None          # unticked: none
    picks.update("a", enabled=True, scale=1.5, strength=0.2, steps=3, upscaler="Nearest")
    spec = with_page_hires(req(), picks, session("a"), settings).hires
    assert (spec.scale, spec.strength, spec.steps, spec.upscaler) == (1.5, 0.2, 3, "Nearest")
    assert spec.target(512, 256) == (768, 384)
    assert with_page_hires(req(), picks, session("b"), settings).hires is None          # another browser's


@pytest.mark.parametrize("values,control,words", [
    ({"scale": 4.0, "enabled": True}, "hires_scale", ("Upscale by", "放大倍数")),     # 2048 x 4: over 4096
    ({"upscaler": "gone", "enabled": True}, "hires_upscaler", ("Upscaler", "放大器")),
])
def test_a_bad_accordion_value_names_the_control(tmp_path, values, control, words):
    settings = Settings(outputs_dir=str(tmp_path / "outputs"))
    picks = HiresPicks()
    picks.update("a", **values)
    big = dataclasses.replace(req(), width=2048)
    with pytest.raises(InvalidRequest) as caught:
        with_page_hires(big, picks, session("a"), settings)
    assert caught.value.field == control
    assert page_refusal(caught.value, "en").startswith(words[0] + ":")
    assert page_refusal(caught.value, "zh").startswith(words[1] + ":")


def test_upscale_reads_only_this_browsers_results(tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"x")
    registry = PageJobs()
    registry.start("me", "job")
    registry.finish("me", "job", [Result(caption="c", path=png), Result(caption="d", path=tmp_path / "deleted.png")])
    assert gallery_path(registry, 0, "me") == str(png)
    for index in (1, -1, 5, True, "0", None, "/etc/passwd"):                 # the deleted one is not shown
        assert gallery_path(registry, index, "me") is None
    assert gallery_path(registry, 0, "someone-else") is None and gallery_path(registry, 0, None) is None
