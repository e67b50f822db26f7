"""Which model the page and the APIs use: the list a picker shows (store.model_list), the current
one (the backend's `settings.model`, which a switch changes at once, so requests made after it run
on the new model and take its defaults), and the switch itself: `backend.switch_model`, a job queued
behind the running generations (engine/switch.py). No torch.
"""
from __future__ import annotations

import threading

from ..errors import InvalidRequest
from ..jobs import Backend, Job
from ..model_defaults import ModelDefaults, defaults_for, with_model_defaults
from ..request import GenerationRequest
from ..store.model_list import ListedModel, _same, find_model, hash_dir_of, list_models

LIST_SHOWN = 12          # names an error lists


class ModelChoice:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._lock = threading.Lock()
        self._models: list[ListedModel] | None = None
        self._selected = ""              # the last switch's model: the in-process manager takes it when the job runs
        # One switch decided at a time: the page's picker sends its input event twice for one pick
        # (Gradio's dropdown), and the two calls run at once; the second queued a second load or
        # answered "is the model in use" while the first one's load had not run yet.
        self._switching = threading.Lock()
        self._pending: Job | None = None     # the last switch's job

    def models(self, refresh: bool = False) -> list[ListedModel]:
        """The list, read once (headers and small files) and again on `refresh`; big files' hashes
        fill in on later calls as their background hashing ends."""
        s = self.backend.settings
        with self._lock:
            if self._models is None or refresh or any(m.format != "diffusers" and not m.sha256 for m in self._models):
                self._models = list_models(s.model, s.cache_dir, tuple(s.models_from), hash_dir_of(s.outputs_dir))
            return list(self._models)

    def current(self) -> ListedModel | None:
        model = self._selected or self.backend.settings.model
        models = self.models()
        found = next((m for m in models if m.source == model), None) or \
            next((m for m in models if _same(m.source, model)), None)
        if found is None:               # switched to a path the list did not hold: read it again
            models = self.models(refresh=True)
            found = next((m for m in models if _same(m.source, model)), None)
        return found

    def current_defaults(self) -> ModelDefaults:
        m = self.current()
        return defaults_for(m.kind if m is not None else "turbo")

    def find(self, wanted, field: str) -> ListedModel:
        if not isinstance(wanted, str) or not wanted.strip():
            raise InvalidRequest(field, "must be a model's name (GET /sdapi/v1/sd-models lists them)")
        models = self.models()
        found = find_model(models, wanted) or find_model(self.models(refresh=True), wanted)
        if found is None:
            names = ", ".join(m.name for m in models[:LIST_SHOWN])
            raise InvalidRequest(field, f"no model named {wanted[:200]!r} (known: {names})")
        return found

    def switch(self, wanted, field: str = "model") -> Job | None:
        """Queue a switch to the named model; the queued switch's job when it is the model a switch
        is loading now; None when it is the current one already."""
        return self.switch_asked(wanted, field)[0]

    def switch_asked(self, wanted, field: str = "model") -> tuple[Job | None, bool]:
        """switch(), and whether this call queued the switch (False: the model is the current one,
        or the one a switch asked before is loading)."""
        with self._switching:
            target = self.find(wanted, field)
            current = self.current()
            if current is not None and current.source == target.source:
                pending = self._pending
                return (pending if pending is not None and not pending.future.done() else None), False
            switch_model = getattr(self.backend, "switch_model", None)
            if switch_model is None:
                raise InvalidRequest(field, "this backend cannot switch models; start the app with --model instead")
            job = switch_model(target.source, target.name)
            self._selected, self._pending = target.source, job
            return job, True

    def prepare(self, req: GenerationRequest, wanted=None, field: str = "model") -> GenerationRequest:
        """A request's model (switching to it first, when named) and its defaults for the fields it left out."""
        if wanted is not None:
            self.switch(wanted, field)
        m = self.current()
        return with_model_defaults(req, m.kind if m is not None else "turbo")


def model_choice(backend: Backend) -> ModelChoice:
    """The one ModelChoice of this backend (the page and every router share its list)."""
    choice = getattr(backend, "_model_choice", None)
    if choice is None:
        choice = ModelChoice(backend)
        try:
            backend._model_choice = choice
        except AttributeError:
            pass
    return choice
