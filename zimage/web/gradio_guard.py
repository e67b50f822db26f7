"""Requests to Gradio's event routes, checked against the page's own events before Gradio sees them.

Gradio 6.31 trusts what these routes are sent (tests/test_fuzz_gradio.py, before this guard: of 555
malformed requests, 123 answered 500, 14 event streams were cut short, and the ones accepted into
the queue filled it, so 84 more got 503 "queue full", as a real user would have):
- `queue/join` with an `fn_index` the page does not have (-1, 10**9): a KeyError, so a 500;
- `call/<name>`, `call/v2/<name>`, `run/<name>`, `api/<name>` with an unknown name: a 500;
- `call/v2/<name>` without a required argument, `run/<name>` with too few values: a 500;
- a `data` list of the wrong length is queued and fails inside the worker (a traceback each time);
- `queue/data` for a session nobody joined, `call/<name>/<event>` for an unknown event: a 200
  whose stream is then cut ("Caught handled exception, but response already started");
- `component_server` with an unknown component: a 500.
Here each gets a 4xx with `{"error": {code, message, field}}` (plus `detail`, the key Gradio's
own clients print), and a well-formed request from the page or gradio_client goes through with its
body untouched. Names callable by HTTP are the page's public ones: `api_visibility="private"`
events (preload, unload, the cache panel) stay reachable only the way the page calls them.

Files: an event input that names a file (a FileData dict, `{"path": ..., "url": ...}` at any depth)
made Gradio copy that file into its cache and answer a `/gradio_api/file=` URL of the copy:
`/etc/passwd`, `/proc/self/environ` and the sources came out that way, because Gradio skips its
allowed_paths check while `blocks.has_launched` is false, which it always is under
`mount_gradio_app` (create_app now sets it). Here such a value must name a file in the outputs folder
(after resolving symlinks) or a copy Gradio itself made for this page, and `/gradio_api/file=`
serves only those; everything else is a 404.
With --auth, the routes Gradio leaves without its login check (heartbeat, reset, cancel, stream,
startup-events) need the login too: an anonymous heartbeat was an endless stream.
Gradio's "queue is full" 503 gets a Retry-After, as our own 429s have.

Uploads: `/upload` is refused unless the page has an input in UPLOAD_INPUTS (the PNG info tab's
image); then its body is capped (Content-Length, and the bytes as they stream) at the upload limit,
and Gradio stores it in its upload folder (a temporary folder, never outputs). An uploaded path is
accepted only as the value of an UPLOAD_INPUTS input, after the image checks of store/pnginfo
(magic bytes, header pixels before any decode, frames, a truncated file); any other input naming
it is refused as before, and /gradio_api/file= does not serve it back.
The Edit tab's gr.ImageEditor (BLOB_INPUTS) is the one other input that takes images: the files its
value names (background, composite, layers) are checked as uploads when they are uploads, and as
page files otherwise; its accept_blobs calls (component_server, multipart) carry one image each,
checked the same way (store/images), for that editor only.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import anyio

from ..errors import BodyTooLarge, InvalidRequest, UnknownEndpoint, UnsupportedMediaType, ZImageError
from .asgi_body import is_multipart, read_body, replay, with_retry_after
from .event_values import check_values, is_int, kinds_of
from .gradio_event_checks import blob_values, check_stream, check_uploads, upload_slots
from .json_text import decode_json
from .guard_answer import language as _language, send_error
from .gradio_files import (FILE_ROUTE, PROXY_ROUTE, FileNotServed, check_files, check_upload_value, page_file_sets,
                           servable_file)
from .gradio_uploads import (BLOB_INPUTS, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_MAX_UPLOAD_PIXELS, MULTIPART_OVERHEAD_BYTES,
                             UPLOAD_INPUTS, UPLOAD_SUBJECTS, UPLOADED, check_blob_form, check_upload_form,
                             editor_layers, upload_name_refused, upload_too_large)
from .upload_budget import UploadBudget, editor_instances, kept_upload

log = logging.getLogger(__name__)


class UploadsRefused(ZImageError):
    """Gradio's /upload writes any file to disk; this page has no input that takes one."""
    http_status = 403
    code = "uploads_refused"

    def __init__(self):
        super().__init__("This page takes no file uploads.")


class LoginRequired(ZImageError):
    http_status = 401
    code = "unauthorized"

    def __init__(self):
        super().__init__("Not authenticated.", "Log in on the page first.")


API_PREFIX = "/gradio_api"
MAX_EVENT_BODY_BYTES = 2**20      # our largest real event: a 4000-character prompt and 48 gallery items, ~40 KB
MAX_SESSION_HASH_CHARS = 256      # the page sends 11 characters, gradio_client a 36-character uuid

_NAME = r"/(?P<name>[^/]+)/?"
POST_ROUTES = [                   # (pattern, kind): the routes that run an event, by what they name
    (re.compile(r"/queue/join/?"), "join"),
    (re.compile(r"/call/v2" + _NAME), "call_v2"),
    (re.compile(r"/call" + _NAME), "call"),
    (re.compile(r"/(?:run|api)" + _NAME), "run"),
    (re.compile(r"/component_server/?"), "component"),
]
# Gradio's routes without its login check: with --auth they are refused here before a login.
LOGIN_ONLY = re.compile(r"/(?:heartbeat/.*|reset/?|cancel/?|stream/.*|startup-events/?)")
QUEUE_FULL_RETRY_AFTER_S = 5                          # before any event finished: one 1024px image on a GPU is ~1-3 s


@dataclass(frozen=True)
class PageEvents:
    """What the page's events accept, read once from the Blocks."""
    inputs: dict[int, int]                   # fn_index -> number of inputs
    api_inputs: dict[int, int]               # fn_index -> inputs an API caller sends (no gr.State)
    batched: frozenset[int]
    by_name: dict[str, int]                  # public api_name -> fn_index
    parameters: dict[str, list]              # public api_name -> gradio_client's parameter info
    block_ids: frozenset[int]
    server_fns: frozenset[tuple[int, str]]   # (component id, function name) for component_server
    takes_uploads: bool = False              # some event has an UPLOAD_INPUTS input
    upload_inputs: dict[int, frozenset[int]] = field(default_factory=dict)      # fn_index -> input positions
    upload_api_inputs: dict[int, frozenset[int]] = field(default_factory=dict)  # the same, without gr.State inputs
    upload_params: dict[str, frozenset[str]] = field(default_factory=dict)      # api_name -> call/v2 keywords
    blob_components: dict[int, int] = field(default_factory=dict)   # ImageEditors of BLOB_INPUTS: id -> layers
    blob_inputs: dict[int, frozenset[int]] = field(default_factory=dict)        # fn_index -> editor positions
    kinds: dict[int, tuple] = field(default_factory=dict)        # fn_index -> each input's kind (event_values)
    api_kinds: dict[int, tuple] = field(default_factory=dict)    # the same, without gr.State inputs

    @classmethod
    def of(cls, blocks, upload_inputs: frozenset[tuple[str, int]] = UPLOAD_INPUTS) -> PageEvents:
        fns = blocks.fns
        blobs = {i: frozenset(pos for name, pos in BLOB_INPUTS if name == fn.api_name and pos < len(fn.inputs))
                 for i, fn in fns.items()}
        blobs = {i: ps for i, ps in blobs.items() if ps}
        uploads: dict[int, frozenset[int]] = {}
        for i, fn in fns.items():
            positions = frozenset(pos for name, pos in upload_inputs if name == fn.api_name and pos < len(fn.inputs))
            if positions:
                uploads[i] = positions
        api_uploads = {i: frozenset(sum(not getattr(b, "skip_api", False) for b in fns[i].inputs[:pos]) for pos in ps
                                    if not getattr(fns[i].inputs[pos], "skip_api", False)) for i, ps in uploads.items()}
        public = {fn.api_name: i for i, fn in fns.items()
                  if fn.api_name and fn.fn is not None and fn.api_visibility != "private"}
        named = blocks.get_api_info(all_endpoints=True)["named_endpoints"]
        server_fns = frozenset((bid, fn.__name__) for bid, block in blocks.blocks.items()
                               for fn in getattr(block, "server_fns", None) or [])
        return cls(
            inputs={i: len(fn.inputs) for i, fn in fns.items()},
            api_inputs={i: sum(not getattr(b, "skip_api", False) for b in fn.inputs) for i, fn in fns.items()},
            batched=frozenset(i for i, fn in fns.items() if fn.batch),
            by_name=public,
            parameters={name: named.get("/" + name, {}).get("parameters", []) for name in public},
            block_ids=frozenset(blocks.blocks) | {blocks._id},     # the page itself triggers its load event
            server_fns=server_fns,
            takes_uploads=bool(uploads),
            upload_inputs=uploads,
            upload_api_inputs=api_uploads,
            upload_params={name: frozenset(p.get("parameter_name") for k, p in enumerate(
                named.get("/" + name, {}).get("parameters", [])) if k in api_uploads.get(i, ()))
                for name, i in public.items() if i in api_uploads},
            blob_components={fns[i].inputs[pos]._id: editor_layers(fns[i].inputs[pos])
                             for i, ps in blobs.items() for pos in ps},
            blob_inputs=blobs,
            kinds={i: kinds_of(fn.inputs) for i, fn in fns.items()},
            api_kinds={i: kinds_of(fn.inputs, api_only=True) for i, fn in fns.items()},
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_data(data: Any, fn_index: int, events: PageEvents, lengths: set[int]) -> None:
    if not isinstance(data, list):
        raise InvalidRequest("data", f"must be a list of the event's {events.inputs[fn_index]} input values")
    if fn_index not in events.batched and len(data) not in lengths:
        want = " or ".join(str(n) for n in sorted(lengths))
        raise InvalidRequest("data", f"has {len(data)} values; this event takes {want}")


def _check_session(body: dict, required: bool) -> None:
    session = body.get("session_hash")
    if session is None and not required:
        return
    if not isinstance(session, str) or not 0 < len(session) <= MAX_SESSION_HASH_CHARS:
        raise InvalidRequest("session_hash", f"must be a string of 1-{MAX_SESSION_HASH_CHARS} characters")


def check_event(body: Any, events: PageEvents, *, session_required: bool) -> None:
    """A request that names its event by `fn_index` (the page's queue/join and run/predict)."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    _check_session(body, session_required)
    fn_index = body.get("fn_index")
    if not is_int(fn_index) or fn_index not in events.inputs:
        raise InvalidRequest("fn_index", f"{_short(fn_index)} is not an event of this page")
    trigger = body.get("trigger_id")
    if trigger is not None and (not is_int(trigger) or trigger not in events.block_ids):
        raise InvalidRequest("trigger_id", f"{_short(trigger)} is not a component of this page")
    _check_data(body.get("data"), fn_index, events, {events.inputs[fn_index]})
    if fn_index not in events.batched:
        check_values(body["data"], events.kinds[fn_index])


def _public_event(name: str, events: PageEvents) -> int:
    if name not in events.by_name:
        # The names are not listed here: with --auth, this answer goes out before Gradio's login check.
        raise UnknownEndpoint(f"This page has no API endpoint named {name[:100]!r}.",
                              "The endpoints are listed at /gradio_api/info.")
    return events.by_name[name]


def check_call(route: str, name: str, body: Any, events: PageEvents) -> None:
    """`call/<name>` (queued; Gradio fills in gr.State inputs, and ignores any fn_index) and
    `run/<name>` (direct; by fn_index when one is given: the page's run/predict)."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object with a \"data\" list")
    if route == "run" and body.get("fn_index") is not None:
        return check_event(body, events, session_required=False)
    fn_index = _public_event(name, events)
    lengths = {events.inputs[fn_index]} | ({events.api_inputs[fn_index]} if route == "call" else set())
    _check_data(body.get("data"), fn_index, events, lengths)
    if fn_index not in events.batched:
        full = len(body["data"]) == events.inputs[fn_index]
        check_values(body["data"], events.kinds[fn_index] if full else events.api_kinds[fn_index])


def check_call_v2(name: str, body: Any, events: PageEvents) -> None:
    """`call/v2/<name>`: keyword arguments, matched to the parameters the way Gradio will."""
    from gradio_client.utils import construct_args

    fn_index = _public_event(name, events)
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object of keyword arguments")
    kwargs = {k: v for k, v in body.items() if k != "oauth_token"}
    try:
        args = construct_args(events.parameters[name], (), kwargs)   # what Gradio calls next, outside any try
    except (TypeError, ValueError) as e:
        raise InvalidRequest("body", str(e).split(" Please click")[0]) from None
    names = [p.get("parameter_name") or f"argument {k}" for k, p in enumerate(events.parameters[name])]
    check_values(args, events.api_kinds[fn_index], names, where="body")


def check_component_call(body: Any, events: PageEvents) -> None:
    if not isinstance(body, dict) or (body.get("component_id"), body.get("fn_name")) not in events.server_fns:
        raise UnknownEndpoint("No such component function on this page.")
    _check_session(body, required=True)


class GradioEventGuard:
    """Pure ASGI middleware. Buffers (at most MAX_EVENT_BODY_BYTES of) the body of the event routes
    only, then hands Gradio the same bytes; every other request streams through untouched."""

    def __init__(self, app, *, blocks, outputs: Path, prefix: str = API_PREFIX,
                 logged_in: Callable[[dict], bool] | None = None,
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS,
                 upload_inputs: frozenset[tuple[str, int]] = UPLOAD_INPUTS, budget: UploadBudget | None = None):
        """`outputs`: the folder whose files the page may name and download.
        `logged_in(scope)`: with --auth, whether the request carries a valid Gradio login; requests
        without one go straight to Gradio, which answers 401, so nothing here answers before the login
        (but the routes Gradio does not guard, LOGIN_ONLY: those get our 401)."""
        self.app = app
        self.blocks = blocks
        self.outputs = Path(outputs).resolve()
        self.prefix = prefix
        self.logged_in = logged_in
        self.max_upload_bytes = max_upload_bytes
        self.max_upload_pixels = max_upload_pixels
        self.upload_inputs = upload_inputs
        self._events: PageEvents | None = None
        self.budget = budget                   # unread uploads and editor images: per client, in total, in time
        if budget is not None:
            budget.editors = lambda: editor_instances(self.blocks, self.events.blob_components)

    @property
    def events(self) -> PageEvents:
        if self._events is None:        # the Blocks' config is complete once the server serves
            self._events = PageEvents.of(self.blocks, self.upload_inputs)
        return self._events

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix + "/"):
            return await self.app(scope, receive, send)
        route = path[len(self.prefix):]
        if self.logged_in is not None and not self.logged_in(scope):
            if LOGIN_ONLY.fullmatch(route):
                log.info("refused %s %s: not logged in", scope["method"], path[:200])
                return await send_error(send, LoginRequired(), lang=_language(scope))
            return await self.app(scope, receive, send)
        try:
            if scope["method"] in ("GET", "HEAD"):
                self._check_file(route)
                check_stream(self.blocks, route, scope)
            elif scope["method"] == "POST":
                if route.rstrip("/") == "/upload":
                    if not self.events.takes_uploads:
                        raise UploadsRefused()
                    body = await read_body(scope, receive, self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
                                            upload_too_large(self.max_upload_bytes))
                    if body is None:
                        return
                    await check_upload_form(scope, body, self.max_upload_bytes, self.max_upload_pixels)
                    if self.budget is not None:
                        return await kept_upload(self.app, scope, replay(body, receive), send, self.budget, len(body))
                    receive = replay(body, receive)
                if route.rstrip("/") == "/component_server" and is_multipart(scope):
                    body = await read_body(scope, receive, self.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
                                            upload_too_large(self.max_upload_bytes))
                    if body is None:
                        return
                    fields = await check_blob_form(scope, body, self.events.blob_components, self.max_upload_bytes,
                                                   self.max_upload_pixels)
                    if self.budget is not None:
                        return await kept_upload(self.app, scope, replay(body, receive), send, self.budget,
                                                 len(body), blob_id=fields["id"])
                    return await self.app(scope, replay(body, receive), send)
                for pattern, kind in POST_ROUTES:
                    match = pattern.fullmatch(route)
                    if match:
                        body = await read_body(scope, receive, MAX_EVENT_BODY_BYTES, BodyTooLarge(
                            f"The request body is larger than {MAX_EVENT_BODY_BYTES // 1024} KB.",
                            "Event inputs are small; shorten the text."))
                        if body is None:
                            return              # the client left before sending its body
                        uploads = self._check_post(kind, match, _json_of(scope, body))
                        if uploads:          # decoded off the event loop: up to max_upload_pixels
                            await anyio.to_thread.run_sync(lambda: check_uploads(
                                uploads, self.max_upload_bytes, self.max_upload_pixels, self.budget))
                        receive = replay(body, receive)
                        send = with_retry_after(send, self._retry_after_s)
                        break
        except ZImageError as e:
            log.info("refused %s %s: %s", scope["method"], path[:200], e.message[:200])
            return await send_error(send, e, lang=_language(scope))
        return await self.app(scope, receive, send)

    def _check_file(self, route: str) -> None:
        match = FILE_ROUTE.fullmatch(route)
        if PROXY_ROUTE.fullmatch(route) or (match and not servable_file(
                match["path"], self.outputs, page_file_sets(self.blocks), self.blocks.upload_file_set)):
            raise FileNotServed()

    def _retry_after_s(self) -> int:
        """For Gradio's "queue is full": the queued events times the slowest event's mean duration."""
        queue = getattr(self.blocks, "_queue", None)
        times = [t.avg_time for t in getattr(queue, "process_time_per_fn", {}).values() if t.count]
        if not times or queue is None:
            return QUEUE_FULL_RETRY_AFTER_S
        return max(1, min(3600, round(max(times) * (len(queue) + 1))))

    def _event_name(self, kind: str, match: re.Match, body: dict) -> str | None:
        fn_index = body.get("fn_index") if kind in ("join", "run") else None
        if is_int(fn_index) and fn_index in self.blocks.fns:
            return self.blocks.fns[fn_index].api_name
        return match["name"] if "name" in match.groupdict() else None

    def _check_post(self, kind: str, match: re.Match, body: Any) -> list[tuple[str, str, str]]:
        """Check an event request; returns the (field, path, subject) of each upload it names, for
        gradio_event_checks.check_uploads (subject: how the page names that image, gradio_uploads.UPLOAD_SUBJECTS)."""
        uploads: list[tuple[str, str, str]] = []
        if isinstance(body, dict):
            # Every value of every event: data (join, call, run), the keywords of call/v2, component_server's data.
            values = body if kind == "call_v2" else body.get("data")
            where = "body" if kind == "call_v2" else "data"
            slots = upload_slots(self.events, kind, match, body) if kind != "component" else frozenset()
            values = blob_values(self.events, self.blocks.upload_file_set, self.budget, kind, match, body, values,
                                 uploads)
            if slots and isinstance(values, (dict, list)):
                keys = [k for k in (values if isinstance(values, dict) else range(len(values))) if k in slots]
                upload_set = self.blocks.upload_file_set
                subject = UPLOAD_SUBJECTS.get(self._event_name(kind, match, body) or "", UPLOADED)
                for k in keys:
                    at = f"{where}.{k}" if isinstance(values, dict) else f"{where}[{k}]"
                    path = check_upload_value(values[k], at, upload_set)
                    if path is not None:
                        upload_name_refused(path, at)      # gr.File's own name check, before Gradio lists it
                        uploads.append((at, path, subject))
                values = ({k: v for k, v in values.items() if k not in slots} if isinstance(values, dict)
                          else [None if i in slots else v for i, v in enumerate(values)])
            check_files(values, where, self.outputs, page_file_sets(self.blocks), self.blocks.upload_file_set)
        if kind == "join":
            check_event(body, self.events, session_required=True)
        elif kind == "call_v2":
            check_call_v2(match["name"], body, self.events)
        elif kind in ("call", "run"):
            check_call(kind, match["name"], body, self.events)
        else:
            check_component_call(body, self.events)
        return uploads


def _json_of(scope, body: bytes) -> Any:
    ctype = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {ctype or 'none'}.")
    return decode_json(body)


def gradio_login_check(gradio_app) -> Callable[[dict], bool] | None:
    """For the Gradio App that serves the page (server.mounted_gradio_app): a check of Gradio's own
    login cookie (the one its /user route reads). None when the page has no login."""
    from starlette.requests import HTTPConnection

    if not getattr(gradio_app, "auth", None):
        return None

    def logged_in(scope: dict) -> bool:
        cookies = HTTPConnection(scope).cookies
        token = (cookies.get(f"access-token-{gradio_app.cookie_id}")
                 or cookies.get(f"access-token-unsecure-{gradio_app.cookie_id}"))
        return token is not None and token in gradio_app.tokens
    return logged_in
