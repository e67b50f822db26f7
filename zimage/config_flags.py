"""The command line's flags (`python webui.py --help`): each sets one Settings field (TOML and
ZIMAGE_* reach every field, the flags the ones a user sets at start). Every default is SUPPRESS: the
defaults are Settings', and config_load.load_settings lays what was typed over the other sources.
"""
from __future__ import annotations

import argparse

from .config import DEFAULT_CONTROLNET, DEFAULT_MODEL


def build_parser() -> argparse.ArgumentParser:
    """CLI flags; every default is SUPPRESS so only flags the user typed override other sources."""
    p = argparse.ArgumentParser(prog="webui.py", description="Z-Image-Turbo web UI",
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--host", help="address to bind (default 127.0.0.1; others need --auth)")
    p.add_argument("--listen", action="store_const", const="0.0.0.0", dest="host",
                   help="bind 0.0.0.0 (needs --auth)")
    p.add_argument("--port", type=int, help="port (default 7860)")
    p.add_argument("--model", help="ModelScope id, local diffusers folder, or a DiT file (.safetensors in "
                                   "ComfyUI's layout, .gguf) (default %s)" % DEFAULT_MODEL)
    p.add_argument("--text-encoder", dest="text_encoder", metavar="FILE|DIR",
                   help="the text encoder of a single-file --model (default: found beside it or under --models-from)")
    p.add_argument("--vae", metavar="FILE|DIR",
                   help="the VAE of a single-file --model (default: found beside it or under --models-from)")
    p.add_argument("--models-from", dest="models_from", action="append", metavar="DIR",
                   help="use another app's models, read only (repeatable): a ComfyUI or A1111/Forge folder, "
                        "the Hugging Face or ModelScope cache")
    p.add_argument("--controlnet", metavar="MODEL_ID",
                   help="ControlNet weights, downloaded and loaded on first use: ModelScope id or local folder "
                        "(default %s)" % DEFAULT_CONTROLNET)
    p.add_argument("--preload", action="store_true", help="load the model at startup")
    p.add_argument("--resume-queue", action="store_true", dest="resume_queue",
                   help="run the generations left waiting when the app last stopped (default: listed, run on request)")
    p.add_argument("--low-vram", action="store_true", dest="low_vram",
                   help="stream weights from RAM (8 GB budget unless --vram-budget says otherwise)")
    p.add_argument("--vram-budget", dest="vram_budget", metavar="GB|auto",
                   help="VRAM the model may use; auto keeps it resident when it fits the free VRAM")
    p.add_argument("--idle-unload", type=float, dest="idle_unload_s", metavar="SECONDS",
                   help="move the model off the GPU after this many idle seconds (0 = never, default 3600)")
    p.add_argument("--idle-drop", type=float, dest="idle_drop_s", metavar="SECONDS",
                   help="drop the RAM copy too after this many idle seconds (0 = never, default 7200)")
    p.add_argument("--outputs", dest="outputs_dir", metavar="DIR", help="where images are saved")
    p.add_argument("--lora-dir", dest="lora_dir", metavar="DIR",
                   help="LoRA .safetensors files for <lora:NAME:w> (default models/loras beside --outputs)")
    p.add_argument("--wildcards-dir", dest="wildcards_dir", metavar="DIR",
                   help="text files for __name__ wildcards in prompts (default models/wildcards beside --outputs)")
    p.add_argument("--grid-max-cells", type=int, dest="grid_max_cells", metavar="N",
                   help="images one X/Y/Z plot may make (default 64)")
    p.add_argument("--upscaler-dir", dest="upscaler_dir", metavar="DIR",
                   help="ESRGAN-family upscaler .safetensors files (default models/upscalers beside the outputs)")
    p.add_argument("--cache-dir", dest="cache_dir", metavar="DIR", help="model cache (default MODELSCOPE_CACHE)")
    p.add_argument("--config", metavar="FILE", help="TOML settings file")
    p.add_argument("--demo", action="store_true", help="tiny random model: try the app on a CPU")
    p.add_argument("--queue-max", type=int, dest="queue_max", help="waiting generation jobs before 429")
    p.add_argument("--auth", metavar="USER:PASS[,...]", help="require a login (page) and HTTP Basic (API)")
    p.add_argument("--auth-file", dest="auth_file", metavar="FILE", help="user:password lines, like --auth")
    p.add_argument("--api-auth", dest="api_auth", metavar="USER:PASS[,...]",
                   help="HTTP Basic users for the API routes only (/generate, /sdapi/v1, /v1)")
    p.add_argument("--mcp", action="store_true",
                   help="serve the MCP tools generate, grid, status, preload, unload, enhance_prompt at /gradio_api/mcp (same login as the API)")
    p.add_argument("--device", help="auto, cuda, cuda:N or cpu")
    p.add_argument("--dtype", help="auto, bfloat16, float16 or float32")
    p.add_argument("--loader", help="fast (default) or plain (diffusers from_pretrained, the fallback)")
    p.add_argument("--pin-ram-gb", type=float, dest="pin_ram_gb",
                   help="pinned RAM idle unload may keep (-1 = half the RAM, 0 = never)")
    p.add_argument("--quantize", choices=["none", "int8"],
                   help="int8: a weight-only int8 copy (made once, kept next to the model): half the VRAM and reads")
    p.add_argument("--attention", metavar="BACKEND",
                   help="auto (default: the fastest safe one) or a diffusers backend: native, _native_flash, "
                        "_native_cudnn, _native_efficient, flash, _flash_3")
    p.add_argument("--fp8", choices=["off", "on"],
                   help="on: float8 matmuls in the transformer blocks (Ada/Hopper GPU, compiled blocks; "
                        "faster, half the transformer's VRAM, small changes to the picture). Default off")
    p.add_argument("--batch-max", type=int, dest="batch_max", metavar="N",
                   help="queued requests of the same size run as one batch of up to N images (default 1: off)")
    p.add_argument("--compile", choices=["auto", "on", "off"],
                   help="regional torch.compile of the transformer blocks, resident or in a low-VRAM plan, built "
                        "between requests (auto: on a GPU)")
    p.add_argument("--compile-process", choices=["auto", "on", "off"], dest="compile_process",
                   help="compile the resident blocks in a process of their own, kept as a package later launches "
                        "load in seconds (auto: on a GPU; off, the default: on a thread of the model worker; on one "
                        "H100 with torch 2.11 loading the package crashed the worker, see docs/BENCHMARKS.md)")
    p.add_argument("--backend", help="local (default: the model in a worker process the page restarts if it "
                   "dies), inprocess (one process: tests, benchmarks) or ray (Ray Serve replicas, one per GPU)")
    p.add_argument("--ray-address", dest="ray_address", metavar="auto|HOST:PORT",
                   help="the Ray cluster (default auto: a running one, else start a local one)")
    p.add_argument("--ray-replicas", type=int, dest="ray_replicas", metavar="N",
                   help="fixed number of replicas (default 1)")
    p.add_argument("--ray-min-replicas", type=int, dest="ray_min_replicas", metavar="N",
                   help="autoscale on queue length between this and --ray-max-replicas")
    p.add_argument("--ray-max-replicas", type=int, dest="ray_max_replicas", metavar="N",
                   help="upper bound for autoscaling (autoscaling is on when it exceeds the minimum)")
    p.add_argument("--ray-gpus-per-replica", type=float, dest="ray_gpus_per_replica", metavar="N",
                   help="GPUs each replica reserves (default -1: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--enhancer-url", dest="enhancer_url", metavar="URL",
                   help="Enhance on an OpenAI-compatible endpoint (Ollama, LM Studio: http://127.0.0.1:11434/v1) "
                        "instead of the loaded text encoder")
    p.add_argument("--enhancer-model", dest="enhancer_model", metavar="NAME", help="the endpoint's model name")
    p.add_argument("--enhancer-max-tokens", type=int, dest="enhancer_max_tokens", metavar="N",
                   help="new tokens an enhanced prompt may have (default 400)")
    p.add_argument("--enhancer-timeout", type=float, dest="enhancer_timeout_s", metavar="SECONDS",
                   help="seconds an enhancement may take (default 120)")
    return p
