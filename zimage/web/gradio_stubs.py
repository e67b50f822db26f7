"""Gradio without its type-stub rewrite at import: each of its component classes, as it is defined,
reads and parses its own source file and rewrites the `.pyi` stub beside it in site-packages (for
editors' type hints; `gradio.component_meta.create_or_modify_pyi`, no setting turns it off). Nothing
at run time reads those stubs. Skipped, `import gradio` took 1.41 CPU-s, not 2.34 (medians of 5
fresh processes, `python -m bench.gradio_start_bench`, 2-core machine, 2026-12-07): about a second
of every start of the page process, and of each test process. Installed by zimage/web/__init__.py, before any module of the page imports gradio."""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading

MODULE = "gradio.component_meta"
_lock = threading.Lock()


class _SkipStubRewrite(importlib.abc.MetaPathFinder):
    """Finds MODULE once (then steps aside) and, once it has run, replaces its stub writer."""

    def find_spec(self, fullname, path, target=None):
        if fullname != MODULE:
            return None
        with _lock:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            if hasattr(module, "create_or_modify_pyi"):
                module.create_or_modify_pyi = skipped
        spec.loader.exec_module = exec_module
        return spec


def skipped(*_args, **_kwargs) -> None:
    """In place of gradio's create_or_modify_pyi."""


def install() -> None:
    """Before gradio is imported: a no-op if it already is (its classes are made) or if installed."""
    with _lock:
        if MODULE in sys.modules or any(isinstance(f, _SkipStubRewrite) for f in sys.meta_path):
            return
        sys.meta_path.insert(0, _SkipStubRewrite())
