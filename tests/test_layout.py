"""The package's architecture, checked on its imports (ast): one dependency direction, no circles.

core (config, errors, state, request, infotext_text, hires_request, jobs, units, i18n, startup) <- store <- engine <- scale <- app <- web <- cli
explore (the X/Y/Z plot, wildcards, batches: pure logic over a Backend) <- web, beside store: core only.
(cli's `serve` starts the web server; nothing in web imports cli).
`web/` never imports torch, diffusers or transformers (it talks to a Backend); `engine/` never
imports gradio, fastapi, starlette, uvicorn or ray; `store/` never imports torch. Every import
counts, the ones inside functions too: a lazy import is how a circle hides.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "zimage"
# What each layer may import: the ones below it; web and cli reach the engine only through the
# Backend that app.create_backend() returns.
ALLOWED = {"core": {"core"}, "store": {"core", "store"}, "engine": {"core", "store", "engine"},
           "scale": {"core", "store", "engine", "scale"}, "app": {"core", "store", "engine", "scale", "app"},
           "explore": {"core", "explore"},
           "web": {"core", "store", "explore", "app", "web"}, "cli": {"core", "store", "explore", "app", "web", "cli"}}
CORE = {"config", "errors", "state", "request", "infotext_text", "hires_request", "jobs", "units", "i18n", "startup",
        "model_defaults", "variety", "prompt_origin", "enhance_request"}
TOP = {"app": "app", "kept_queue": "app", "cli": "cli", "cli_cache": "cli", "__main__": "cli"}
FORBIDDEN = {"web": {"torch", "diffusers", "transformers"},
             "engine": {"gradio", "gradio_client", "fastapi", "starlette", "uvicorn", "ray"},
             "store": {"torch", "diffusers", "transformers"},
             "explore": {"torch", "diffusers", "transformers", "gradio", "gradio_client", "fastapi", "starlette", "ray"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
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
            if node.module is None or node.level and not node.module:
                # `from . import x`: x is a module of that package
                found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return found


def graph() -> dict[str, list[tuple[str, int]]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        out = []
        for target, line in imports_of(path):
            while target not in modules and "." in target and target.startswith("zimage."):
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


def test_every_module_has_a_layer():
    homeless = [m for m in graph() if layer_of(m) is None and m != "zimage" and not m.startswith("zimage.testing")]
    assert homeless == []


def test_no_import_circles():
    edges = {m: {t for t, _ in ts if t.startswith("zimage.") and t != m} for m, ts in graph().items()}
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
    assert circles == [], "\n".join(circles)


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
    (pkg / "store" / "a.py").write_text("from . import b\n")
    (pkg / "store" / "b.py").write_text("def g():\n    from .a import x\n")
    monkeypatch.setattr(layout, "PACKAGE", pkg)
    wrong = [m for m, ts in graph().items() for t, _ in ts if t.split(".")[0] == "torch"]
    assert wrong == ["zimage.web.ui"]
    edges = {m: {t for t, _ in ts if t.startswith("zimage.")} for m, ts in graph().items()}
    assert "zimage.store.b" in edges["zimage.store.a"] and "zimage.store.a" in edges["zimage.store.b"]
