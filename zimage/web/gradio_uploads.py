"""What an upload to Gradio's /upload must be, checked before Gradio writes it: which event inputs
may take one (UPLOAD_INPUTS), its size, and one PNG/JPEG/WebP file by its first bytes. The image
checks themselves (header pixels, frames, a truncated file) are store/pnginfo's."""
from __future__ import annotations

import functools
import re
from pathlib import Path

from ..errors import BodyTooLarge, InvalidRequest, UnsupportedMediaType
from ..store.pnginfo import EMPTY, ImageRefused, NotAnImage, sniff

# (event api_name, input position): the only inputs whose value may be a file uploaded to /upload.
UPLOAD_INPUTS: frozenset[tuple[str, int]] = frozenset({("png_info", 0), ("controlnet_image", 0)})
# (event api_name, input position) of the gr.ImageEditor inputs (the Edit tab's image): Gradio 6's
# editor sends its background, layers and composite through component_server's accept_blobs (kept
# in the component's memory, popped when the event reads them), and its event value is {"id": ...}.
BLOB_INPUTS: frozenset[tuple[str, int]] = frozenset({("edit", 0)})
BLOB_TYPES = ("background", "layer", "composite")
MAX_BLOB_ID_CHARS = 64              # the page sends a 13-character id
# A multipart body carries the file plus its part headers and boundaries: a few hundred bytes.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
DEFAULT_MAX_UPLOAD_PIXELS = 50_000_000


def upload_too_large(cap: int) -> BodyTooLarge:
    return BodyTooLarge(f"The upload is larger than {cap / 2**20:g} MB.", "Upload a smaller image.", field="files")


class _NotText(Exception):
    def __init__(self, name: str):
        self.name = name


@functools.cache
def _strict_parser():
    """Starlette's multipart parser, but a text field that is not valid UTF-8 (or its part's
    charset) is refused: Starlette decodes it as latin-1 without a word, and a prompt sent so came
    out garbled (a lone surrogate's bytes as "í\xa0\x80")."""
    from starlette.formparsers import MultiPartParser

    class StrictTextParser(MultiPartParser):
        def on_part_end(self) -> None:
            part = self._current_part
            if part.file is None:
                try:
                    bytes(part.data).decode(self._charset or "utf-8")
                except (UnicodeDecodeError, LookupError):
                    raise _NotText(part.field_name) from None
            super().on_part_end()
    return StrictTextParser


async def buffered_form(scope, body: bytes, field: str, max_files: int, max_fields: int):
    """Starlette's multipart parser over a body already read (and capped; the caller checked that
    it is multipart); a malformed form is an InvalidRequest naming `field`, a text field that is
    not UTF-8 one naming that field. The caller closes the form."""
    from starlette.datastructures import Headers

    async def stream():             # the buffered body once, then the end
        yield body
        yield b""
    parser = _strict_parser()(Headers(scope=scope), stream(), max_files=max_files, max_fields=max_fields)
    try:
        return await parser.parse()
    except _NotText as e:
        raise InvalidRequest(e.name[:64] or field, "is not valid UTF-8 text") from None
    except Exception as e:          # python-multipart's and Starlette's parse errors have no common base
        raise InvalidRequest(field, f"is not a well-formed multipart form ({str(e)[:100] or type(e).__name__})") \
            from None


async def check_upload_form(scope, body: bytes) -> None:
    """One image file in the form field Gradio's clients use, by its first bytes (store/pnginfo.sniff):
    anything else is refused before Gradio writes a byte of it. The parts are parsed by Starlette
    (in memory up to 1 MB, then a file in the system's temporary folder, closed here)."""
    ctype = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    if ctype.split(";")[0].strip().lower() != "multipart/form-data" or "boundary=" not in ctype:
        raise UnsupportedMediaType(f"Content-Type must be multipart/form-data with a boundary, got {ctype or 'none'}.")

    form = await buffered_form(scope, body, "files", max_files=2, max_fields=4)
    try:
        parts = [(key, value) for key, value in form.multi_items()]
        files = [value for key, value in parts if key == "files" and hasattr(value, "read")]
        if len(files) != 1 or len(parts) != 1:
            raise InvalidRequest("files", f"must be one image file, got {len(files)} file(s) in {len(parts)} part(s)")
        head = await files[0].read(16)
        if not head:
            raise ImageRefused(EMPTY, field_name="files")
        if sniff(head) is None:
            raise NotAnImage(repr(head[:8])[2:-1], "files")
    finally:
        await form.close()


async def check_blob_form(scope, body: bytes, blob_components: frozenset[int], max_bytes: int,
                          max_pixels: int) -> None:
    """An ImageEditor's accept_blobs call: one image file for an editor of BLOB_INPUTS, of this
    session, checked as every upload is (store/images: bytes, PNG/JPEG/WebP by content, header
    pixels before decoding, one frame, a full decode under the caps)."""
    from ..store.images import load_image

    form = await buffered_form(scope, body, "body", max_files=1, max_fields=8)
    try:
        fields = {k: v for k, v in form.multi_items() if not hasattr(v, "read")}
        files = [v for _, v in form.multi_items() if hasattr(v, "read")]
        component = fields.get("component_id", "")
        if fields.get("fn_name") != "accept_blobs" or not re.fullmatch(r"[0-9]{1,9}", component) \
                or int(component) not in blob_components:      # "²".isdigit() is true; int("²") raises
            raise InvalidRequest("component_id", "is not an image editor of this page")
        session = fields.get("session_hash", "")
        if not 0 < len(session) <= 256:
            raise InvalidRequest("session_hash", "must be a string of 1-256 characters")
        if not 0 < len(fields.get("id", "")) <= MAX_BLOB_ID_CHARS:
            raise InvalidRequest("id", f"must be 1-{MAX_BLOB_ID_CHARS} characters")
        if fields.get("type") not in BLOB_TYPES:
            raise InvalidRequest("type", f"must be one of {', '.join(BLOB_TYPES)}")
        if len(files) != 1:
            raise InvalidRequest("file", f"must be one image file, got {len(files)}")
        raw = await files[0].read(max_bytes + 1)
        import anyio

        await anyio.to_thread.run_sync(lambda: load_image(raw, "file", max_bytes, max_pixels))
    finally:
        await form.close()


def check_blob_value(value, where: str) -> None:
    """An ImageEditor's event value: None, {"id": str} (its blobs, sent before), or the editor's own
    {background, layers, composite} (a picture the page put there: the guard's file check then
    accepts only files this page made)."""
    if value is None:
        return
    keys = {"id", "background", "layers", "composite"}
    if not isinstance(value, dict) or set(value) - keys:
        raise InvalidRequest(where, "must be the image editor's value ({\"id\": ...} or background/layers/composite)")
    ident = value.get("id")
    if ident is not None and not (isinstance(ident, str) and 0 < len(ident) <= MAX_BLOB_ID_CHARS):
        raise InvalidRequest(f"{where}.id", f"must be 1-{MAX_BLOB_ID_CHARS} characters")


def discard(path: str) -> None:
    """Remove a refused upload and the one-file folder Gradio made for it."""
    file = Path(path)
    try:
        file.unlink(missing_ok=True)
        file.parent.rmdir()
    except OSError:
        pass                        # the folder holds another upload, or is gone already


