"""The manager's download, cancel, repair and delete paths, through the real client and the fake hub."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import wait_for
from zimage.errors import CacheCorrupt, DownloadCancelled, ModelInUse
from zimage.manager import PipelineManager
from zimage.state import LoadState
from zimage.testing.fake_hub import FakeHub

MODEL_ID = "Tongyi-MAI/Z-Image-Turbo"


@pytest.fixture
def hub(tiny_model_dir, monkeypatch):
    import modelscope_hub._download as client

    monkeypatch.setattr(client, "DOWNLOAD_RETRY_TIMES", 0)
    with FakeHub({MODEL_ID: tiny_model_dir}) as fake:
        fake.configure_client(monkeypatch.setenv)
        yield fake


@pytest.fixture
def manager(hub, settings):
    m = PipelineManager(dataclasses.replace(settings, model=MODEL_ID), idle_poll_s=0.05).start()
    yield m
    m.close()


def record_states(m):
    seen = []
    original = m._set

    def spy(**changes):
        original(**changes)
        seen.append(m._status)
    m._set = spy
    return seen


def test_preload_downloads_with_progress_then_loads(manager, hub):
    seen = record_states(manager)
    assert manager.ensure_ready(60).state == LoadState.ON_CPU
    downloading = [s for s in seen if s.state == LoadState.DOWNLOADING and s.bytes_total]
    assert downloading and downloading[-1].bytes_done == downloading[-1].bytes_total
    assert downloading[-1].speed_bps > 0 and downloading[-1].current_file
    states = [s.state for s in seen]
    assert states.index(LoadState.DOWNLOADING) < states.index(LoadState.LOADING) < states.index(LoadState.ON_CPU)
    assert manager.load_count == 1


def test_cancel_download_then_resume(manager, hub):
    hub.delay_per_chunk_s, hub.chunk_size = 0.05, 4096
    job = manager.preload()
    wait_for(lambda: manager.status().bytes_done > 10_000, 30, message="download under way")
    assert manager.cancel_download()
    with pytest.raises(DownloadCancelled):
        job.future.result(30)
    s = manager.status()
    assert s.state == LoadState.UNLOADED and "cancelled" in s.message and "Preload" in s.hint
    hub.delay_per_chunk_s = 0
    assert manager.ensure_ready(60).state == LoadState.ON_CPU


def test_corrupt_file_error_then_repair_fetches_only_it(manager, hub, settings):
    manager.ensure_ready(60)
    manager.unload("none").future.result(30)
    folder = next(Path(settings.cache_dir).rglob("model_index.json")).parent
    shard = sorted(folder.rglob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-3])
    with pytest.raises(CacheCorrupt):
        manager.ensure_ready(60)
    s = manager.status()
    assert s.state == LoadState.ERROR and "Repair" in s.hint and shard.name in s.message
    hub.reset_counters()
    fixed = manager.repair().future.result(60)
    assert fixed == [shard.relative_to(folder).as_posix()]
    assert [p for p, _ in hub.file_requests] == fixed
    assert manager.status().state == LoadState.UNLOADED
    assert manager.ensure_ready(60).state == LoadState.ON_CPU


def test_delete_refused_while_loaded(manager, hub, settings):
    manager.ensure_ready(60)
    with pytest.raises(ModelInUse):
        manager.delete_cached(MODEL_ID).future.result(30)
    assert list(Path(settings.cache_dir).rglob("model_index.json"))
    manager.unload("none").future.result(30)
    freed = manager.delete_cached(MODEL_ID).future.result(30)
    assert freed > 0 and not list(Path(settings.cache_dir).rglob("model_index.json"))
