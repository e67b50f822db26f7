"""What the page keeps of a browser across a server restart (store.page_memory, web.page_gallery):
the BrowserState secret, and each browser's gallery given back from the History index, captioned
in the reader's language."""
from __future__ import annotations

import stat
from functools import partial

from PIL import Image

from zimage.store.outputs import OutputStore
from zimage.store.page_memory import RecentResults, page_secret
from zimage.web.page.page_gallery import KeptGalleries
from zimage.web.page.page_jobs import PageJobs, Result, new_client_id
from zimage.web.page.ui_params import gallery_caption


def test_the_secret_is_made_once_and_kept_private(tmp_path):
    first = page_secret(tmp_path)
    assert len(first) >= 32 and page_secret(tmp_path) == first          # the same after a "restart"
    path = tmp_path / ".index" / "page-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert page_secret(tmp_path / "elsewhere") != first


def test_recent_results_are_newest_first_and_bounded(tmp_path):
    kept = RecentResults(tmp_path, per_client=3)
    kept.record("a" * 24, ["d/1.png", "d/2.png"])
    kept.record("a" * 24, ["d/3.png", "d/4.png"])
    kept.record("b" * 24, ["d/9.png"])
    again = RecentResults(tmp_path, per_client=3)                          # a new process reads the file
    assert again.recent("a" * 24) == ["d/3.png", "d/4.png", "d/1.png"]
    assert again.recent("b" * 24) == ["d/9.png"] and again.recent("c" * 24) == []


def save(store: OutputStore, prompt: str, seed: int, size=(256, 512)):
    text = f"{prompt}\nSteps: 4, Sampler: Euler, Seed: {seed}, Size: {size[0]}x{size[1]}, CFG scale: 0"
    return store.save(Image.new("RGB", size, "red"), seed, text, seconds=1.5)


def test_a_restarted_server_gives_a_browser_its_results_back_in_its_language(tmp_path):
    store = OutputStore(tmp_path / "outputs")
    mine, theirs = new_client_id(), new_client_id()
    before = PageJobs(max_results=48, kept=KeptGalleries(store.root, store.history, 48))
    first, second = save(store, "a red fox", 1), save(store, "a blue owl", 2)
    before.start(mine, "job")
    before.finish(mine, "job", [Result("a red fox · seed 1", first)])
    before.finish(mine, "job2", [Result("a blue owl · seed 2", second)])
    before.finish(theirs, "job3", [Result("unsaved", None, image=Image.new("RGB", (8, 8)))])
    # The restart: a new store and registry over the same folder (nothing in memory survives).
    store = OutputStore(tmp_path / "outputs")
    after = PageJobs(max_results=48, kept=KeptGalleries(store.root, store.history, 48))
    assert [path for path, _ in after.gallery(mine)] == [str(second), str(first)]
    en, zh = after.gallery(mine, "en"), after.gallery(mine, "zh")
    assert "a blue owl" in en[0][1] and "seed 2" in en[0][1] and "256x512" in en[0][1]
    assert "种子" in zh[0][1] and "seed" not in zh[0][1]
    assert after.gallery(theirs) == []              # an unsaved image has no file to give back
    second.unlink()                                  # deleted since (by hand or History's Delete)
    store = OutputStore(tmp_path / "outputs")
    assert [p for p, _ in PageJobs(kept=KeptGalleries(store.root, store.history, 48)).gallery(mine)] == [str(first)]


def test_captions_follow_the_language_of_the_page(tmp_path):
    """A gallery made in English kept its English captions after the switch to Chinese."""
    store = OutputStore(tmp_path / "outputs")
    path = save(store, "a cat", 7)
    jobs, client = PageJobs(), new_client_id()
    jobs.finish(client, "job", [Result(partial(gallery_caption, "a cat", 7, 4, 256, 512, (), 1.5), path)])
    assert "seed 7" in jobs.gallery(client, "en")[0][1] and "种子 7" in jobs.gallery(client, "zh")[0][1]
