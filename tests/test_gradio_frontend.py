"""web/page/gradio_frontend: Gradio's status tracker served with its frame loop's end on unmount, at
the path Gradio serves it from; Gradio's own file where its build has no such code.
(e2e/test_page_rest.py counts the frames the page asks for.)"""
from __future__ import annotations

import requests

from zimage.web.page.gradio_frontend import ENDS_ON_UNMOUNT, LOOP_EFFECT, assets_dir, fixed_tracker, frontend_router


def test_the_installed_gradios_tracker_gets_the_end_and_nothing_else():
    shipped = next(assets_dir().glob("statustracker-*.js")).read_text(encoding="utf-8")
    fixed = fixed_tracker()
    assert fixed is not None and fixed.name.startswith("statustracker-")
    body = fixed.body.decode()
    assert body.count(ENDS_ON_UNMOUNT) == 1
    assert body.replace(ENDS_ON_UNMOUNT, "", 1) == shipped


def test_a_build_without_the_loop_or_with_two_trackers_is_left_as_gradio_ships_it(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "statustracker-AAAA.js").write_text("export const x = 1;")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("statustracker-AAAA.js", "statustracker-BBBB.js"):
        (two / name).write_text(LOOP_EFFECT)
    for folder in (other, two, tmp_path / "none"):
        assert fixed_tracker(folder) is None
        assert frontend_router(folder).routes == []


def test_the_server_serves_the_fixed_tracker_and_gradios_other_files_as_they_are(server):
    fixed = fixed_tracker()
    r = requests.get(f"{server.url}/assets/{fixed.name}", timeout=30)
    assert r.status_code == 200 and r.content == fixed.body
    assert r.headers["content-type"].startswith("text/javascript")
    other = next(p for p in assets_dir().glob("Blocks-*.js"))
    r = requests.get(f"{server.url}/assets/{other.name}", timeout=30)
    assert r.status_code == 200 and r.content == other.read_bytes()
