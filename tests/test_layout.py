"""The package's architecture, checked on its imports (ast): one dependency direction, no circles.

core (config(_flags, _load), errors, state, request, infotext(_text), lora_tags, hires_request, jobs, units,
      i18n(_features), startup) <- store <- engine <- scale <- app <- web <- cli
explore (the X/Y/Z plot, wildcards, batches: pure logic over a Backend) <- web, beside store: core only.
(cli's `serve` starts the web server; nothing in web imports cli).
Inside `web/`, two rooms: `web/page/` (the Gradio page) and `web/http/` (the JSON routes and the A1111,
OpenAI and MCP fronts). A room imports itself, the shared `web/` modules and the layers below, never the
other room; a shared module imports neither room, except the two that put the app together (server,
launch). `web/` never imports torch, diffusers or transformers (it talks to a Backend); `engine/` never
imports gradio, fastapi, starlette, uvicorn or ray; `store/` never imports torch. Every import
counts, the ones inside functions too: a lazy import is how a circle hides. The benchmarks (bench/)
have no layers but no circles either (a probe shares code through bench/probe_common.py, never by
importing another probe). No module of either is over MAX_LINES (STYLE.md: one job per module).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "zimage"
BENCH = PACKAGE.parent / "bench"
MAX_LINES = 450
# Over MAX_LINES today and to be split next: a module leaves this set when it is split, and no other
# may join it (empty now: page_text, the last, is split by part of the page).
TOO_LONG_FOR_NOW: set[str] = set()
# What each layer may import: the ones below it; web and cli reach the engine only through the
# Backend that app.create_backend() returns.
ALLOWED = {"core": {"core"}, "store": {"core", "store"}, "engine": {"core", "store", "engine"},
           "scale": {"core", "store", "engine", "scale"}, "app": {"core", "store", "engine", "scale", "app"},
           "explore": {"core", "explore"},
           "web": {"core", "store", "explore", "app", "web"}, "cli": {"core", "store", "explore", "app", "web", "cli"}}
CORE = {"config", "config_flags", "config_load", "errors", "state", "request", "infotext", "infotext_text", "lora_tags",
        "hires_request", "jobs", "units", "i18n", "startup", "model_defaults", "variety", "prompt_origin",
        "enhance_request", "i18n_features"}
# The rooms of web/: a module in web/page/ or web/http/ belongs to that room; one directly in web/ is
# shared by both. Only ASSEMBLY (the app built from both rooms) reaches into either room from outside.
ROOMS = ("page", "http")
ASSEMBLY = {"zimage.web.server", "zimage.web.launch"}
TOP = {"app": "app", "kept_queue": "app", "cli": "cli", "cli_cache": "cli", "__main__": "cli"}
FORBIDDEN = {"web": {"torch", "diffusers", "transformers"},
             "engine": {"gradio", "gradio_client", "fastapi", "starlette", "uvicorn", "ray"},
             "store": {"torch", "diffusers", "transformers"},
             "explore": {"torch", "diffusers", "transformers", "gradio", "gradio_client", "fastapi", "starlette", "ray"}}


def module_name(path: Path) -> str:
    top = path.parent                  # the outermost package holding the file: zimage or bench
    while (top.parent / "__init__.py").exists():
        top = top.parent
    parts = path.relative_to(top.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """'zimage.engine.loader' -> 'engine'; None for zimage.testing and the package itself."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    head = parts[1]
    if head in ("store", "engine", "scale", "web", "explore"):
        return head
    if head in CORE:
        return "core"
    return TOP.get(head)


def room_of(module: str) -> str | None:
    """'zimage.web.page.ui' -> 'page', 'zimage.web.http.api' -> 'http', 'zimage.web.server' -> 'shared';
    None outside web/."""
    parts = module.split(".")
    if parts[:2] != ["zimage", "web"] or len(parts) < 3:
        return None
    return parts[2] if parts[2] in ROOMS else "shared"


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in the file, the lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from zimage.engine import speed` imports the module zimage.engine.speed: each name is
            # tried as a module first (graph() shortens `loader.load_pipeline` back to `loader`).
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return found


def graph(roots: tuple[Path, ...] | None = None) -> dict[str, list[tuple[str, int]]]:
    modules = {module_name(p): p for root in (roots or (PACKAGE,)) for p in root.rglob("*.py")}
    ours = {name.split(".")[0] + "." for name in modules}
    edges = {}
    for name, path in modules.items():
        out = []
        for target, line in imports_of(path):
            while target not in modules and "." in target and target.startswith(tuple(ours)):
                target = target.rsplit(".", 1)[0]        # from zimage.engine.loader import X -> the module
            out.append((target, line))
        edges[name] = out
    return edges


def test_every_import_follows_the_layers():
    wrong = []
    for module, targets in graph().items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target, line in targets:
            top = target.split(".")[0]
            if top in FORBIDDEN.get(mine, ()):
                wrong.append(f"{module}:{line} imports {target} ({mine}/ never imports {top})")
            if top != "zimage" or target == "zimage":
                continue
            theirs = layer_of(target)
            if theirs is None:
                if target.startswith("zimage.testing") and mine not in ("engine", "cli", "app"):
                    wrong.append(f"{module}:{line} imports {target} (only engine, app and cli use zimage.testing)")
                continue
            if theirs not in ALLOWED[mine]:
                wrong.append(f"{module}:{line} imports {target} ({mine} -> {theirs})")
    assert wrong == [], "\n".join(wrong)


def room_crossings(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Each import from one room of web/ into the other, or from a shared module (ASSEMBLY aside) into a room."""
    wrong = []
    for module, targets in edges.items():
        mine = room_of(module)
        if mine is None or module in ASSEMBLY:
            continue
        for target, line in targets:
            theirs = room_of(target)
            if theirs in ROOMS and theirs != mine and target != f"zimage.web.{theirs}":
                wrong.append(f"{module}:{line} imports {target} ({mine} -> {theirs})")
    return wrong


def test_the_page_and_the_http_routes_keep_to_their_rooms():
    edges = graph()
    assert room_crossings(edges) == [], "\n".join(room_crossings(edges))
    # Every module of web/ is found, one level down too, and each room holds modules.
    files = sorted(PACKAGE.joinpath("web").rglob("*.py"))
    found = [m for m in edges if m == "zimage.web" or m.startswith("zimage.web.")]
    assert len(found) == len(files)
    rooms = {room_of(m) for m in found if m != "zimage.web"}
    assert rooms == {"shared", *ROOMS}
    assert all(f"zimage.web.page.{n}" in edges for n in ("ui", "page_text")) and "zimage.web.http.api" in edges


def test_every_module_has_a_layer():
    homeless = [m for m in graph() if layer_of(m) is None and m != "zimage" and not m.startswith("zimage.testing")]
    assert homeless == []


def circles_in(edges: dict[str, set[str]]) -> list[str]:
    """Each import circle found by a depth-first walk, as 'a -> b -> a'."""
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return circles


def test_no_import_circles():
    modules = graph((PACKAGE, BENCH))
    edges = {m: {t for t, _ in ts if t in modules and t != m} for m, ts in modules.items()}
    circles = circles_in(edges)
    assert circles == [], "\n".join(circles)


def line_counts(roots: tuple[Path, ...]) -> dict[str, int]:
    """Lines per module, by its path from the repository root ('zimage/web/page/ui.py')."""
    return {p.relative_to(root.parent).as_posix(): len(p.read_text().splitlines())
            for root in roots for p in root.rglob("*.py")}


def over_the_limit(lengths: dict[str, int], allowed: set[str]) -> list[str]:
    return sorted(f"{path}: {n} lines" for path, n in lengths.items() if n > MAX_LINES and path not in allowed)


def test_no_module_is_over_the_line_limit():
    """A module over MAX_LINES is usually two jobs (STYLE.md): split it along the job."""
    lengths = line_counts((PACKAGE, BENCH))
    too_long = over_the_limit(lengths, TOO_LONG_FOR_NOW)
    assert too_long == [], "split these along their jobs:\n" + "\n".join(too_long)
    split = sorted(p for p in TOO_LONG_FOR_NOW if lengths.get(p, 0) <= MAX_LINES)
    assert split == [], f"now within {MAX_LINES} lines (or gone): take them off TOO_LONG_FOR_NOW: {split}"


def test_the_checks_see_a_wrong_edge_and_a_circle(tmp_path, monkeypatch):
    """The walker itself: a web module importing torch and two modules importing each other are found."""
    import sys

    layout = sys.modules[__name__]
    pkg = tmp_path / "zimage"
    (pkg / "web").mkdir(parents=True)
    (pkg / "store").mkdir()
    for init in (pkg / "__init__.py", pkg / "web" / "__init__.py", pkg / "store" / "__init__.py"):
        init.write_text("")
    (pkg / "web" / "ui.py").write_text("def f():\n    import torch\n")
    for room in ("page", "http"):
        (pkg / "web" / room).mkdir()
        (pkg / "web" / room / "__init__.py").write_text("")
    (pkg / "web" / "page" / "panel.py").write_text("from ..http.api import x\nfrom .. import guard\n")
    (pkg / "web" / "http" / "api.py").write_text("def f():\n    from ..page import panel\n")
    (pkg / "web" / "guard.py").write_text("from .http import api\n")
    (pkg / "web" / "server.py").write_text("from .page import panel\nfrom .http import api\n")
    (pkg / "store" / "a.py").write_text("from . import b\n")
    (pkg / "store" / "b.py").write_text("def g():\n    from .a import x\n")
    monkeypatch.setattr(layout, "PACKAGE", pkg)
    wrong = [m for m, ts in graph().items() for t, _ in ts if t.split(".")[0] == "torch"]
    assert wrong == ["zimage.web.ui"]
    assert sorted(room_crossings(graph())) == [
        "zimage.web.guard:1 imports zimage.web.http.api (shared -> http)",
        "zimage.web.http.api:2 imports zimage.web.page.panel (http -> page)",
        "zimage.web.page.panel:1 imports zimage.web.http.api (page -> http)"]
    edges = {m: {t for t, _ in ts if t.startswith("zimage.")} for m, ts in graph().items()}
    assert "zimage.store.b" in edges["zimage.store.a"] and "zimage.store.a" in edges["zimage.store.b"]


def test_the_checks_see_a_bench_circle_and_a_long_module(tmp_path):
    """bench/ is walked too: two probes importing each other (one lazily, by `from bench import`)
    are a circle; a module one line over the limit is named, the allowed one and one at it are not."""
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "__init__.py").write_text("")
    (bench / "a_probe.py").write_text("from bench.b_probe import helper\n")
    (bench / "b_probe.py").write_text("def helper():\n    from bench import a_probe\n")
    (bench / "runner.py").write_text("import bench.a_probe\n")
    modules = graph((bench,))
    edges = {m: {t for t, _ in ts if t in modules and t != m} for m, ts in modules.items()}
    assert circles_in(edges) == ["bench.a_probe -> bench.b_probe -> bench.a_probe"]
    (bench / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (bench / "allowed.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (bench / "at_limit.py").write_text("x = 1\n" * MAX_LINES)
    assert over_the_limit(line_counts((bench,)), {"bench/allowed.py"}) == [f"bench/long.py: {MAX_LINES + 1} lines"]
