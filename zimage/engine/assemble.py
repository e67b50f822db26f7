"""The end of every load: the components read (loader.py from a folder, single_file.py from single
files) made into the ZImagePipeline and moved to its device, with the load's progress and start-up
marks. Its own module so that both loaders share it without importing each other."""
from __future__ import annotations

from typing import Callable

from .. import startup
from ..state import LoadStage

PIPELINE_CLASS = "ZImagePipeline"
LoadProgress = Callable[[LoadStage, int, int, str], None]   # stage, bytes_done, bytes_total, component


def assemble_pipeline(components: dict, total: int, device: str, on_progress: LoadProgress | None):
    """The pipeline of the read `components` (`total`: their bytes, all read), on `device`."""
    startup.mark(startup.READ)
    if on_progress:
        on_progress(LoadStage.READ, total, total, "")
        on_progress(LoadStage.BUILD, total, total, PIPELINE_CLASS)
    import diffusers

    from .placement import TorchPlacement

    pipe = getattr(diffusers, PIPELINE_CLASS)(**components)
    pipe.set_progress_bar_config(disable=True)
    startup.mark(startup.BUILT)
    if device != "cpu":   # components read on the CPU (the plain path, single files) still sit in RAM
        TorchPlacement.move_modules(pipe, device, on_progress=on_progress and (
            lambda d, t, n: on_progress(LoadStage.MOVE, d, t, n)))
    startup.mark(startup.ON_DEVICE)
    return pipe
