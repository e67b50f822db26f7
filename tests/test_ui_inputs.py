"""The page's inputs and image refusals in the page's words (zimage/web/page/ui_inputs.py, ui_refusals.py):
an empty Seed is random, a prompt over the limit is refused with its count, refusals name the
control the user sees (never `data[0]`, `files`, `prompt:`), in English and Chinese."""
from __future__ import annotations

import dataclasses

import pytest

from zimage.i18n import IMAGE_SUBJECTS_ZH
from zimage.web.gradio_uploads import UPLOAD_SUBJECTS, UPLOADED
from zimage.web.page.ui_inputs import seed_value
from zimage.web.page.ui_refusals import drop_refusal
from conftest import page_client

ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}


def generate(client: Client, prompt: str, seed) -> tuple:
    return client.predict(prompt, "", 256, 256, 2, 0.0, seed, 1, [], api_name="/generate")


def test_an_empty_seed_is_random_and_generates(server):
    """gr.Number sends None for an emptied box: int(None) was a TypeError shown to the user."""
    gallery, info = generate(page_client(server.url), "a lighthouse", None)
    assert len(gallery) == 1 and "seeds " in info
    assert [seed_value(v) for v in (None, "", " ", float("nan"), 7.0, 7)] == [-1, -1, -1, -1, 7, 7]


def test_a_prompt_over_the_limit_is_refused_with_its_count_in_both_languages(start_server, settings):
    srv = start_server(dataclasses.replace(settings, max_prompt_chars=50))
    with pytest.raises(Exception, match=r"^Prompt is too long: 53 / 50 characters\. Shorten it"):
        generate(page_client(srv.url), "a" * 53, 1)
    with pytest.raises(Exception, match=r"^提示词太长：53 / 50 个字符"):
        generate(page_client(srv.url, headers=ZH), "a" * 53, 1)
    assert srv.manager.load_count == 0


def test_refusals_name_the_control_not_the_request_field(server):
    en, zh = page_client(server.url), page_client(server.url, headers=ZH)
    with pytest.raises(Exception, match=r"^Seed: must be -1 \(random\) or an integer"):
        generate(en, "x", -5)
    with pytest.raises(Exception, match=r"^种子: 必须是 -1（随机）"):
        generate(zh, "x", -5)
    with pytest.raises(Exception, match=r"^Prompt: must not be empty"):
        generate(en, "   ", 1)


@pytest.mark.parametrize("facts,words,zh_words", [
    ({"size": 20, "head": list(b"hello, text here"), "decoded": False}, "The Edit image is not a PNG, JPEG or WebP",
     "“编辑”标签页中的图片不是 PNG"),
    ({"size": 900, "head": list(b"\x89PNG\r\n\x1a\n"), "decoded": False}, "The Edit image could not be read",
     "“编辑”标签页中的图片无法读取：浏览器无法解码它"),
    ({"size": 900, "head": list(b"\x89PNG\r\n\x1a\n"), "decoded": True, "width": 32, "height": 32},
     "The Edit image is 32x32 pixels; an image to edit must be at least 64x64", "至少为 64x64"),
    ({"size": 900, "head": list(b"\x89PNG\r\n\x1a\n"), "decoded": True, "width": 9000, "height": 9000},
     "The Edit image is 9000x9000 pixels (81,000,000); uploads may have at most", "上传最多"),
    ({"size": 10**9, "head": list(b"\x89PNG\r\n\x1a\n")}, "The Edit image is 1,000,000,000 bytes", "有 1,000,000,000 字节"),
])
def test_a_refused_drop_in_the_editor_is_said_with_the_servers_caps(settings, facts, words, zh_words):
    err = drop_refusal(facts, settings)
    assert err is not None and err.user_text("en").startswith(words), err.user_text("en")
    assert zh_words in err.user_text("zh"), err.user_text("zh")
    for lang in ("en", "zh"):
        assert "data[" not in err.user_text(lang) and "(image)" not in err.user_text(lang)


def test_a_good_drop_or_facts_that_are_not_facts_say_nothing(settings):
    good = {"size": 900, "head": list(b"\x89PNG\r\n\x1a\n"), "decoded": True, "width": 512, "height": 512}
    assert drop_refusal(good, settings) is None
    assert drop_refusal("junk", settings) is None


def test_every_name_the_page_gives_an_image_has_its_chinese():
    assert set(UPLOAD_SUBJECTS.values()) | {UPLOADED} <= set(IMAGE_SUBJECTS_ZH)
