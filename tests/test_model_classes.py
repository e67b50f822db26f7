"""A model folder whose model_index.json names a pipeline or an Auto* class as a component is refused
before anything is read, with a message naming the component and the class; it is not a damaged
download, so the hint does not say to download again."""
from __future__ import annotations

import dataclasses
import json

import pytest
import requests

SMALL = {"prompt": "x", "width": 256, "height": 256, "num_inference_steps": 1, "seed": 1}


@pytest.mark.parametrize("component,spec", [
    ("transformer", ["diffusers", "DiffusionPipeline"]),   # would load a whole pipeline from the folder
    ("vae", ["diffusers", "AutoModel"]),                   # picks its class from the component's config
    ("text_encoder", ["transformers", "AutoModel"]),
    ("tokenizer", ["transformers", "AutoTokenizer"]),
])
def test_pipeline_or_auto_class_components_are_refused_by_name(start_server, settings, model_copy, component, spec):
    index = model_copy / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), component: spec}))
    srv = start_server(dataclasses.replace(settings, model=str(model_copy)))
    r = requests.post(srv.url + "/generate", json=SMALL, timeout=120)
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "model_load_failed" and err["component"] == component
    assert f"component {component!r} is a {spec[0]}.{spec[1]}, which is not supported" in err["message"]
    assert "download" not in err["hint"].lower() and "model_index.json" in err["hint"]
    health = requests.get(srv.url + "/health", timeout=10).json()
    assert health["status"] == "error" and spec[1] in health["message"]
    assert "download" not in health["hint"].lower()
