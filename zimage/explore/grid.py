"""The X/Y/Z plot: a /generate body and up to three axes become cells (each a validated request),
run through the Backend one after another (explore.in_turn: one model load for all, a Stop keeps
the cells made), and the labelled grid picture (explore.grid_image). No torch, no gradio.

Every cell is checked before the first runs: a bad value is refused naming its axis and value
(`x.values: 'Steps: 80': num_inference_steps must be between 1 and 50, got 80`), a grid over the
limit naming the cell count. A base seed of -1 is drawn once, so the cells differ only by their axes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

from ..errors import InvalidRequest
from ..jobs import Backend, Job
from ..request import GeneratedImage, GenerationRequest, as_int
from .axes import AXIS_NAMES, Axis, apply, parse_axis
from .in_turn import run_in_turn
from .prompting import dynamic_request, random_seed
from .wildcards import Wildcards

log = logging.getLogger(__name__)

GRID_KEYS = ("base",) + AXIS_NAMES


@dataclass(frozen=True)
class Cell:
    index: int
    at: tuple[int, int, int]          # (ix, iy, iz)
    request: GenerationRequest
    values: dict                      # axis name -> the value this cell has
    model: str | None = None          # the model a model axis names (None: the one in use)


class ModelSwitch(Protocol):
    """How a grid with a model axis switches models (web.model_choice.ModelChoice)."""

    def find(self, wanted, field: str): ...            # the listed model, or the InvalidRequest naming `field`
    def current(self): ...                             # the listed model in use (its .name), or None
    def prepare(self, req: GenerationRequest, wanted=None) -> GenerationRequest: ...   # switch first, its defaults
    def switch(self, wanted, field: str = "model"): ...


@dataclass(frozen=True)
class GridPlan:
    axes: tuple[Axis | None, Axis | None, Axis | None]
    cells: tuple[Cell, ...]

    @property
    def counts(self) -> tuple[int, int, int]:
        return tuple(len(a.values) if a else 1 for a in self.axes)

    @property
    def labels(self) -> tuple[list[str], list[str], list[str]]:
        return tuple([a.label(v) for v in a.values] if a else [] for a in self.axes)


@dataclass
class GridRun:
    plan: GridPlan
    done: list[tuple[Cell, GeneratedImage]] = field(default_factory=list)
    stopped: bool = False
    warnings: list[str] = field(default_factory=list)


def _reworded(err: InvalidRequest, where: str, what: str) -> InvalidRequest:
    """The refusal of a cell's field, said of the axis value that made it."""
    return InvalidRequest(where, f"{what}: {err.message}")


def plan_grid(body: Any, wildcards_folder: Path, max_cells: int, max_prompt_chars: int,
              models: ModelSwitch | None = None) -> GridPlan:
    """The checked cells of a /grid body {"base": {...}, "x": {...}, "y": ..., "z": ...}. A model
    axis needs `models` (each name must be a listed model)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("body", "must be a JSON object")
    unknown = sorted(set(body) - set(GRID_KEYS))
    if unknown:
        raise InvalidRequest(unknown[0], f"is not a known field (known: {', '.join(GRID_KEYS)})")
    base = body.get("base")
    if not isinstance(base, Mapping):
        raise InvalidRequest("base", "must be a JSON object (a /generate body)")
    base = dict(base)
    if as_int(base.get("num_images", 1)) != 1:
        raise InvalidRequest("base.num_images", "must be 1: a grid makes one image per cell")
    wildcards = Wildcards(wildcards_folder)

    def request(data: dict) -> GenerationRequest:
        data = {k: v for k, v in data.items() if k != "model"}      # a model axis' value: the switch's, not the request's
        return dynamic_request(data, wildcards_folder, max_prompt_chars, wildcards=wildcards)

    try:
        checked = request(base)
    except InvalidRequest as e:
        raise InvalidRequest(f"base.{e.field}", e.message.removeprefix(e.field + ": ")) from None
    if checked.seed == -1:
        base["seed"] = random_seed()
    axes = tuple(parse_axis(name, body.get(name), max_cells) for name in AXIS_NAMES)
    if axes[0] is None and (axes[1] or axes[2]):
        raise InvalidRequest("x", "is required when y or z is given")
    counts = [len(a.values) if a else 1 for a in axes]
    total = counts[0] * counts[1] * counts[2]
    if total > max_cells:
        raise InvalidRequest("grid", f"has {total} cells ({' x '.join(map(str, counts))}); at most {max_cells} "
                             "(--grid-max-cells)")
    for axis in filter(None, axes):            # each value alone first: a refusal names its axis and value
        if axis.field == "model":
            if models is None:
                raise InvalidRequest(f"{axis.name}.field", "a model axis is not available here")
            for value in axis.values:
                models.find(value, f"{axis.name}.values")
            continue
        for value in axis.values:
            try:
                request(apply(base, axis, value))
            except InvalidRequest as e:
                if e.field.startswith(axis.name + "."):
                    raise
                raise _reworded(e, f"{axis.name}.values", repr(axis.label(value))) from None
    cells = []
    for index, at in enumerate((ix, iy, iz) for iz in range(counts[2]) for iy in range(counts[1])
                               for ix in range(counts[0])):
        data, values = base, {}
        for axis, i in zip(axes, at):
            if axis is not None:
                data, values[axis.name] = apply(data, axis, axis.values[i]), axis.values[i]
        try:
            req = request(data)
        except InvalidRequest as e:
            where = ", ".join(f"{a.name}={a.label(values[a.name])!r}" for a in axes if a)
            raise _reworded(e, "grid", f"the cell {where}") from None
        cells.append(Cell(index, at, req, values, data.get("model")))
    return GridPlan(axes, tuple(cells))


def run_grid(backend: Backend, plan: GridPlan, owner: str | None, user: str | None = None,
             progress: Callable[[int, int, Job], None] | None = None, models: ModelSwitch | None = None) -> GridRun:
    """Make the cells in order; `progress(index, total, job)` while each runs. A Stop ends the run
    with the cells made so far (GridRun.stopped). With a model axis the cells of one model run
    together (one load per model; each switch is a job queued behind the cells before it), and the
    model in use before comes back at the end, as A1111's X/Y/Z plot does."""
    run = GridRun(plan)
    first = {}
    for cell in plan.cells:
        first.setdefault(cell.model, len(first))
    cells = sorted(plan.cells, key=lambda c: first[c.model])          # stable: the grid's order within a model
    switching = models is not None and any(c.model is not None for c in cells)
    before = models.current() if switching else None

    def on_result(i: int, job: Job, result) -> None:
        if result.images:
            run.done.append((cells[i], result.images[0]))
        if result.warning:
            run.warnings.append(result.warning)

    def requests():
        for cell in cells:
            yield models.prepare(cell.request, cell.model) if switching and cell.model is not None else cell.request

    wait = (lambda i, job: progress(i, len(cells), job)) if progress is not None else None
    try:
        run.stopped = run_in_turn(lambda req: backend.submit(req, owner, user), requests(), on_result, wait)
    finally:
        if switching and before is not None:
            models.switch(before.name)              # queued; a no-op when the grid ended on it
    return run


def grid_picture(run: GridRun):
    """The labelled grid of the cells made (a Stop's missing cells blank)."""
    from .grid_image import draw_grid

    images = {cell.at: item.image for cell, item in run.done}
    return draw_grid(images, run.plan.counts, run.plan.labels)


def grid_infotext(run: GridRun) -> str:
    """The grid's parameters: the first cell's, with A1111's X/Y/Z plot keys."""
    if not run.done:
        return ""
    extra = "".join(f", {a.name.upper()} Type: {a.title}, {a.name.upper()} Values: "
                    f"\"{', '.join(a.label(v).split(': ', 1)[-1] for v in a.values)}\""
                    for a in run.plan.axes if a)
    return run.done[0][1].infotext + ", Script: X/Y/Z plot" + extra


def save_grid(run: GridRun, store) -> Path | None:
    """The grid picture saved beside the cells (the outputs folder's normal path), or None when nothing was made."""
    if not run.done:
        return None
    try:
        return store.save(grid_picture(run), run.done[0][1].seed, grid_infotext(run))
    except OSError as e:
        log.warning("the grid picture could not be saved: %s", e)
        run.warnings.append(f"The grid picture could not be saved: {e.strerror or e}")
        return None


def cell_entry(cell: Cell, item: GeneratedImage, store_root: Path) -> dict:
    """A cell as /grid answers it."""
    req = cell.request
    out = {"index": cell.index, "x": cell.at[0], "y": cell.at[1], "z": cell.at[2],
           "values": {k: list(v) if isinstance(v, tuple) else v for k, v in cell.values.items()},
           "seed": item.seed, "prompt": req.prompt, "width": req.width, "height": req.height,
           "num_inference_steps": req.num_inference_steps, "guidance_scale": req.guidance_scale,
           "file": str(item.path) if item.path else None, "parameters": item.infotext}
    if cell.model is not None:
        out["model"] = cell.model
    if item.path is not None:
        try:
            out["url"] = "/outputs/" + item.path.resolve().relative_to(store_root.resolve()).as_posix()
        except ValueError:
            pass
    return out

