"""All settings in one frozen dataclass, checked by its validate(). Where the values come from
(defaults < configs/default.toml < --config TOML < env ZIMAGE_* < command line) is config_load's; the
command line's flags are config_flags'.
"""
from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "Tongyi-MAI/Z-Image-Turbo"
# The Z-Image-Turbo Fun ControlNet Union (Alibaba PAI, on ModelScope): one safetensors file, control
# blocks on 6 of the 30 layers; canny, HED, depth, pose and MLSD maps.
DEFAULT_CONTROLNET = "PAI/Z-Image-Turbo-Fun-Controlnet-Union"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# diffusers attention backends --attention may name (engine/accel.py picks among them)
KNOWN_BACKENDS = ("native", "_native_flash", "_native_cudnn", "_native_efficient", "_native_math", "flash",
                  "_flash_3", "sage")
# The host names the Host-header check (security.LOOPBACK_NAMES) serves on loopback. Another
# loopback address (127.0.0.2, 0:0:0:0:0:0:0:1) binds fine but every request would be a 403.
SERVED_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# A prompt and a negative prompt of this many characters, each \uXXXX-escaped (6 bytes), still fit
# the API's 256 KB body limit (2 x 20000 x 6 = 240000 bytes).
MAX_PROMPT_CHARS_LIMIT = 20000
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting and where it came from."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting     # lets load_settings() add the file, variable or flag it came from


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    model: str = DEFAULT_MODEL              # ModelScope id or a local folder
    text_encoder: str = ""                  # a single-file model's text encoder: FILE or folder ("" = found beside it)
    vae: str = ""                           # a single-file model's VAE: FILE or folder ("" = found beside it)
    models_from: tuple = ()                 # other apps' model folders (ComfyUI, A1111/Forge, HF/ModelScope caches): read only
    controlnet: str = DEFAULT_CONTROLNET    # ControlNet weights: ModelScope id or a local folder (loaded on first use)
    preload: bool = False                   # start loading the model at startup
    resume_queue: bool = False              # run the jobs kept waiting from the last run at startup (else: on request)
    low_vram: bool = False                  # stream weights from RAM to fit a small VRAM budget
    vram_budget: str = "auto"               # GB of VRAM the model may use, or auto (free VRAM)
    idle_unload_s: float = 3600.0           # idle seconds before the model leaves the GPU (0 = never)
    idle_drop_s: float = 7200.0             # idle seconds before the RAM copy is dropped too (0 = never)
    outputs_dir: str = "outputs"
    lora_dir: str = ""                      # "" = models/loras beside the outputs folder
    wildcards_dir: str = ""                 # "" = models/wildcards beside the outputs folder (__name__ in prompts)
    grid_max_cells: int = 64                # images one X/Y/Z plot may make
    upscaler_dir: str = ""                  # "" = models/upscalers beside the outputs folder (ESRGAN safetensors)
    cache_dir: str = ""                     # "" = MODELSCOPE_CACHE or modelscope's default
    demo: bool = False                      # run on the tiny random model (noise images, CPU friendly)
    queue_max: int = 8                      # generation jobs that may wait; more get 429
    auth: str = ""                          # "user:pass[,user2:pass2]"; required when host is not loopback
    auth_file: str = ""                     # a file of user:pass lines (A1111's --gradio-auth-path)
    api_auth: str = ""                      # "user:pass[,...]" for the HTTP API routes only (A1111's --api-auth)
    mcp: bool = False                       # serve the MCP tools (generate, grid, status, preload, unload, enhance_prompt) at /gradio_api/mcp
    device: str = "auto"                    # auto | cuda | cuda:N | cpu
    dtype: str = "auto"                     # auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32
    max_prompt_chars: int = 4000
    max_upload_bytes: int = 20 * 2**20      # an uploaded image (PNG info); a 2048px PNG of ours is ~6 MB
    max_upload_pixels: int = 50_000_000     # checked on the header before decoding; 8192x6104, ~200 MB decoded as RGBA
    upload_keep_s: int = 3600               # uploads (Gradio's temp folder) older than this are deleted; all at exit
    upload_unread_keep_s: int = 600         # an upload or editor image no event took is deleted after this
    upload_client_bytes: int = 100 * 2**20  # unread uploads one client (address) may hold: five of the largest
    upload_total_bytes: int = 500 * 2**20   # unread uploads all clients together may hold (disk and memory)
    loader: str = "fast"                    # fast (stream shards to the device) | plain (diffusers from_pretrained)
    warmup: bool = True                     # after a GPU load, one 1-step image so the first real one is fast
    pin_ram_gb: float = -1.0                # pinned RAM for idle unload: -1 = half the RAM, 0 = never pin
    quantize: str = "none"                  # none | int8: weight-only int8 copy of the transformer and text encoder
    attention: str = "auto"                 # auto (fastest safe on this GPU) or a diffusers attention backend name
    compile: str = "auto"                   # auto (on with a CUDA GPU and Triton, resident or a low-VRAM plan) | on | off
    # auto (on a CUDA GPU) | on | off: the resident blocks compiled in a process of their own (engine/aot_blocks).
    # Off by default: on one H100 (torch 2.11, 2026-12-06) the package compiled in 88 s but loading it
    # killed the worker (SIGSEGV); docs/BENCHMARKS.md. The in-thread compile serves meanwhile.
    compile_process: str = "off"
    fp8: str = "off"                        # off | on: float8 matmuls in the transformer blocks (Ada/Hopper, compiled)
    batch_max: int = 1                      # images queued requests of one size may share a pipeline call (1 = off)
    backend: str = "local"                  # local (a model worker process) | inprocess (one process) | ray
    ray_address: str = "auto"               # auto (a running cluster, else a local one) | HOST:PORT | ray://...
    ray_replicas: int = 1                   # fixed replica count (when ray_max_replicas <= ray_min_replicas)
    ray_min_replicas: int = 0               # autoscaling on queue length between min and max when max > min
    ray_max_replicas: int = 0
    ray_gpus_per_replica: float = -1.0      # -1 = 1 when the cluster has GPUs, else 0 (CPU replicas)
    enhancer_url: str = ""                  # an OpenAI-compatible endpoint for Enhance ("" = the loaded text encoder)
    enhancer_model: str = ""                # the endpoint's model name (needed with enhancer_url)
    enhancer_system_prompt: str = ""        # Enhance's instruction ("" = enhance_request.DEFAULT_SYSTEM_PROMPT)
    enhancer_max_tokens: int = 400          # new tokens an enhanced prompt may have
    enhancer_timeout_s: float = 120.0       # seconds an enhancement may take
    config: str = ""                        # the extra TOML file this was read from, if any

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def lora_folder(self) -> Path:
        """Where `<lora:NAME:w>` names are looked up: --lora-dir, else models/loras beside the outputs."""
        if self.lora_dir.strip():
            return Path(self.lora_dir).expanduser()
        return Path(self.outputs_dir).expanduser().parent / "models" / "loras"

    @property
    def wildcards_folder(self) -> Path:
        """Where `__name__` wildcards are read: --wildcards-dir, else models/wildcards beside the outputs."""
        if self.wildcards_dir.strip():
            return Path(self.wildcards_dir).expanduser()
        return Path(self.outputs_dir).expanduser().parent / "models" / "wildcards"

    @property
    def upscaler_folder(self) -> Path:
        """Where hires fix and Upscale find ESRGAN-family files: --upscaler-dir, else models/upscalers."""
        if self.upscaler_dir.strip():
            return Path(self.upscaler_dir).expanduser()
        return Path(self.outputs_dir).expanduser().parent / "models" / "upscalers"

    @property
    def auth_pairs(self) -> list[tuple[str, str]]:
        """Every user:password from --auth (comma separated) and --auth-file (one per line, # comments)."""
        entries = [e for e in self.auth.split(",") if e.strip()]
        if self.auth_file:
            try:
                lines = Path(self.auth_file).expanduser().read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise ConfigError(f"auth_file {self.auth_file}: {e.strerror or e}") from None
            entries += [line for line in (raw.strip() for raw in lines) if line and not line.startswith("#")]
        return _parse_pairs(entries)

    @property
    def api_auth_pairs(self) -> list[tuple[str, str]]:
        """Users for the HTTP API routes: everyone from --auth/--auth-file plus --api-auth."""
        return self.auth_pairs + _parse_pairs([e for e in self.api_auth.split(",") if e.strip()])

    def validate(self) -> "Settings":
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1-65535, got {self.port}", "port")
        if self.is_loopback and self.host.lower() not in SERVED_LOOPBACK_HOSTS:
            raise ConfigError(f"host {self.host} is a loopback address the app does not answer on "
                              f"(only {', '.join(SERVED_LOOPBACK_HOSTS)}): use --host 127.0.0.1.", "host")
        if not self.outputs_dir.strip():
            raise ConfigError("outputs_dir must name a folder, got an empty string", "outputs_dir")
        if not 1 <= self.max_prompt_chars <= MAX_PROMPT_CHARS_LIMIT:
            raise ConfigError(f"max_prompt_chars must be 1-{MAX_PROMPT_CHARS_LIMIT}, got {self.max_prompt_chars}",
                              "max_prompt_chars")
        for name in ("max_upload_bytes", "max_upload_pixels", "upload_keep_s", "upload_unread_keep_s",
                     "upload_client_bytes", "upload_total_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", name)
        if self.pin_ram_gb != -1 and self.pin_ram_gb < 0:
            raise ConfigError(f"pin_ram_gb must be -1 (half the RAM) or >= 0, got {self.pin_ram_gb}", "pin_ram_gb")
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}", "device")
        for name in ("idle_unload_s", "idle_drop_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = never), got {getattr(self, name)}", name)
        if not 1 <= self.grid_max_cells <= 1024:
            raise ConfigError(f"grid_max_cells must be 1-1024, got {self.grid_max_cells}", "grid_max_cells")
        if self.queue_max < 1:
            raise ConfigError(f"queue_max must be >= 1, got {self.queue_max}", "queue_max")
        pairs = self.auth_pairs        # parsed here so a malformed entry or a missing file stops the start
        self.api_auth_pairs
        if not self.is_loopback and not pairs:
            raise ConfigError(
                f"Listening on {self.host} exposes the app to your network: set --auth user:password too.", "host")
        if self.vram_budget != "auto":
            try:
                budget = float(self.vram_budget)
                if not math.isfinite(budget) or budget <= 0:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"vram_budget must be auto or a number of GB > 0, got {self.vram_budget!r}",
                                  "vram_budget") from None
        if self.loader not in ("fast", "plain"):
            raise ConfigError(f"loader must be fast or plain, got {self.loader!r}", "loader")
        if self.quantize not in ("none", "int8"):
            raise ConfigError(f"quantize must be none or int8, got {self.quantize!r}", "quantize")
        if self.fp8 not in ("off", "on"):
            raise ConfigError(f"fp8 must be off or on, got {self.fp8!r}", "fp8")
        if not 1 <= self.batch_max <= 16:
            raise ConfigError(f"batch_max must be 1-16, got {self.batch_max}", "batch_max")
        if self.compile not in ("auto", "on", "off"):
            raise ConfigError(f"compile must be auto, on or off, got {self.compile!r}", "compile")
        if self.compile_process not in ("auto", "on", "off"):
            raise ConfigError(f"compile_process must be auto, on or off, got {self.compile_process!r}", "compile_process")
        if self.attention != "auto":
            if self.attention not in KNOWN_BACKENDS:
                raise ConfigError(f"attention must be auto or one of {', '.join(KNOWN_BACKENDS)}, "
                                  f"got {self.attention!r}", "attention")
        if self.dtype not in ("auto", "bfloat16", "float32", "float16"):
            raise ConfigError(f"dtype must be auto, bfloat16, float16 or float32, got {self.dtype!r}", "dtype")
        for root in self.models_from:
            if not Path(root).expanduser().is_dir():
                raise ConfigError(f"models_from: {root} is not a folder", "models_from")
        self._validate_ray()
        self._validate_enhancer()
        return self

    def _validate_enhancer(self) -> None:
        if self.enhancer_url and not re.match(r"https?://[^\s/]+", self.enhancer_url):
            raise ConfigError(f"enhancer_url must be an http:// or https:// URL, got {self.enhancer_url!r}",
                              "enhancer_url")
        if self.enhancer_url and not self.enhancer_model.strip():
            raise ConfigError("enhancer_url needs enhancer_model: the endpoint's model name", "enhancer_model")
        if not 16 <= self.enhancer_max_tokens <= 2048:
            raise ConfigError(f"enhancer_max_tokens must be 16-2048, got {self.enhancer_max_tokens}",
                              "enhancer_max_tokens")
        if self.enhancer_timeout_s <= 0:
            raise ConfigError(f"enhancer_timeout_s must be > 0, got {self.enhancer_timeout_s}", "enhancer_timeout_s")

    def _validate_ray(self) -> None:
        if self.backend not in ("local", "inprocess", "ray"):
            raise ConfigError(f"backend must be local, inprocess or ray, got {self.backend!r}", "backend")
        if not self.ray_address.strip():
            raise ConfigError("ray_address must be auto or a cluster address such as HEAD:6379", "ray_address")
        if self.ray_replicas < 1:
            raise ConfigError(f"ray_replicas must be >= 1, got {self.ray_replicas}", "ray_replicas")
        if self.ray_min_replicas < 0 or self.ray_max_replicas < 0:
            raise ConfigError("ray_min_replicas and ray_max_replicas must be >= 0",
                              "ray_min_replicas" if self.ray_min_replicas < 0 else "ray_max_replicas")
        if self.ray_max_replicas and self.ray_max_replicas < self.ray_min_replicas:
            raise ConfigError(f"ray_max_replicas ({self.ray_max_replicas}) must be >= ray_min_replicas "
                              f"({self.ray_min_replicas})", "ray_max_replicas")
        if self.ray_gpus_per_replica != -1 and self.ray_gpus_per_replica < 0:
            raise ConfigError(f"ray_gpus_per_replica must be -1 (auto) or >= 0, got {self.ray_gpus_per_replica}",
                              "ray_gpus_per_replica")

    @property
    def ray_autoscaling(self) -> bool:
        """Autoscale between ray_min_replicas and ray_max_replicas (else a fixed ray_replicas)."""
        return self.ray_max_replicas > self.ray_min_replicas

    @property
    def generation_concurrency(self) -> int:
        """Page generations running at once: one for the local worker; with Ray, enough to keep every
        replica busy (one running and one waiting on each), the rest wait in Gradio's queue."""
        if self.backend in ("local", "inprocess"):
            return 1
        return 2 * (self.ray_max_replicas if self.ray_autoscaling else self.ray_replicas)


def _parse_pairs(entries: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for entry in entries:
        user, sep, password = entry.strip().partition(":")
        if not sep or not user or not password:
            raise ConfigError("auth entries must look like user:password")
        pairs.append((user, password))
    return pairs


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
