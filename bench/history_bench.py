"""History view with many images (CPU): 10,000 small PNGs with A1111 `parameters` in a temporary
outputs folder; the time to index them, to restart on an unchanged folder, and to the first page:
the index query, the History tab's own page function (the real Blocks), and in a browser over HTTP
(click on the tab to the first page of thumbnails shown). Baseline, in the same run: what a view
without the index does, reading every PNG's parameters chunk and sorting by time.

    python -m bench.history_bench [--images 10000] [--runs 5] [--no-browser]
Prints one JSON line per figure.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

PROMPTS = ["a lighthouse at dusk", "a red fox in snow", "city street, rain, neon", "portrait of an old sailor",
           "a bowl of ramen, steam", "mountain lake at dawn <lora:ink:0.8>", "a cat on a windowsill"]
SIZES = [(64, 64), (80, 64), (64, 80)]


def machine() -> dict:
    import sqlite3

    import PIL

    return {"machine": platform.node(), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "pillow": PIL.__version__, "sqlite": sqlite3.sqlite_version}


def emit(figure: str, value: float, **extra) -> None:
    print(json.dumps({"figure": figure, "value": round(value, 4), **extra, **machine()}), flush=True)


def write_pngs(root: Path, n: int) -> float:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    began = time.perf_counter()
    now = time.time()
    tiles = {size: Image.effect_noise(size, 40).convert("RGB") for size in SIZES}
    for i in range(n):
        day = root / f"2025-{1 + (i // 600) % 12:02d}-{1 + (i // 20) % 28:02d}"
        day.mkdir(parents=True, exist_ok=True)
        w, h = SIZES[i % len(SIZES)]
        meta = PngInfo()
        meta.add_text("parameters", f"{PROMPTS[i % len(PROMPTS)]} {i}\nNegative prompt: blurry\n"
                                    f"Steps: 9, Sampler: Euler (flow match), CFG scale: 0, Seed: {i}, "
                                    f"Size: {w}x{h}, Model: Z-Image-Turbo")
        path = day / f"{i:06d}-{i}.png"
        tiles[(w, h)].save(path, pnginfo=meta)
        stamp = now - (n - i) * 60
        os.utime(path, (stamp, stamp))
    return time.perf_counter() - began


def naive_first_page(root: Path) -> float:
    """Without an index: every PNG's parameters read, then the newest 24."""
    from PIL import Image

    from zimage.infotext import parse_infotext

    began = time.perf_counter()
    rows = []
    for path in root.glob("*/*.png"):
        with Image.open(path) as im:
            rows.append((path.stat().st_mtime, parse_infotext(im.info.get("parameters", ""))["prompt"], path))
    rows.sort(reverse=True)
    rows[:24]
    return time.perf_counter() - began


def median_time(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def page_function(demo, name: str):
    for block_fn in demo.fns.values():
        if getattr(block_fn.fn, "__name__", "") == name:
            return block_fn.fn
    raise LookupError(name)


def browser_first_page(settings, manager, runs: int) -> list[float]:
    """Click on the History tab to its first page of thumbnails drawn, in chromium, over HTTP."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import free_port
    from zimage.web.server import create_app, make_server

    settings = dataclasses.replace(settings, port=free_port())
    server = make_server(create_app(settings, manager), settings)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    times = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("ZIMAGE_CHROMIUM", "/usr/bin/chromium"),
                                        args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            for _ in range(runs):
                page.goto(f"http://127.0.0.1:{settings.port}")
                page.wait_for_selector("#status-panel")
                began = time.perf_counter()
                page.get_by_role("tab", name="History").click()
                page.wait_for_function("() => { const imgs = document.querySelectorAll('#history-gallery img');"
                                       " return imgs.length === 24 && [...imgs].every(i => i.complete && i.naturalWidth > 0); }",
                                       timeout=60_000)
                times.append(time.perf_counter() - began)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    return times


def main() -> None:
    n = int(sys.argv[sys.argv.index("--images") + 1]) if "--images" in sys.argv else 10_000
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 5
    from zimage.app import create_backend
    from zimage.config import Settings
    from zimage.store.history import HistoryQuery
    from zimage.store.outputs import OutputStore
    from zimage.web.page.ui import build_ui

    work = Path(tempfile.mkdtemp(prefix="zimage-history-bench-"))
    root = work / "outputs"
    try:
        emit("write_pngs_s", write_pngs(root, n), images=n)
        began = time.perf_counter()
        store = OutputStore(root)
        emit("index_build_s", time.perf_counter() - began, images=store.history.count(),
             note="OutputStore start on a folder without an index: recover() and reconcile() reading each PNG's chunks")
        store.history.close()
        began = time.perf_counter()
        store = OutputStore(root)
        emit("restart_unchanged_s", time.perf_counter() - began, images=n,
             note="OutputStore start with the index up to date: a directory listing, no PNG read")
        baseline = statistics.median(naive_first_page(root) for _ in range(2))
        emit("baseline_first_page_no_index_s", baseline, images=n)
        query = median_time(lambda: store.history.query(HistoryQuery(limit=24)), runs * 4)
        emit("first_page_query_s", query, images=n, baseline_s=round(baseline, 4), ratio=round(baseline / query, 1))
        emit("search_query_s", median_time(lambda: store.history.query(HistoryQuery(text="ramen 99", limit=24)),
                                           runs * 4), images=n)
        emit("size_filter_query_s", median_time(lambda: store.history.query(HistoryQuery(size="portrait", limit=24)),
                                                runs * 4), images=n)
        emit("last_page_query_s", median_time(lambda: store.history.query(HistoryQuery(offset=n - 24, limit=24)),
                                              runs * 4), images=n)
        store.history.close()

        settings = Settings(model="Tongyi-MAI/Z-Image-Turbo", outputs_dir=str(root), cache_dir=str(work / "cache"),
                            idle_unload_s=0, idle_drop_s=0)
        manager = create_backend(settings).start()
        try:
            demo = build_ui(manager, settings)
            first_page = page_function(demo, "first_page")
            tab = median_time(lambda: first_page("", "", "", ""), runs * 2)
            emit("first_page_tab_function_s", tab, images=n, baseline_s=round(baseline, 4), ratio=round(baseline / tab, 1),
                 note="the History tab's own handler: query, sizes, gallery items")
            if "--no-browser" not in sys.argv and os.path.exists(os.environ.get("ZIMAGE_CHROMIUM", "/usr/bin/chromium")):
                times = browser_first_page(settings, manager, runs)
                emit("first_page_browser_s", statistics.median(times), images=n, runs=[round(t, 3) for t in times],
                     note="click on the History tab to 24 thumbnails drawn, chromium over HTTP on localhost")
        finally:
            manager.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
