"""Terminal commands for the model cache: download, list, verify, repair, clear, clear-derived.

Exit codes scripts can use: 0 ok; 1 problems found (verify) or refused (clear); 2 bad usage or model
not in the cache; 3 network or hub error; 4 not enough disk space; 130 cancelled (Ctrl-C).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .config import DEFAULT_MODEL
from .errors import ModelUnavailable, NotAModelId, ZImageError
from .store.cache import CachedModel, UnsafeDelete, delete_cached, derived_caches, modelscope_cache_base, scan_cache
from .units import human_bytes

OK, PROBLEMS, USAGE, NETWORK, DISK, CANCELLED = 0, 1, 2, 3, 4, 130


def _error_code(e: ZImageError) -> int:
    from .store.hub import DiskFull

    if isinstance(e, DiskFull):
        return DISK
    if isinstance(e, NotAModelId):
        return USAGE
    if isinstance(e, ModelUnavailable):
        return NETWORK
    return PROBLEMS


def _say_error(e: ZImageError) -> None:
    print(f"error: {e.message}", file=sys.stderr)
    if e.hint:
        print(f"  {e.hint}", file=sys.stderr)


def _confirm(what: str) -> bool:
    """Ask before deleting `what`; without a terminal to ask on, refuse (scripts pass --yes)."""
    if not sys.stdin.isatty():
        print(f"refusing to delete {what} without --yes", file=sys.stderr)
        return False
    return input(f"Delete {what}? [y/N] ").strip().lower() == "y"


def _find(base: Path, model_id: str) -> list[CachedModel]:
    return [m for m in scan_cache(base) if m.model_id == model_id]


def cmd_download(model_id: str, cache_dir: str) -> int:
    from .store.hub import resolve_model_dir

    try:
        path = resolve_model_dir(model_id, cache_dir)
    except KeyboardInterrupt:
        print("cancelled: run the same command again to resume", file=sys.stderr)
        return CANCELLED
    except ZImageError as e:
        _say_error(e)
        return _error_code(e)
    print(path)
    return OK


def cmd_list(cache_dir: str, as_json: bool) -> int:
    base = modelscope_cache_base(cache_dir)
    models = scan_cache(base)
    if as_json:
        print(json.dumps([{"model": m.model_id, "folder": str(m.folder), "layout": m.layout,
                           "size_bytes": m.size_bytes, "status": m.status,
                           "problems": [f"{p.path}: {p.reason}" for p in m.problems]} for m in models], indent=1))
        return OK
    print(f"cache: {base}")
    if not models:
        print("  (no models)")
    for m in models:
        print(f"  {m.model_id:40s} {human_bytes(m.size_bytes):>10s}  {m.status:10s} {m.folder}")
    derived = derived_caches(base, models)
    if derived:
        print("made by the app (safe to delete with `cache clear-derived`, made again when needed):")
    for what, path, size in derived:
        print(f"  {what:40s} {human_bytes(size):>10s}  {path}")
    return OK


def cmd_clear_derived(cache_dir: str, yes: bool) -> int:
    """Delete the int8 and bf16 copies and the compile cache (never a model's own files)."""
    import shutil

    base = modelscope_cache_base(cache_dir)
    derived = derived_caches(base, scan_cache(base))
    if not derived:
        print("nothing to delete")
        return OK
    total = sum(size for _, _, size in derived)
    if not yes and not _confirm(f"{len(derived)} folders ({human_bytes(total)})"):
        return PROBLEMS
    for what, path, size in derived:
        shutil.rmtree(path)
        print(f"deleted {what}: {path} ({human_bytes(size)})")
    return OK


def cmd_verify(model_id: str | None, cache_dir: str) -> int:
    from .store.hub import verify

    base = modelscope_cache_base(cache_dir)
    ids = [model_id] if model_id else sorted({m.model_id for m in scan_cache(base)})
    if not ids:
        print(f"no models in {base}", file=sys.stderr)
        return USAGE
    worst = OK
    for mid in ids:
        try:
            report = verify(mid, cache_dir)
        except ZImageError as e:       # e.g. not a model id (NotAModelId): said, and the next model checked
            _say_error(e)
            worst = max(worst, _error_code(e))
            continue
        if report.folder is None:
            print(f"{mid}: not in the cache {base}", file=sys.stderr)
            worst = max(worst, USAGE)
            continue
        if report.problems:
            print(f"{mid}: {len(report.problems)} problem(s) in {report.folder}")
            for p in report.problems:
                print(f"  {p.path}: {p.reason}")
            print(f"  fix with: python -m zimage cache repair {mid}")
            worst = max(worst, PROBLEMS) if worst != USAGE else worst
        else:
            print(f"{mid}: ok ({report.checked} files, {report.how})")
    return worst


def cmd_repair(model_id: str, cache_dir: str) -> int:
    from .store.hub import repair

    try:
        fixed = repair(model_id, cache_dir)
    except ZImageError as e:
        _say_error(e)
        return _error_code(e)
    print("nothing to repair" if not fixed else "re-downloaded: " + ", ".join(fixed))
    return OK


def cmd_clear(model_id: str, cache_dir: str, yes: bool) -> int:
    base = modelscope_cache_base(cache_dir)
    found = _find(base, model_id)
    if not found:
        print(f"{model_id} is not in the cache {base}", file=sys.stderr)
        return USAGE
    for m in found:
        if not yes and not _confirm(f"{m.root} ({human_bytes(m.size_bytes)})"):
            return PROBLEMS
        try:
            freed = delete_cached(base, m)
        except UnsafeDelete as e:
            print(f"refused: {e}", file=sys.stderr)
            return PROBLEMS
        print(f"deleted {m.root} ({human_bytes(freed)} freed)")
    from .store.manifest import manifest_path

    manifest_path(base, model_id).unlink(missing_ok=True)
    return OK


def add_parsers(sub) -> None:
    dl = sub.add_parser("download", help="download a model into the ModelScope cache (resumes)")
    dl.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    dl.add_argument("--cache-dir", default="")
    cache = sub.add_parser("cache", help="list, verify, repair or clear cached models")
    csub = cache.add_subparsers(dest="cache_command", required=True)
    ls = csub.add_parser("list")
    ls.add_argument("--json", action="store_true")
    ver = csub.add_parser("verify", help="check sizes, headers and sha256 (exit 1 on problems)")
    ver.add_argument("model", nargs="?")
    rep = csub.add_parser("repair", help="re-download only damaged or missing files")
    rep.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    clr = csub.add_parser("clear", help="delete one model from the cache")
    clr.add_argument("model")
    clr.add_argument("--yes", "-y", action="store_true")
    der = csub.add_parser("clear-derived", help="delete the int8 and bf16 copies and compiled kernels the app made")
    der.add_argument("--yes", "-y", action="store_true")
    for p in (ls, ver, rep, clr, der):
        p.add_argument("--cache-dir", default="")


def run(args) -> int:
    if args.command == "download":
        return cmd_download(args.model, args.cache_dir)
    c = args.cache_command
    if c == "list":
        return cmd_list(args.cache_dir, args.json)
    if c == "verify":
        return cmd_verify(args.model, args.cache_dir)
    if c == "repair":
        return cmd_repair(args.model, args.cache_dir)
    if c == "clear-derived":
        return cmd_clear_derived(args.cache_dir, args.yes)
    return cmd_clear(args.model, args.cache_dir, args.yes)
