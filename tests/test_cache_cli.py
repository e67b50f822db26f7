"""`python -m zimage download / cache ...` as a script would call them, against the local fake hub."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zimage.store.cache import CachedModel, UnsafeDelete, delete_cached, scan_cache
from zimage.testing.fake_hub import FakeHub

MODEL_ID = "Tongyi-MAI/Z-Image-Turbo"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def hub(tiny_model_dir):
    with FakeHub({MODEL_ID: tiny_model_dir}) as fake:
        yield fake


def zimage(hub, *args, cache: Path, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, **hub.env(), MODELSCOPE_CACHE=str(cache))
    return subprocess.run([sys.executable, "-m", "zimage", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, **kw)


def repo_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_download_list_verify_clear(hub, tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    r = zimage(hub, "download", MODEL_ID, cache=cache)
    assert r.returncode == 0, r.stderr
    folder = Path(r.stdout.strip().splitlines()[-1])
    assert folder.is_relative_to(cache) and (folder / "model_index.json").exists()
    assert r.stderr.count("Downloading") >= 1          # our one terminal bar
    listed = json.loads(zimage(hub, "cache", "list", "--json", cache=cache).stdout)
    assert [(m["model"], m["status"]) for m in listed] == [(MODEL_ID, "complete")]
    assert listed[0]["size_bytes"] == repo_size(tiny_model_dir)
    ok = zimage(hub, "cache", "verify", MODEL_ID, cache=cache)
    assert ok.returncode == 0 and "ok" in ok.stdout and "sha256" in ok.stdout
    shard = sorted(folder.rglob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    bad = zimage(hub, "cache", "verify", cache=cache)
    assert bad.returncode == 1 and "sha256 mismatch" in bad.stdout and "cache repair" in bad.stdout
    fixed = zimage(hub, "cache", "repair", MODEL_ID, cache=cache)
    assert fixed.returncode == 0 and shard.name in fixed.stdout
    assert zimage(hub, "cache", "verify", MODEL_ID, cache=cache).returncode == 0
    quant = folder / ".zimage-quant" / "int8-abc" / "transformer"          # what --quantize and --compile leave
    quant.mkdir(parents=True)
    (quant / "model.safetensors").write_bytes(b"0" * 5000)
    (cache / ".zimage-compile" / "fxgraph").mkdir(parents=True)
    (cache / ".zimage-compile" / "fxgraph" / "k").write_bytes(b"0" * 300)
    shown = zimage(hub, "cache", "list", cache=cache).stdout
    assert f"int8 copy (--quantize) of {MODEL_ID}" in shown and "compiled kernels (--compile)" in shown
    assert zimage(hub, "cache", "clear-derived", cache=cache, stdin=subprocess.DEVNULL).returncode == 1
    cleared = zimage(hub, "cache", "clear-derived", "--yes", cache=cache)
    assert cleared.returncode == 0 and cleared.stdout.count("deleted ") == 2 and "(300 B)" in cleared.stdout
    assert not (folder / ".zimage-quant").exists() and not (cache / ".zimage-compile").exists()
    assert zimage(hub, "cache", "verify", MODEL_ID, cache=cache).returncode == 0    # the model itself untouched
    assert "nothing to delete" in zimage(hub, "cache", "clear-derived", "--yes", cache=cache).stdout
    refused = zimage(hub, "cache", "clear", MODEL_ID, cache=cache, stdin=subprocess.DEVNULL)
    assert refused.returncode == 1 and folder.exists()
    gone = zimage(hub, "cache", "clear", MODEL_ID, "--yes", cache=cache)
    assert gone.returncode == 0 and not folder.exists() and cache.exists()
    assert zimage(hub, "cache", "clear", MODEL_ID, "--yes", cache=cache).returncode == 2
    assert zimage(hub, "cache", "verify", MODEL_ID, cache=cache).returncode == 2


def test_exit_codes_for_network_and_disk(hub, tmp_path):
    hub.offline, hub.offline_mode = True, "503"
    r = zimage(hub, "download", MODEL_ID, cache=tmp_path / "c")
    assert r.returncode == 3 and "Could not download" in r.stderr


def test_two_processes_downloading_at_once_fetch_each_file_once(hub, tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    hub.delay_per_chunk_s = 0.002
    env = dict(os.environ, **hub.env(), MODELSCOPE_CACHE=str(cache))
    procs = [subprocess.Popen([sys.executable, "-m", "zimage", "download", MODEL_ID], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folder = Path(outs[0][0].strip().splitlines()[-1])
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == \
        {p.relative_to(tiny_model_dir).as_posix(): p.read_bytes() for p in tiny_model_dir.rglob("*") if p.is_file()}
    served = sum(hub.bytes_served.values())
    assert served <= repo_size(tiny_model_dir) * 1.1, served   # each file about once, not twice


def test_delete_refuses_anything_but_a_cached_model(tmp_path, tiny_model_dir):
    import shutil

    base = tmp_path / "cache"
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "photo.png").write_bytes(b"keep")
    for root in (outside, base, base / ".."):
        with pytest.raises(UnsafeDelete):
            delete_cached(base, CachedModel(MODEL_ID, root, "legacy", root, 0, "complete"))
    link = base / "models" / "Tongyi-MAI" / "Z-Image-Turbo"
    link.parent.mkdir(parents=True)
    link.symlink_to(outside)
    with pytest.raises(UnsafeDelete):
        delete_cached(base, CachedModel(MODEL_ID, link, "legacy", link, 0, "complete"))
    assert (outside / "photo.png").read_bytes() == b"keep"
    real = base / "hub" / "models" / "Tongyi-MAI" / "Z-Image-Turbo"
    shutil.copytree(tiny_model_dir, real)
    [entry] = [m for m in scan_cache(base) if m.root == real]
    assert delete_cached(base, entry) > 0 and not real.exists()
