"""The Edit tab's ways in and out (web/page/ui_edit_send, web/page/ui_edit_session): what Send to Edit and
Send to Generate carry is the picked image's own settings, read from its PNG; only this browser's
own results can be picked; a reload restores only values of the controls' types; no image or
gallery of the page offers Share (it failed off Spaces); the edit event takes guidance."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from zimage.infotext import infotext
from zimage.request import GenerationRequest
from zimage.web.page.page_jobs import PageJobs, Result, new_client_id
from zimage.web.page.ui_edit_send import edit_values, file_params, generate_controls_values, picked_path
from zimage.web.page.ui_edit_session import EDIT_FIELDS, restored
from zimage.web.page.ui_lora import NO_LORA
from conftest import page_client

SKIP = gr.skip()


def made_png(path: Path, prompt: str, seed: int, **fields) -> Path:
    req = GenerationRequest.from_mapping({"prompt": prompt, "width": 256, "height": 256, **fields})
    meta = PngInfo()
    meta.add_text("parameters", infotext(req, seed))
    Image.new("RGB", (256, 256), (20, 40, 60)).save(path, pnginfo=meta)
    return path


def test_send_to_edit_and_generate_carry_the_images_own_settings(tmp_path, settings):
    png = made_png(tmp_path / "fox.png", "a fox <lora:style:0.5>", 42, negative_prompt="blur",
                   num_inference_steps=7, guidance_scale=1.5)
    params = file_params(str(png), settings)
    editor, prompt, negative, steps, guidance, seed, *loras = edit_values(str(png), params, 4000)
    assert editor == {"background": str(png), "layers": [], "composite": str(png)}
    assert (prompt, negative, steps, guidance, seed) == ("a fox", "blur", 7, 1.5, 42)
    assert loras == ["style", NO_LORA, NO_LORA, 0.5, 1.0, 1.0]      # the tag moved to the first slot
    values = generate_controls_values(params, 4000)
    assert values[:8] == ["a fox", "blur", 256, 256, 7, 1.5, 42, 1] and values[8] == "style"


def test_an_image_without_settings_sends_the_picture_alone(tmp_path, settings):
    png = tmp_path / "plain.png"
    Image.new("RGB", (64, 64)).save(png)
    with pytest.warns(UserWarning, match="carries no settings"):     # a toast in the page (its event is queued)
        params = file_params(str(png), settings)
    values = edit_values(str(png), params, 4000)
    assert values[0]["background"] == str(png) and all(v == SKIP for v in values[1:])
    assert all(v == SKIP for v in generate_controls_values(params, 4000))


def test_only_this_browsers_results_can_be_picked(tmp_path):
    jobs, me, other = PageJobs(), new_client_id(), new_client_id()
    older, newer = (made_png(tmp_path / f"{n}.png", n, 1) for n in ("older", "newer"))
    jobs.finish(me, "job", [Result("newer", newer), Result("older", older)])
    jobs.finish(other, "job", [Result("theirs", made_png(tmp_path / "theirs.png", "theirs", 2))])

    def select(index, path):
        return gr.SelectData(None, {"index": index, "value": {"image": {"path": path}, "caption": None}})
    # Gradio shows a copy under the same name: the browser's result of that name, not the path sent
    assert picked_path(jobs, me, select(1, "/tmp/gradio/abc/older.png")) == str(older)
    assert picked_path(jobs, me, select(0, "/etc/passwd")) is None
    assert picked_path(jobs, me, select(0, str(tmp_path / "theirs.png"))) is None
    assert picked_path(jobs, "not an id", select(0, str(newer))) is None


def test_a_reload_restores_only_values_of_the_controls_type():
    saved = {"prompt": "a fox", "mode": "Outpaint (extend the canvas)", "only_masked": True, "steps": 12,
             "guidance": float("nan"), "seed": "7", "image_size": 1, "lora1": "style"}
    defaults = {"prompt": "", "mode": "Image to image", "only_masked": False, "steps": 9, "guidance": 0.0,
                "seed": -1, "image_size": True, "lora1": NO_LORA}
    got = {k: restored(saved, k, d) for k, d in defaults.items()}
    assert got == {"prompt": "a fox", "mode": "Outpaint (extend the canvas)", "only_masked": True, "steps": 12,
                   "guidance": SKIP, "seed": SKIP, "image_size": SKIP, "lora1": "style"}
    assert restored({"mode": "rm -rf"}, "mode", "Image to image") == SKIP
    assert restored("not a dict", "prompt", "") == SKIP
    assert len(EDIT_FIELDS) == len(set(EDIT_FIELDS)) == 24


def test_no_image_or_gallery_offers_share(server):
    from zimage.web.page.ui import build_ui

    demo = build_ui(server.manager, server.settings)
    shown = {c.elem_id: c.buttons for c in demo.blocks.values()
             if isinstance(c, (gr.Image, gr.Gallery, gr.ImageEditor))}
    assert {"gallery", "edit-gallery", "edit-image", "history-image", "history-gallery",
            "controlnet-preview"} <= set(shown)
    for elem_id, buttons in shown.items():
        names = {b for b in (buttons or ["share"]) if isinstance(b, str)}       # None: Gradio shows them all
        assert "share" not in names, elem_id


def test_the_edit_event_takes_guidance(server, tmp_path):
    from gradio_client import handle_file

    source = tmp_path / "in.png"
    Image.new("RGB", (256, 256), (200, 80, 40)).save(source)
    client = page_client(server.url)
    picture = {"background": handle_file(str(source)), "layers": [], "composite": None}
    client.predict(picture, "Image to image", "a guided edit", "", 0.5, 4, False, 32, 0, 0, 0, 0, True, 256, 256, 2,
                   5, 1, None, *[NO_LORA] * 3, *[1.0] * 3, 1.5, api_name="/edit")
    made = max(Path(server.settings.outputs_dir).rglob("*.png"), key=lambda p: p.stat().st_mtime)
    assert "CFG scale: 1.5" in Image.open(made).info["parameters"] and "Mode: img2img" in Image.open(made).info["parameters"]
    # a caller that leaves guidance out gets its default (gradio_client fills it)
    client.predict(picture, "Image to image", "unguided", "", 0.5, 4, False, 32, 0, 0, 0, 0, True, 256, 256, 2,
                   6, 1, None, *[NO_LORA] * 3, *[1.0] * 3, api_name="/edit")
