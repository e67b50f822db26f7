"""Enhance as a job: on the endpoint (--enhancer-url) a thread of its own beside the queue; on the
loaded text encoder a job of the manager's worker (PipelineManager.enhance_prompt decides which)."""
from __future__ import annotations

import threading
from typing import Callable

from ..config import Settings
from ..enhance_request import EnhanceRequest
from ..errors import ZImageError
from ..jobs import ENHANCE, Job


def remote_job(settings: Settings, req: EnhanceRequest, owner: str | None, user: str | None,
               on_done: Callable[[Job], None] = lambda job: None) -> Job:
    """A started Job whose future gets the endpoint's EnhanceResult (or its typed error)."""
    from .enhance_remote import enhance_remote

    job = Job(kind=ENHANCE, fn=lambda j: None, owner=owner)
    job.user = user
    job.future.set_running_or_notify_cancel()

    def run() -> None:
        try:
            job.phase = "generating"
            job.future.set_result(enhance_remote(settings.enhancer_url, settings.enhancer_model, req,
                                                 job.cancel_event, settings.enhancer_timeout_s))
        except ZImageError as e:
            job.future.set_exception(e)
        except BaseException as e:          # a bug: the caller hears of it, the thread ends
            job.future.set_exception(e)
        finally:
            job.phase = "done"
            on_done(job)

    threading.Thread(target=run, name="zimage-enhance", daemon=True).start()
    return job


def run_local(job: Job, req: EnhanceRequest, ensure_loaded: Callable[[Job], object], pipe: Callable[[], object],
              timeout_s: float):
    """The worker's part: the model loaded (as a generation would load it), then the rewrite."""
    from .enhance import enhance_local

    ensure_loaded(job)
    job.phase = "generating"
    return enhance_local(pipe(), req, job.cancel_event, timeout_s)
