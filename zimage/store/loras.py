"""The LoRA folder: which files are there, which can be used, their trigger words and A1111 hash,
and turning a name from a prompt (`<lora:NAME:w>`) into a path that is always inside the folder.

No torch here: listing reads only the safetensors header (8-byte little-endian length + JSON), and
pickle files (.pt, .ckpt, .bin) are listed as refused without ever being opened, because unpickling
a downloaded file can run any code.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LoraAmbiguous, LoraNameRefused, LoraNotFound, LoraUnreadable
from .lora_names import PICKLE_SUFFIXES, SUFFIX, aliases, check_length, shown

log = logging.getLogger(__name__)

PICKLE_REFUSED = "pickle files can run code; convert it to .safetensors"
# The safetensors library's own limit on the JSON header (SAFETENSORS_MAX_HEADER_SIZE): a file it
# would open must list, one it would refuse is refused here without reading a larger header.
MAX_HEADER_BYTES = 100_000_000
MAX_TRIGGER_WORDS = 12
# Trigger words are a hint shown beside a pick: a kohya file of a 10,000-picture dataset carries
# ~20,000 tags (~0.5 MB of ss_tag_frequency). Reading them is linear and bounded: a longer text is
# not parsed, and counting stops after MAX_TAGS_COUNTED tags. 200,000 tags (4.2 MB) take 0.75 s
# here (a loaded 2-core box; most of it json.loads), against 226 s when the words were
# de-duplicated in a list; and a file is read once per version (describe's `described` cache).
MAX_TAG_FREQUENCY_CHARS = 8_000_000
MAX_TAGS_COUNTED = 100_000
MAX_TRIGGER_PHRASE_CHARS = 10_000
# A header the listing parses: a LoRA's tensor entries are ~0.3 MB for 1,000 tensors, the rest is
# metadata. A longer one (up to MAX_HEADER_BYTES, ~9 s of json.loads here) is listed by name
# without trigger words or metadata, and checked in full when used (engine.lora.read_lora).
MAX_LISTED_HEADER_BYTES = 16_000_000
_BLOCK = 1 << 20


@dataclass(frozen=True)
class LoraFile:
    name: str                       # relative path without the suffix, with "/": what <lora:NAME:w> uses
    path: Path                      # (a taggable alias when the file's own name cannot be written in a tag)
    size_bytes: int
    refused_reason: str = ""        # empty when usable
    trigger_words: tuple[str, ...] = field(default=())
    autov3: str = ""                # A1111 / Civitai "Lora hashes:" value; empty when refused or not hashed
    metadata: dict = field(default_factory=dict, compare=False, repr=False)   # the header's __metadata__
    file_name: str = ""             # the file's path inside the folder, as on disk (with its suffix)

    @property
    def usable(self) -> bool:
        return not self.refused_reason

    def to_dict(self) -> dict:
        return {"name": self.name, "size_bytes": self.size_bytes, "usable": self.usable,
                "refused_reason": self.refused_reason, "trigger_words": list(self.trigger_words),
                "autov3": self.autov3, "file_name": self.file_name}


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
    training tags (`ss_tag_frequency`: {dataset folder: {tag: count}}), without repeats. Linear in
    the metadata and bounded (MAX_TAG_FREQUENCY_CHARS, MAX_TAGS_COUNTED): a huge tag list is read
    up to the bound, never in full."""
    words: list[str] = []
    phrase = metadata.get("modelspec.trigger_phrase") or ""
    if isinstance(phrase, str):
        words += [w.strip() for w in phrase[:MAX_TRIGGER_PHRASE_CHARS].split(",")]
    counts = _tag_counts(metadata.get("ss_tag_frequency"))
    words += heapq.nsmallest(MAX_TRIGGER_WORDS, counts, key=lambda t: (-counts[t], t))
    return tuple(w for w in dict.fromkeys(words) if w)[:MAX_TRIGGER_WORDS]


def _tag_counts(freq_text) -> dict[str, int]:
    if not isinstance(freq_text, str) or not freq_text:
        return {}
    if len(freq_text) > MAX_TAG_FREQUENCY_CHARS:
        log.info("ss_tag_frequency of %d characters not read for trigger words (at most %d)",
                 len(freq_text), MAX_TAG_FREQUENCY_CHARS)
        return {}
    try:
        freq = json.loads(freq_text)
    except (ValueError, RecursionError):
        return {}
    counts: dict[str, int] = {}
    seen = 0
    for tags in freq.values() if isinstance(freq, dict) else ():
        for tag, count in tags.items() if isinstance(tags, dict) else ():
            if seen >= MAX_TAGS_COUNTED:
                return counts
            seen += 1
            if isinstance(count, (int, float)) and count == count and abs(count) < 2 ** 53:
                tag = str(tag).strip()
                counts[tag] = counts.get(tag, 0) + int(count)
    return counts


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


def file_key(path: Path, st: os.stat_result | None = None) -> tuple:
    """One version of a file, the key of the caches: (path, device, inode, size, mtime_ns, ctime_ns).
    Not a content hash: hashing a 300 MB LoRA on every listing would be the slowness the cache is
    for. ctime is the content check: the kernel sets it on every write, rename and replace, and
    utime cannot set it back, so a file replaced with the same size and mtime (cp -p, rsync -t)
    is a new key."""
    st = st if st is not None else os.stat(path)
    return str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass(frozen=True)
class _Header:
    """What a listing keeps of one file version's header (the `described` cache's values)."""
    key: tuple
    header_len: int = 0
    refused_reason: str = ""
    trigger_words: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict, compare=False)


def _read_description(path: Path, key: tuple, size: int) -> _Header:
    with open(path, "rb") as f:
        claimed = int.from_bytes(f.read(8), "little")
    if MAX_LISTED_HEADER_BYTES < claimed <= MAX_HEADER_BYTES and 8 + claimed <= size:
        log.info("LoRA %s: its %d-byte header is not read for the listing", path.name, claimed)
        return _Header(key, claimed)
    try:
        n, header = read_header(path)
        check_complete(path, n, header, size)
    except LoraUnreadable as e:
        return _Header(key, refused_reason=e.message)
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        metadata = {}
    return _Header(key, n, "", trigger_words(metadata), metadata)


def describe(folder: Path, path: Path, hashes: dict | None = None, hash_file: bool = True,
             described: dict | None = None, name: str | None = None) -> LoraFile:
    """One file of the folder, listed as `name` (its name_of by default). `hashes` (optional, the
    caller's to keep) maps file_key to a hash already computed, so a listing hashes a file only
    when it changed; `described` (the same) maps the file's path to its header's reading, so a
    listing reads a header only when the file changed. `hash_file=False` reads the header only
    (autov3 then comes from `hashes` or stays empty): hashing reads the whole file, which a listing
    for the page does not need."""
    folder = Path(folder)
    name = name or name_of(folder, path)
    file_name = path.relative_to(folder).as_posix()
    st = path.stat()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return LoraFile(name, path, st.st_size, PICKLE_REFUSED, file_name=file_name)
    real = path.resolve()
    if not real.is_relative_to(folder.resolve()):
        return LoraFile(name, path, st.st_size, "it is a link to a file outside the LoRA folder", file_name=file_name)
    key = file_key(real, st)
    header = described.get(str(path)) if described is not None else None
    if header is None or header.key != key:
        try:
            header = _read_description(path, key, st.st_size)
        except OSError as e:
            return LoraFile(name, path, st.st_size, f"cannot be read: {e.strerror or type(e).__name__}",
                            file_name=file_name)
        if described is not None:
            described[str(path)] = header
    if header.refused_reason:
        return LoraFile(name, path, st.st_size, header.refused_reason, file_name=file_name)
    digest = hashes.get(key) if hashes is not None else None
    if digest is None and hash_file:
        digest = autov3_hash(path, header.header_len)
        if hashes is not None:
            hashes[key] = digest
    return LoraFile(name, path, st.st_size, "", header.trigger_words, digest or "", header.metadata, file_name)


def walk(folder: Path) -> list[tuple[str, Path]]:
    """(name_of, path) of every LoRA candidate under `folder` (subfolders too), by name. Hidden
    files and folders are skipped; linked folders are not followed. Opens no file."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for fname in files:
            suffix = Path(fname).suffix.lower()
            if not fname.startswith(".") and (suffix == SUFFIX or suffix in PICKLE_SUFFIXES):
                path = Path(root) / fname
                found.append((name_of(folder, path), path))
    return sorted(found, key=lambda e: e[0])


def scan(folder: Path, hashes: dict | None = None, hash_files: bool = True,
         described: dict | None = None) -> list[LoraFile]:
    """Every LoRA candidate under `folder`, sorted by name, each under the name a tag can write
    (lora_names.aliases). `described` forgets the files that are gone."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    entries = walk(folder)
    listed = aliases([n for n, _ in entries])
    found = []
    for rel, path in entries:
        try:
            found.append(describe(folder, path, hashes, hash_files, described, listed[rel]))
        except OSError as e:            # vanished between the walk and the stat, or a broken link
            log.warning("LoRA %s skipped: %s", path, e)
    if described is not None:
        for gone in described.keys() - {str(p) for _, p in entries}:
            described.pop(gone, None)
    return sorted(found, key=lambda f: f.name.lower())


def resolve(folder: Path, name: str) -> Path:
    """The file `<lora:NAME:w>` means, always inside `folder`; typed errors naming the LoRA and
    never a server path. NAME is the listed name (relative path, `/` or `\\` between folders, or
    the alias the listing gives a file whose name a tag cannot hold) with or without `.safetensors`."""
    folder = Path(folder)
    if not isinstance(name, str) or not name.strip():
        raise LoraNameRefused(str(name), "the name is empty")
    if "\x00" in name:
        raise LoraNameRefused(shown(name), "the name holds a NUL character")
    rel = name.strip().replace("\\", "/")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise LoraNameRefused(shown(name), "an absolute path is not a LoRA name")
    parts = rel.split("/")
    if any(p in ("..", ".") for p in parts):
        raise LoraNameRefused(shown(name), "the name leaves the LoRA folder")
    lower = rel.lower()
    if lower.endswith(PICKLE_SUFFIXES):
        raise LoraUnreadable(name, f"LoRA {shown(name)!r} refused: {PICKLE_REFUSED}.")
    if not lower.endswith(SUFFIX):
        rel += SUFFIX
    check_length(name, rel)
    try:
        return _lookup(folder, name, rel)
    except (OSError, RuntimeError) as e:    # a link loop, a folder that cannot be read: its text holds the path
        why = e.strerror if isinstance(e, OSError) and e.strerror else "a link loop or an unreadable folder"
        raise LoraNameRefused(shown(name), f"it cannot be read ({why})") from None


def _lookup(folder: Path, name: str, rel: str) -> Path:
    base = folder.resolve()
    candidate = folder / rel
    real = candidate.resolve()
    if not real.is_relative_to(base):
        raise LoraNameRefused(shown(name), "it links to a file outside the LoRA folder")
    if real.is_file():
        return real
    pickled = [candidate.with_suffix(s) for s in PICKLE_SUFFIXES if candidate.with_suffix(s).is_file()]
    if pickled:
        raise LoraUnreadable(name, f"LoRA {shown(name)!r} is a {pickled[0].suffix} file: {PICKLE_REFUSED}.")
    return _by_listed_name(folder, base, name, rel)


def _by_listed_name(folder: Path, base: Path, name: str, rel: str) -> Path:
    """An alias the listing gave a file whose own name a tag cannot hold; else, as A1111 and
    Civitai write `<lora:NAME:w>` with the file's name alone wherever the user keeps it, a bare
    name that is not at the top finds the one file of that name in a subfolder."""
    entries = walk(folder)
    wanted = rel[: -len(SUFFIX)]
    listed = aliases([n for n, _ in entries])
    found = [path for rel_name, path in entries if listed[rel_name] == wanted and rel_name != wanted]
    if not found and "/" not in rel:
        found = [path for _, path in entries if path.name == rel]
    real = [p.resolve() for p in found]
    real = [p for p in real if p.is_relative_to(base) and p.is_file()]
    if len(real) == 1:
        return real[0]
    if not real:
        raise LoraNotFound(shown(name))
    raise LoraAmbiguous(name, [name_of(base, f) for f in real])


def by_hash(files: list[LoraFile], autov3: str) -> LoraFile | None:
    """The usable file whose A1111 hash is `autov3` (from a picture's `Lora hashes:`), if any."""
    want = autov3.strip().lower()[:12]
    return next((f for f in files if f.usable and want and f.autov3 == want), None)


def a1111_list(folder: Path, hashes: dict | None = None, hash_files: bool = True,
               described: dict | None = None) -> list[dict]:
    """`GET /sdapi/v1/loras`: A1111's {name, alias, path, metadata} for each file (its metadata
    from the safetensors header, {} for a refused file), plus ours: usable, refused_reason,
    trigger_words, autov3 and size_bytes. Refused files are listed with their reason, so a user
    sees why a file they put there is not offered."""
    out = []
    for f in scan(folder, hashes, hash_files, described):
        metadata = f.metadata if f.usable else {}
        out.append({"name": f.name, "alias": f.name, "path": str(f.path), "metadata": metadata, **f.to_dict()})
    return out
