"""What an upload to Gradio's /upload must be, checked before Gradio writes it: which event inputs
may take one (UPLOAD_INPUTS), its size, and one PNG/JPEG/WebP file by its first bytes. The image
checks themselves (header pixels, frames, a truncated file) are store/pnginfo's."""
from __future__ import annotations

import functools
import re
from pathlib import Path

from ..errors import BodyTooLarge, InvalidRequest, UnsupportedMediaType, ZImageError
from ..store.pnginfo import named, opened

# (event api_name, input position): the only inputs whose value may be a file uploaded to /upload.
UPLOAD_INPUTS: frozenset[tuple[str, int]] = frozenset({("png_info", 0), ("controlnet_image", 0)})
# (event api_name, input position) of the gr.ImageEditor inputs (the Edit tab's image): Gradio 6's
# editor sends its background, layers and composite through component_server's accept_blobs (kept
# in the component's memory, popped when the event reads them), and its event value is {"id": ...}.
BLOB_INPUTS: frozenset[tuple[str, int]] = frozenset({("edit", 0)})
# The file_types of the UPLOAD_INPUTS (gr.File, ui_pnginfo and ui_controlnet): checked by name too.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# How the page names each of those images in a refusal (zimage/i18n.py has their Chinese): a toast
# that said "data[0].background" named nothing the user can see. API callers get the field too.
UPLOAD_SUBJECTS = {"png_info": "The PNG info image", "controlnet_image": "The ControlNet image",
                   "edit": "The Edit image"}
UPLOADED = "The uploaded image"     # /upload's: the file is not tied to an input yet
BLOB_TYPES = ("background", "layer", "composite")
MAX_BLOB_ID_CHARS = 64              # the page sends a 13-character id
# An editor whose user may add layers sends one accept_blobs call per layer, its `index` the layer's
# place; Gradio extends the stored list to that index (index=100000000 held 762 MB per request), so
# the index is bounded by the layers the editor can have (ours: one, its layer tool is off).
MAX_ADDED_LAYERS = 8
# A multipart body carries the file plus its part headers and boundaries: a few hundred bytes.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
DEFAULT_MAX_UPLOAD_PIXELS = 50_000_000


def editor_layers(editor) -> int:
    """How many layers `editor` (a gr.ImageEditor) can send: its named layers (Gradio makes one when
    none is named), or MAX_ADDED_LAYERS when its user may add more."""
    options = editor.layers
    named = len(getattr(options, "layers", None) or ()) or 1
    if getattr(options, "allow_additional_layers", False) and not getattr(options, "disabled", False):
        return max(named, MAX_ADDED_LAYERS)
    return named


def check_blob_index(fields, layers: int) -> None:
    """accept_blobs's `index`: the layer's place (0 to layers-1) for a layer, "null" (what the page
    sends) or empty for the background and the composite. Gradio reads it with int() and no check:
    missing or not a number was a 500, a large one a list of that length kept in memory."""
    index = fields.get("index")
    if index is None:
        raise InvalidRequest("index", "is required (the layer's number, or null)")
    if fields.get("type") != "layer":
        if index not in ("", "null"):
            raise InvalidRequest("index", f"must be null for the {fields.get('type')}, got {index[:20]!r}")
        return
    if not (index.isascii() and index.isdigit() and int(index) < layers):
        raise InvalidRequest("index", f"must be a layer number 0-{layers - 1}, got {index[:20]!r}")


def upload_name_refused(path: str, where: str) -> None:
    """An upload sent as an UPLOAD_INPUTS value must be named as an image (IMAGE_SUFFIXES, those inputs'
    file_types): gr.File refuses another name only after Gradio has listed the file as that input's
    own, and the refusal was a traceback. Deleted, and a 422 naming the field."""
    if not Path(path).name.lower().endswith(IMAGE_SUFFIXES) or Path(path).name.lower() in IMAGE_SUFFIXES:
        discard(path)
        raise InvalidRequest(where, f"must be a file named .png, .jpg, .jpeg or .webp, got {Path(path).name[:60]!r}")


def upload_too_large(cap: int) -> BodyTooLarge:
    return BodyTooLarge(f"The uploaded image is larger than {cap / 2**20:g} MB.", "Upload a smaller image.", field="files")


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


async def check_upload_form(scope, body: bytes, max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                            max_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS) -> None:
    """One image file in the form field Gradio's clients use, checked in full as every upload is
    (store/pnginfo.opened, then one decode under the caps): anything else is refused before Gradio
    writes a byte of it, so a broken image dropped on the page is refused when it is dropped, not
    at the event that reads it. The refusal names "the uploaded image" (the page's words; `field`
    stays "files" for API callers). The parts are parsed by Starlette (in memory up to 1 MB, then a
    file in the system's temporary folder, closed here)."""
    import anyio

    ctype = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    if ctype.split(";")[0].strip().lower() != "multipart/form-data" or "boundary=" not in ctype:
        raise UnsupportedMediaType(f"Content-Type must be multipart/form-data with a boundary, got {ctype or 'none'}.")

    form = await buffered_form(scope, body, "files", max_files=2, max_fields=4)
    try:
        parts = [(key, value) for key, value in form.multi_items()]
        files = [value for key, value in parts if key == "files" and hasattr(value, "read")]
        if len(files) != 1 or len(parts) != 1:
            raise InvalidRequest("files", f"must be one image file, got {len(files)} file(s) in {len(parts)} part(s)")
        raw = await files[0].read(max_bytes + 1)
        try:
            await anyio.to_thread.run_sync(lambda: _decodes(raw, max_bytes, max_pixels))
        except ZImageError as e:
            raise named(e, UPLOADED) from None
    finally:
        await form.close()


async def check_blob_form(scope, body: bytes, blob_components: dict[int, int], max_bytes: int,
                          max_pixels: int) -> dict[str, str]:
    """An ImageEditor's accept_blobs call: one image file for an editor of BLOB_INPUTS (`blob_components`:
    its id -> its layers, editor_layers), of this session, a layer index it can have, checked as every
    upload is (store/images: bytes, PNG/JPEG/WebP by content, header pixels before decoding, one frame,
    a full decode under the caps). Returns the form's text fields."""
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
        check_blob_index(fields, blob_components[int(component)])
        if len(files) != 1:
            raise InvalidRequest("file", f"must be one image file, got {len(files)}")
        raw = await files[0].read(max_bytes + 1)
        import anyio

        try:
            await anyio.to_thread.run_sync(lambda: load_image(raw, "file", max_bytes, max_pixels))
        except ZImageError as e:
            raise named(e, UPLOAD_SUBJECTS["edit"]) from None
        return fields
    finally:
        await form.close()


def _decodes(raw: bytes, max_bytes: int, max_pixels: int) -> None:
    with opened(raw, max_bytes, max_pixels, "files") as (im, _kind):
        im.load()                   # a truncated file fails here, under the caps opened checked


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


