"""tests/scheduling.py: the units the suite is spread in over xdist's workers, and their order."""
import scheduling

BROWSER = ["tests/e2e/test_a_page.py::test_1", "tests/e2e/test_a_page.py::test_2", "tests/e2e/test_b_page.py::test_1",
           "tests/e2e/test_c_page.py::test_1"]
SHARED = ["tests/test_aot.py::test_1", "tests/test_aot.py::test_2"]      # a module-scoped built model
RAY = ["tests/test_ray_backend.py::test_1", "tests/test_ray_server.py::test_1"]     # each starts a cluster
PLAIN = ["tests/test_config.py::test_1", "tests/test_config.py::test_2"]


def test_shared_fixture_modules_stay_whole_browser_tests_go_in_one_share_a_worker_others_alone(monkeypatch):
    monkeypatch.setattr(scheduling, "measured_seconds", lambda: {
        "tests/e2e/test_a_page.py": 100.0, "tests/e2e/test_b_page.py": 60.0, "tests/e2e/test_c_page.py": 50.0,
        "tests/test_aot.py": 40.0, "tests/test_config.py": 2.0})
    unit_of, seconds = scheduling.units(BROWSER + SHARED + PLAIN, workers=2)
    assert unit_of[SHARED[0]] == unit_of[SHARED[1]] == "tests/test_aot.py" and seconds[unit_of[SHARED[0]]] == 40
    assert unit_of[PLAIN[0]] == PLAIN[0] and unit_of[PLAIN[1]] == PLAIN[1] and seconds[PLAIN[0]] == 1
    # two shares of about equal seconds: the longest module alone, the next two together
    assert unit_of[BROWSER[0]] == unit_of[BROWSER[1]] != unit_of[BROWSER[2]] == unit_of[BROWSER[3]]
    assert sorted(seconds[unit_of[n]] for n in (BROWSER[0], BROWSER[2])) == [100, 110]
    # the same units whatever order the tests come in (the controller sees the workers' sorted order)
    assert scheduling.units(list(reversed(BROWSER + SHARED + PLAIN)), workers=2) == (unit_of, seconds)


def test_the_modules_that_start_a_ray_cluster_run_one_after_the_other(monkeypatch):
    # Ray's `auto` joins a cluster another module started: both in one unit, never side by side.
    monkeypatch.setattr(scheduling, "measured_seconds", lambda: {
        "tests/test_ray_backend.py": 80.0, "tests/test_ray_server.py": 30.0})
    unit_of, seconds = scheduling.units(RAY + PLAIN, workers=3)
    assert unit_of[RAY[0]] == unit_of[RAY[1]] == scheduling.RAY_UNIT and seconds[scheduling.RAY_UNIT] == 110
    assert unit_of[PLAIN[0]] == PLAIN[0]


def test_a_module_not_measured_counts_its_tests(monkeypatch):
    monkeypatch.setattr(scheduling, "measured_seconds", lambda: {})
    _, seconds = scheduling.units(PLAIN, workers=3)
    assert seconds == {PLAIN[0]: scheduling.DEFAULT_TEST_SECONDS, PLAIN[1]: scheduling.DEFAULT_TEST_SECONDS}


def test_the_module_scope_is_read_from_the_source():
    assert scheduling.shares_a_fixture("tests/test_ray_backend.py")
    assert not scheduling.shares_a_fixture("tests/test_config.py")
    assert scheduling.starts_ray("tests/test_ray_server.py") and scheduling.starts_ray("tests/test_ray_backend.py")
    assert not scheduling.starts_ray("tests/test_ray_board.py") and not scheduling.starts_ray("tests/test_aot.py")
