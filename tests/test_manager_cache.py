"""The manager's download, cancel, repair and delete paths, through the real client and the fake hub."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from zimage.engine.manager import PipelineManager
from zimage.errors import CacheCorrupt, DownloadCancelled, ModelInUse
from zimage.state import LoadState
from zimage.testing.fake_hub import FakeHub

from conftest import wait_for

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
    report = manager.repair().future.result(60)
    fixed = list(report)
    assert fixed == [shard.relative_to(folder).as_posix()] and report.model_id == MODEL_ID
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


def test_verify_is_a_worker_job_after_the_load_and_names_the_model(manager, hub, settings):
    hub.delay_per_chunk_s, hub.chunk_size = 0.02, 4096
    load = manager.preload()
    wait_for(lambda: manager.status().state == LoadState.DOWNLOADING, 30, message="download under way")
    seen = record_states(manager)
    check = manager.verify()
    assert not check.future.done()                        # queued behind the load, never beside it
    load.future.result(60)
    report = check.future.result(60)
    assert report.model_id == MODEL_ID and report.problems == [] and report.checked > 0 and report.how == "sha256"
    hashing = [i for i, s in enumerate(seen) if s.state == LoadState.ON_CPU and s.current_file.endswith(".safetensors")]
    loading = [i for i, s in enumerate(seen) if s.state in (LoadState.DOWNLOADING, LoadState.LOADING)]
    assert hashing and min(hashing) > max(loading)                    # it hashed once the load was done
    assert 0 < seen[hashing[-1]].progress <= 1                        # progress through the status, like repair
    assert manager.status().state == LoadState.ON_CPU and manager.status().progress == 1.0   # as the load left it


def test_verify_finds_a_damaged_file(manager, hub, settings):
    manager.ensure_ready(60)
    manager.unload("none").future.result(30)
    folder = next(Path(settings.cache_dir).rglob("model_index.json")).parent
    shard = sorted(folder.rglob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF                                      # same size, one byte changed: only a hash sees it
    shard.write_bytes(bytes(data))
    report = manager.verify(MODEL_ID).future.result(60)
    assert report.model_id == MODEL_ID and [p.path for p in report.problems] == [shard.relative_to(folder).as_posix()]


def test_delete_of_another_model_than_the_confirmed_one_is_refused(manager, hub, settings):
    from zimage.errors import ConfirmationMismatch

    manager.ensure_ready(60)
    manager.unload("none").future.result(30)
    with pytest.raises(ConfirmationMismatch) as e:
        manager.delete_cached(MODEL_ID, confirmed_id="someone/other-model")
    assert e.value.http_status == 409 and MODEL_ID in e.value.message and "someone/other-model" in e.value.message
    assert list(Path(settings.cache_dir).rglob("model_index.json"))       # nothing deleted
    assert manager.delete_cached(MODEL_ID, confirmed_id=MODEL_ID).future.result(30) > 0


def test_reports_from_several_replicas_merge_into_one():
    from zimage.store.cache import Problem
    from zimage.store.hub import VerifyReport, merge_verify_reports

    a = VerifyReport(Path("/a"), [Problem("vae/x.safetensors", "sha256 mismatch")], 10, "sha256", MODEL_ID)
    b = VerifyReport(Path("/b"), [Problem("vae/x.safetensors", "sha256 mismatch"), Problem("t/y.json", "missing")],
                     10, "sha256", MODEL_ID)
    none = VerifyReport(None, [], 0, "", MODEL_ID)
    merged = merge_verify_reports([none, a, b])
    assert merged.folder == Path("/a") and merged.model_id == MODEL_ID
    assert [p.path for p in merged.problems] == ["vae/x.safetensors", "t/y.json"]
