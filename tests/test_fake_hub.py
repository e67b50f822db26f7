"""The fake ModelScope hub, exercised with the real `modelscope` client (snapshot_download)."""
from __future__ import annotations

import hashlib
import http.client
import json
import threading
from pathlib import Path

import pytest

from zimage.testing.fake_hub import FakeHub

from conftest import wait_for

MODEL_ID = "Tongyi-MAI/Z-Image-Turbo"
LISTING = f"/api/v1/models/{MODEL_ID}/repo/files?Revision=master&Recursive=True"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def repo_files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def snapshot(cache: Path, **kw) -> Path:
    from modelscope.hub.snapshot_download import snapshot_download

    return Path(snapshot_download(MODEL_ID, cache_dir=str(cache), **kw))


def snapshot_dir(cache: Path) -> Path:
    return cache / "models" / "Tongyi-MAI--Z-Image-Turbo" / "snapshots" / "master"


def largest_safetensors(folder: Path) -> str:
    files = {rel: p for rel, p in repo_files(folder).items() if rel.endswith(".safetensors")}
    return max(files, key=lambda rel: files[rel].stat().st_size)


def test_snapshot_download_is_byte_identical(hub, tiny_model_dir, cache):
    from modelscope.hub.api import HubApi

    path = snapshot(cache)

    assert path == snapshot_dir(cache)
    expected = repo_files(tiny_model_dir)
    got = repo_files(path)
    assert sorted(got) == sorted(expected)
    for rel, src in expected.items():
        assert got[rel].read_bytes() == src.read_bytes(), rel
    # One listing, then exactly one plain GET per file.
    assert hub.requests[0] == ("GET", LISTING)
    assert hub.route_counts() == {"listing": 1, "file": len(expected)}
    assert sorted(hub.file_requests) == sorted((rel, None) for rel in expected)
    assert hub.bytes_served == {rel: p.stat().st_size for rel, p in expected.items()}

    # The listing, as the client's HubApi reads it: sizes and hashes of the real files.
    listed = {f["Path"]: f for f in HubApi().get_model_files(MODEL_ID, recursive=True)}
    for rel, src in expected.items():
        assert listed[rel]["Size"] == src.stat().st_size
        assert hub.file(MODEL_ID, rel).sha256 == sha256(src)
    assert {p for p, f in listed.items() if p not in expected} == {"scheduler", "text_encoder", "tokenizer",
                                                                    "transformer", "vae"}   # "tree" entries


def test_second_snapshot_only_lists(hub, cache):
    snapshot(cache)
    hub.reset_counters()

    snapshot(cache)

    assert hub.requests == [("GET", LISTING)]
    assert hub.bytes_served == {}


def test_dropped_download_is_resumed_with_range(hub, tiny_model_dir, cache):
    big = largest_safetensors(tiny_model_dir)
    size = (tiny_model_dir / big).stat().st_size
    hub.fail_after_bytes[big] = size // 3

    # The client retries a dropped transfer itself (MODELSCOPE_DOWNLOAD_MAX_RETRIES, default 5; the
    # first retry is immediate), resuming from the partial file with a Range request.
    path = snapshot(cache)

    assert (path / big).read_bytes() == (tiny_model_dir / big).read_bytes()
    assert hub.file_requests.count((big, None)) == 1
    assert (big, f"bytes={size // 3}-") in hub.file_requests
    assert hub.bytes_served[big] == size                   # no byte sent twice
    assert not (path / (big + ".incomplete")).exists()


def test_failed_download_resumes_on_next_call(hub, tiny_model_dir, cache, monkeypatch):
    import modelscope_hub._download
    from modelscope_hub.errors import FileDownloadError, NetworkError

    # With the client's own retries off, the dropped connection fails the whole snapshot_download.
    monkeypatch.setattr(modelscope_hub._download, "DOWNLOAD_RETRY_TIMES", 0)
    big = largest_safetensors(tiny_model_dir)
    size = (tiny_model_dir / big).stat().st_size
    cut = size // 3
    hub.fail_after_bytes[big] = cut

    with pytest.raises(FileDownloadError) as failed:
        snapshot(cache)

    # The client tried every other file first; only the cut one is reported, as a NetworkError
    # (which is also a builtin ConnectionError), and its bytes so far are kept for a resume.
    assert list(failed.value.failed_files) == [big]
    assert isinstance(failed.value.failed_files[big], NetworkError)
    assert isinstance(failed.value.failed_files[big], ConnectionError)
    assert not isinstance(failed.value, OSError)
    target = snapshot_dir(cache) / big
    assert not target.exists()
    assert (target.parent / (target.name + ".incomplete")).stat().st_size == cut
    assert len(repo_files(snapshot_dir(cache))) == len(repo_files(tiny_model_dir))   # 12 done + .incomplete
    hub.reset_counters()

    path = snapshot(cache)

    assert (path / big).read_bytes() == (tiny_model_dir / big).read_bytes()
    assert hub.file_requests == [(big, f"bytes={cut}-")]
    assert hub.bytes_served == {big: size - cut}


def test_wrong_sha256_is_refused(hub, tiny_model_dir, cache, monkeypatch):
    import modelscope_hub._download
    from modelscope_hub.errors import FileDownloadError, FileIntegrityError

    monkeypatch.setattr(modelscope_hub._download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0.01)   # 1 s, 2 s otherwise
    victim = "vae/diffusion_pytorch_model.safetensors"
    hub.set_sha256(MODEL_ID, victim, "0" * 64)

    with pytest.raises(FileDownloadError) as failed:
        snapshot(cache)

    assert list(failed.value.failed_files) == [victim]
    assert isinstance(failed.value.failed_files[victim], FileIntegrityError)
    # Three whole attempts (DOWNLOAD_HASH_RETRY_TIMES), then nothing left behind at the target.
    assert hub.file_requests.count((victim, None)) == 3
    target = snapshot_dir(cache) / victim
    assert not target.exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["config.json"]
    assert (snapshot_dir(cache) / "model_index.json").exists()


def test_allow_patterns_downloads_only_matches(hub, tiny_model_dir, cache):
    path = snapshot(cache, allow_patterns=["model_index.json", "*/*.json"])

    expected = sorted(rel for rel in repo_files(tiny_model_dir)
                      if rel == "model_index.json" or (rel.count("/") == 1 and rel.endswith(".json")))
    assert "vae/config.json" in expected and "tokenizer/tokenizer.json" in expected
    assert sorted(repo_files(path)) == expected
    assert sorted(rel for rel, _ in hub.file_requests) == expected
    assert hub.route_counts() == {"listing": 1, "file": len(expected)}


def test_slow_transfer_cut_by_going_offline(hub, tiny_model_dir, cache, monkeypatch):
    import modelscope_hub._download
    from modelscope_hub.errors import FileDownloadError

    monkeypatch.setattr(modelscope_hub._download, "DOWNLOAD_RETRY_TIMES", 0)
    big = largest_safetensors(tiny_model_dir)
    size = (tiny_model_dir / big).stat().st_size
    hub.chunk_size = 16 * 1024
    hub.delay_per_chunk_s = 0.02
    outcome: list[BaseException | Path] = []

    def download() -> None:
        try:
            outcome.append(snapshot(cache, allow_patterns=[big]))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    worker = threading.Thread(target=download, daemon=True)
    worker.start()
    wait_for(lambda: hub.bytes_served.get(big, 0) >= 64 * 1024, 10, message="the transfer to start")
    hub.offline = True
    worker.join(10)

    assert len(outcome) == 1 and isinstance(outcome[0], FileDownloadError)
    served = hub.bytes_served[big]
    assert served < size
    partial = snapshot_dir(cache) / (big + ".incomplete")
    assert partial.read_bytes() == (tiny_model_dir / big).read_bytes()[:served]


def _get(hub: FakeHub, target: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=5)
    conn.request("GET", target, headers=headers or {})
    return conn.getresponse()


def test_fake_hub_http_details(hub, tiny_model_dir):
    rel = "model_index.json"
    data = (tiny_model_dir / rel).read_bytes()
    target = f"/api/v1/models/{MODEL_ID}/repo?Revision=master&FilePath={rel}"

    resp = _get(hub, target, {"Range": "bytes=10-"})
    assert (resp.status, resp.getheader("Content-Range"), resp.read()) == (
        206, f"bytes 10-{len(data) - 1}/{len(data)}", data[10:])
    resp = _get(hub, target, {"Range": f"bytes={len(data)}-"})
    assert (resp.status, resp.getheader("Content-Range")) == (416, f"bytes */{len(data)}")
    resp = _get(hub, f"/api/v1/models/{MODEL_ID}/revisions")
    assert json.loads(resp.read())["Data"]["RevisionMap"]["Branches"][0]["Revision"] == "master"
    resp = _get(hub, "/api/v1/models/nobody/nothing/repo/files?Revision=master")
    assert resp.status == 404 and json.loads(resp.read())["Success"] is False

    hub.offline = True
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _get(hub, target).read()
    hub.offline_mode = "503"
    assert _get(hub, target).status == 503
    hub.offline = False
    assert _get(hub, target).read() == data
