"""`python -m zimage serve [flags]` (the same as webui.py), `download`, `cache list|verify|repair|clear`,
`make-tiny-model DIR [--layout comfyui|a1111 [--gguf Q8_0]] [--controlnet]`, `make-tiny-lora DIR`,
`make-tiny-upscaler DIR [--full]` and `openapi` (print the HTTP API's schema)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

# tqdm reads TQDM_* at import: silence every library's bars (the modelscope client draws one per
# file) so the terminal shows our one download bar, which opts back in with disable=False.
os.environ.setdefault("TQDM_DISABLE", "1")

from .config import ConfigError
from .config_load import load_settings


def serve_main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .web.server import serve

    try:
        serve(settings)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:      # uvicorn re-raises Ctrl-C after its shutdown; serve() has cleaned up
        return 0
    return 0


def print_openapi() -> int:
    import json

    from .app import create_backend
    from .web.http.api import build_router
    from .web.http.compat_api import build_compat_router
    from .web.http.openapi import openapi_schema

    try:
        settings = load_settings([])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manager = create_backend(settings)           # never started: the routes are only described
    routers = [build_router(manager, settings.max_prompt_chars),
               build_compat_router(manager, settings.max_prompt_chars)]
    print(json.dumps(openapi_schema(routers), indent=1))
    return 0


SETUP_HINT = ("zimage-webui needs its packages ({name} is not installed in {python}). Set up with "
              "`bash scripts/start_app.sh` (creates .venv with the torch build that fits this machine, then "
              "starts the app), or install torch for your machine and then `pip install -e .`.")


def _with_packages(run, argv: list[str]) -> int:
    """Run a command; a missing third-party package is one line saying how to set up, not a traceback."""
    try:
        return run(argv)
    except ModuleNotFoundError as e:
        if not e.name or e.name.split(".")[0] == __package__:
            raise                                   # our own module missing is a bug, not a setup step
        print("error: " + SETUP_HINT.format(name=e.name.split(".")[0], python=sys.executable), file=sys.stderr)
        return 3


def webui_entry() -> int:
    """The `zimage-webui` console script and webui.py: serve the app."""
    return _with_packages(serve_main, sys.argv[1:])


def entry() -> int:
    """The `zimage` console script and `python -m zimage`."""
    return _with_packages(main, sys.argv[1:])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        return serve_main(argv[1:])
    parser = argparse.ArgumentParser(prog="zimage")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="start the web UI (flags as webui.py)")
    tiny = sub.add_parser("make-tiny-model", help="write the tiny random Z-Image pipeline (a few MB)")
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--layout", choices=("diffusers", "comfyui", "a1111"), default="diffusers",
                      help="diffusers: a pipeline folder; comfyui / a1111: that app's tree of single files")
    tiny.add_argument("--gguf", choices=("Q8_0", "Q5_0", "Q4_0", "BF16", "Q4_K"), default=None,
                      help="with --layout comfyui or a1111: also the DiT as a .gguf of this type")
    tiny.add_argument("--controlnet", action="store_true",
                      help="write the tiny random ControlNet for it instead (one file, the ModelScope repo's layout)")
    tiny.add_argument("--controlnet-version", choices=("1", "2.1"), default="1",
                      help="the union ControlNet's layout: 1 (text to image) or 2.1 (also inpaint and outpaint)")
    tiny_lora = sub.add_parser("make-tiny-lora", help="write small random LoRA files for the tiny model, one per format")
    tiny_lora.add_argument("dir")
    tiny_lora.add_argument("--model", default=None, help="the tiny model's folder (default: its shapes from the config)")
    tiny_lora.add_argument("--seed", type=int, default=0)
    tiny_up = sub.add_parser("make-tiny-upscaler", help="write tiny random ESRGAN-family upscalers (safetensors) "
                             "and a refused .pth into DIR")
    tiny_up.add_argument("dir")
    tiny_up.add_argument("--seed", type=int, default=0)
    tiny_up.add_argument("--full", action="store_true",
                         help="one random upscaler of a real model's size instead (Real-ESRGAN x2plus, 67 MB)")
    sub.add_parser("openapi", help="print the OpenAPI schema of the HTTP routes (ours, A1111's, OpenAI's)")
    from . import cli_cache

    cli_cache.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command in ("download", "cache"):
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return cli_cache.run(args)
    if args.command == "openapi":
        return print_openapi()
    if args.command == "make-tiny-model" and args.controlnet:
        from .testing.tiny_controlnet import make_tiny_controlnet

        print(make_tiny_controlnet(args.dir, seed=args.seed, version=args.controlnet_version))
    elif args.command == "make-tiny-model" and args.layout != "diffusers":
        from .testing.tiny_comfy import make_tiny_a1111, make_tiny_comfy

        make = make_tiny_comfy if args.layout == "comfyui" else make_tiny_a1111
        for part, path in make(args.dir, seed=args.seed, gguf_type=args.gguf).items():
            print(f"{part}\t{path}")
    elif args.command == "make-tiny-model":
        from .testing.tiny_model import make_tiny_model

        print(make_tiny_model(args.dir, seed=args.seed))
    if args.command == "make-tiny-lora":
        from .testing.tiny_lora import make_tiny_loras

        for kind, path in make_tiny_loras(args.dir, args.model, seed=args.seed).items():
            print(f"{kind}\t{path}")
    if args.command == "make-tiny-upscaler" and args.full:
        from .testing.tiny_upscaler import make_full_upscaler

        print(f"rrdb2\t{make_full_upscaler(args.dir, seed=args.seed)}")
    elif args.command == "make-tiny-upscaler":
        from .testing.tiny_upscaler import make_tiny_upscalers

        for kind, path in make_tiny_upscalers(args.dir, seed=args.seed).items():
            print(f"{kind}\t{path}")
    return 0


if __name__ == "__main__":        # `python -m zimage.cli ...` as well as `python -m zimage ...`
    sys.exit(entry())
