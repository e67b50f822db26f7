"""Download, resume, verify and repair with the real modelscope client against the local fake hub."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from zimage.errors import ModelUnavailable
from zimage.store.cache import scan_cache
from zimage.store.hub import CacheCorrupt, DiskFull, DownloadCancelled, cached_copy, download, repair, resolve_model_dir
from zimage.store.manifest import load_manifest
from zimage.testing.fake_hub import FakeHub

MODEL_ID = "Tongyi-MAI/Z-Image-Turbo"


@pytest.fixture
def hub(tiny_model_dir, tmp_path, monkeypatch):
    import modelscope_hub._download as client

    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setattr(client, "DOWNLOAD_RETRY_TIMES", 0)   # a dropped connection fails at once
    with FakeHub({MODEL_ID: tiny_model_dir}) as fake:
        fake.configure_client(monkeypatch.setenv)
        yield fake


@pytest.fixture
def cache(tmp_path) -> str:
    return str(tmp_path / "cache")


def repo_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def shards(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.safetensors"))


def test_download_with_progress_then_offline_start(hub, cache, tiny_model_dir):
    events = []
    path = resolve_model_dir(MODEL_ID, cache, on_progress=events.append)
    assert repo_bytes(path) == repo_bytes(tiny_model_dir)
    done = [e.bytes_done for e in events]
    assert done == sorted(done) and done[-1] == events[-1].bytes_total == sum(
        len(b) for b in repo_bytes(tiny_model_dir).values())
    assert all(e.current_file for e in events) and events[-1].bytes_per_s > 0
    manifest = load_manifest(Path(cache), MODEL_ID)
    assert set(manifest.files) == set(repo_bytes(tiny_model_dir)) and all(r.sha256 for r in manifest.files.values())
    # Complete in the cache: no request at all, even with the hub gone.
    hub.reset_counters()
    hub.offline = True
    assert resolve_model_dir(MODEL_ID, cache) == path
    assert hub.requests == []


def test_interrupted_download_resumes_without_refetching(hub, cache, tiny_model_dir):
    big = max(shards(tiny_model_dir), key=lambda r: (tiny_model_dir / r).stat().st_size)
    size = (tiny_model_dir / big).stat().st_size
    hub.fail_after_bytes[big] = size // 2
    with pytest.raises(ModelUnavailable) as e:
        resolve_model_dir(MODEL_ID, cache)
    assert "press Preload to retry" in e.value.hint and "finished files are kept" in e.value.hint
    assert list(Path(cache).rglob("*.incomplete"))           # the partial file is kept
    status = {m.model_id: m.status for m in scan_cache(Path(cache))}
    assert status == {MODEL_ID: "incomplete"}
    hub.reset_counters()
    path = resolve_model_dir(MODEL_ID, cache)
    assert repo_bytes(path) == repo_bytes(tiny_model_dir)
    assert hub.bytes_served == {big: size - size // 2}       # only the missing half, once
    assert hub.file_requests == [(big, f"bytes={size // 2}-")]


def test_flipped_byte_and_truncated_shard_found_by_verify_and_fixed_by_repair(hub, cache, tiny_model_dir):
    path = resolve_model_dir(MODEL_ID, cache)
    a, b = shards(tiny_model_dir)[:2]
    data = bytearray((path / a).read_bytes())
    data[-10] ^= 0xFF                                          # same size, same header: only a hash finds it
    (path / a).write_bytes(bytes(data))
    (path / b).write_bytes((path / b).read_bytes()[:-7])
    _, quick = cached_copy(MODEL_ID, Path(cache))
    assert {p.path for p in quick} == {a, b}                   # mtime changed: a is re-hashed even in the quick check
    with pytest.raises(CacheCorrupt) as e:
        resolve_model_dir(MODEL_ID, cache)
    assert set(e.value.details["files"]) == {a, b} and "Repair" in e.value.hint
    hub.reset_counters()
    fixed = repair(MODEL_ID, cache)
    assert sorted(fixed) == sorted([a, b])
    assert sorted(p for p, _ in hub.file_requests) == sorted([a, b])
    assert repo_bytes(path) == repo_bytes(tiny_model_dir)
    assert cached_copy(MODEL_ID, Path(cache), full=True)[1] == []


def test_disk_too_small_is_refused_before_any_byte(hub, cache):
    with pytest.raises(DiskFull) as e:
        download(MODEL_ID, cache, free_bytes=lambda _: 1000)
    assert "GB still to download" in e.value.message and "0.00 GB free" in e.value.message
    assert "MODELSCOPE_CACHE" in e.value.hint and e.value.details["free_bytes"] == 1000
    assert hub.bytes_served == {}


def test_cancel_mid_download_then_resume(hub, cache, tiny_model_dir):
    hub.delay_per_chunk_s = 0.05
    hub.chunk_size = 4096
    cancel = threading.Event()
    seen = []

    def on_progress(p):
        seen.append(p)
        if p.bytes_done > 20_000:
            cancel.set()
    with pytest.raises(DownloadCancelled):
        download(MODEL_ID, cache, on_progress, cancel)
    total = sum(len(v) for v in repo_bytes(tiny_model_dir).values())
    assert seen[-1].bytes_done < total
    hub.delay_per_chunk_s = 0
    path = resolve_model_dir(MODEL_ID, cache)
    assert repo_bytes(path) == repo_bytes(tiny_model_dir)


def test_no_network_and_no_copy_is_a_clear_error(hub, cache):
    hub.offline = True
    hub.offline_mode = "503"
    with pytest.raises(ModelUnavailable) as e:
        resolve_model_dir(MODEL_ID, cache)
    assert "Could not download" in e.value.message and "network" in e.value.hint


@pytest.mark.parametrize("bad", ["a/..", "../etc", "a/b/c", "a/", "/x", "a/.hidden", "..", "a b/c"])
def test_only_a_modelscope_id_makes_cache_paths_and_repair_touches_nothing_outside(cache, bad):
    """"a/.." named the cache's own hub folder (candidate_dirs: base/hub/a/..): repair hashed what
    it found there and deleted the files it took for damaged, then asked the hub for them."""
    from zimage.errors import NotAModelId
    from zimage.store.hub import repair, require_model_id, verify

    outside = Path(cache) / "hub" / "mine.safetensors"
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"not a safetensors file")
    for call in (lambda: repair(bad, cache), lambda: verify(bad, cache), lambda: require_model_id(bad)):
        with pytest.raises(NotAModelId, match="neither a folder nor a ModelScope id"):
            call()
    assert outside.read_bytes() == b"not a safetensors file"
    for good in ("Tongyi-MAI/Z-Image-Turbo", "PAI/Z-Image-Turbo-Fun-Controlnet-Union-2.1"):
        require_model_id(good)
