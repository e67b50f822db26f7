"""ui_variety and ui_enhance without a browser: an image file's variety for History's Use these
settings, the link between a rewrite and the person's own prompt (what Generate sends as
original_prompt, and only while the prompt is the rewrite), and the enhancer's refusals in the
page's words in both languages. The browser side is tests/e2e/test_prompt_tools_page.py."""
from __future__ import annotations

from PIL import Image

from zimage.request import GenerationRequest, infotext
from zimage.store.outputs import OutputStore
from zimage.web.ui_variety import file_variety


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
