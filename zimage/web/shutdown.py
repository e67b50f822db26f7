"""Open event streams end when the server stops.

uvicorn stops by waiting for every open response to finish, with no time limit. Gradio's heartbeat
(`/gradio_api/heartbeat/<session>`, one per open page) and its queue streams never finish on their
own, so with a page open SIGTERM left the server up (still up after 12 s, issue 15). On shutdown,
`Server` sets the app's `stopping` event; `EndStreamsOnStop` then tells each response still reading
its `receive` that the client left, which is how Starlette's StreamingResponse learns to stop, and
closes the response properly so the client sees the stream end and uvicorn logs no error.
Plain requests in progress (a /generate waiting for its image) finish as before.
"""
from __future__ import annotations

import asyncio
import logging

import uvicorn

log = logging.getLogger(__name__)

DISCONNECT = {"type": "http.disconnect"}


class Server(uvicorn.Server):
    """uvicorn's Server that, as its shutdown begins, sets `app.state.stopping` (an asyncio.Event
    made by create_app) of the app it serves."""

    async def shutdown(self, sockets=None) -> None:
        stopping = getattr(getattr(self.config.app, "state", None), "stopping", None)
        if stopping is not None:
            stopping.set()
        await super().shutdown(sockets)


class EndStreamsOnStop:
    """Pure ASGI middleware: once `stopping` is set, `receive` answers http.disconnect."""

    def __init__(self, app, *, stopping: asyncio.Event):
        self.app = app
        self.stopping = stopping

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = finished = cut = False

        async def receive_or_stop():
            nonlocal cut
            if self.stopping.is_set():
                cut = True
                return DISCONNECT
            message = asyncio.ensure_future(receive())
            stop = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait((message, stop), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
                if not message.done():
                    message.cancel()
            if message.done() and not message.cancelled():
                return message.result()
            cut = True
            return DISCONNECT

        async def tracked_send(message):
            nonlocal started, finished
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        await self.app(scope, receive_or_stop, tracked_send)
        if cut and started and not finished:
            log.info("ended the open stream %s at shutdown", scope.get("path", "")[:200])
            await send({"type": "http.response.body", "body": b"", "more_body": False})
