"""explore/in_turn.py on the real manager and the tiny model: a run of many jobs (Generate forever,
Batch count) ends at its caller's Stop also when no job of it is left in the backend's queue, the
instant the backend's own cancel cannot see (the page's Stop found nothing to cancel and Generate
forever went on)."""
import itertools
import threading

import pytest

from zimage.engine.manager import PipelineManager
from zimage.explore.in_turn import AHEAD, run_in_turn
from zimage.request import GenerationRequest

SMALL = {"prompt": "a fox", "width": 256, "height": 256, "num_inference_steps": 1}


@pytest.fixture
def manager(settings):
    m = PipelineManager(settings).start()
    m.ensure_ready(60)
    yield m
    m.close()


def forever():
    for seed in itertools.count(1):
        yield GenerationRequest.from_mapping({**SMALL, "seed": seed})


def test_a_stop_between_two_jobs_ends_the_run_with_nothing_left_to_cancel(manager):
    stop = threading.Event()
    submitted, results = [], []

    def submit(req):
        submitted.append(manager.submit(req, owner="me"))
        return submitted[-1]

    def wait(i, job):
        if i == 2:
            # every job submitted so far has ended: the backend's cancel finds nothing of this run
            for j in submitted:
                j.future.result(60)
            assert manager.cancel(owner="me") == 0
            stop.set()

    assert run_in_turn(submit, forever(), lambda i, job, r: results.append(r), wait, stop) is True
    # every job that finished gave its result, the one queued behind the third too; nothing submitted after
    assert len(submitted) == 3 + AHEAD and len(results) == len(submitted)
    assert manager.status().queue_length == 0


def test_a_stop_while_a_job_is_being_submitted_cancels_that_job(manager):
    """The page sets the run's stop, then calls the backend's cancel: a job the run hands to the
    backend after that cancel looked is the run's own to cancel."""
    from zimage.errors import Cancelled

    stop = threading.Event()
    submitted, results = [], []

    def submit(req):
        job = manager.submit(req, owner="me")
        submitted.append(job)
        if len(submitted) == 3:
            stop.set()                    # the Stop arrived while this job was on its way in
        return job

    assert run_in_turn(submit, forever(), lambda i, job, r: results.append(r), None, stop) is True
    assert len(submitted) == 3 and submitted[2].cancelled
    with pytest.raises(Cancelled):
        submitted[2].future.result(60)
    assert len(results) <= 2 and manager.status().queue_length == 0
