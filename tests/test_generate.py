"""engine/generate.py: one pipeline call, our own decode (a stopped job is never decoded)."""
import pytest

from zimage.request import GenerationRequest

OK = {"prompt": "a cat", "width": 512, "height": 768, "num_inference_steps": 4, "seed": 7}


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model_dir):
    import torch

    from zimage.engine.loader import load_pipeline

    return load_pipeline(tiny_model_dir, torch.float32, "cpu", None, True)


@pytest.mark.parametrize("num_images", [1, 3])
def test_our_decode_gives_the_pipelines_own_pixels(tiny_pipe, num_images):
    """We ask the pipeline for latents and decode them ourselves (so a stopped job skips the VAE):
    the pixels must be those of the pipeline's own decode, bit for bit."""
    import torch

    from zimage.engine.generate import run_pipeline

    req = GenerationRequest.from_mapping(dict(OK, width=256, height=256, num_inference_steps=2,
                                              num_images=num_images))
    ours = run_pipeline(tiny_pipe, req, lambda: False)
    with torch.inference_mode():
        theirs = tiny_pipe(prompt=req.prompt, width=256, height=256, num_inference_steps=2, guidance_scale=0.0,
                           num_images_per_prompt=num_images,
                           generator=[torch.Generator("cpu").manual_seed(s) for s in req.seeds()]).images
    assert len(ours) == num_images and [a.tobytes() for a in ours] == [b.tobytes() for b in theirs]


def test_run_pipeline_stopped_mid_way_is_cancelled_without_a_decode(tiny_pipe, monkeypatch):
    from zimage.engine.generate import run_pipeline
    from zimage.errors import Cancelled

    decodes, steps = [], []
    real = tiny_pipe.vae.decode
    monkeypatch.setattr(tiny_pipe.vae, "decode", lambda *a, **kw: decodes.append(1) or real(*a, **kw))
    req = GenerationRequest.from_mapping(dict(OK, width=256, height=256, num_inference_steps=6))
    with pytest.raises(Cancelled):
        run_pipeline(tiny_pipe, req, lambda: len(steps) >= 2, lambda step, total, latents=None: steps.append(step))
    assert steps == [1, 2] and decodes == []


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_to_pil_gives_diffusers_postprocess_pixels(tiny_pipe, dtype):
    """The uint8 conversion done on the image's device gives diffusers' CPU postprocess pixel for
    pixel, values on the rounding boundaries (x.5 after scaling) and outside [-1, 1] included."""
    import torch

    from zimage.engine.generate import to_pil

    torch.manual_seed(0)
    image = torch.randn(2, 3, 64, 48) * 1.5
    boundaries = (torch.arange(256, dtype=torch.float32) + 0.5) / 255 * 2 - 1     # (k + .5) / 255 in [0, 1]
    image.view(-1)[:256] = boundaries
    image = image.to(getattr(torch, dtype))
    ours = to_pil(tiny_pipe.image_processor, image)
    theirs = tiny_pipe.image_processor.postprocess(image, output_type="pil")
    assert [a.mode for a in ours] == ["RGB", "RGB"] and [a.tobytes() for a in ours] == [b.tobytes() for b in theirs]
