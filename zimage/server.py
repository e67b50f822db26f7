"""Assembling and running the server: our API routes and guards, the Gradio page, uvicorn."""
from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import threading
import time
from pathlib import Path

from .backend import Backend
from .cache import modelscope_cache_base
from .config import ConfigError, Settings
from .manager import PipelineManager

log = logging.getLogger(__name__)

DEMO_MODEL_DIR = Path("~/.cache/zimage-webui/tiny-model").expanduser()


def demo_resolver(model: str, cache_dir: str = "", **_) -> Path:
    """--demo: the tiny random pipeline, written on first use (a few MB, seconds)."""
    from .cache import quick_check
    from .testing.tiny_model import make_tiny_model

    path = Path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Ray replicas on one machine start together: one writes the model, the others wait for it.
    with open(path.parent / ".tiny-model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if quick_check(path):
            make_tiny_model(path)
    return path


def create_manager(settings: Settings) -> Backend:
    """The local PipelineManager (the default), or with --backend ray the Ray Serve replicas."""
    if settings.demo:
        settings = dataclasses.replace(settings, model=str(DEMO_MODEL_DIR))
    if settings.backend == "ray":
        from .ray_backend import RayBackend

        return RayBackend(settings)
    if settings.demo:
        return PipelineManager(settings, resolver=demo_resolver)
    return PipelineManager(settings)


def outputs_dir_checked(settings: Settings) -> Path:
    """The outputs folder is served to the page, so it must not be the home folder or hold the cache."""
    out = Path(settings.outputs_dir).expanduser().resolve()
    home = Path.home().resolve()
    cache = modelscope_cache_base(settings.cache_dir).resolve()
    if out in (Path("/"), home) or out in cache.parents or out == cache:
        raise ConfigError(f"--outputs {out} would expose your files to the page; pick a dedicated folder.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def create_app(settings: Settings, manager: Backend):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr
    from fastapi import FastAPI

    from .api import API_PATHS, build_router
    from .compat_api import COMPAT_PREFIXES, build_compat_router
    from .gradio_guard import GradioEventGuard, gradio_login_check
    from .security import GuardMiddleware
    from .shutdown import EndStreamsOnStop
    from .ui import build_ui

    outputs = outputs_dir_checked(settings)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.api_routers = [build_router(manager, settings.max_prompt_chars),   # read by openapi_schema()
                             build_compat_router(manager, settings.max_prompt_chars)]
    for router in app.state.api_routers:
        app.include_router(router)          # before the "/" mount
    demo = build_ui(manager, settings)
    demo.queue(default_concurrency_limit=1, max_size=settings.queue_max)
    app = gr.mount_gradio_app(
        app, demo, path="/", server_name=settings.host, server_port=settings.port,
        auth=settings.auth_pairs or None, allowed_paths=[str(outputs)],
        blocked_paths=[str(modelscope_cache_base(settings.cache_dir)), str(Path.home() / ".ssh")],
        max_file_size="1mb", ssr_mode=False, mcp_server=False, enable_monitoring=False, show_error=False,
        footer_links=[], run_history=False,
    )
    # Gradio checks event files against allowed_paths/blocked_paths only once `has_launched` is true,
    # which only launch() sets: mounted, any path sent as an event input was copied out to the caller.
    demo.has_launched = True
    # Added first, so it runs inside GuardMiddleware: host, origin and auth are checked before it.
    app.add_middleware(GradioEventGuard, blocks=demo, outputs=outputs, logged_in=gradio_login_check(app))
    app.add_middleware(GuardMiddleware, loopback_only=settings.is_loopback, api_paths=API_PATHS,
                       api_prefixes=COMPAT_PREFIXES, auth=settings.api_auth_pairs)
    app.state.stopping = asyncio.Event()            # set by shutdown.Server as it stops
    app.add_middleware(EndStreamsOnStop, stopping=app.state.stopping)
    return app


def make_server(app, settings: Settings):
    """The uvicorn server for `app`: one whose shutdown ends the page's open streams."""
    import uvicorn

    from .shutdown import Server

    return Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))


def import_model_stack_when_up(server, manager: Backend) -> threading.Thread:
    """Once the page is being served, have the worker import torch and diffusers (10-15 s on the GPU
    machine), so the first Preload or Generate does not wait for them."""
    def run() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            manager.import_model_stack()
    t = threading.Thread(target=run, name="zimage-imports", daemon=True)
    t.start()
    return t


def serve(settings: Settings) -> None:
    manager = create_manager(settings).start()
    if settings.preload:
        manager.preload()        # reads start at once on the worker, while the page's imports run here
    app = create_app(settings, manager)
    server = make_server(app, settings)
    import_model_stack_when_up(server, manager)
    log.info("serving on http://%s:%d", settings.host, settings.port)
    if not settings.is_loopback:
        log.warning("listening on %s: other machines can reach this app (login required: --auth). "
                    "Use TLS through a reverse proxy if the network is not yours.", settings.host)
    try:
        server.run()
    finally:
        manager.close()
