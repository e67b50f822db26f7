from pathlib import Path

import pytest
from PIL import Image

from zimage.errors import InvalidRequest
from zimage.generate import GenerationRequest, OutputStore, infotext

OK = {"prompt": "a cat", "width": 512, "height": 768, "num_inference_steps": 4, "seed": 7}


def test_seed_request_shape_and_turbo_defaults():
    r = GenerationRequest.from_mapping({"prompt": "warmup", "width": 512, "height": 512,
                                        "num_inference_steps": 1, "seed": 1})
    assert (r.width, r.height, r.num_inference_steps, r.seed) == (512, 512, 1, 1)
    d = GenerationRequest.from_mapping({"prompt": "x"})
    assert (d.width, d.height, d.num_inference_steps, d.guidance_scale, d.seed, d.num_images) == \
        (1024, 1024, 9, 0.0, -1, 1)


@pytest.mark.parametrize("patch,field", [
    ({"prompt": None}, "prompt"), ({"prompt": ["a"]}, "prompt"), ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * 4001}, "prompt"), ({"prompt": "a\x00b"}, "prompt"),
    ({"width": 500}, "width"), ({"width": 128}, "width"), ({"width": 4096}, "width"),
    ({"height": "512"}, "height"), ({"height": None}, "height"), ({"height": 512.5}, "height"),
    ({"width": True}, "width"),
    ({"num_inference_steps": 0}, "num_inference_steps"), ({"num_inference_steps": 51}, "num_inference_steps"),
    ({"num_inference_steps": "ten"}, "num_inference_steps"),
    ({"seed": -2}, "seed"), ({"seed": 2**40}, "seed"), ({"seed": 1.5}, "seed"),
    ({"guidance_scale": float("nan")}, "guidance_scale"), ({"guidance_scale": -1}, "guidance_scale"),
    ({"guidance_scale": "high"}, "guidance_scale"),
    ({"num_images": 0}, "num_images"), ({"num_images": 5}, "num_images"),
    ({"negative_prompt": 3}, "negative_prompt"), ({"steps": 9}, "steps"),
])
def test_bad_fields_are_named(patch, field):
    data = dict(OK, **patch)
    with pytest.raises(InvalidRequest) as e:
        GenerationRequest.from_mapping(data)
    assert e.value.field == field and field in e.value.message


def test_integral_floats_are_integers():
    # JSON has one number type: 512.0 is 512 (JSON Schema's "integer" says so too; found by the schema fuzz).
    r = GenerationRequest.from_mapping(dict(OK, width=512.0, num_inference_steps=4.0, seed=7.0, num_images=2.0))
    assert (r.width, r.num_inference_steps, r.seed, r.num_images) == (512, 4, 7, 2)
    assert all(type(v) is int for v in (r.width, r.num_inference_steps, r.seed, r.num_images))


def test_missing_prompt_and_non_object_body():
    with pytest.raises(InvalidRequest, match="prompt: is required"):
        GenerationRequest.from_mapping({"width": 512})
    with pytest.raises(InvalidRequest, match="body"):
        GenerationRequest.from_mapping(["prompt"])


def test_unicode_prompt_is_accepted():
    r = GenerationRequest.from_mapping(dict(OK, prompt="一只猫 🐈 \u202eRTL"))
    assert "🐈" in r.prompt


def test_random_seed_is_resolved_and_images_get_consecutive_seeds():
    r = GenerationRequest.from_mapping(dict(OK, seed=-1, num_images=3)).with_resolved_seed()
    assert r.seed >= 0
    assert r.seeds() == [r.seed, r.seed + 1, r.seed + 2]
    fixed = GenerationRequest.from_mapping(OK)
    assert fixed.with_resolved_seed() is fixed


def test_infotext_follows_a1111():
    r = GenerationRequest.from_mapping(dict(OK, negative_prompt="blurry"))
    text = infotext(r, 7)
    assert text.splitlines()[0] == "a cat"
    assert text.splitlines()[1] == "Negative prompt: blurry"
    assert "Steps: 4" in text and "Seed: 7" in text and "Size: 512x768" in text and "CFG scale: 0" in text


def test_output_store_never_overwrites_and_keeps_metadata(tmp_path):
    store = OutputStore(tmp_path / "out")
    img = Image.new("RGB", (16, 16), "red")
    paths = [store.save(img, 5, "params") for _ in range(3)]
    assert len(set(paths)) == 3
    for p in paths:
        assert p.is_relative_to(store.root)
        assert Image.open(p).text["parameters"] == "params"


def test_output_store_reports_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = OutputStore(blocker / "out")
    with pytest.raises(OSError):
        store.save(Image.new("RGB", (8, 8)), 1, "x")
    assert blocker.read_text() == "not a folder"


def test_save_png_keeps_the_bytes_and_never_overwrites(tmp_path):
    """Images made on a Ray replica arrive encoded; the app's outputs folder gets them byte for byte."""
    from zimage.generate import OutputStore

    store = OutputStore(tmp_path / "out")
    first = store.save_png(b"\x89PNG first", 7)
    second = store.save_png(b"\x89PNG second", 7)
    assert first != second and first.parent.parent == store.root
    assert first.read_bytes() == b"\x89PNG first" and second.read_bytes() == b"\x89PNG second"


def test_output_store_disk_full_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    """ENOSPC half-way through the PNG (tests/test_faults.py does it on a real 32 KB tmpfs where it can mount)."""
    import errno

    def fill_up(self, fh, *args, **kwargs):
        fh.write(b"\x89PNG half an image")
        raise OSError(errno.ENOSPC, "No space left on device")
    store = OutputStore(tmp_path / "out")
    kept = store.save(Image.new("RGB", (8, 8)), 1, "x")
    monkeypatch.setattr(Image.Image, "save", fill_up)
    with pytest.raises(OSError) as e:
        store.save(Image.new("RGB", (8, 8)), 2, "x")
    assert e.value.errno == errno.ENOSPC
    assert list(store.root.rglob("*.png")) == [kept] and Image.open(kept).size == (8, 8)


def test_a_kill_mid_write_leaves_no_partial_png_and_a_restart_cleans_up(tmp_path):
    """kill -9 while a PNG is written (held half-way by the store's test seam) leaves nothing under a
    final name; the next OutputStore removes the temporary file and quarantines an old truncated PNG."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import wait_for
    from zimage.generate import BLOCK_WRITE_ENV, QUARANTINE_DIR

    root, marker = tmp_path / "out", tmp_path / "half-written"
    script = ("import sys; from PIL import Image; from zimage.generate import OutputStore; "
              "OutputStore(sys.argv[1]).save(Image.effect_noise((512, 512), 64).convert('RGB'), 7, 'params')")
    env = {**os.environ, BLOCK_WRITE_ENV: str(marker),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", script, str(root)], env=env)
    try:
        wait_for(lambda: marker.exists() or child.poll() is not None, 60, message="the write to be half done")
        assert child.poll() is None, "the child finished without pausing mid-write"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert list(root.rglob("*.png")) == []                           # no partial image under a final name
    leftovers = [p for p in root.rglob("*") if p.is_file()]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0   # the half-written temporary file
    day = leftovers[0].parent
    truncated = day / "120000-9.png"                                  # as the old direct write left them
    whole = OutputStore(tmp_path / "elsewhere").save(Image.new("RGB", (8, 8)), 1, "x")
    truncated.write_bytes(whole.read_bytes()[:40])
    kept = day / "120001-9.png"
    kept.write_bytes(whole.read_bytes())
    store = OutputStore(root)                                         # the restart
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == sorted(
        [kept.relative_to(root).as_posix(), f"{QUARANTINE_DIR}/{day.name}/120000-9.png.partial"])
    assert Image.open(kept).size == (8, 8) and store.save(Image.new("RGB", (8, 8)), 2, "x").exists()


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_lone_surrogate_names_its_field(field):
    with pytest.raises(InvalidRequest) as e:
        GenerationRequest.from_mapping({**OK, field: "a \udfff b"})
    assert e.value.field == field and "surrogate at character 2" in e.value.message


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model_dir):
    import torch

    from zimage.loader import load_pipeline

    return load_pipeline(tiny_model_dir, torch.float32, "cpu", None, True)


@pytest.mark.parametrize("num_images", [1, 3])
def test_our_decode_gives_the_pipelines_own_pixels(tiny_pipe, num_images):
    """We ask the pipeline for latents and decode them ourselves (so a stopped job skips the VAE):
    the pixels must be those of the pipeline's own decode, bit for bit."""
    import torch

    from zimage.generate import run_pipeline

    req = GenerationRequest.from_mapping(dict(OK, width=256, height=256, num_inference_steps=2,
                                              num_images=num_images))
    ours = run_pipeline(tiny_pipe, req, lambda: False)
    with torch.inference_mode():
        theirs = tiny_pipe(prompt=req.prompt, width=256, height=256, num_inference_steps=2, guidance_scale=0.0,
                           num_images_per_prompt=num_images,
                           generator=[torch.Generator("cpu").manual_seed(s) for s in req.seeds()]).images
    assert len(ours) == num_images and [a.tobytes() for a in ours] == [b.tobytes() for b in theirs]


def test_run_pipeline_stopped_mid_way_is_cancelled_without_a_decode(tiny_pipe, monkeypatch):
    from zimage.errors import Cancelled
    from zimage.generate import run_pipeline

    decodes, steps = [], []
    real = tiny_pipe.vae.decode
    monkeypatch.setattr(tiny_pipe.vae, "decode", lambda *a, **kw: decodes.append(1) or real(*a, **kw))
    req = GenerationRequest.from_mapping(dict(OK, width=256, height=256, num_inference_steps=6))
    with pytest.raises(Cancelled):
        run_pipeline(tiny_pipe, req, lambda: len(steps) >= 2, lambda step, total, latents=None: steps.append(step))
    assert steps == [1, 2] and decodes == []
