"""web/gradio_stubs.py: gradio imported through the app skips its type-stub rewrite, and works."""
import subprocess
import sys

from conftest import ROOT

PROBE = """
import sys, time
import zimage.web
started = time.process_time()
import gradio as gr, gradio.component_meta as meta
took = time.process_time() - started
with gr.Blocks() as demo:
    box = gr.Textbox(elem_id="box")
    gr.Button("Go").click(lambda s: s.upper(), box, box)
assert demo.config and demo.fns, "the page's blocks and events are made"
print(meta.create_or_modify_pyi.__name__, any(type(f).__name__ == "_SkipStubRewrite" for f in sys.meta_path), round(took, 2))
"""


def run(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_gradio_imported_by_the_app_skips_the_stub_rewrite_and_its_components_work():
    name, finder_left, seconds = run(PROBE)
    assert name == "skipped" and finder_left == "False"       # replaced, and the finder stepped aside
    print(f"import gradio: {seconds} CPU-s")


def test_gradio_imported_alone_keeps_its_own_and_installing_late_changes_nothing():
    assert run("import gradio.component_meta as m; print(m.create_or_modify_pyi.__name__)") == ["create_or_modify_pyi"]
    late = ("import sys, gradio.component_meta as m; from zimage.web.gradio_stubs import install; install(); "
            "print(m.create_or_modify_pyi.__name__, len([f for f in sys.meta_path if 'Skip' in type(f).__name__]))")
    assert run(late) == ["create_or_modify_pyi", "0"]
