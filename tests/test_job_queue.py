"""The kept queue's store (zimage/store/job_queue.py): a job and its input images survive a reopen,
the row left `running` is `interrupted` at the next start, ids are never given twice, one bad row
costs one row, a locked file is waited for and never moved, a damaged one is moved aside."""
import sqlite3

import pytest
from PIL import Image

from zimage.errors import QueueBusy
from zimage.request import ControlUnit, GenerationRequest
from zimage.store import sqlite_file
from zimage.store.history import scan_pngs
from zimage.store.job_queue import INTERRUPTED, RUNNING, WAITING, JobQueue


def _edit_request() -> GenerationRequest:
    image = Image.linear_gradient("L").resize((320, 256)).convert("RGB")
    mask = Image.new("L", (320, 256), 0)
    mask.paste(255, (10, 10, 100, 100))
    control = Image.new("RGB", (320, 256), (0, 0, 0))
    control.paste((255, 255, 255), (50, 0, 52, 256))
    unit = ControlUnit(module="none", image=control, digest="d" * 64, model="union", weight=0.7,
                       guidance_start=0.1, guidance_end=0.9)
    return GenerationRequest(prompt="a red door <lora:ink:0.5>", negative_prompt="fog", width=320, height=256,
                             num_inference_steps=3, seed=77, loras=(("ink", 0.5),), control=unit, mode="inpaint",
                             init_image=image, mask=mask, strength=0.6, mask_blur=2, inpainting_fill=0)


def test_a_job_and_its_images_survive_a_reopen_and_never_join_the_outputs_images(tmp_path):
    out = tmp_path / "out"
    req = _edit_request()
    queue = JobQueue(out)
    job_id = queue.add(req, owner="tab-1", user="alice")
    queue.close()

    again = JobQueue(out)
    [kept] = again.open()
    assert (kept.id, kept.state, kept.prompt, kept.owner, kept.user, kept.width, kept.height) == \
        (job_id, WAITING, req.prompt, "tab-1", "alice", 320, 256)
    back = again.request_of(kept)
    assert back == req                                    # every compared field, the LoRAs and the unit
    assert back.init_image.tobytes() == req.init_image.tobytes() and back.init_image.mode == "RGB"
    assert back.mask.tobytes() == req.mask.tobytes() and back.mask.mode == "L"
    assert back.control.image.tobytes() == req.control.image.tobytes() and back.control.digest == "d" * 64
    assert scan_pngs(out) == {}                           # the History tab lists none of them
    assert again.remove(job_id) and again.list() == [] and list((again.files_dir).iterdir()) == []


def test_the_running_row_is_interrupted_at_the_next_start_and_orphan_files_go(tmp_path):
    queue = JobQueue(tmp_path)
    first = queue.add(GenerationRequest(prompt="one"))
    second = queue.add(GenerationRequest(prompt="two"))
    queue.mark(first, RUNNING)
    (queue.files_dir / "deadbeef").mkdir(parents=True)    # a kill between the images and their row
    queue.close()
    states = {job.id: job.state for job in JobQueue(tmp_path).open()}
    assert states == {first: INTERRUPTED, second: WAITING}
    assert not (queue.files_dir / "deadbeef").exists()


def test_an_id_is_never_given_twice(tmp_path):
    queue = JobQueue(tmp_path)
    a = queue.add(GenerationRequest(prompt="a"))
    b = queue.add(GenerationRequest(prompt="b"))
    assert queue.remove(b) and not queue.remove(b)
    c = queue.add(GenerationRequest(prompt="c"))
    assert c > b > a and queue.get(b) is None and queue.get(c).prompt == "c"


def test_one_bad_row_costs_one_row(tmp_path):
    queue = JobQueue(tmp_path)
    good = queue.add(GenerationRequest(prompt="good"))
    bad = queue.add(GenerationRequest(prompt="bad"))
    with sqlite3.connect(queue.file) as db:
        db.execute("UPDATE jobs SET params = '{not json' WHERE id = ?", (bad,))
    assert [job.id for job in queue.list()] == [good]
    assert queue.remove(bad)                              # and it can still be dropped by its id


def test_a_locked_queue_is_busy_not_damaged(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_file, "BUSY_TIMEOUT_S", 0.2)
    queue = JobQueue(tmp_path)
    queue.add(GenerationRequest(prompt="kept"))
    other = sqlite3.connect(queue.file, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        fresh = JobQueue(tmp_path)
        with pytest.raises(QueueBusy):
            fresh.add(GenerationRequest(prompt="while locked"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [job.prompt for job in fresh.list()] == ["kept"]       # nothing moved aside or lost
    assert not list(tmp_path.glob(".index/*.unreadable*"))


def test_a_damaged_queue_file_is_moved_aside_and_the_queue_starts_empty(tmp_path):
    queue = JobQueue(tmp_path)
    queue.file.parent.mkdir(parents=True)
    queue.file.write_bytes(b"this is not a database" * 200)
    assert queue.open() == []
    assert queue.add(GenerationRequest(prompt="after")) >= 1
    assert (queue.file.parent / "queue.sqlite3.unreadable").exists()


def test_a_request_that_left_fields_to_the_models_defaults_is_kept_and_read_back(tmp_path):
    """A body without steps or guidance leaves them to the model (GenerationRequest.defaulted, a
    frozenset): recording it was a TypeError (JSON has no sets), a 500 on every /generate."""
    req = GenerationRequest.from_mapping({"prompt": "a quiet harbour", "width": 256, "height": 256})
    assert req.defaulted                       # steps, guidance and the negative prompt left to the model
    queue = JobQueue(tmp_path / "out")
    job = queue.get(queue.add(req))
    back = queue.request_of(job)
    assert back.defaulted == req.defaulted and back.prompt == req.prompt and back.width == 256


def test_a_hires_request_is_kept_and_read_back(tmp_path):
    """A hires fix (HiresSpec, a dataclass) in a kept job: json.dumps raised on it, a 500."""
    import dataclasses

    from zimage.hires_request import HiresSpec

    req = dataclasses.replace(GenerationRequest(prompt="a lighthouse"), hires=HiresSpec(scale=1.5, steps=2))
    queue = JobQueue(tmp_path / "out")
    back = queue.request_of(queue.get(queue.add(req)))
    assert back.hires == req.hires and back.prompt == "a lighthouse"
