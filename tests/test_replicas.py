"""Aggregating replica statuses into the one Status the page and /health read."""
from zimage.scale.replicas import ReplicaStatus, aggregate
from zimage.state import LoadStage, LoadState, Status


def rep(rid, state, alive=True, **status):
    return ReplicaStatus(replica_id=rid, status=Status(state=state, **status), alive=alive)


def test_ready_when_any_live_replica_is_ready_and_queues_add_up():
    s = aggregate([rep("a", LoadState.ON_GPU, device="cuda:0", queue_length=2),
                   rep("b", LoadState.LOADING, stage=LoadStage.READ, progress=0.5, queue_length=1)], "m")
    assert s.state == LoadState.ON_GPU and s.health == "healthy" and s.device == "cuda:0"
    assert s.queue_length == 3 and s.model == "m" and len(s.replicas) == 2
    assert [r["phase"] for r in s.to_dict()["replicas"]] == ["ready", "loading"]


def test_loading_progress_is_the_mean_of_the_loading_replicas():
    s = aggregate([rep("a", LoadState.LOADING, progress=0.2), rep("b", LoadState.LOADING, progress=0.6)], "m")
    assert s.state == LoadState.LOADING and abs(s.progress - 0.4) < 1e-9 and s.health == "loading"


def test_error_only_when_every_live_replica_failed():
    one = aggregate([rep("a", LoadState.ERROR, message="boom", hint="fix"), rep("b", LoadState.UNLOADED)], "m")
    assert one.state == LoadState.UNLOADED and one.message == ""
    both = aggregate([rep("a", LoadState.ERROR, message="boom", hint="fix"),
                      rep("b", LoadState.ERROR, message="boom", hint="fix")], "m")
    assert both.state == LoadState.ERROR and both.message == "boom" and both.hint == "fix"


def test_lost_replicas_are_shown_but_do_not_count_as_ready():
    s = aggregate([rep("a", LoadState.ON_GPU, alive=False, queue_length=4), rep("b", LoadState.LOADING)], "m")
    assert s.state == LoadState.LOADING and s.queue_length == 0
    assert "stopped answering" in s.message and [r.phase for r in s.replicas] == ["lost", "loading"]
    assert "starting" in aggregate([], "m").message and aggregate([], "m").state == LoadState.UNLOADED


def test_last_image_time_comes_from_the_most_recent_image():
    a = ReplicaStatus("a", status=Status(state=LoadState.ON_GPU, last_image_s=2.0), last_image_at=10.0)
    b = ReplicaStatus("b", status=Status(state=LoadState.ON_GPU, last_image_s=3.0), last_image_at=20.0)
    assert aggregate([a, b], "m").last_image_s == 3.0
    assert aggregate([a, b], "m", note="Ray Serve: 2 running").note == "Ray Serve: 2 running"
