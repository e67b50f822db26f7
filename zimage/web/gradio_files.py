"""Which files the page may name in an event and hand out at /gradio_api/file=: the images in the
outputs folder and the copies Gradio made of them for this page. Pure functions of a path.

Before (issue 15): a FileData value naming `/etc/passwd`, `/proc/self/environ`, a source file or a
symlink in outputs, sent as the gallery input of `generate`, came back as a downloadable copy.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator
from urllib.parse import unquote, urlsplit

from ..errors import InvalidRequest, ZImageError


class FileNotServed(ZImageError):
    """A file outside the outputs folder (or a path that is no file at all): answered as not found,
    so the answer does not tell which files exist."""
    http_status = 404
    code = "not_found"

    def __init__(self):
        super().__init__("No such file on this page.", "Only the images this server generated are served.")


FILE_ROUTE = re.compile(r"/(?:file=|file/)(?P<path>.*)", re.DOTALL)
PROXY_ROUTE = re.compile(r"/proxy=.*", re.DOTALL)    # the page loads no remote Space
MAX_PATH_CHARS = 4096                                 # Linux PATH_MAX


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def servable_file(path: Any, outputs: Path, created: Iterable[Iterable[str]] = (),
                  uploads: Collection[str] = ()) -> bool:
    """Whether `path` is a file this page may hand out: inside `outputs` once symlinks are resolved
    (a link in outputs that points out is refused) and not in a hidden folder there, or a copy Gradio made for this page's
    components (`created`: page_file_sets), which live in Gradio's upload folder.
    Relative paths count from the working directory, as Gradio reads them.
    Never an upload (`uploads`: blocks.upload_file_set): Gradio also lists an upload among the copies of
    the component whose event it was sent to, even when that event refused it (a PNG named a.txt,
    refused by gr.File's file types, was then served back as text)."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\x00" in path or "://" in path:
        return False
    try:
        real = Path(os.path.realpath(path))
        if not real.is_file():
            return False
        root = outputs.resolve()
        if real.is_relative_to(root):
            # the app's own folders there (.index: the History database, .quarantine) are not images
            return not any(part.startswith(".") for part in real.relative_to(root).parts)
        from gradio.utils import get_upload_folder

        if not real.is_relative_to(Path(get_upload_folder()).resolve()):
            return False
    except (OSError, ValueError):
        return False
    if path in uploads or str(real) in uploads:
        return False
    return any(path in names or str(real) in names for names in list(created))


def page_file_sets(blocks) -> Iterator:
    """Gradio's records of the files it copied for this page: the Blocks' own sets, and those of the
    component copies Gradio keeps per browser session once an event updates a component; the gallery's
    copies land there, and the Blocks' sets never list them (the gallery image showed broken). Lazy:
    the sessions are walked only when a file is to be checked, not for every event.
    Not the uploads (`blocks.upload_file_set`, one of the Blocks' sets): an upload is accepted only as
    the input it was made for (check_upload_value) and never served back."""
    uploads = getattr(blocks, "upload_file_set", None)
    yield from [names for names in list(blocks.temp_file_sets) if names is not uploads]
    holder = getattr(blocks, "state_holder", None)
    for state in list(getattr(holder, "session_data", {}).values()):
        yield from (b.temp_files for b in list(state.blocks_config.blocks.values()) if getattr(b, "temp_files", None))


def _file_values(value: Any, where: str) -> Iterator[tuple[str, dict]]:
    """Every FileData-shaped dict (one with a "path" or "url" key) in `value`, at any depth, with
    where it is ("data[8][0].image")."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            if "path" in item or "url" in item:
                yield at, item
            stack.extend((v, f"{at}.{k}") for k, v in item.items() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item) if isinstance(v, (dict, list)))


def _url_file(url: str) -> str | None:
    """The path a `/gradio_api/file=<path>` URL names, else None."""
    match = FILE_ROUTE.search(unquote(urlsplit(url).path)) if isinstance(url, str) else None
    return match["path"] if match else None


def check_upload_value(value: Any, where: str, uploads: Iterable[str]) -> str | None:
    """The path of an upload named as an UPLOAD_INPUTS value (a FileData dict whose path, and url if
    any, name one file of `uploads`, inside Gradio's upload folder); None for no file. Refuses (422,
    naming the field) anything else: a generated image, a path of the server's, a traversal."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(where, "must be a file uploaded to this page")
    path, url = value.get("path"), value.get("url")
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\x00" in path:
        raise InvalidRequest(f"{where}.path", f"{_short(path)} is not a file uploaded to this page")
    from gradio.utils import get_upload_folder

    try:
        real = Path(os.path.realpath(path))
        inside = real.is_relative_to(Path(get_upload_folder()).resolve()) and real.is_file()
    except (OSError, ValueError):
        inside = False
    # The exact string Gradio answered from /upload: "../" or a link cannot reach another file.
    if not inside or path not in uploads or str(real) != os.path.abspath(path):
        raise InvalidRequest(f"{where}.path", f"{_short(path)} is not a file uploaded to this page")
    if url is not None and _url_file(url) != path:
        raise InvalidRequest(f"{where}.url", f"{_short(url)} is not the uploaded file's address")
    return path


def check_files(value: Any, where: str, outputs: Path, created: Iterable[Iterable[str]],
                uploads: Collection[str] = ()) -> None:
    """Refuse (422, naming the field) any file an event input names that servable_file refuses."""
    files = list(_file_values(value, where))
    if not files:
        return                          # most events name no file: Gradio's records are not read
    created = list(created)
    for at, item in files:
        path, url = item.get("path"), item.get("url")
        if not servable_file(path, outputs, created, uploads):
            raise InvalidRequest(f"{at}.path", f"{_short(path)} is not an image this server generated")
        if url is not None and not servable_file(_url_file(url), outputs, created, uploads):
            raise InvalidRequest(f"{at}.url", f"{_short(url)} is not an image this server generated")
