"""The MCP tools (--mcp): generate, grid, status, preload, unload and enhance_prompt, served by Gradio's MCP server.

Gradio turns every public API endpoint of the Blocks into a tool named after its function, so the
tools are dedicated `gr.api` functions added only with --mcp, and `keep_only_mcp_tools` drops the
page's own public `generate` event from the tool list (it stays callable by gradio_client as
before). The page's preload/unload events stay private. The tools run outside Gradio's queue
(`queue=False`): Gradio then calls them in-process instead of through a gradio_client loopback to
its own queue routes, which with --auth would need a Gradio login cookie an MCP client does not
have; the manager's own queue (queue_max, QueueFull) counts and orders their generations, as it does
for /generate.

Transports: streamable HTTP at /gradio_api/mcp (SSE at /gradio_api/mcp/sse). With auth, those
paths take the API's HTTP Basic login (security.GuardMiddleware, MCP_PATH in launch.add_guards).
An image comes back as MCP image content (the saved PNG) plus a text item with its parameters and
the URL of the file under /outputs/. Each tool checks its input as its HTTP route does (generate:
GenerationRequest.from_mapping, as /generate; grid: grid_api.grid_answer, POST /grid's own work).
"""
# No `from __future__ import annotations`: gr.api reads the number of outputs from the return
# annotation unevaluated (gradio.utils.get_return_types), and a string is one output.
import asyncio
import json
import logging
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import gradio as gr

from ...config import ConfigError, Settings
from ...enhance_request import EnhanceRequest
from ...errors import InvalidRequest, ZImageError
from ...jobs import UNLOAD_TARGETS, Backend
from ...model_defaults import TURBO_STEPS
from ...request import GenerationRequest
from .api import job_owner, request_caller, request_language
from .grid_api import grid_answer

log = logging.getLogger(__name__)

MCP_TOOLS = ("generate", "grid", "status", "preload", "unload", "enhance_prompt")
MCP_OWNER = "mcp"                     # the owner of MCP generations sent without X-Client-Id
# User-facing text (one place, for the later translation round).
NO_IMAGE_SAVED = "The image could not be saved, so it cannot be returned: {warning}"


def _status_json(manager: Backend) -> str:
    status = manager.status()
    return json.dumps({"status": status.health, "load_count": manager.load_count, **status.to_dict()})


def _refusal(err: ZImageError, request: gr.Request | None) -> gr.Error:
    # MCP answers an exception as a tool result with isError and the exception's text.
    log.info("MCP call refused (%d %s): %s", err.http_status, err.code, err.message[:300])
    lang = request_language(request) if request is not None else "en"
    return gr.Error(f"{err.code}: {err.user_text(lang)}", print_exception=False)


def _file_data(path, root) -> tuple[dict, str]:
    """(Gradio's FileData of a saved PNG, its URL under /outputs/): Gradio's MCP server reads the file
    into image content and prefixes the relative URL with the server's root."""
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    return {"path": str(path), "url": f"/outputs/{rel}", "orig_name": path.name, "mime_type": "image/png",
            "meta": {"_type": "gradio.FileData"}}, f"/outputs/{rel}"


def _server_root(request: gr.Request | None) -> str:
    url = urlsplit(str(request.url)) if request is not None else None
    return f"{url.scheme}://{url.netloc}" if url is not None else ""


def add_mcp_tools(manager: Backend, settings: Settings) -> None:
    """Add the tools to the Blocks whose context is open (server.create_app opens it)."""
    auth_on = bool(settings.api_auth_pairs)

    async def generate(prompt: str, negative_prompt: str = "", width: int = 1024, height: int = 1024,
                       num_inference_steps: int = TURBO_STEPS, guidance_scale: float = 0.0, seed: int = -1,
                       variety: float = 0.0, request: gr.Request = None) -> tuple[dict, str]:
        """Make one image with Z-Image-Turbo from a text prompt (loads the model first if needed).

        Args:
            prompt: What the image shows. English or Chinese; <lora:NAME:weight> applies a LoRA from the LoRA folder.
            negative_prompt: What to avoid; used only when guidance_scale > 0.
            width: Image width in pixels, a multiple of 16 from 256 to 2048.
            height: Image height in pixels, a multiple of 16 from 256 to 2048.
            num_inference_steps: Denoising steps; Z-Image-Turbo is made for 8 (transformer passes).
            guidance_scale: 0 for Z-Image-Turbo (its default); higher follows the prompt more literally.
            seed: -1 for a random seed; the same seed and settings give the same image.
            variety: 0 (off) to 1: seeded noise on the prompt for the first steps, so seeds differ more.

        Returns:
            The PNG image, and a JSON text with its seed, size, steps, seconds, file and URL.
        """
        try:
            req = GenerationRequest.from_mapping(
                {"prompt": prompt, "negative_prompt": negative_prompt, "width": width, "height": height,
                 "num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "seed": seed,
                 "variety": variety},
                settings.max_prompt_chars)
            client, user = request_caller(request, auth_on)
            owner = client if client is not None else MCP_OWNER
            result = await asyncio.wrap_future(manager.submit(req, job_owner(owner), user).future)
        except ZImageError as e:
            raise _refusal(e, request) from None
        item = result.images[0]
        if item.path is None:
            raise gr.Error(NO_IMAGE_SAVED.format(warning=result.warning), print_exception=False)
        image, url = _file_data(item.path, manager._store.root)
        info = {"seed": item.seed, "width": req.width, "height": req.height,
                "num_inference_steps": req.num_inference_steps, "guidance_scale": req.guidance_scale,
                "variety": req.variety, "seconds": round(result.seconds, 3), "file": str(item.path),
                "url": _server_root(request) + url, "parameters": item.infotext}
        return image, json.dumps(info)

    async def grid(base: dict, x: dict, y: dict | None = None, z: dict | None = None,
                   request: gr.Request = None) -> tuple[dict, str]:
        """An X/Y/Z plot: one image per combination of up to three axes over a generate request, and the labelled grid of them (as POST /grid).

        Args:
            base: The request every cell starts from, as the generate tool takes it: {"prompt": "a fox", "width": 512, "height": 512, "num_inference_steps": 8, "seed": 1, "variety": 0}.
            x: The first axis: {"field": F, "values": V}. F is one of seed, steps, guidance, size, lora_strength, prompt_sr (search and replace: the first value is the text replaced), variety, model (a listed model name; each model's cells run together and the model in use comes back after). V is a list ([1, 2, 3], ["512x512", "768x768"]) or A1111's text: "1-5", "1-10 (+2)", "0-1 [3]", "a, b, c".
            y: The second axis, the same shape (optional).
            z: The third axis, the same shape (optional): one grid per value, side by side.

        Returns:
            The grid PNG, and a JSON text: file, url, cells (each cell's values, seed, file, url and parameters), cells_total, stopped, seconds.
        """
        try:
            client, user = request_caller(request, auth_on)
            owner = client if client is not None else MCP_OWNER
            body = {key: value for key, value in (("base", base), ("x", x), ("y", y), ("z", z)) if value is not None}
            answer = await grid_answer(manager, settings, body, job_owner(owner), user)
        except ZImageError as e:
            raise _refusal(e, request) from None
        answer.pop("image")
        if answer["file"] is None:
            raise gr.Error(NO_IMAGE_SAVED.format(warning=answer.get("warning", "")), print_exception=False)
        image, url = _file_data(Path(answer["file"]), manager._store.root)
        answer["url"] = _server_root(request) + url
        for cell in answer["cells"]:
            if "url" in cell:
                cell["url"] = _server_root(request) + cell["url"]
        return image, json.dumps(answer, ensure_ascii=False)

    def status() -> str:
        """The model's state now: loaded or not, on which device, download/load progress, queue length and the last image's time.

        Returns:
            JSON text: status (healthy, loading, unloaded, error), state, device, progress, queue_length, message, hint.
        """
        return _status_json(manager)

    async def preload(wait: bool = True, request: gr.Request = None) -> str:
        """Download (when missing) and load the model, so the next generate starts at once.

        Args:
            wait: true: answer once the model is loaded; false: answer at once while it loads.

        Returns:
            JSON text of the status, as the status tool gives it.
        """
        try:
            job = manager.preload()
            if wait:
                await asyncio.wrap_future(job.future)
        except ZImageError as e:
            raise _refusal(e, request) from None
        return _status_json(manager)

    async def unload(to: Literal["none", "cpu"] = "none", request: gr.Request = None) -> str:
        """Free the GPU memory the model holds.

        Args:
            to: "none" frees VRAM and RAM; "cpu" keeps a copy in RAM for a faster reload.

        Returns:
            JSON text of the status, as the status tool gives it.
        """
        try:
            if to not in UNLOAD_TARGETS:
                raise InvalidRequest("to", f"must be \"cpu\" (keep in RAM) or \"none\", got {str(to)[:40]!r}")
            await asyncio.wrap_future(manager.unload(to).future)
        except ZImageError as e:
            raise _refusal(e, request) from None
        return _status_json(manager)

    async def enhance_prompt(prompt: str, seed: int = -1, request: gr.Request = None) -> str:
        """Rewrite a short image prompt into a detailed one for Z-Image (subject, count and quoted text kept; composition, light and materials added), in the prompt's language.

        Args:
            prompt: The prompt to rewrite.
            seed: -1 for a random seed; the same seed gives the same rewrite.

        Returns:
            JSON text: prompt (the rewrite), original_prompt, seed, seconds, tokens.
        """
        try:
            req = EnhanceRequest.from_mapping({"prompt": prompt, "seed": seed}, settings.max_prompt_chars,
                                              settings.enhancer_system_prompt, settings.enhancer_max_tokens)
            client, user = request_caller(request, auth_on)
            owner = client if client is not None else MCP_OWNER
            result = await asyncio.wrap_future(manager.enhance_prompt(req, job_owner(owner), user).future)
        except ZImageError as e:
            raise _refusal(e, request) from None
        return json.dumps({"prompt": result.prompt, "original_prompt": result.original_prompt, "seed": result.seed,
                           "seconds": round(result.seconds, 3), "tokens": result.tokens}, ensure_ascii=False)

    for fn in (generate, grid, status, preload, unload, enhance_prompt):
        gr.api(fn, api_name=f"mcp_{fn.__name__}", queue=False)


def keep_only_mcp_tools(demo: gr.Blocks) -> None:
    """After mount_gradio_app(mcp_server=True): the tool list is exactly MCP_TOOLS."""
    server = getattr(demo, "mcp_server_obj", None)
    if server is None:
        raise ConfigError(f"--mcp: Gradio's MCP server did not start: {getattr(demo, 'mcp_error', '') or 'unknown'}. "
                          "Install it with: pip install -r requirements-mcp.txt", "mcp")
    tools = {name: endpoint for name, endpoint in server.tool_to_endpoint.items() if name in MCP_TOOLS}
    if set(tools) != set(MCP_TOOLS):        # a Gradio that names tools otherwise: fail at start, not at a call
        raise ConfigError(f"--mcp: Gradio's MCP server lists {sorted(server.tool_to_endpoint)}, "
                          f"not the tools {list(MCP_TOOLS)}.", "mcp")
    server.tool_to_endpoint = tools
