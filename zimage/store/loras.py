"""The LoRA folder: which files are there, which can be used, their trigger words and A1111 hash,
and turning a name from a prompt (`<lora:NAME:w>`) into a path that is always inside the folder.

No torch here: listing reads only the safetensors header (8-byte little-endian length + JSON), and
pickle files (.pt, .ckpt, .bin) are listed as refused without ever being opened, because unpickling
a downloaded file can run any code.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LoraAmbiguous, LoraNameRefused, LoraNotFound, LoraUnreadable

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pt", ".ckpt", ".bin", ".pth")
PICKLE_REFUSED = "pickle files can run code; convert it to .safetensors"
# The safetensors library's own limit on the JSON header (SAFETENSORS_MAX_HEADER_SIZE): a file it
# would open must list, one it would refuse is refused here without reading a larger header.
MAX_HEADER_BYTES = 100_000_000
MAX_TRIGGER_WORDS = 12
_BLOCK = 1 << 20


@dataclass(frozen=True)
class LoraFile:
    name: str                       # relative path without the suffix, with "/": what <lora:NAME:w> uses
    path: Path
    size_bytes: int
    refused_reason: str = ""        # empty when usable
    trigger_words: tuple[str, ...] = field(default=())
    autov3: str = ""                # A1111 / Civitai "Lora hashes:" value; empty when refused or not hashed
    metadata: dict = field(default_factory=dict, compare=False, repr=False)   # the header's __metadata__

    @property
    def usable(self) -> bool:
        return not self.refused_reason

    def to_dict(self) -> dict:
        return {"name": self.name, "size_bytes": self.size_bytes, "usable": self.usable,
                "refused_reason": self.refused_reason, "trigger_words": list(self.trigger_words),
                "autov3": self.autov3}


def read_header(path: Path) -> tuple[int, dict]:
    """(header length n, parsed JSON header); raises LoraUnreadable naming the file. The tensor
    data starts at byte 8 + n."""
    name = Path(path).name
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise LoraUnreadable(name, f"{name} is not a safetensors file (only {len(head)} bytes).")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES:
            raise LoraUnreadable(name, f"{name} is not a safetensors file (its header claims {n} bytes).")
        raw = f.read(n)
    if len(raw) < n:
        raise LoraUnreadable(name, f"{name} is truncated (its header is cut short).",
                             "Download the file again.")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise LoraUnreadable(name, f"{name} is not a safetensors file (its header is not JSON).") from None
    if not isinstance(header, dict):
        raise LoraUnreadable(name, f"{name} is not a safetensors file (its header is not an object).")
    return n, header


def check_complete(path: Path, n: int, header: dict, size: int) -> None:
    """A download that stopped keeps an intact header and loses the end of the data: compare the
    header's last data offset with the file's size."""
    name = Path(path).name
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise LoraUnreadable(name, f"{name} is not a safetensors file (tensor {key!r} has no offsets).")
        end = max(end, offsets[1])
    if 8 + n + end > size:
        raise LoraUnreadable(name, f"{name} is truncated: it has {size} bytes, its header needs {8 + n + end}.",
                             "Download the file again.")


def trigger_words(metadata: dict) -> tuple[str, ...]:
    """ModelSpec's `modelspec.trigger_phrase` (comma-separated) first, then kohya's most frequent
    training tags (`ss_tag_frequency`: {dataset folder: {tag: count}}), without repeats."""
    words: list[str] = []
    phrase = metadata.get("modelspec.trigger_phrase") or ""
    if isinstance(phrase, str):
        words += [w.strip() for w in phrase.split(",")]
    freq_text = metadata.get("ss_tag_frequency")
    if isinstance(freq_text, str) and freq_text:
        try:
            freq = json.loads(freq_text)
        except ValueError:
            freq = {}
        counts: dict[str, int] = {}
        if isinstance(freq, dict):
            for tags in freq.values():
                if isinstance(tags, dict):
                    for tag, count in tags.items():
                        if isinstance(count, (int, float)):
                            counts[str(tag).strip()] = counts.get(str(tag).strip(), 0) + int(count)
        words += sorted(counts, key=lambda t: (-counts[t], t))
    out: list[str] = []
    for w in words:
        if w and w not in out:
            out.append(w)
    return tuple(out[:MAX_TRIGGER_WORDS])


def autov3_hash(path: Path, header_len: int | None = None) -> str:
    """A1111's `addnet_hash_safetensors` cut to 12 hex characters (its `shorthash`, what Civitai
    and A1111 write in `Lora hashes:`): sha256 of the bytes after the header, so editing the
    metadata keeps the hash."""
    if header_len is None:
        header_len, _ = read_header(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        f.seek(8 + header_len)
        for chunk in iter(lambda: f.read(_BLOCK), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def name_of(folder: Path, path: Path) -> str:
    rel = path.relative_to(folder)
    return rel.with_suffix("").as_posix()


def describe(folder: Path, path: Path, hashes: dict | None = None, hash_file: bool = True) -> LoraFile:
    """One file of the folder. `hashes` (optional, the caller's to keep) maps (path, size, mtime_ns)
    to a hash already computed, so a listing hashes a file only when it changed. `hash_file=False`
    reads the header only (autov3 then comes from `hashes` or stays empty): hashing reads the whole
    file, which a listing for the page does not need."""
    folder = Path(folder)
    name = name_of(folder, path)
    st = path.stat()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return LoraFile(name, path, st.st_size, PICKLE_REFUSED)
    real = path.resolve()
    if not real.is_relative_to(folder.resolve()):
        return LoraFile(name, path, st.st_size, "it is a link to a file outside the LoRA folder")
    try:
        n, header = read_header(path)
        check_complete(path, n, header, st.st_size)
    except LoraUnreadable as e:
        return LoraFile(name, path, st.st_size, e.message)
    except OSError as e:
        return LoraFile(name, path, st.st_size, f"cannot be read: {e.strerror or e}")
    metadata = header.get("__metadata__") or {}
    key = (str(real), st.st_size, st.st_mtime_ns)
    digest = hashes.get(key) if hashes is not None else None
    if digest is None and hash_file:
        digest = autov3_hash(path, n)
        if hashes is not None:
            hashes[key] = digest
    if not isinstance(metadata, dict):
        metadata = {}
    return LoraFile(name, path, st.st_size, "", trigger_words(metadata), digest or "", metadata)


def scan(folder: Path, hashes: dict | None = None, hash_files: bool = True) -> list[LoraFile]:
    """Every LoRA candidate under `folder` (subfolders too), sorted by name. Hidden files and
    folders are skipped; linked folders are not followed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fname in files:
            if fname.startswith("."):
                continue
            suffix = Path(fname).suffix.lower()
            if suffix != SUFFIX and suffix not in PICKLE_SUFFIXES:
                continue
            path = Path(root) / fname
            try:
                found.append(describe(folder, path, hashes, hash_files))
            except OSError as e:            # vanished between the walk and the stat, or a broken link
                log.warning("LoRA %s skipped: %s", path, e)
    return sorted(found, key=lambda f: f.name.lower())


def resolve(folder: Path, name: str) -> Path:
    """The file `<lora:NAME:w>` means, always inside `folder`; typed errors naming the LoRA.
    NAME is the listed name (relative path, `/` or `\\` between folders) with or without `.safetensors`."""
    folder = Path(folder)
    if not isinstance(name, str) or not name.strip():
        raise LoraNameRefused(str(name), "the name is empty")
    if "\x00" in name:
        raise LoraNameRefused(name, "the name holds a NUL character")
    rel = name.strip().replace("\\", "/")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise LoraNameRefused(name, "an absolute path is not a LoRA name")
    parts = rel.split("/")
    if any(p in ("..", ".") for p in parts):
        raise LoraNameRefused(name, "the name leaves the LoRA folder")
    lower = rel.lower()
    if lower.endswith(PICKLE_SUFFIXES):
        raise LoraUnreadable(name, f"LoRA {name!r} refused: {PICKLE_REFUSED}.")
    if not lower.endswith(SUFFIX):
        rel += SUFFIX
    base = folder.resolve()
    candidate = folder / rel
    real = candidate.resolve()
    if not real.is_relative_to(base):
        raise LoraNameRefused(name, "it links to a file outside the LoRA folder")
    if not real.is_file():
        pickled = [candidate.with_suffix(s) for s in PICKLE_SUFFIXES if candidate.with_suffix(s).is_file()]
        if pickled:
            raise LoraUnreadable(name, f"LoRA {name!r} is a {pickled[0].suffix} file: {PICKLE_REFUSED}.")
        if "/" not in rel:
            return _by_file_name(folder, base, name, rel)
        raise LoraNotFound(name, str(folder))
    return real


def _by_file_name(folder: Path, base: Path, name: str, file_name: str) -> Path:
    """A1111 and Civitai write `<lora:NAME:w>` with the file's name alone, wherever the user keeps
    it: a bare name that is not at the top finds the one file of that name in a subfolder."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if file_name in files:
            real = (Path(root) / file_name).resolve()
            if real.is_relative_to(base) and real.is_file():
                found.append(real)
    if len(found) == 1:
        return found[0]
    if not found:
        raise LoraNotFound(name, str(folder))
    names = [name_of(base, f) for f in found]
    raise LoraAmbiguous(name, names)


def by_hash(files: list[LoraFile], autov3: str) -> LoraFile | None:
    """The usable file whose A1111 hash is `autov3` (from a picture's `Lora hashes:`), if any."""
    want = autov3.strip().lower()[:12]
    return next((f for f in files if f.usable and want and f.autov3 == want), None)


def a1111_list(folder: Path, hashes: dict | None = None, hash_files: bool = True) -> list[dict]:
    """`GET /sdapi/v1/loras`: A1111's {name, alias, path, metadata} for each file (its metadata
    from the safetensors header, {} for a refused file), plus ours: usable, refused_reason,
    trigger_words, autov3 and size_bytes. Refused files are listed with their reason, so a user
    sees why a file they put there is not offered."""
    out = []
    for f in scan(folder, hashes, hash_files):
        metadata = f.metadata if f.usable else {}
        out.append({"name": f.name, "alias": f.name, "path": str(f.path), "metadata": metadata, **f.to_dict()})
    return out
