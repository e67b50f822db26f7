import pytest

from zimage.engine.idle import idle_action
from zimage.state import LoadState as S


@pytest.mark.parametrize("state,gpu,idle,expected", [
    (S.ON_GPU, True, 59, None), (S.ON_GPU, True, 60, "cpu"), (S.OFFLOADED, True, 61, "cpu"),
    (S.ON_CPU, True, 61, None), (S.ON_CPU, True, 120, "none"),       # GPU machine: RAM copy kept until drop
    (S.ON_CPU, False, 60, "none"),                                     # CPU machine: nothing to leave
    (S.UNLOADED, True, 999, None), (S.LOADING, True, 999, None), (S.ERROR, False, 999, None),
])
def test_two_stage_idle_unload(state, gpu, idle, expected):
    assert idle_action(state, gpu, idle, unload_after_s=60, drop_after_s=120) == expected


def test_zero_means_never():
    assert idle_action(S.ON_GPU, True, 10**9, 0, 0) is None
    assert idle_action(S.ON_CPU, False, 10**9, 0, 0) is None
    assert idle_action(S.ON_CPU, True, 10**9, 0, 5) == "none"
