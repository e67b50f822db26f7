"""Assembling and running the server: our API routes and guards, the Gradio page, uvicorn."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from .. import startup
from ..app import create_backend
from ..config import PROJECT_ROOT, ConfigError, Settings
from ..jobs import Backend
from ..kept_queue import with_kept_queue
from ..store.cache import modelscope_cache_base

log = logging.getLogger(__name__)

# Trees of the system and of other users: every file under the outputs folder is served to the page.
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot", "/dev", "/proc",
                "/sys", "/var", "/run", "/opt", "/srv", "/root")


def _temp_roots() -> set[Path]:
    return {Path(p).resolve() for p in ("/tmp", "/var/tmp", tempfile.gettempdir())}


def gradio_upload_folder() -> str:
    """Where Gradio's /upload writes (GRADIO_TEMP_DIR, else <temp>/gradio): gradio.utils.get_upload_folder's
    rule, written out because importing gradio.utils imports all of gradio (2.5 s on the CPU machine),
    and the outputs folder is checked before the worker starts reading the weights (tests/test_startup_timeline
    checks that both give the same folder)."""
    return os.environ.get("GRADIO_TEMP_DIR") or str((Path(tempfile.gettempdir()) / "gradio").resolve())


def _refusal(out: Path, settings: Settings) -> str:
    """Why `out` must not be the outputs folder (before it is created), or ''."""
    home = Path.home().resolve()
    cache = modelscope_cache_base(settings.cache_dir).resolve()
    temps = _temp_roots()
    if out == Path("/"):
        return "is the root of the file system"
    if out in temps:
        return "is the temporary folder every user shares (a subfolder of it is fine)"
    if out == home or out in home.parents:
        return "is your home folder or holds it"
    if out == cache or out in cache.parents:
        return "holds the model cache"
    if out == PROJECT_ROOT:
        return "is the app's own folder (its config files would be served)"
    uploads = Path(gradio_upload_folder()).resolve()
    if uploads.is_relative_to(out) or out.is_relative_to(uploads):
        return f"holds Gradio's upload folder {uploads} (GRADIO_TEMP_DIR) or lies in it: uploads are never served"
    # The default `outputs` of a checkout in /opt or /srv (a service install, or /usr/src/app in a
    # container) is the app's own subfolder, not a system folder.
    if any(out.is_relative_to(t) for t in temps) or out.is_relative_to(home) or out.is_relative_to(PROJECT_ROOT):
        return ""
    roots = {Path(t).resolve() for t in SYSTEM_TREES} | {Path(t) for t in SYSTEM_TREES}
    if any(out.is_relative_to(r) for r in roots):
        return "is a system folder"
    return ""


def outputs_dir_checked(settings: Settings) -> Path:
    """The outputs folder, created if needed. Every file in it is served to the page, so it must be
    a folder of its own: not /, the home folder, a system tree, the shared temp folder itself, the
    model cache, nor a folder another user owns or anyone may write to."""
    out = Path(settings.outputs_dir).expanduser().resolve()

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"--outputs {out} {why}; the page serves every file in the outputs folder, "
                           "so give it a folder of its own.", "outputs_dir")

    why = _refusal(out, settings)
    if why:
        raise refuse(why)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--outputs {out} exists and is not a folder.", "outputs_dir")
    try:
        out.mkdir(parents=True, exist_ok=True)
        info = out.stat()
    except OSError as e:
        raise ConfigError(f"--outputs {out} cannot be created: {e.strerror or e}.", "outputs_dir") from None
    if os.name == "posix":
        if info.st_uid != os.getuid():
            raise refuse("belongs to another user")
        if info.st_mode & stat.S_IWOTH:       # others could drop files the page would then serve
            raise refuse("is writable by every user")
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--outputs {out} is not writable: images could not be saved.", "outputs_dir")
    return out


def create_app(settings: Settings, manager: Backend, routers: list | None = None):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr
    from fastapi import APIRouter, FastAPI

    from .gradio_guard import GradioEventGuard, gradio_login_check
    from .launch import add_guards, api_routers
    from .http.mcp_guard import MCPBodyGuard
    from .http.mcp_tools import add_mcp_tools, keep_only_mcp_tools
    from .shutdown import EndStreamsOnStop
    from .page.gradio_frontend import frontend_router
    from .page.ui import build_ui
    from .page.ui_page import page_assets
    from .upload_budget import UploadBudget

    startup.mark(startup.WEB_IMPORTED)
    outputs = outputs_dir_checked(settings)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.api_routers = routers or api_routers(settings, manager)   # read by openapi_schema()
    for router in app.state.api_routers:
        app.include_router(router)          # before the "/" mount
    page_router = APIRouter()           # the page's own routes (the status panel's refresh)
    with gradio_app_deferred():
        demo = build_ui(manager, settings, status_router=page_router)
        if settings.mcp:
            with demo:
                add_mcp_tools(manager, settings)
        demo.queue(default_concurrency_limit=1, max_size=settings.queue_max)
    app.include_router(page_router)
    app.include_router(frontend_router())       # a fixed file of Gradio's, at the path Gradio serves it from
    quieter_queue_polls(demo)
    app = gr.mount_gradio_app(
        app, demo, path="/", server_name=settings.host, server_port=settings.port,
        auth=settings.auth_pairs or None, allowed_paths=[str(outputs)],
        blocked_paths=[str(modelscope_cache_base(settings.cache_dir)), str(Path.home() / ".ssh")],
        max_file_size=settings.max_upload_bytes, ssr_mode=False, mcp_server=settings.mcp, enable_monitoring=False,
        show_error=False, footer_links=[], run_history=False, **page_assets(),
    )
    page_app = serve_the_queue_from_the_mounted_app(app, demo)
    # Gradio checks event files against allowed_paths/blocked_paths only once `has_launched` is true,
    # which only launch() sets: mounted, any path sent as an event input was copied out to the caller.
    demo.has_launched = True
    login = gradio_login_check(page_app)
    app.state.page_login = login            # the status route's check (ui_status_feed)
    if settings.mcp:
        keep_only_mcp_tools(demo)
        app.add_middleware(MCPBodyGuard)        # inside GuardMiddleware: the login is checked first
    # Added first, so it runs inside GuardMiddleware: host, origin and auth are checked before it.
    budget = UploadBudget(settings.upload_client_bytes, settings.upload_total_bytes, settings.upload_unread_keep_s)
    app.add_middleware(GradioEventGuard, blocks=demo, outputs=outputs, logged_in=login,
                       max_upload_bytes=settings.max_upload_bytes, max_upload_pixels=settings.max_upload_pixels,
                       budget=budget)
    add_guards(app, settings)
    app.state.stopping = asyncio.Event()            # set by shutdown.Server as it stops
    app.add_middleware(EndStreamsOnStop, stopping=app.state.stopping)
    return app


# Gradio's queue looks for work every 1 ms while it has none, and for progress to send every 10 ms:
# an idle app used 2.7% of a core. At 20 ms, 0.9% (psutil, 10 s idle, 2-core machine, 2026-12-07),
# and an event waits at most 20 ms more to start: nothing beside an image's seconds.
QUEUE_POLL_S = 0.02


def quieter_queue_polls(demo) -> None:
    """Gradio has no setting for these: its Queue reads both attributes at each turn of its loops."""
    demo._queue.sleep_when_free = QUEUE_POLL_S
    demo._queue.progress_update_sleep_when_free = QUEUE_POLL_S


_gradio_app_patch = threading.Lock()


@contextlib.contextmanager
def gradio_app_deferred():
    """Gradio builds a whole App (its ~90 FastAPI routes, each route's signature read) each time a
    Blocks' `with` ends and again at queue(), for launch(); mounted, all of them are thrown away:
    mount_gradio_app builds the one that serves. Four Apps were built a start (five with --mcp), one
    now: building the page took 0.155 CPU-s, not 0.29 (`python -m bench.gradio_start_bench`, 2-core
    machine, 2026-12-07). Inside this block the Apps are not built; serve_the_queue_from_the_mounted_app then
    gives the Blocks the mounted one."""
    import gradio.blocks

    class _Deferred:
        @staticmethod
        def create_app(blocks, **_kw):
            return None

    with _gradio_app_patch:
        real, gradio.blocks.App = gradio.blocks.App, _Deferred
        try:
            yield
        finally:
            gradio.blocks.App = real


def mounted_gradio_app(app):
    """The Gradio App that serves the page on `app` (there is one)."""
    from gradio.routes import App

    mounted = [r.app for r in app.routes if isinstance(getattr(r, "app", None), App)]
    if len(mounted) != 1:
        raise RuntimeError(f"the Gradio page is mounted {len(mounted)} times, not once")
    return mounted[0]


def serve_the_queue_from_the_mounted_app(app, demo):
    """The queue runs events with `demo.app`'s session store and iterators, the routes with the
    mounted App's: launch() makes them one App, mount_gradio_app does not (the queue kept the App
    queue() built, so a page's session state was kept twice). Here, as under launch(), one; it is
    returned."""
    page_app = mounted_gradio_app(app)
    if page_app.get_blocks() is not demo:
        raise RuntimeError("the mounted Gradio page is not this page")
    demo.app = page_app
    return page_app


def make_server(app, settings: Settings):
    """The uvicorn server for `app`: one whose shutdown ends the page's open streams."""
    import uvicorn

    from .shutdown import Server

    return Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning"))


class _UserErrorsInOneLine:
    """Stands in for the `traceback` module inside Gradio's queue and routes. Gradio prints a full
    traceback for every gr.Error (a refused width, a prompt too long: answers the user already sees),
    with print() rather than logging; those become one log line, anything else keeps its traceback."""

    def __getattr__(self, name: str):
        return getattr(traceback, name)

    @staticmethod
    def print_exc(*args, **kwargs) -> None:
        from gradio.components import Component
        from gradio.exceptions import Error

        _, err, tb = sys.exc_info()
        if not isinstance(err, Error):
            traceback.print_exc(*args, **kwargs)
            return
        # Gradio's own checks ("Value 13 is less than minimum value 256.") do not name the input:
        # the component whose preprocess raised it does.
        field = ""
        for frame, _ in traceback.walk_tb(tb):
            owner = frame.f_locals.get("self")
            if isinstance(owner, Component):
                name = getattr(owner.label, "key", owner.label)      # a page_text key when translated
                field = f"{name or owner.elem_id or type(owner).__name__}: "
        log.info("page request refused: %s%s", field, err.message)


def quiet_gradio_user_errors() -> None:
    """Idempotent; for the modules that print the traceback of an event that raised (Gradio 6)."""
    import gradio.queueing
    import gradio.routes

    for module in (gradio.queueing, gradio.routes):
        if getattr(module, "traceback", None) is traceback:
            module.traceback = _UserErrorsInOneLine()


def import_model_stack_when_up(server, manager: Backend) -> threading.Thread:
    """Once the page is being served, have the worker import torch and diffusers (10-15 s on the GPU
    machine), so the first Preload or Generate does not wait for them."""
    def run() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            startup.mark(startup.PAGE_UP)
            manager.import_model_stack()
    t = threading.Thread(target=run, name="zimage-imports", daemon=True)
    t.start()
    return t


def mark_page_up_when_up(server) -> threading.Thread:
    """The start-up timeline's "page up" once uvicorn serves (the worker imports torch on its own)."""
    def run() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            startup.mark(startup.PAGE_UP)
            log.info("the page is up")
    t = threading.Thread(target=run, name="zimage-page-up", daemon=True)
    t.start()
    return t


def serve(settings: Settings) -> None:
    outputs_dir_checked(settings)        # before the worker starts: a refused folder must not leave it running
    # Every route, the page and the MCP tools get this one backend: each generation is kept on disk.
    manager = with_kept_queue(create_backend(settings)).start()
    try:
        if settings.preload and settings.backend == "inprocess":
            # Model first (launch.py): the API now, the load with the GIL to itself, the page after.
            # The model worker process (--backend local) and Ray replicas load in their own
            # processes: the page comes first there and shows the load as it goes.
            from .launch import LaunchApp, api_routers, build_page_after_the_model, create_early_app

            load = manager.preload()
            routers = api_routers(settings, manager)
            front = LaunchApp(create_early_app(settings, manager, routers))
            server = make_server(front, settings)

            def build_page():
                quiet_gradio_user_errors()
                return create_app(settings, manager, routers=routers)
            build_page_after_the_model(server, front, manager, load, build_page)
        else:
            if settings.preload and settings.backend == "ray":
                manager.preload()        # the worker process preloads by itself (--backend local)
            quiet_gradio_user_errors()
            app = create_app(settings, manager)
            server = make_server(app, settings)
            if settings.backend == "inprocess":
                import_model_stack_when_up(server, manager)
            else:
                mark_page_up_when_up(server)
        log.info("serving on http://%s:%d", settings.host, settings.port)
        if not settings.is_loopback:
            log.warning("listening on %s: other machines can reach this app (login required: --auth). "
                        "Use TLS through a reverse proxy if the network is not yours.", settings.host)
        server.run()
    finally:
        manager.close()
