"""One file of Gradio's frontend, served with a fix: its status tracker's frame loop ends with it.

Gradio 6.31's StatusTracker times a pending event with a requestAnimationFrame loop that only a
later status change stops. A tracker unmounted while pending keeps asking for a frame 60 times a
second for as long as the tab is open: every page has one, the page's own "Loading..." tracker,
gone once the app is drawn. Headless chromium with our page at rest used 0.089 CPU-s a second
and asked for 64 frames; with the fix 0.025 and 4 (medians of 3 fresh processes, 2-core machine,
2026-12-07: `python -m bench.page_rest_bench`, docs/BENCHMARKS.md). A laptop's browser pays it too,
for every open tab of the app.

The fix adds an effect with no dependencies whose teardown, run only when the tracker is
unmounted, clears the loop's flag. The file is served from a route of ours, added before the "/"
mount, at the path Gradio serves it from. Where Gradio's build has no such code (another version),
no route is added and Gradio's own file is served.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

log = logging.getLogger(__name__)

TRACKER_GLOB = "statustracker-*.js"
# The effect that starts (status "pending") or stops the loop; `W` is the loop's flag, `O` Svelte's effect.
LOOP_EFFECT = "O(()=>{o.status===`pending`?Ve():ee(()=>{He()})})"
ENDS_ON_UNMOUNT = ",O(()=>()=>{W=!1})"


@dataclass(frozen=True)
class FixedAsset:
    name: str                   # the file's name under Gradio's /assets/
    body: bytes


def assets_dir() -> Path:
    from gradio.route_utils import BUILD_PATH_LIB

    return Path(BUILD_PATH_LIB)


def fixed_tracker(folder: Path | None = None) -> FixedAsset | None:
    """Gradio's status tracker with the loop's end on unmount, or None where the build differs."""
    folder = assets_dir() if folder is None else folder
    files = sorted(folder.glob(TRACKER_GLOB))
    if len(files) != 1:
        log.debug("no single %s in %s: Gradio's own status tracker is served", TRACKER_GLOB, folder)
        return None
    source = files[0].read_text(encoding="utf-8")
    if source.count(LOOP_EFFECT) != 1:
        log.debug("%s has no known frame loop: served as Gradio ships it", files[0].name)
        return None
    return FixedAsset(files[0].name, source.replace(LOOP_EFFECT, LOOP_EFFECT + ENDS_ON_UNMOUNT).encode())


def frontend_router(folder: Path | None = None) -> APIRouter:
    """GET /assets/<the tracker's file>: the fixed file (include before the "/" mount)."""
    router = APIRouter()
    asset = fixed_tracker(folder)
    if asset is not None:
        @router.get(f"/assets/{asset.name}", include_in_schema=False)
        def status_tracker() -> Response:
            return Response(asset.body, media_type="text/javascript")
    return router
