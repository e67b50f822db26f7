"""The replica board without Ray: commands reach every replica, outcomes wait for the live ones."""
from zimage.errors import ModelUnavailable
from zimage.scale.ray_board import ReplicaBoard
from zimage.scale.replicas import LOST_AFTER_S, ReplicaStatus
from zimage.state import LoadState, Status


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def report(rid, state=LoadState.UNLOADED):
    return ReplicaStatus(replica_id=rid, status=Status(state=state))


def test_a_posted_command_reaches_every_replica_once():
    board = ReplicaBoard(clock=Clock())
    seq_a, _ = board.join(report("a"))
    seq_b, _ = board.join(report("b"))
    seq = board.post("unload", "cpu")
    assert [c.name for c in board.sync(report("a"), seq_a, {})] == ["unload"]
    assert board.sync(report("b"), seq_b, {})[0].args == ("cpu",)
    assert board.sync(report("a"), seq, {}) == []          # already taken


def test_outcome_completes_when_every_live_replica_answered():
    clock = Clock()
    board = ReplicaBoard(clock=clock)
    board.join(report("a"))
    board.join(report("b"))
    seq = board.post("preload")
    board.sync(report("a", LoadState.ON_CPU), seq, {seq: (True, "ok-a")})
    outcome = board.snapshot((seq,)).outcomes[0]
    assert not outcome.complete and outcome.results == {"a": (True, "ok-a")}
    err = ModelUnavailable("not found", "check --model")
    board.sync(report("b", LoadState.ERROR), seq, {seq: (False, err)})
    outcome = board.snapshot((seq,)).outcomes[0]
    assert outcome.complete and outcome.results["b"] == (False, err)


def test_a_silent_replica_is_lost_and_no_longer_awaited_then_forgotten():
    clock = Clock()
    board = ReplicaBoard(clock=clock)
    board.join(report("a"))
    board.join(report("b"))
    seq = board.post("preload")
    clock.now += LOST_AFTER_S / 2
    board.sync(report("a", LoadState.ON_CPU), seq, {seq: (True, None)})
    clock.now += LOST_AFTER_S / 2 + 0.1          # b said nothing for longer than LOST_AFTER_S
    snap = board.snapshot((seq,))
    alive = {r.replica_id: r.alive for r in snap.replicas}
    assert alive == {"a": True, "b": False} and snap.outcomes[0].complete
    assert [r.phase for r in snap.replicas if r.replica_id == "b"] == ["lost"]
    for _ in range(40):                          # a keeps reporting, b stays silent
        clock.now += 1
        board.sync(report("a", LoadState.ON_CPU), seq, {})
    assert [r.replica_id for r in board.snapshot().replicas] == ["a"]


def test_replicas_that_join_later_follow_the_wanted_state_not_old_commands():
    board = ReplicaBoard(clock=Clock())
    assert board.join(report("a")) == (0, False)
    seq = board.post("preload")
    assert board.join(report("new")) == (seq, True)        # loads at once, takes no old command
    assert board.sync(report("new"), seq, {}) == []
    assert board.snapshot((seq,)).outcomes[0].results == {}
    board.post("unload", "none")
    assert board.join(report("newer"))[1] is False


def test_unknown_commands_are_refused():
    import pytest

    with pytest.raises(ValueError):
        ReplicaBoard().post("rm -rf")
