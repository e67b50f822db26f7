"""Property-based fuzzing of our HTTP routes from their OpenAPI schema, with schemathesis, against
the real server on the tiny model. Positive cases (valid by the schema) must be accepted, negative
ones refused with a 4xx; every answer must be documented (status, content type, body schema) and
none may be a 5xx.

Positive cases come from a copy of the schema with small images (a 2048x2048 image takes 15 s on
the tiny model, 256x256 0.1 s); negative cases from the real schema, so that what they break is
what the server checks."""
from __future__ import annotations

import collections
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

POSITIVE_EXAMPLES = 12
NEGATIVE_EXAMPLES = 24
SMALL = {"width": 320, "height": 320, "num_inference_steps": 2, "steps": 2, "num_images": 2, "batch_size": 1,
         "max_tokens": 16,
         "n_iter": 2, "hr_scale": 1.5, "hr_second_pass_steps": 2, "hr_resize_x": 512, "hr_resize_y": 512,
         "upscaling_resize": 2, "upscaling_resize_w": 512, "upscaling_resize_h": 512,
         "batch_count": 2}
# /generate's hires object, bounded likewise (a 2302 px hires fix with 39 refine steps took over 60 s on the CPU)
SMALL_HIRES = {"scale": 1.5, "steps": 2, "resize_x": 512, "resize_y": 512}
SMALL_SIZES = ["256x256", "320x256"]


def _b64_png(im) -> str:
    import base64
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def valid_uploads() -> tuple[str, str]:
    """(image, mask) as base64 PNGs: no schema can say "a decodable image", so positive cases pick these."""
    from PIL import Image

    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (32, 32, 96, 96))
    return _b64_png(Image.new("RGB", (128, 128), (200, 80, 40))), _b64_png(mask)


# /generate's positive cases stay txt2img (which edit fields go together is GenerationRequest's
# rule, not the schema's; tests/test_edit.py covers them); OpenAI's edits are multipart files,
# which only negative cases fuzz (tests/test_edit.py drives it with the openai SDK).
GENERATE_EDIT_FIELDS = ("image", "mask", "mode", "strength", "outpaint", "mask_blur", "inpainting_fill",
                        "inpaint_full_res", "inpaint_full_res_padding", "resize_mode")


# /grid's axes that a schema can fully describe (lora_strength needs a <lora:> tag in the base prompt,
# prompt_sr its first value in it); positive grids have at most 2 x 2 x 2 small cells, x given.
GRID_AXES = {"seed": None, "steps": {"type": "integer", "minimum": 1, "maximum": 2}, "guidance": None,
             "size": {"enum": [256, 320]}, "variety": None}
GRID_VALUES = 2


def small_grid(body: dict) -> None:
    """POST /grid's body, bounded as /generate's (its base) and its axes to GRID_AXES' typed lists
    (A1111's range text, "1-99999", is valid by any schema a server could write, yet too many cells)."""
    small_body(body["properties"]["base"])
    variants = []
    for variant in body["properties"]["x"]["anyOf"][0]["oneOf"]:
        field = variant["properties"]["field"]["enum"][0]
        if field in GRID_AXES:
            values = variant["properties"]["values"]["anyOf"][0]
            typed = GRID_AXES[field] or values["items"]["anyOf"][0]
            variants.append({**variant, "properties": {"field": variant["properties"]["field"], "values": {
                **values, "maxItems": GRID_VALUES, "items": typed}}})
    assert {v["properties"]["field"]["enum"][0] for v in variants} == set(GRID_AXES)
    axis = {"oneOf": variants}
    body["properties"].update(x=axis, y={"anyOf": [axis, {"type": "null"}]}, z={"anyOf": [axis, {"type": "null"}]})
    body["required"] = ["base", "x"]


def small_body(body: dict) -> None:
    """A generating body's sizes required and its costs bounded (SMALL, SMALL_HIRES, SMALL_SIZES)."""
    props = body.get("properties", {})
    for name, limit in SMALL_HIRES.items():
        if "maximum" in props.get("hires", {}).get("properties", {}).get(name, {}):
            props["hires"]["properties"][name]["maximum"] = limit
    for name, limit in SMALL.items():
        if "maximum" in props.get(name, {}):
            props[name]["maximum"] = limit
    if "size" in props:
        props["size"] = {"enum": SMALL_SIZES}
    for name in ("width", "height", "size"):
        if name in props:
            body["required"] = sorted({*body.get("required", []), name})


def small_images(schema: dict, checkpoints: list[str]) -> dict:
    """The schema with every generating body bounded to small, few, short images, sizes required;
    a checkpoint named only from `checkpoints` (the served list: no schema can hold it)."""
    schema = copy.deepcopy(schema)
    image, mask = valid_uploads()
    schema["paths"].pop("/v1/images/edits", None)
    for path, item in schema["paths"].items():
        for operation in item.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            props = (body or {}).get("properties", {})
            if path == "/grid":
                small_grid(body)
                continue
            if "sd_model_checkpoint" in props:
                props["sd_model_checkpoint"] = {"enum": checkpoints}
            if path == "/generate":
                for name in GENERATE_EDIT_FIELDS:
                    props.pop(name, None)
            if path in ("/sdapi/v1/png-info", "/sdapi/v1/extra-single-image"):
                props["image"] = {"enum": [image]}
            if "init_images" in props:
                props["init_images"]["items"] = {"enum": [image]}
                props["mask"] = {"enum": [None, mask]}
            # A ControlNet unit is valid only with an image that decodes and a start below its end,
            # which a schema cannot say: tests/test_controlnet.py covers it.
            props.pop("control", None)
            props.pop("alwayson_scripts", None)
            if body is not None:
                small_body(body)
    return schema


def fuzz_operation(operation, mode, examples: int, base_url: str, http, statuses, failures) -> None:
    """`examples` cases of one operation: each answer's status counted, each failed check listed."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.core.failures import Failure, FailureGroup

    label = f"{operation.method.upper()} {operation.path}"

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(base_url=base_url, session=http, timeout=60)
        statuses[label][f"{mode.value} {response.status_code}"] += 1
        try:
            case.validate_response(response)
        except (Failure, FailureGroup) as e:           # all listed at the end, none shrunk
            failures.append(f"{label} [{mode.value}] {response.status_code}: {str(e)[:400]}\n"
                            f"   {case.as_curl_command()[:300]}")

    try:
        check()
    except Unsatisfiable:           # nothing to break: GET /health has no input at all
        assert mode == GenerationMode.NEGATIVE, label


# Each mode's operations are fuzzed in SHARDS parts (every SHARDS-th operation), each its own test
# on its own server, so that pytest-xdist spreads the work (one test took 137 s of a 13 min suite).
SHARDS = 3


@pytest.mark.parametrize("shard", range(SHARDS))
@pytest.mark.parametrize("positive", [True, False], ids=["positive", "negative"])
def test_schema_fuzz_no_server_errors_and_every_answer_as_documented(server, positive, shard):
    import schemathesis
    from schemathesis import GenerationMode

    from zimage.web.http.openapi import openapi_schema

    raw = openapi_schema(server.server.config.app.state.api_routers)
    assert {"/health", "/generate", "/preload", "/unload", "/sdapi/v1/txt2img", "/v1/images/generations",
            "/v1/models"} <= set(raw["paths"])
    if positive:
        checkpoints = [m["title"] for m in requests.get(server.url + "/sdapi/v1/sd-models", timeout=30).json()]
        mode, schema, examples = (GenerationMode.POSITIVE, schemathesis.openapi.from_dict(small_images(raw, checkpoints)),
                                  POSITIVE_EXAMPLES)
    else:
        mode, schema, examples = GenerationMode.NEGATIVE, schemathesis.openapi.from_dict(raw), NEGATIVE_EXAMPLES
    operations = [result.ok() for result in schema.get_all_operations()]
    mine = operations[shard::SHARDS]
    assert len(operations) > SHARDS and mine
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: list[str] = []
    started = time.monotonic()
    took: dict[str, float] = {}
    with requests.Session() as http:
        for operation in mine:
            began = time.monotonic()
            fuzz_operation(operation, mode, examples, server.url, http, statuses, failures)
            took[f"{operation.method.upper()} {operation.path}"] = time.monotonic() - began
    seconds = time.monotonic() - started
    print(f"\nschema fuzz ({mode.value}, part {shard + 1} of {SHARDS}): "
          f"{sum(map(sum, (c.values() for c in statuses.values())))} requests in {seconds:.0f} s over {len(statuses)} operations")
    for label, counts in sorted(statuses.items()):
        print(f"  {label}: {dict(sorted(counts.items()))} in {took.get(label, 0):.1f} s")
    assert not failures, "\n".join(failures[:30]) + f"\n({len(failures)} failures)"
    assert all(int(status.split()[1]) < 500 for c in statuses.values() for status in c)
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_openapi_command_prints_the_schema_the_fuzz_uses():
    done = subprocess.run([sys.executable, "-m", "zimage", "openapi"], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    schema = json.loads(done.stdout)
    body = schema["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["width"] == {"type": "integer", "minimum": 256, "maximum": 2048, "multipleOf": 16,
                                           "default": 1024}
    assert "429" in schema["paths"]["/generate"]["post"]["responses"]
    assert not any(path.startswith(("/gradio_api", "/config")) for path in schema["paths"])
