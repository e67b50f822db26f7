"""The History index (store/history.py) behind the History tab: saving adds, a restart reconciles
with the folder, a torn index is rebuilt, search / date / size filters and pages, and a delete that
removes exactly the listed file or refuses."""
import os
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import requests
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from zimage.errors import HistoryItemChanged, HistoryItemNotFound, HistoryPathRefused, InvalidRequest
from zimage.infotext import infotext
from zimage.request import GenerationRequest
from zimage.store.history import INDEX_DIR, INDEX_FILE, HistoryQuery
from zimage.store.outputs import OutputStore


def params(prompt: str, seed: int = 1, w: int = 64, h: int = 64, negative: str = "", steps: int = 9,
           guidance: float = 0.0) -> str:
    req = GenerationRequest.from_mapping({"prompt": prompt, "negative_prompt": negative, "seed": seed,
                                          "width": 256, "height": 256, "num_inference_steps": steps,
                                          "guidance_scale": guidance})
    return infotext(req, seed).replace("Size: 256x256", f"Size: {w}x{h}")


def save(store: OutputStore, prompt: str, seed: int = 1, size=(64, 64), **kw) -> Path:
    return store.save(Image.new("RGB", size, (seed % 255, 0, 0)), seed, params(prompt, seed, *size, **kw))


def prompts(page) -> list[str]:
    return [e.prompt for e in page.entries]


def test_a_saved_image_is_in_the_history_with_its_settings(tmp_path):
    store = OutputStore(tmp_path / "out")
    path = save(store, "a red fox <lora:ink:0.8>", seed=42, size=(96, 64), negative="blurry", steps=7,
                guidance=1.5)
    store.save(Image.new("RGB", (64, 64)), 43, params("timed", 43), seconds=1.25)
    page = store.history.query()
    assert page.total == 2
    fox = next(e for e in page.entries if e.seed == 42)
    assert fox.path == path.relative_to(store.root).as_posix() and fox.bytes == path.stat().st_size
    assert (fox.prompt, fox.negative, fox.steps, fox.width, fox.height) == ("a red fox <lora:ink:0.8>", "blurry", 7, 96, 64)
    assert fox.loras == (("ink", 0.8),) and fox.model == "Z-Image-Turbo" and fox.guidance == 1.5
    assert next(e for e in page.entries if e.seed == 43).seconds == 1.25
    assert (store.root / INDEX_DIR / INDEX_FILE).is_file()


def test_generated_images_reach_the_history_over_http(server):
    for seed, prompt in ((11, "a lighthouse at dusk"), (12, "a harbour at dawn")):
        r = requests.post(server.url + "/generate", json={"prompt": prompt, "width": 256, "height": 256,
                                                          "num_inference_steps": 2, "seed": seed}, timeout=120)
        assert r.status_code == 200, r.text
    page = server.manager._store.history.query()
    assert [(e.prompt, e.seed, e.width) for e in page.entries] == [("a harbour at dawn", 12, 256),
                                                                   ("a lighthouse at dusk", 11, 256)]
    assert all(e.seconds is not None and e.seconds > 0 for e in page.entries)


def test_a_restart_adds_files_it_lacks_and_drops_files_gone(tmp_path):
    root = tmp_path / "out"
    store = OutputStore(root)
    kept, removed = save(store, "kept", 1), save(store, "removed by hand", 2)
    store.history.close()
    removed.unlink()
    # An A1111 PNG copied in by hand, its parameters chunk among others.
    meta = PngInfo()
    meta.add_text("parameters", "a castle, <lora:old:0.5>\nNegative prompt: fog\n"
                                "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 99, Size: 32x48, Model: sdxl")
    foreign = root / "2020-01-02" / "00001-99.png"
    foreign.parent.mkdir()
    Image.new("RGB", (32, 48)).save(foreign, pnginfo=meta)
    (root / "2020-01-02" / "notes.txt").write_text("not an image")

    store = OutputStore(root)                                          # the restart
    assert store.history.count() == 2 and store.history.get(removed.relative_to(root).as_posix()) is None
    page = store.history.query()
    assert sorted(e.path for e in page.entries) == sorted([kept.relative_to(root).as_posix(), "2020-01-02/00001-99.png"])
    castle = store.history.get("2020-01-02/00001-99.png")
    assert (castle.prompt, castle.negative, castle.seed, castle.steps, castle.guidance, castle.model) == \
        ("a castle, <lora:old:0.5>", "fog", 99, 20, 7.0, "sdxl")
    assert castle.loras == (("old", 0.5),)


def test_pages_and_restarts_never_reread_the_pngs(tmp_path, monkeypatch):
    """An unchanged folder is reconciled from its directory listing, and a page comes from the index."""
    import PIL.Image

    root = tmp_path / "out"
    store = OutputStore(root)
    for i in range(5):
        save(store, f"image {i}", i)
    store.history.close()

    def no_reading(*a, **kw):
        raise AssertionError("a PNG was opened")
    monkeypatch.setattr(PIL.Image, "open", no_reading)
    store = OutputStore(root)
    assert store.history.query(HistoryQuery(text="image")).total == 5
    assert store.history.reconcile().added == 0


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_torn_index_is_rebuilt_from_the_images(tmp_path, damage):
    root = tmp_path / "out"
    store = OutputStore(root)
    for i in range(40):
        save(store, f"picture number {i} " + "x" * 200, i)
    store.history.close()
    db = root / INDEX_DIR / INDEX_FILE
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    data = db.read_bytes()
    db.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"\x00junk" * 2000, "empty": b""}[damage])

    store = OutputStore(root)
    assert store.history.query().total == 40
    assert store.history.query(HistoryQuery(text="picture number 7 ")).entries[0].seed == 7
    if damage != "empty":                   # an empty file is a valid, empty database to SQLite
        assert (root / INDEX_DIR / f"{INDEX_FILE}.unreadable").is_file()


def test_a_file_deleted_by_hand_leaves_the_page_without_a_restart(tmp_path):
    store = OutputStore(tmp_path / "out")
    paths = [save(store, f"p{i}", i) for i in range(3)]
    paths[1].unlink()
    page = store.history.query()
    assert sorted(prompts(page)) == ["p0", "p2"] and page.total == 2
    assert store.history.get(paths[1].relative_to(store.root).as_posix()) is None


def _dated(store: OutputStore, prompt: str, seed: int, size, day: date) -> Path:
    path = save(store, prompt, seed, size)
    stamp = datetime.combine(day, datetime.min.time()).timestamp() + 12 * 3600 + seed
    os.utime(path, (stamp, stamp))
    return path


def test_search_date_and_size_filters_and_pages(tmp_path):
    root = tmp_path / "out"
    store = OutputStore(root)
    today = date.today()
    for i in range(30):
        _dated(store, f"A LightHouse {i}" if i % 3 == 0 else f"a forest {i}", i,
               [(64, 64), (96, 64), (64, 96)][i % 3], today - timedelta(days=i % 5))
    _dated(store, "100% off_sale", 99, (80, 80), today)
    store.history.close()
    store = OutputStore(root)          # reads the dates set above (mtimes) from the files

    assert store.history.query(HistoryQuery(text="lighthouse")).total == 10
    assert store.history.query(HistoryQuery(text="LIGHTHOUSE 12")).entries[0].seed == 12
    assert prompts(store.history.query(HistoryQuery(text="0% off_"))) == ["100% off_sale"]   # % and _ are text
    assert store.history.query(HistoryQuery(text="%")).total == 1
    assert store.history.query(HistoryQuery(size="square")).total == 11
    assert store.history.query(HistoryQuery(size="landscape")).total == 10
    assert {(e.width, e.height) for e in store.history.query(HistoryQuery(size="portrait", limit=50)).entries} == {(64, 96)}
    assert prompts(store.history.query(HistoryQuery(size="80x80"))) == ["100% off_sale"]
    day = today - timedelta(days=2)
    on_day = store.history.query(HistoryQuery(since=day, until=day, limit=50))
    assert sorted(e.seed for e in on_day.entries) == [i for i in range(30) if i % 5 == 2]
    older = store.history.query(HistoryQuery(until=today - timedelta(days=3), limit=50))
    assert sorted(e.seed for e in older.entries) == [i for i in range(30) if i % 5 >= 3]
    both = store.history.query(HistoryQuery(text="forest", size="landscape", since=today - timedelta(days=1), limit=50))
    assert sorted(e.seed for e in both.entries) == [i for i in range(30) if i % 3 == 1 and i % 5 <= 1]
    assert store.history.sizes()[0] == (64, 64, 10)

    first, second = store.history.query(HistoryQuery(limit=24)), store.history.query(HistoryQuery(offset=24, limit=24))
    assert (first.total, len(first.entries), len(second.entries)) == (31, 24, 7)
    everything = first.entries + second.entries
    assert len({e.path for e in everything}) == 31
    assert [e.created for e in everything] == sorted((e.created for e in everything), reverse=True)   # newest first

    with pytest.raises(InvalidRequest) as err:
        store.history.query(HistoryQuery(size="huge"))
    assert err.value.field == "size"


def test_delete_removes_exactly_the_listed_file_and_its_entry(tmp_path):
    store = OutputStore(tmp_path / "out")
    for i in range(3):
        save(store, f"image {i}", i)
    listed = store.history.query().entries
    second = listed[1]
    deleted = store.delete(second.id)
    assert deleted.path == second.path
    assert not (store.root / second.path).exists()
    assert sorted(e.path for e in store.history.query().entries) == sorted(e.path for e in listed if e is not second)
    assert all((store.root / e.path).is_file() for e in listed if e is not second)
    assert store.history.get(second.path) is None


def test_delete_refuses_a_changed_file_and_paths_outside_the_images(tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not yours")
    store = OutputStore(tmp_path / "out")
    path = save(store, "changed later", 5)
    entry = store.history.query().entries[0]

    later = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(later, later))                           # replaced since the page listed it
    with pytest.raises(HistoryItemChanged) as err:
        store.delete(entry.id)
    assert err.value.http_status == 409 and path.exists()

    day = path.parent.name
    (store.root / day / "link.png").symlink_to(outside)
    refused = [f"../secret.png@{outside.stat().st_mtime_ns}", f"{outside}@1", f"{day}/../../secret.png@1",
               f"{INDEX_DIR}/{INDEX_FILE}@1", f"{day}/link.png@{outside.lstat().st_mtime_ns}", "no-id-at-all",
               f"{day}/x.txt@1", "\x00@1"]
    for item in refused:
        with pytest.raises(HistoryPathRefused) as err:
            store.delete(item)
        assert err.value.http_status == 400, item
    with pytest.raises(HistoryItemNotFound) as err:
        store.delete(f"{day}/never-made.png@1")
    assert err.value.http_status == 404
    assert outside.read_bytes() == b"not yours" and (store.root / INDEX_DIR / INDEX_FILE).is_file() and path.exists()


def test_settings_for_the_generate_tab_put_loras_in_the_slots():
    import gradio as gr

    from zimage.store.history import HistoryEntry
    from zimage.web.page.ui_history import settings_values

    entry = HistoryEntry(path="d/x.png", mtime_ns=1, bytes=1, width=832, height=1216, prompt="a cat <lora:ink:0.5>",
                         negative="dull", seed=7, steps=8, guidance=1.5, loras=(("ink", 0.5),))
    assert settings_values(entry, 0.3) == ["a cat", "dull", 832, 1216, 8, 1.5, 7, 1, "ink", "None", "None", 0.5, 1.0,
                                           1.0, 0.3]
    assert settings_values(entry)[-1] == gr.skip()        # its file unread: the Variety slider left as it is


def test_a_bad_date_filter_names_its_field():
    from zimage.web.page.ui_history import history_query

    with pytest.raises(InvalidRequest) as err:
        history_query("", "2025-13-01", "", "", 0)
    assert err.value.field == "From"
    assert history_query("cat", "2025-01-02", "", "square", 2).offset == 48


def _foreign_png(path: Path, parameters: str, size=(40, 24)) -> Path:
    meta = PngInfo()
    meta.add_text("parameters", parameters)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path, pnginfo=meta)
    return path


HUGE = "99999999999999999999"          # over 2**64: what SQLite's INTEGER cannot hold


@pytest.mark.parametrize("since, until, expected", [
    ("0001-01-01", "", 2), ("", "9999-12-31", 2), ("0001-01-01", "9999-12-31", 2), ("9999-12-31", "", 0),
    ("", "0001-01-01", 0), ("9999-12-31", "9999-12-31", 0), ("0001-01-01", "0001-01-01", 0), ("0001-01-02", "9999-12-30", 2)])
def test_date_filters_at_the_ends_of_the_calendar(tmp_path, since, until, expected):
    """0001-01-01 and 9999-12-31 are valid dates: the filter answers (they were 500s: the local time of
    0001-01-01 and the day after 9999-12-31 overflowed)."""
    from zimage.web.page.ui_history import history_query

    store = OutputStore(tmp_path / "out")
    save(store, "one", 1)
    save(store, "two", 2)
    assert store.history.query(history_query("", since, until, "", 0)).total == expected


def test_size_filters_and_ids_beyond_sqlite_integers(tmp_path):
    store = OutputStore(tmp_path / "out")
    save(store, "one", 1, size=(64, 48))
    assert store.history.query(HistoryQuery(size=f"{HUGE}x{HUGE}")).total == 0
    assert store.history.query(HistoryQuery(size="64x48")).total == 1
    with pytest.raises(InvalidRequest) as err:
        store.history.query(HistoryQuery(size="²x³"))             # isdigit() says yes, int() says no
    assert err.value.field == "size"
    assert store.history.query(HistoryQuery(offset=2**70)).entries == []
    with pytest.raises(HistoryPathRefused):
        store.delete("2020-01-01/x.png@²")


def _history_filter_event(url: str) -> int:
    """The page's event that lists the History with its four filters (what Refresh sends)."""
    cfg = requests.get(url + "/config", timeout=10).json()
    ids = {c.get("props", {}).get("elem_id"): c["id"] for c in cfg["components"]}
    filters = [ids["history-search"], ids["history-since"], ids["history-until"], ids["history-size"]]
    refresh = ids["history-refresh"]
    return next(d["id"] for d in cfg["dependencies"] if d["inputs"] == filters
                and [refresh, "click"] in [list(t) for t in d["targets"]])


def test_date_filters_at_the_ends_of_the_calendar_over_http(server):
    """The same filter through the page's HTTP route (Gradio's run/predict, as the browser sends it):
    an answer for both ends of the calendar, and a bad date is a message naming its field, never a 500."""
    store = server.manager._store
    save(store, "a kite over the dunes", 31)
    event = _history_filter_event(server.url)

    def listing(since: str, until: str) -> list:
        r = requests.post(server.url + "/gradio_api/run/predict", json={
            "data": ["", since, until, ""], "fn_index": event, "session_hash": "hist-dates"}, timeout=30)
        assert r.status_code == 200, (since, until, r.text[:500])
        return r.json()["data"]

    for since, until, found in [("0001-01-01", "9999-12-31", 1), ("9999-12-31", "", 0), ("", "0001-01-01", 0),
                                ("0001-01-01", "", 1), ("", "9999-12-31", 1)]:
        data = listing(since, until)
        assert len(data[0]) == found, (since, until, data)
        assert ("1 image" in data[2]) == bool(found), data[2]
    data = listing("10000-01-01", "")
    assert "From" in data[2] and "YYYY-MM-DD" in data[2]


def test_the_detail_view_of_a_file_dated_past_the_platforms_clock():
    from zimage.store.history import HistoryEntry
    from zimage.web.page.ui_history import render_detail

    entry = HistoryEntry(path="d/x.png", mtime_ns=2**63 - 1, bytes=1, width=8, height=8, prompt="far future",
                         created=1e18)              # time.localtime: OSError "Value too large" (was a page error)
    assert 'data-field="made">-</td>' in render_detail(entry) and "far future" in render_detail(entry)


def test_unicode_digits_and_huge_numbers_in_ids_and_size_filters_are_refused_not_raised():
    from zimage.errors import InvalidRequest
    from zimage.store.history import parse_size_filter, split_id

    assert split_id("2025/a.png@123") == ("2025/a.png", 123)
    for item in ("a.png@²", "a.png@٣", "a.png@" + "9" * 5000):      # int() raised ValueError: a 500
        assert split_id(item) is None
    assert parse_size_filter("512x768") == ("width = ? AND height = ?", [512, 768])
    for size in ("²x³", "٣x٣", "9" * 5000 + "x1"):
        with pytest.raises(InvalidRequest, match="size"):
            parse_size_filter(size)
