"""The page's English and Chinese tables (zimage/web/page/page_text.py): every key the page modules use is
in both tables, every table key is used, both languages fill the same {parts}, and no label, button,
toast or tab title is written as a bare English string any more. Plus the server's side: the text
it builds follows the request's language (the switch's cookie, else Accept-Language)."""
from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest
import requests

from zimage.i18n import LANG_COOKIE
from zimage.state import LoadStage, LoadState, MemoryInfo, Status
from zimage.web.page import page_text
from zimage.web.page.page_text import EN, ZH, PARTS, merged, request_lang, text
from conftest import page_client

WEB = Path(__file__).resolve().parent.parent / "zimage" / "web" / "page"
PAGE_MODULES = sorted(WEB.glob("ui*.py"))
CJK = re.compile(r"[\u4e00-\u9fff]")
# The same in both languages: names (LoRA, ControlNet, EXIF, the model's "Turbo"), and the switch's
# own label (it names both languages).
SAME_IN_BOTH = {"lang_label", "lora_panel", "lora_slot", "field_loras", "png_source_exif", "controlnet_panel",
                "model_kind_turbo"}
# Keyword arguments that Gradio shows to the reader.
SHOWN = {"label", "info", "placeholder", "title"}
PRODUCT = "Z-Image-Turbo"          # the model's name: the same in every language
SHOWING_CALLS = {"Button", "DownloadButton", "Tab", "Accordion", "Info", "Warning", "Error"}


def string_constants(path: Path) -> set[str]:
    """The string literals of a module, less the tables of words it holds (`NAME: dict[str, str] = {...}`)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and ast.unparse(node.annotation) == "dict[str, str]":
            skip.update(id(n) for n in ast.walk(node.value))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in skip}


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def test_both_tables_have_the_same_keys():
    assert sorted(set(EN) - set(ZH)) == [], "keys missing from the Chinese table"
    assert sorted(set(ZH) - set(EN)) == [], "keys missing from the English table"


def test_the_tables_are_put_together_in_one_place_and_no_key_is_in_two():
    assert len(EN) == sum(len(en) for en, _ in PARTS) and len(ZH) == sum(len(zh) for _, zh in PARTS)
    with pytest.raises(ValueError, match=r"\['stop_btn'\]"):
        merged([{"stop_btn": "Stop", "steps": "Steps"}, {"stop_btn": "Halt"}])


def test_every_key_is_used_and_every_used_key_exists():
    used: set[str] = set()
    for path in [*PAGE_MODULES, WEB / "page_text.py"]:
        used |= string_constants(path) & set(EN)
    assert sorted(set(EN) - used) == [], "table keys no page module uses"
    # Every label("...") / text("...") call names a key of the tables.
    for path in PAGE_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("label", "text")
                    and node.args and isinstance(node.args[0], ast.Constant)):
                assert node.args[0].value in EN, f"{path.name}: {node.args[0].value!r} is in no table"


def words_of(template: str) -> str:
    """The template's own text, less its {parts}: a line such as "{name} · {kind}" has none to translate."""
    return "".join(literal for literal, _, _, _ in string.Formatter().parse(template))


def test_both_languages_fill_the_same_parts_and_the_chinese_is_chinese():
    for key in EN:
        assert fields(EN[key]) == fields(ZH[key]), key
        if key not in SAME_IN_BOTH and re.search("[A-Za-z]", words_of(EN[key])):
            assert EN[key] != ZH[key] and CJK.search(ZH[key]), f"{key}: not translated"


def test_no_page_module_shows_a_bare_english_string():
    """A label, info, placeholder, button, tab title or toast written as a literal would be English
    in the Chinese page: each goes through label() or text()."""
    found = []
    for path in PAGE_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            literal = lambda n: (isinstance(n, ast.Constant) and isinstance(n.value, str)  # noqa: E731
                                 and n.value != PRODUCT and re.search("[A-Za-z]{2}", n.value)) \
                or isinstance(n, ast.JoinedStr)
            shown = [k.value for k in node.keywords if k.arg in SHOWN and name not in ("Markdown", "HTML")]
            if name in SHOWING_CALLS and node.args:
                shown.append(node.args[0])
            found += [f"{path.name}:{n.lineno} {name}" for n in shown if literal(n)]
    assert found == []


def test_server_text_follows_the_request_language():
    class Req:          # gr.Request's two fields request_lang reads
        def __init__(self, cookies=None, headers=None):
            self.cookies, self.headers = cookies or {}, headers or {}

    assert request_lang(None) == "en"
    assert request_lang(Req(headers={"accept-language": "zh-CN,zh;q=0.9"})) == "zh"
    assert request_lang(Req(headers={"accept-language": "en-US,en"})) == "en"
    # The page's switch wins over the browser's language, both ways; a forged value is ignored.
    assert request_lang(Req({LANG_COOKIE: "en"}, {"accept-language": "zh-CN"})) == "en"
    assert request_lang(Req({LANG_COOKIE: "zh"}, {"accept-language": "en"})) == "zh"
    assert request_lang(Req({LANG_COOKIE: "<script>"}, {"accept-language": "en"})) == "en"
    assert text("history_summary", "zh", total=3, page=1, pages=1) == "3 张图片 · 第 1 页，共 1 页"


def test_status_progress_and_size_messages_in_chinese():
    from zimage.jobs import Job
    from zimage.web.page.ui import render_status, size_problem
    from zimage.web.page.ui_preview import job_progress

    mem = MemoryInfo(process_rss_bytes=2**30, ram_available_bytes=2**33, ram_total_bytes=2**34)
    zh = render_status(Status(state=LoadState.LOADING, stage=LoadStage.MOVE, progress=0.5), mem, "zh")
    assert "模型：" in zh and "加载中" in zh and "移到设备" in zh and "队列：0" in zh and "Model:" not in zh
    assert "Model:" in render_status(Status(), mem)                  # English stays the default
    from zimage.engine.manager import DEMO_NOTE
    assert "演示模式" in render_status(Status(note=DEMO_NOTE), mem, "zh")
    assert size_problem(250, 1024, "zh") == "**宽度** 必须在 256 到 2048 之间，当前为 250。"
    job = Job(kind="generate", fn=None, phase="generating", step=3, total_steps=9, images_total=4, images_done=1)
    assert job_progress(job, Status(), "zh")[1] == "第 2 张，共 4 张 · 第 3 步，共 9 步"


def test_the_page_sends_both_tables_and_keys_not_english(server):
    config = requests.get(server.url + "/config", timeout=10).json()
    assert config["i18n_translations"]["en"] == EN and config["i18n_translations"]["zh-CN"] == ZH
    values = [str(c.get("props", {}).get("label")) for c in config["components"]]
    assert any("prompt_label" in v for v in values) and "Prompt" not in values
    # No label and no choice of any tab or panel (Edit's modes, ControlNet's types included) is sent in English.
    props = [c.get("props", {}) for c in config["components"]]
    shown = [str(p["label"]) for p in props if p.get("label") is not None] \
        + [str(choice[0]) for p in props for choice in p.get("choices") or []]
    english = {v for k, v in EN.items() if k not in SAME_IN_BOTH}
    assert sorted(english & set(shown)) == []
    assert any("edit_mode_inpaint" in v for v in shown) and any("controlnet_canny" in v for v in shown)
    # The page's status panel, asked for by a Chinese browser, answers in Chinese.
    assert page_text.FRONTEND_LOCALES["zh"] in config["i18n_translations"]


def test_a_size_out_of_range_is_refused_naming_the_field_in_the_callers_language(server):
    """Gradio's own slider check answered a width of 250 with "Value 250 is less than minimum value
    256.", in English and naming no field; the app's check answers now (ui_slider.SizeSlider), naming
    the slider as the page labels it (ui_inputs)."""
    zh = page_client(server.url, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    with pytest.raises(Exception, match="宽度: 必须在 256 到 2048 之间，收到的是 250"):
        zh.predict("x", "", 250, 256, 2, 0.0, 1, 1, [], api_name="/generate")
    en = page_client(server.url)
    with pytest.raises(Exception, match="Height: must be between 256 and 2048, got 4096"):
        en.predict("x", "", 256, 4096, 2, 0.0, 1, 1, [], api_name="/generate")


def test_the_start_up_timeline_in_chinese():
    """The status panel's start-up line was English in the Chinese page (ui_startup)."""
    from zimage import startup
    from zimage.web.page.ui import render_status

    mem = MemoryInfo(process_rss_bytes=2**30, ram_available_bytes=2**33, ram_total_bytes=2**34)
    reading = Status(state=LoadState.LOADING, stage=LoadStage.READ, progress=0.45, bytes_done=45, bytes_total=100,
                     startup=((startup.READING, 0.4), (startup.MODEL_IMPORTED, 2.5)))
    zh = render_status(reading, mem, "zh")
    # the load's own time: 2.1 s after its reads began at 0.4 s, not 2.5 s since the process started
    assert "模型加载：" in zh and "正在读取权重 45%" in zh and "模型代码 2.1 秒" in zh
    assert "reading weights" not in zh and "Start-up" not in zh and "Model load" not in zh
    compiling = Status(state=LoadState.ON_GPU, startup=((startup.READY, 4.0), (startup.COMPILING, 4.1)))
    assert "正在后台编译" in render_status(compiling, mem, "zh")
    assert "reading weights 45%" in render_status(reading, mem)            # English stays the default


def test_the_edit_tab_answers_a_chinese_caller_in_chinese(server):
    """Edit without an image: the refusal named the field in English to a Chinese page; now it is
    the sentence alone (it says which control), not `image: ...`."""
    from zimage.web.page.ui_lora import NO_LORA

    args = [None, "Image to image", "x", "", 0.5, 4, False, 32, 0, 0, 0, 0, True, 1024, 1024, 2, 5, 1, None,
            *[NO_LORA] * 3, *[1.0] * 3]
    zh = page_client(server.url, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    with pytest.raises(Exception, match="^请先添加一张图片"):
        zh.predict(*args, api_name="/edit")
    en = page_client(server.url)
    with pytest.raises(Exception, match="^Add an image first"):
        en.predict(*args, api_name="/edit")


def test_the_lora_folders_reasons_follow_the_language():
    """Issue 28: a refused LoRA's reason stayed English in the Chinese page."""
    from zimage.store.loras import PICKLE_REFUSED
    from zimage.web.page.ui_lora import render_refused

    listing = [{"name": "old", "usable": False, "refused_reason": PICKLE_REFUSED},
               {"name": "cut", "usable": False, "refused_reason": "cut.safetensors is not a safetensors file (only 4 bytes)."}]
    zh = render_refused(listing, "zh")
    assert "pickle 文件可以执行代码" in zh and "不是 safetensors 文件（只有 4 字节）" in zh and "only 4 bytes" not in zh
    assert "only 4 bytes" in render_refused(listing, "en")
