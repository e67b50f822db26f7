"""The GPU runs' own tools, on the CPU with the tiny model: the GGUF quantizers (Q8_0 bit for bit as
gguf-py writes it, Q4_K read back by gguf-py and diffusers alike), the single files written from a
diffusers folder (each loads through the app and through plain diffusers to the same picture), the
fp32 folder and its bf16 copy for issue 34, and bench/gpu35_bench.py end to end (one format) and
under a spent budget (every case skipped with a line saying so)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# a wider DiT than the tiny model's, so that its Linears' rows (256) fit Q4_K's 256-value blocks
WIDE_DIT = {"dim": 256, "n_heads": 2, "n_kv_heads": 2, "axes_dims": [32, 48, 48]}


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> Path:
    from zimage.testing.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("wide") / "model", dit=WIDE_DIT)


def test_q8_0_is_what_gguf_py_writes_bit_for_bit():
    import gguf
    from gguf import quants

    from zimage.testing.gguf_quant import quantize

    x = torch.randn(64, 512, generator=torch.Generator().manual_seed(1)) / 40
    x[0, :6] = torch.tensor([0.5, 1.5, -0.5, -2.5, 127.0, 0.0])          # ties round away from zero
    x[1] = 0                                                             # a zero block: scale 0
    for t in (x, x.to(torch.bfloat16)):
        ours = quantize(t, "Q8_0")
        theirs = quants.quantize(t.float().numpy(), gguf.GGMLQuantizationType.Q8_0)
        assert ours.dtype == np.uint8 and np.array_equal(ours, theirs)


def test_q4_k_reads_back_the_same_through_gguf_py_and_diffusers():
    import gguf
    from diffusers.quantizers.gguf.utils import dequantize_blocks_Q4_K
    from gguf import quants

    from zimage.testing.gguf_quant import quantize

    x = torch.randn(8, 1024, generator=torch.Generator().manual_seed(2)) / 30
    x[1] = 0.25                                                          # a constant row
    x[2] = 0
    blocks = quantize(x, "Q4_K")
    assert blocks.shape == (8, 1024 // 256 * 144)
    back = quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_K)
    theirs = dequantize_blocks_Q4_K(torch.from_numpy(blocks).reshape(-1, 144), 256, 144, torch.float32)
    assert np.allclose(back, theirs.reshape(back.shape).numpy())
    err = back - x.numpy()
    assert np.sqrt((err[3:] ** 2).mean()) < 0.1 * np.sqrt((x[3:].numpy() ** 2).mean())    # 4 bits: ~8% here
    assert np.allclose(back[1], 0.25, atol=1e-3) and not back[2].any()


def _image(pipe) -> np.ndarray:
    return pipe(prompt="a red fox", width=64, height=64, num_inference_steps=2, guidance_scale=0.0,
                generator=torch.Generator().manual_seed(0), output_type="np").images[0]


def test_single_files_from_a_folder_load_in_the_app_and_in_plain_diffusers_alike(wide_model, tmp_path):
    from bench.probe_common import plain_pipeline
    from zimage.engine.loader import load_pipeline
    from zimage.store.model_files import read_info
    from zimage.store.model_source import ModelOptions, resolve_parts
    from zimage.testing.single_files import write_single_files

    paths = write_single_files(wide_model, tmp_path, ("bf16", "fp8", "Q8_0", "Q4_K"))
    stamps = {f: p.stat().st_mtime_ns for f, p in paths.items()}
    assert write_single_files(wide_model, tmp_path, ("bf16", "Q4_K"))["Q4_K"].stat().st_mtime_ns == stamps["Q4_K"]
    reference = _image(load_pipeline(wide_model, torch.float32))
    options = ModelOptions(str(wide_model / "text_encoder"), str(wide_model / "vae"), (str(wide_model),))
    for fmt, path in paths.items():
        info = read_info(path)
        assert (info.role, info.precision) == ("dit", fmt), fmt
        ours = _image(load_pipeline(resolve_parts(str(path), options), torch.float32))
        plain = _image(plain_pipeline(str(wide_model), str(path), torch.float32))
        assert np.abs(ours - plain).max() < 1e-5, fmt
        diff = np.abs(ours - reference).max()
        assert diff == 0 if fmt == "bf16" else 0 < diff < 0.5, (fmt, diff)     # quantized: close, not equal


def test_the_fp32_folder_links_its_parts_and_its_bf16_copy_is_made(tiny_model_dir, tmp_path):
    from types import SimpleNamespace

    from bench.gpu34_probe import copy, fp32
    from zimage.engine import bf16_copy
    from zimage.engine.loader import load_pipeline

    out = tmp_path / "fp32"
    made = fp32(SimpleNamespace(folder=str(tiny_model_dir), out=str(out), device="cpu"))
    assert made["fp32_bytes"] > 0 and fp32(SimpleNamespace(folder=str(tiny_model_dir), out=str(out),
                                                           device="cpu"))["kept"]
    assert (out / "text_encoder").is_symlink() and bf16_copy.fp32_on_disk(out)
    assert "copy" in copy(SimpleNamespace(folder=str(out), device="cpu"))
    assert bf16_copy.select(out, torch.bfloat16) is not None
    assert next(load_pipeline(out, torch.bfloat16).transformer.parameters()).dtype == torch.bfloat16


def _bench(*args: str, timeout: float = 600) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "bench.gpu35_bench", *args, "--device", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_gpu35_bench_measures_a_gguf_file_against_plain_diffusers_on_the_cpu(tiny_model_dir, tmp_path):
    lines = _bench(str(tiny_model_dir), "--out", str(tmp_path / "out"), "--files", str(tmp_path / "files"),
                   "--items", "1", "--formats", "Q4_K", "--size", "256", "--steps", "2", "--images", "1",
                   "--budget-s", "900")
    assert lines[0]["figure"] == "machine" and lines[-1]["figure"] == "budget"
    written = [x for x in lines if x.get("case") == "files"]
    assert written[0]["format"] == "Q4_K" and written[0]["bytes"] > 0
    cases = {x["case"]: x for x in lines if x.get("case") in ("Q4_K_ours", "Q4_K_plain")}
    assert set(cases) == {"Q4_K_ours", "Q4_K_plain"} and not any("error" in c for c in cases.values())
    assert all(c["s_per_image"] > 0 and c["on_device_s"] > 0 for c in cases.values())
    summary = next(x for x in lines if x.get("figure", "").startswith("load and s/image"))
    assert summary["ratio"] > 0 and summary["ours_vs_plain_image"]["psnr_db"] != 0
    assert (tmp_path / "out" / "gpu35.jsonl").read_text().count("\n") == len(lines)


def test_gpu35_bench_skips_what_the_budget_cannot_hold(tiny_model_dir, tmp_path):
    lines = _bench(str(tiny_model_dir), "--out", str(tmp_path), "--items", "1,2,3,4,5,6,7", "--formats", "folder",
                   "--budget-s", "3", timeout=120)
    skipped = [x for x in lines if "skipped" in x]
    assert {x["item"] for x in skipped} == {1, 2, 3, 4, 5, 6, 7}
    assert all("--budget-s" in x["skipped"] or "not written" in x["skipped"] for x in skipped)


def test_zimage_cli_as_a_module_writes_the_full_size_upscaler(tmp_path):
    """`python -m zimage.cli ...` runs its command (it did nothing before), and the upscaler of a real
    model's size is one the upscaler folder lists as usable."""
    from zimage.store import upscalers
    from zimage.testing.tiny_upscaler import FULL_NAME

    done = subprocess.run([sys.executable, "-m", "zimage.cli", "make-tiny-upscaler", str(tmp_path), "--full"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (found,) = upscalers.scan(tmp_path)
    assert (found.name, found.arch, found.scale, found.usable) == (FULL_NAME, "RRDBNet", 2, True)
    assert found.path.stat().st_size > 60e6


def test_a_session_runs_its_tasks_on_one_loaded_model_and_a_failing_task_does_not_stop_it(tiny_model_dir):
    """bench/gpu35_probe.py session: the load line, then one line per task in order (variety: one per
    variety); a task that fails (enhance asked for 0 tokens) says so and the next one runs."""
    done = subprocess.run([sys.executable, "-m", "bench.gpu35_probe", "session", str(tiny_model_dir), "--tasks",
                           "steps,enhance,base,variety", "--tokens", "0", "--size", "256", "--steps", "2",
                           "--base-steps", "2", "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [x["task"] for x in lines] == ["load", "steps", "enhance", "base"] + ["variety"] * 5
    steps, enhance, base = lines[1:4]
    assert steps["item"] == 4 and steps["s_per_image_8"] > 0 and steps["s_per_image_9"] > 0
    assert enhance["item"] == 5 and "error" in enhance
    assert base["item"] == 2 and base["guidance"] > 0 and base["s_per_image"] > 0
    varieties = lines[4:]
    assert [x["variety"] for x in varieties] == [0.0, 0.1, 0.3, 0.5, 1.0] and varieties[0]["drift"] == 0
    assert varieties[-1]["drift"] > 0 and varieties[0]["zero_norms_set_to_one"] == []
