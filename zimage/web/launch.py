"""Model first, page after: how `webui.py --backend inprocess --preload` serves while it starts.

With the default --backend local the model is in its own worker process (scale/worker_backend.py):
the page is served first and shows the worker's load as it goes, and none of this is used. The
one-process app (--backend inprocess, for tests and benchmarks) still starts this way:

One process has one GIL, and the launch's imports are Python work: on the CPU machine the model
stack (torch, diffusers, transformers: 4.2 s) and the page (gradio 2.5 s, our Blocks 0.4 s) took
8.2 s to the first image when both were imported at once, against 4.1 s for the plain diffusers
script. With --preload the user asked for the model, so the HTTP API is served at once (fastapi
and our routes: 0.45 s, no gradio), the model stack is imported and loaded with the GIL to itself,
and gradio is imported and the page built only once the load is over (and the first generation, if
one was already waiting, is done). Until then "/" answers 503 with a page that shows the start-up
timeline and reloads itself; the page's own routes come with it. Without --preload, or with the Ray
backend (its replicas import the model stack in their own processes), the page comes
first, as before (server.serve).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import wait
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from .. import startup
from ..config import Settings
from ..i18n import page_language
from ..jobs import Backend, Job
from ..kept_queue import KeptQueueBackend
from ..state import LoadState
from .page.ui_starting import RELOAD_S, starting_page as render_starting_page

log = logging.getLogger(__name__)

FIRST_IMAGE_WAIT_S = 30.0     # the longest the page waits for a generation queued behind the load


def starting_page(manager: Backend, show_timeline: bool, lang: str = "en") -> str:
    """The page "/" answers while the real one is being built (ui_starting), in the page's language
    (the switch's cookie, else Accept-Language). With a login (--auth) the state and timeline are
    left out: the page's own login is not there yet."""
    return render_starting_page(manager.status() if show_timeline else None, lang)


def api_routers(settings: Settings, manager: Backend) -> list:
    """Our HTTP routes (no gradio): built once, served by the early app and then the full one."""
    from .http.api import build_router
    from .http.compat_api import build_compat_router
    from .http.edit_api import build_edit_router
    from .http.enhance_api import build_enhance_router
    from .http.grid_api import build_grid_router
    from .http.hires_api import build_hires_router
    from .http.models_api import build_models_router
    from .http.queue_api import build_queue_router

    routers = [build_router(manager, settings.max_prompt_chars), build_compat_router(manager, settings.max_prompt_chars),
               build_edit_router(manager, settings.max_prompt_chars),
               build_enhance_router(manager, settings.max_prompt_chars), build_grid_router(manager, settings),
               build_models_router(manager), build_hires_router(manager)]
    if isinstance(manager, KeptQueueBackend):       # server.serve wraps every backend; tests may pass a bare one
        routers.append(build_queue_router(manager))
    return routers


def add_guards(app, settings: Settings) -> None:
    """Host, origin and API login checks, outermost (the early app's and the full app's)."""
    from .http.api import API_PATHS, MCP_PATH
    from .http.compat_api import COMPAT_PREFIXES
    from .http.queue_api import QUEUE_PATH, QUEUE_PREFIX
    from .security import GuardMiddleware

    # MCP clients log in as API clients do (HTTP Basic): Gradio's login cookie is the page's, and
    # Gradio does not check it on its MCP routes.
    app.add_middleware(GuardMiddleware, loopback_only=settings.is_loopback, api_paths=API_PATHS + (MCP_PATH, QUEUE_PATH),
                       api_prefixes=COMPAT_PREFIXES + (MCP_PATH + "/", QUEUE_PREFIX), auth=settings.api_auth_pairs)


def create_early_app(settings: Settings, manager: Backend, routers: list):
    """The app served until the page is built: the same API routers (so /generate, /health and
    the compat routes work and share their state with the full app) behind the same guard."""
    from .shutdown import EndStreamsOnStop

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    for router in routers:
        app.include_router(router)

    @app.api_route("/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
                   include_in_schema=False)
    async def not_yet(request: Request, rest: str) -> HTMLResponse:
        lang = page_language(request.cookies, request.headers.get("accept-language"))
        return HTMLResponse(starting_page(manager, show_timeline=not settings.auth_pairs, lang=lang),
                            status_code=503, headers={"Retry-After": str(RELOAD_S)})

    add_guards(app, settings)
    app.state.stopping = asyncio.Event()
    app.add_middleware(EndStreamsOnStop, stopping=app.state.stopping)
    return app


class LaunchApp:
    """The ASGI app uvicorn serves: the early app, then the full one once `switch` has run. Answers
    uvicorn's lifespan itself and runs the full app's (Gradio's queue starts there) when it arrives."""

    def __init__(self, early):
        self.app = early
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_known = threading.Event()
        self._lifespan = None          # the full app's lifespan context, entered by switch()

    @property
    def state(self):                   # shutdown.Server reads app.state.stopping of what is served now
        return self.app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        await receive()                                   # lifespan.startup
        self.loop = asyncio.get_running_loop()
        self.loop_known.set()
        await send({"type": "lifespan.startup.complete"})
        await receive()                                   # lifespan.shutdown
        if self._lifespan is not None:
            await self._lifespan.__aexit__(None, None, None)
        await send({"type": "lifespan.shutdown.complete"})

    async def switch(self, full) -> None:
        self._lifespan = full.router.lifespan_context(full)
        await self._lifespan.__aenter__()
        if self.app.state.stopping.is_set():
            full.state.stopping.set()
        self.app = full


def wait_for_the_model(manager: Backend, load: Job, clock=time.monotonic) -> None:
    """Until the preload is over (loaded or failed) and a generation queued behind it is done, or
    until it turns out to be a download: that takes minutes and little of the GIL, and the page
    shows its progress and its Cancel button."""
    while not load.future.done():
        if manager.status().state == LoadState.DOWNLOADING:
            return
        wait([load.future], timeout=0.1)
    deadline = clock() + FIRST_IMAGE_WAIT_S
    while clock() < deadline:
        status = manager.status()
        if not status.busy and not status.queue_length:
            return
        time.sleep(0.05)


def build_page_after_the_model(server, front: LaunchApp, manager: Backend, load: Job,
                               build_page: Callable[[], object]) -> threading.Thread:
    """On a thread: wait for the model, build the full app (`build_page`: server.create_app), serve it."""
    def run() -> None:
        try:
            wait_for_the_model(manager, load)
            full = build_page()
            while not front.loop_known.wait(0.1):
                if server.should_exit:
                    return
            asyncio.run_coroutine_threadsafe(front.switch(full), front.loop).result()
            startup.mark(startup.PAGE_UP)
            log.info("the page is up")
        except Exception:
            log.exception("building the page failed: only the HTTP API is served")
    t = threading.Thread(target=run, name="zimage-page", daemon=True)
    t.start()
    return t
