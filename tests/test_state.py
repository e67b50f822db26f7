import pytest

from zimage.errors import IllegalTransition
from zimage.state import ALLOWED, LoadState, Status, check_transition

S = LoadState


@pytest.mark.parametrize("src,dst", [
    (S.UNLOADED, S.DOWNLOADING), (S.UNLOADED, S.LOADING), (S.DOWNLOADING, S.LOADING),
    (S.LOADING, S.ON_GPU), (S.LOADING, S.ON_CPU), (S.LOADING, S.OFFLOADED), (S.LOADING, S.ERROR),
    (S.ON_GPU, S.ON_CPU), (S.ON_CPU, S.LOADING), (S.ON_GPU, S.OFFLOADED), (S.OFFLOADED, S.ON_GPU),
    (S.ERROR, S.LOADING), (S.ON_CPU, S.UNLOADED), (S.ERROR, S.UNLOADED),
])
def test_allowed_transitions(src, dst):
    check_transition(src, dst)
    assert Status(state=src).evolve(state=dst).state == dst


@pytest.mark.parametrize("src,dst", [
    (S.UNLOADED, S.ON_GPU), (S.UNLOADED, S.ON_CPU), (S.UNLOADED, S.OFFLOADED),
    (S.DOWNLOADING, S.ON_GPU), (S.ERROR, S.ON_GPU), (S.ON_GPU, S.DOWNLOADING), (S.ON_GPU, S.LOADING),
])
def test_illegal_transitions_raise(src, dst):
    with pytest.raises(IllegalTransition):
        Status(state=src).evolve(state=dst)


def test_every_state_has_rules_and_self_updates_are_allowed():
    assert set(ALLOWED) == set(LoadState)
    for state in LoadState:
        assert Status(state=state).evolve(progress=0.5).progress == 0.5


def test_status_is_immutable_and_health_uses_the_seed_vocabulary():
    status = Status(state=S.ON_GPU)
    with pytest.raises(Exception):
        status.state = S.UNLOADED
    assert status.health == "healthy"
    assert Status(state=S.LOADING).health == "loading"
    assert Status(state=S.DOWNLOADING).health == "loading"
    assert Status().health == "unloaded"
    assert Status(state=S.ERROR).health == "error"
    d = Status(state=S.OFFLOADED, low_vram=True).to_dict()
    assert d["state"] == "offloaded" and d["low_vram"] is True
