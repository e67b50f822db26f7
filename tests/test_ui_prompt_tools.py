"""ui_variety and ui_enhance without a browser: an image file's variety for History's Use these
settings, the link between a rewrite and the person's own prompt (what Generate sends as
original_prompt, and only while the prompt is the rewrite), and the enhancer's refusals in the
page's words in both languages. The browser side is tests/e2e/test_prompt_tools_page.py."""
from __future__ import annotations

import pytest
from PIL import Image

from zimage.enhance_request import MAX_SYSTEM_PROMPT_CHARS, EnhanceRequest
from zimage.errors import InvalidRequest
from zimage.infotext import infotext
from zimage.request import GenerationRequest
from zimage.store.outputs import OutputStore
from zimage.web.page.ui_enhance import enhance_refusal, linked, original_prompt
from zimage.web.page.ui_variety import file_variety


def test_an_image_files_variety(tmp_path):
    store = OutputStore(tmp_path / "out")
    picture = Image.new("RGB", (16, 16))
    made = lambda variety: store.save(picture, 7, infotext(GenerationRequest(prompt="a fox", variety=variety), 7))  # noqa: E731
    assert file_variety(made(0.35)) == 0.35
    assert file_variety(made(0.0)) == 0.0                   # made without: 0, not "unknown"
    plain = tmp_path / "plain.png"
    picture.save(plain)                                     # says nothing of how it was made
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert file_variety(plain) is None and file_variety(broken) is None and file_variety(tmp_path / "gone.png") is None


def test_the_link_sends_the_original_only_while_the_prompt_is_the_rewrite():
    link = {"before": 'a fox, "HI"\n', "after": "A red fox in the snow."}
    assert linked(link) and original_prompt("A red fox in the snow.", link) == 'a fox, "HI"\n'
    assert original_prompt("a prompt PNG info put there", link) == ""
    assert original_prompt('a fox, "HI"\n', {"before": 'a fox, "HI"\n', "after": 'a fox, "HI"\n'}) == ""
    for odd in (None, [], "x", {"before": 3, "after": "a"}, {"before": "a"}, {"after": "a", "before": None}):
        assert not linked(odd) and original_prompt("a", odd) == ""        # the browser's to edit: never trusted


def test_the_enhancers_refusals_name_the_pages_controls_in_both_languages():
    with pytest.raises(InvalidRequest) as caught:
        EnhanceRequest.from_mapping({"prompt": "a fox", "system_prompt": "x" * (MAX_SYSTEM_PROMPT_CHARS + 1)})
    assert enhance_refusal(caught.value, "en").startswith("Enhance: instruction (empty: the built-in one): is too long")
    assert enhance_refusal(caught.value, "zh").startswith("提示词优化：指令（留空：使用内置指令）: 太长")
    with pytest.raises(InvalidRequest) as caught:
        EnhanceRequest.from_mapping({"prompt": "x" * 5000}, 4000)
    assert enhance_refusal(caught.value, "en") == "Prompt is too long: 5000 / 4000 characters. Shorten it, then try again."
    assert enhance_refusal(caught.value, "zh").startswith("提示词太长：5000 / 4000")
