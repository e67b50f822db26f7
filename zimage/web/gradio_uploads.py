"""What an upload to Gradio's /upload must be, checked before Gradio writes it: which event inputs
may take one (UPLOAD_INPUTS), its size, and one PNG/JPEG/WebP file by its first bytes. The image
checks themselves (header pixels, frames, a truncated file) are store/pnginfo's."""
from __future__ import annotations

from pathlib import Path

from ..errors import BodyTooLarge, InvalidRequest, UnsupportedMediaType
from ..store.pnginfo import EMPTY, ImageRefused, NotAnImage, sniff

# (event api_name, input position): the only inputs whose value may be a file uploaded to /upload.
# Issue 20's Edit tab adds its image inputs here.
UPLOAD_INPUTS: frozenset[tuple[str, int]] = frozenset({("png_info", 0), ("controlnet_image", 0)})
# A multipart body carries the file plus its part headers and boundaries: a few hundred bytes.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
DEFAULT_MAX_UPLOAD_PIXELS = 50_000_000


def upload_too_large(cap: int) -> BodyTooLarge:
    return BodyTooLarge(f"The upload is larger than {cap / 2**20:g} MB.", "Upload a smaller image.", field="files")


async def check_upload_form(scope, body: bytes) -> None:
    """One image file in the form field Gradio's clients use, by its first bytes (store/pnginfo.sniff):
    anything else is refused before Gradio writes a byte of it. The parts are parsed by Starlette
    (in memory up to 1 MB, then a file in the system's temporary folder, closed here)."""
    from starlette.requests import Request

    ctype = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    if ctype.split(";")[0].strip().lower() != "multipart/form-data" or "boundary=" not in ctype:
        raise UnsupportedMediaType(f"Content-Type must be multipart/form-data with a boundary, got {ctype or 'none'}.")

    sent = False

    async def receive():            # the buffered body once, then the end
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    try:
        form = await Request(scope, receive).form(max_files=2, max_fields=4)
    except Exception as e:          # python-multipart's and Starlette's parse errors have no common base
        raise InvalidRequest("files", f"is not a well-formed multipart form ({str(e)[:100] or type(e).__name__})") \
            from None
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


def discard(path: str) -> None:
    """Remove a refused upload and the one-file folder Gradio made for it."""
    file = Path(path)
    try:
        file.unlink(missing_ok=True)
        file.parent.rmdir()
    except OSError:
        pass                        # the folder holds another upload, or is gone already


