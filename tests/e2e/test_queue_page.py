"""The Queue panel in a real browser: the jobs an earlier run left are listed, Delete of the second
of two removes exactly that one, Run of the other makes its image (issue 30)."""
import pytest
from e2e.test_browser import CHROMIUM, guard_refusals, page  # noqa: F401  (fixtures)

from conftest import wait_for, wait_for_page
from zimage.app import create_backend
from zimage.kept_queue import with_kept_queue
from zimage.request import GenerationRequest
from zimage.store.history import scan_pngs
from zimage.store.job_queue import JobQueue

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not __import__("os").path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}")]
SMALL = {"width": 256, "height": 256, "num_inference_steps": 1}


@pytest.fixture
def kept_ids(settings):
    earlier = JobQueue(settings.outputs_dir)
    ids = [earlier.add(GenerationRequest(prompt=p, seed=s, **SMALL)) for p, s in (("a kept fox", 1), ("a kept owl", 2))]
    earlier.close()
    return ids


@pytest.fixture
def server(start_server, settings, kept_ids):      # the page fixture's server: with the kept queue
    return start_server(settings, manager_factory=lambda s: with_kept_queue(create_backend(s)))


def test_the_queue_panel_deletes_the_second_of_two_and_runs_the_first(page, server, kept_ids):
    first, second = kept_ids
    page.click("#queue-panel button:has-text('Queue')")
    page.wait_for_selector("#queue-slot-1", state="visible")
    assert f"#{first}" in page.inner_text("#queue-slot-0") and "a kept fox" in page.inner_text("#queue-slot-0")
    assert f"#{second}" in page.inner_text("#queue-slot-1") and "a kept owl" in page.inner_text("#queue-slot-1")
    assert "waiting" in page.inner_text("#queue-slot-1")

    page.click("#queue-delete-1")
    wait_for_page(lambda: f"#{second} deleted" in page.inner_text("#queue-note"), 20, message="the deletion reported")
    page.wait_for_selector("#queue-slot-1", state="hidden")
    assert [j.id for j in server.manager.kept_jobs()] == [first] and "a kept fox" in page.inner_text("#queue-slot-0")

    page.click("#queue-run-0")
    wait_for_page(lambda: f"#{first} submitted" in page.inner_text("#queue-note"), 20, message="the run reported")
    wait_for(lambda: server.manager.kept_jobs() == [], 60, message="the job to be made and leave the queue")
    assert len(scan_pngs(server.settings.outputs_dir)) == 1
    page.click("#queue-refresh")
    wait_for_page(lambda: "No kept jobs" in page.inner_text("#queue-note"), 20, message="the empty queue")
    page.wait_for_selector("#queue-slot-0", state="hidden")
