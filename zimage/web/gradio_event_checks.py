"""The event guard's checks of what a request carries beyond the event's own shape: which values of
an event may name an upload and the image checks on those uploads (store/pnginfo), the Edit tab's
image editor values (blobs) with the uploads they name, and the event streams a client opens
(ones Gradio would open and then cut). gradio_guard.GradioEventGuard calls them.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from ..errors import InvalidRequest, UnknownEndpoint, ZImageError
from ..store.pnginfo import named, read_image_info
from .event_values import is_int
from .gradio_files import check_upload_value
from .gradio_uploads import UPLOAD_SUBJECTS, check_blob_value, discard
from .upload_budget import UploadBudget

EVENT_STREAM = re.compile(r"/call(?:/v2)?/[^/]+/(?P<event_id>[^/]+)/?")


def upload_slots(events, kind: str, match: re.Match, body: dict) -> frozenset:
    """Which values of this event may name an upload: positions of `data`, or call/v2 keywords
    (`events`: the guard's gradio_guard.PageEvents)."""
    if kind == "call_v2":
        return events.upload_params.get(match["name"], frozenset())
    fn_index = body.get("fn_index") if kind == "join" or (kind == "run" and body.get("fn_index") is not None) \
        else events.by_name.get(match["name"])
    if not is_int(fn_index) or fn_index not in events.upload_inputs:
        return frozenset()
    data = body.get("data")
    if kind == "call" and isinstance(data, list) and \
            len(data) == events.api_inputs[fn_index] != events.inputs[fn_index]:
        return events.upload_api_inputs[fn_index]
    return events.upload_inputs[fn_index]


def blob_values(events, upload_set, budget: UploadBudget | None, kind: str, match: re.Match, body: dict,
                values: Any, uploads: list[tuple[str, str, str]]) -> Any:
    """The event's values with its image editors' values checked (gradio_uploads.check_blob_value):
    a file the editor names that was uploaded to this page (the dropped image, sent by /upload)
    joins `uploads` (the image checks follow) and leaves the values; the rest (a picture the page
    put there) goes through check_files. The editor's painted layers came by check_blob_form."""
    fn_index = body.get("fn_index") if kind in ("join", "run") else None
    if kind == "call" or (kind == "run" and fn_index is None):
        fn_index = events.by_name.get(match["name"])
    positions = events.blob_inputs.get(fn_index, frozenset()) if is_int(fn_index) else frozenset()
    if not positions or not isinstance(values, list):
        return values
    values = list(values)
    for pos in positions:
        if pos >= len(values) or values[pos] is None:
            continue
        check_blob_value(values[pos], f"data[{pos}]")
        value = dict(values[pos])
        if budget is not None and value.get("id") is not None:
            budget.mark_read(blob_id=value["id"])     # the event (maybe queued a while) reads it
        named = [(key, value.get(key)) for key in ("background", "composite")]
        layers = list(value.get("layers") or []) if isinstance(value.get("layers"), list) else []
        named += [(f"layers[{i}]", item) for i, item in enumerate(layers)]
        for key, item in named:
            if isinstance(item, dict) and item.get("path") in upload_set:
                at = f"data[{pos}].{key}"
                uploads.append((at, check_upload_value(item, at, upload_set), UPLOAD_SUBJECTS["edit"]))
                if key.startswith("layers["):
                    layers[int(key[7:-1])] = None
                else:
                    value[key] = None
        if layers:
            value["layers"] = layers
        values[pos] = value
    return values


def check_uploads(uploads: list[tuple[str, str, str]], max_bytes: int, max_pixels: int,
                  budget: UploadBudget | None) -> None:
    """The image checks (store/pnginfo): the message names the image as the page does, `field`
    the input; a refused upload is deleted, whatever refused it (a reader's bug left the file in
    the upload folder)."""
    for at, path, subject in uploads:
        try:
            read_image_info(path, max_bytes, max_pixels, field_name=at)
        except BaseException as e:
            discard(path)
            if not isinstance(e, ZImageError):
                raise
            raise named(e, subject) from None
        if budget is not None:
            budget.mark_read(path)


def check_stream(blocks, route: str, scope) -> None:
    """An event stream Gradio would open and then cut (it raises inside the generator)."""
    queue = getattr(blocks, "_queue", None)
    sessions = getattr(queue, "pending_messages_per_session", None)
    if sessions is None:
        return                      # another Gradio layout: let Gradio answer
    if route.rstrip("/") == "/queue/data":
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash", [])
        if len(values) != 1:
            raise InvalidRequest("session_hash", "give exactly one session_hash")
        if values[0] not in sessions:
            raise UnknownEndpoint("No events are waiting for this session.", "Join the queue first.")
        return
    match = EVENT_STREAM.fullmatch(route)
    if match:
        event_id = match["event_id"]
        pending = getattr(queue, "pending_event_ids_session", {})
        if event_id not in getattr(queue, "event_ids_to_events", {}) and \
                not any(event_id in ids for ids in list(pending.values())):
            raise UnknownEndpoint(f"No event {event_id[:64]!r} is waiting.", "POST to /call/<name> first.")
