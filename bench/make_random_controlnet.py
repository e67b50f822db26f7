"""A full-scale random Z-Image ControlNet in the Z-Image-Turbo-Fun-Controlnet-Union 2.1 file layout,
for the GPU benches (the real weights are a 6.7 GB download the GPU machine cannot make): control
layers on every other transformer layer (15 on 30), one control noise refiner per noise refiner
(2, with before_proj) and 33 control input channels, in bf16 with small random values (N(0, 0.02):
hints of the trained model's order, not zero, so the pass does real work on real shapes).

    python -m bench.make_random_controlnet DIR [--model MODEL_DIR]

The shapes follow MODEL_DIR's transformer/config.json when given (the tiny model: a check on the
CPU), else Z-Image-Turbo's. The file is read back through the app's own infer_config, which must
give the config it was built from; one JSON line: the file, its bytes, the config, the check.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

# Z-Image-Turbo's transformer/config.json, the fields the ControlNet's shapes read
TURBO = dict(all_patch_size=[2], all_f_patch_size=[1], dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30,
             n_kv_heads=30, norm_eps=1e-5, qk_norm=True, in_channels=16)
CONTROL_IN_DIM = 33            # the control map's 16 latent channels, the mask's 1, the masked picture's 16
STD = 0.02


def controlnet_config(t: dict) -> dict:
    """The union 2.1's ZImageControlNetModel config for a transformer config `t`."""
    return dict(control_layers_places=list(range(0, t["n_layers"], 2)),
                control_refiner_layers_places=list(range(t["n_refiner_layers"])), control_in_dim=CONTROL_IN_DIM,
                add_control_noise_refiner="control_noise_refiner", all_patch_size=tuple(t["all_patch_size"]),
                all_f_patch_size=tuple(t["all_f_patch_size"]), dim=t["dim"], n_refiner_layers=t["n_refiner_layers"],
                n_heads=t["n_heads"], n_kv_heads=t["n_kv_heads"], norm_eps=t["norm_eps"], qk_norm=t["qk_norm"])


def write(out_dir: Path, transformer: dict, seed: int = 0) -> dict:
    import torch
    from diffusers import ZImageControlNetModel
    from safetensors import safe_open
    from safetensors.torch import save_file

    from zimage.engine.controlnet import infer_config
    from zimage.testing.tiny_controlnet import FILENAME

    started = time.perf_counter()
    config = controlnet_config(transformer)
    with torch.device("meta"):
        model = ZImageControlNetModel(**config)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, p in model.state_dict().items():
        if name.endswith(".weight") and p.dim() == 1:        # norms: ones, as trained ones are near
            state[name] = torch.ones(p.shape, dtype=torch.bfloat16)
        else:
            state[name] = (torch.randn(p.shape, generator=gen) * STD).to(torch.bfloat16)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILENAME
    save_file(state, str(path), metadata={"format": "pt"})
    with safe_open(str(path), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    inferred = infer_config(shapes, SimpleNamespace(**transformer))
    same = {k: (list(v) if isinstance(v, tuple) else v) for k, v in inferred.items()} == \
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}
    return {"file": str(path), "bytes": path.stat().st_size, "tensors": len(state),
            "control_layers": len(config["control_layers_places"]), "control_noise_refiners": config["n_refiner_layers"],
            "config_matches_infer_config": same, "seconds": round(time.perf_counter() - started, 1),
            **({} if same else {"inferred": {k: str(v) for k, v in inferred.items()}})}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.make_random_controlnet")
    parser.add_argument("dir")
    parser.add_argument("--model", help="size it for this model's transformer (default: Z-Image-Turbo's)")
    args = parser.parse_args()
    transformer = dict(TURBO)
    if args.model:
        config = json.loads((Path(args.model) / "transformer" / "config.json").read_text())
        transformer.update({k: config[k] for k in TURBO if k in config})
    out = write(Path(args.dir), transformer)
    print(json.dumps(out), flush=True)
    if not out["config_matches_infer_config"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
