"""app.create_backend: the backend the settings ask for."""
import dataclasses
import sys

import pytest

from zimage.app import create_backend
from zimage.config import ConfigError, Settings
from zimage.engine.manager import PipelineManager


def test_local_is_the_default_backend_a_worker_process(settings):
    from zimage.scale.worker_backend import WorkerBackend

    assert type(create_backend(dataclasses.replace(settings, backend=Settings().backend))) is WorkerBackend


def test_inprocess_backend_is_the_manager_itself(settings):
    import dataclasses

    assert type(create_backend(dataclasses.replace(settings, backend="inprocess"))) is PipelineManager


def test_ray_backend_without_ray_installed_says_what_to_install(settings, monkeypatch):
    import dataclasses

    from zimage.scale.ray_backend import RayBackend

    backend = create_backend(dataclasses.replace(settings, backend="ray"))
    assert isinstance(backend, RayBackend)
    monkeypatch.setitem(sys.modules, "ray", None)          # `import ray` now fails as if not installed
    with pytest.raises(ConfigError, match="requirements-ray.txt"):
        backend.start()


def test_demo_with_ray_sends_the_tiny_model_to_the_replicas():
    backend = create_backend(Settings(demo=True, backend="ray"))
    assert backend.settings.demo and backend.settings.model.endswith("tiny-model")


def test_gradio_user_errors_are_one_log_line_other_errors_keep_their_traceback(caplog, capsys):
    import gradio
    import gradio.queueing

    from zimage.web.server import quiet_gradio_user_errors

    quiet_gradio_user_errors()
    quiet_gradio_user_errors()                    # idempotent: serve() may run twice in one process
    printer = gradio.queueing.traceback
    caplog.set_level("INFO", logger="zimage.web.server")
    try:
        raise gradio.Error("width: must be a multiple of 16, got 264")
    except gradio.Error:
        printer.print_exc()
    assert [r.getMessage() for r in caplog.records] == ["page request refused: width: must be a multiple of 16, got 264"]
    assert "Traceback" not in capsys.readouterr().err
    try:
        raise RuntimeError("a real bug")
    except RuntimeError:
        printer.print_exc()
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a real bug" in err
    assert printer.format_exc is not None          # the rest of the traceback module is still there


def test_the_page_queue_looks_for_work_every_20_ms(server):
    """Gradio's own 1 ms poll kept an idle app at 2.7% of a core (server.QUEUE_POLL_S); the page's
    events through this queue are the browser and Gradio-client tests'."""
    from zimage.web.server import QUEUE_POLL_S

    from zimage.web.server import mounted_gradio_app

    queue = mounted_gradio_app(server.app).get_blocks()._queue
    assert queue.sleep_when_free == queue.progress_update_sleep_when_free == QUEUE_POLL_S == 0.02


@pytest.mark.parametrize("mcp", [False, True])
def test_one_gradio_app_is_built_a_start_and_the_queue_serves_from_it(settings, monkeypatch, mcp):
    """Gradio built an App at each Blocks' `with` end and at queue() (four a start, five with --mcp),
    all thrown away by mount_gradio_app's, and the queue went on using the one queue() built: two session
    stores for one page. Now one App is built, and the queue's App is the mounted one."""
    import gradio.blocks
    from gradio.routes import App

    from zimage.web.server import create_app

    built, real = [], App.create_app
    monkeypatch.setattr(App, "create_app", staticmethod(lambda *a, **kw: built.append(real(*a, **kw)) or built[-1]))
    manager = create_backend(dataclasses.replace(settings, mcp=mcp)).start()
    try:
        app = create_app(dataclasses.replace(settings, mcp=mcp), manager)
    finally:
        manager.close()
    mounted = [r.app for r in app.routes if isinstance(getattr(r, "app", None), App)]
    assert len(built) == 1 and mounted == built
    demo = mounted[0].get_blocks()
    assert demo.app is mounted[0] and demo._queue.blocks is demo
    assert gradio.blocks.App is App                   # Gradio's own name is back for any other Blocks
    assert bool(getattr(demo, "mcp_server_obj", None)) is mcp
