"""The bf16 copy of a DiT stored in fp32 (engine/bf16_copy.py): made after a bf16 load from the fp32
files, read by the next bf16 load instead of them, rebuilt when damaged, removed by clear-derived
(CPU, the tiny model with an fp32 transformer)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zimage.engine import bf16_copy, fastload
from zimage.engine.loader import load_pipeline, weight_paths
from zimage.testing.tiny_model import make_tiny_model

KW = dict(prompt="a cat", width=128, height=128, num_inference_steps=2, guidance_scale=0.0)
ROOT = Path(__file__).resolve().parent.parent


def image(pipe) -> np.ndarray:
    return np.asarray(pipe(**KW, generator=torch.Generator().manual_seed(3)).images[0])


@pytest.fixture(scope="module")
def fp32_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("fp32") / "tiny", transformer_dtype="float32")


@pytest.fixture
def fp32_model(fp32_model_dir, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(fp32_model_dir, tmp_path / "model"))


@pytest.fixture
def streamed(monkeypatch) -> list[Path]:
    """The shard files each fast load streams (the seam: fastload.start_streaming)."""
    seen: list[Path] = []
    real = fastload.start_streaming
    monkeypatch.setattr(fastload, "start_streaming", lambda shards, *a, **k: seen.extend(s.path for s in shards)
                        or real(shards, *a, **k))
    return seen


def load_and_wait(model_dir: Path, dtype=torch.bfloat16):
    pipe = load_pipeline(model_dir, dtype, "cpu")
    assert bf16_copy.wait_for_copy(model_dir, timeout_s=120)
    return pipe


def copies(model_dir: Path) -> list[Path]:
    root = model_dir / bf16_copy.COPY_DIR
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_first_bf16_load_makes_the_copy_and_the_second_reads_it(fp32_model, streamed, monkeypatch):
    monkeypatch.setattr(bf16_copy, "SHARD_BYTES", 50_000)          # several shards, as the real 12 GB copy has
    assert bf16_copy.fp32_on_disk(fp32_model)
    first = load_and_wait(fp32_model)
    fp32_files = {p for p in streamed if p.parent == fp32_model / "transformer"}
    assert len(fp32_files) == 2                                      # the first load read the fp32 shards
    [copy] = copies(fp32_model)
    shards = sorted((copy / "transformer").glob("*.safetensors"))
    assert len(shards) >= 2 and bf16_copy.damage(copy) is None
    assert sum(s.stat().st_size for s in shards) < sum(f.stat().st_size for f in fp32_files) * 0.6

    # The fp32 data is overwritten with zeros, size and mtime kept: only a load that reads the copy
    # still sees the weights (and the recorded hashes still name this copy).
    for f in fp32_files:
        st = f.stat()
        head = fastload.read_shard(f).data_offset
        with open(f, "r+b") as fh:
            fh.seek(head)
            fh.write(b"\0" * (st.st_size - head))
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    streamed.clear()
    second = load_and_wait(fp32_model)
    assert not any(p.parent == fp32_model / "transformer" for p in streamed)
    assert set(shards) <= set(streamed)
    for (k, a), b in zip(first.transformer.state_dict().items(), second.transformer.state_dict().values()):
        assert a.dtype == b.dtype == torch.bfloat16 and torch.equal(a, b), k
    assert np.array_equal(image(first), image(second))
    assert set(shards) <= set(weight_paths(fp32_model))               # the prefetch reads the copy too
    assert not set(shards) & set(weight_paths(fp32_model, bf16=False))


def test_copy_equals_the_fp32_weights_cast_like_the_loader_does(fp32_model):
    reference = load_pipeline(fp32_model, torch.float32, "cpu")      # fp32 load: no copy wanted
    assert bf16_copy.wait_for_copy(fp32_model) and copies(fp32_model) == []
    copy = bf16_copy.make_copy(fp32_model)
    assert copy is not None
    from safetensors.torch import load_file

    saved = {}
    for f in sorted((copy / "transformer").glob("*.safetensors")):
        saved.update(load_file(f))
    expected = {k: v.to(torch.bfloat16) for k, v in reference.transformer.state_dict().items()}
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in saved)
    # A bf16 load (from the copy now) holds exactly those weights. (Its image is compared with a load
    # from the fp32 files in the test above; a whole-pipeline .to(bf16) is no reference for it: the
    # loader places the text encoder and VAE by its own rules.)
    loaded = load_pipeline(fp32_model, torch.bfloat16, "cpu")
    assert all(torch.equal(v, expected[k]) for k, v in loaded.transformer.state_dict().items())


def test_a_truncated_copy_is_detected_deleted_and_made_again(fp32_model, streamed):
    load_and_wait(fp32_model)
    [copy] = copies(fp32_model)
    shard = sorted((copy / "transformer").glob("*.safetensors"))[0]
    size = shard.stat().st_size
    with open(shard, "r+b") as fh:
        fh.truncate(size - 100)
    assert "bytes on disk" in bf16_copy.damage(copy)
    streamed.clear()
    pipe = load_and_wait(fp32_model)                                # reads the fp32 files, then copies again
    assert any(p.parent == fp32_model / "transformer" for p in streamed)
    assert copies(fp32_model) == [copy] and bf16_copy.damage(copy) is None and shard.stat().st_size == size
    assert all(p.dtype == torch.bfloat16 for p in pipe.transformer.parameters())


def test_an_unfinished_copy_is_never_used(fp32_model):
    load_and_wait(fp32_model)
    [copy] = copies(fp32_model)
    (copy / bf16_copy.DONE).unlink()                                 # as if the rename had come first
    assert "unfinished" in bf16_copy.damage(copy)
    assert bf16_copy.select(fp32_model, torch.bfloat16) is None and not copy.exists()


def test_no_copy_for_a_bf16_model_an_fp32_load_or_a_changed_source(fp32_model, tiny_model_dir):
    assert not bf16_copy.fp32_on_disk(tiny_model_dir) and bf16_copy.make_copy(tiny_model_dir) is None
    assert not bf16_copy.wanted(fp32_model, torch.float32) and bf16_copy.wanted(fp32_model, torch.bfloat16)
    load_and_wait(fp32_model)
    assert bf16_copy.select(fp32_model, torch.bfloat16) is not None
    assert bf16_copy.select(fp32_model, torch.float32) is None
    shard = sorted((fp32_model / "transformer").glob("*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))                                   # a new mtime: the old copy is not its copy
    assert bf16_copy.select(fp32_model, torch.bfloat16) is None
    [old] = copies(fp32_model)
    new = bf16_copy.make_copy(fp32_model)
    assert new != old and copies(fp32_model) == [new]                # the stale one removed


def test_a_full_disk_leaves_no_copy_and_the_model_loads(fp32_model, monkeypatch):
    import shutil

    monkeypatch.setattr(bf16_copy.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    pipe = load_and_wait(fp32_model)
    assert copies(fp32_model) == [] and all(p.dtype == torch.bfloat16 for p in pipe.transformer.parameters())
    assert list((fp32_model / bf16_copy.COPY_DIR).glob(bf16_copy.TMP_PREFIX + "*")) == []


def test_cache_list_counts_the_copy_and_clear_derived_removes_it(fp32_model_dir, tmp_path):
    from zimage.testing.fake_hub import FakeHub

    model_id = "Tongyi-MAI/Z-Image-Turbo"
    cache = tmp_path / "cache"
    with FakeHub({model_id: fp32_model_dir}) as hub:
        env = dict(os.environ, **hub.env(), MODELSCOPE_CACHE=str(cache))

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "zimage", *args], cwd=ROOT, env=env, capture_output=True,
                                  text=True, timeout=120)
        r = run("download", model_id)
        assert r.returncode == 0, r.stderr
        folder = Path(r.stdout.strip().splitlines()[-1])
        load_and_wait(folder)
        [copy] = copies(folder)
        size = sum(p.stat().st_size for p in (folder / bf16_copy.COPY_DIR).rglob("*") if p.is_file())
        listed = run("cache", "list").stdout
        line = next(x for x in listed.splitlines() if "bf16 copy of the fp32 transformer" in x)
        assert model_id in line and str(folder / bf16_copy.COPY_DIR) in line
        from zimage.units import human_bytes

        assert human_bytes(size) in line
        cleared = run("cache", "clear-derived", "--yes")
        assert cleared.returncode == 0 and "bf16 copy" in cleared.stdout
        assert not (folder / bf16_copy.COPY_DIR).exists() and (folder / "transformer").is_dir()
        assert json.loads(run("cache", "list", "--json").stdout)[0]["status"] == "complete"
