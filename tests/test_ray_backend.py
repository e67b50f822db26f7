"""--backend ray on a real Ray cluster of two nodes on this machine (Ray's own cluster_utils), with
two CPU replicas of the tiny model, one on each node. One cluster for the whole module: starting Ray
takes seconds on a 2-core machine."""
import base64
import dataclasses
import io
import os
import signal
import threading
import time

import pytest
import requests
from PIL import Image

from zimage.config import Settings
from zimage.errors import Cancelled, ModelUnavailable, ReplicaFailed
from zimage.request import GenerationRequest
from zimage.state import LoadState

from conftest import RunningServer, wait_for

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-ray.txt)")
pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install -r requirements-ray.txt)")
pytestmark = pytest.mark.ray

SMALL = {"prompt": "a red fox", "width": 256, "height": 256, "num_inference_steps": 2}
SLOW = {"prompt": "a slow fox", "width": 1024, "height": 1024, "num_inference_steps": 50}   # seconds on one CPU


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    c.add_node(num_cpus=2)
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def backend(cluster, tiny_model_dir, tmp_path_factory):
    from zimage.scale.ray_backend import RayBackend

    root = tmp_path_factory.mktemp("ray")
    settings = Settings(model=str(tiny_model_dir), outputs_dir=str(root / "outputs"), cache_dir=str(root / "cache"),
                        idle_unload_s=0, idle_drop_s=0, backend="ray", ray_address=cluster.address, ray_replicas=2,
                        ray_gpus_per_replica=0)
    # One CPU replica per node, as num_gpus=1 does on GPU nodes.
    b = RayBackend(settings, deployment_options={"max_replicas_per_node": 1}).start()
    wait_for(lambda: len(live(b)) == 2, 60, message="two replicas reporting")
    yield b
    b.close()


def live(backend):
    return [r for r in backend.status().replicas if r.alive]


def req(**kw):
    return GenerationRequest.from_mapping(dict(SMALL, **kw))


def test_deployment_options_follow_the_settings():
    from zimage.scale.ray_cluster import replica_deployment_options

    fixed = replica_deployment_options(Settings(backend="ray", ray_replicas=3), gpus=1.0)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_gpus": 1.0} and fixed["max_ongoing_requests"] == 2
    scaled = replica_deployment_options(Settings(backend="ray", ray_min_replicas=1, ray_max_replicas=4), gpus=0.0,
                                        extra={"max_replicas_per_node": 1})
    assert "num_replicas" not in scaled and scaled["max_replicas_per_node"] == 1
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 1}


def test_two_replicas_on_two_nodes_share_the_requests(backend):
    replicas = live(backend)
    assert len({r.node_id for r in replicas}) == 2 and all(r.pid for r in replicas)
    jobs = [backend.submit(req(seed=i)) for i in range(8)]
    results = [j.future.result(120) for j in jobs]
    assert {j.replica_id for j in jobs} == {r.replica_id for r in replicas}      # both served some
    for result, seed in zip(results, range(8)):
        item = result.images[0]
        assert item.seed == seed and item.image.size == (256, 256)
        # Saved on this side, in the app's outputs folder, byte for byte as the replica encoded it.
        assert item.path.is_relative_to(backend._store.root)
        saved = Image.open(item.path)
        assert saved.size == (256, 256) and f"Seed: {seed}" in saved.text["parameters"]
    assert backend.status().last_image_s is not None


def test_preload_and_unload_reach_every_replica(backend):
    backend.unload("none").future.result(60)
    assert [r.status.state for r in live(backend)] == [LoadState.UNLOADED] * 2
    assert backend.status().state == LoadState.UNLOADED
    loads_before = backend.load_count
    backend.preload().future.result(120)
    assert [r.status.state for r in live(backend)] == [LoadState.ON_CPU] * 2
    assert backend.status().health == "healthy" and backend.load_count == loads_before + 2


def test_a_replica_error_arrives_typed(backend):
    with pytest.raises(ModelUnavailable, match="local folder"):
        backend.repair().future.result(60)          # every replica refuses: the model is a local folder


def test_verify_reaches_every_replica_and_delete_checks_the_confirmed_id(backend):
    from zimage.errors import ConfirmationMismatch

    with pytest.raises(ModelUnavailable, match="local folder"):
        backend.verify().future.result(60)          # a replica command now, refused there: a local folder
    with pytest.raises(ConfirmationMismatch):
        backend.delete_cached("a/model", confirmed_id="b/model")


def test_stop_cancels_a_running_remote_generation(backend):
    backend.ensure_ready(120)
    job = backend.submit(GenerationRequest.from_mapping(dict(SLOW, seed=5)), owner="tab-1")
    wait_for(lambda: job.phase == "generating" and job.step >= 1, 60, message="remote generation running")
    assert backend.cancel(owner="someone-else") == 0
    assert backend.cancel(owner="tab-1") == 1
    with pytest.raises(Cancelled):
        job.future.result(60)
    wait_for(lambda: backend.status().queue_length == 0, 30, message="the replica dropped the job")
    assert len(live(backend)) == 2


class Borrowed:
    """The module's backend for one server: the server must not start or close it."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def start(self):
        return self

    def close(self, timeout=10.0):
        pass


def test_http_routes_and_the_status_panel_go_through_the_replicas(backend):
    from zimage.state import MemoryInfo
    from zimage.web.page.ui import render_status

    srv = RunningServer(dataclasses.replace(backend.settings), manager_factory=lambda s: Borrowed(backend))
    try:
        r = requests.post(srv.url + "/generate", json=dict(SMALL, seed=11), timeout=120)
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).size == (256, 256)
        assert os.path.exists(r.json()["files"][0])
        health = requests.get(srv.url + "/health", timeout=10).json()
        assert health["status"] == "healthy" and len(health["replicas"]) == 2
        assert {rep["phase"] for rep in health["replicas"]} == {"ready"}
        r = requests.post(srv.url + "/sdapi/v1/txt2img", json={"prompt": "fox", "width": 256, "height": 256,
                                                                "steps": 2}, timeout=120)
        assert r.status_code == 200 and len(r.json()["images"]) == 1
        panel = render_status(backend.status(), MemoryInfo(1, 2, 3))
        assert panel.count('class="zi-replica"') == 2 and "Ray Serve replicas: 2 running" in panel
    finally:
        srv.stop()


def test_a_replica_killed_mid_request_is_retried_and_replaced(backend):
    """SIGKILL the replica running a generation: the request is retried once on the other replica (or
    answered ReplicaFailed, never lost); Ray starts a new replica, which the page sees loading."""
    backend.ensure_ready(120)
    before = {r.replica_id for r in live(backend)}
    retries = backend.retries
    job = backend.submit(GenerationRequest.from_mapping(dict(SLOW, seed=9)))
    wait_for(lambda: job.phase == "generating" and job.replica_id, 60, message="remote generation running")
    victim = next(r for r in live(backend) if r.replica_id == job.replica_id)
    phases_seen = set()
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            phases_seen.update((r.replica_id in before, r.phase) for r in backend.status().replicas)
            time.sleep(0.1)
    watcher = threading.Thread(target=watch)
    watcher.start()
    os.kill(victim.pid, signal.SIGKILL)
    try:
        result = job.future.result(180)
        assert result.images[0].image.size == (1024, 1024)
        assert backend.retries == retries + 1 and job.attempts == 2 and job.replica_id != victim.replica_id
    except ReplicaFailed as e:                       # the retry hit a dead replica too: a clear 503
        assert e.http_status == 503 and "try again" in e.hint
    try:
        wait_for(lambda: len(live(backend)) == 2 and {r.replica_id for r in live(backend)} != before, 120,
                 message="Ray Serve to replace the killed replica")
        backend.preload().future.result(120)
    finally:
        stop.set()
        watcher.join()
    assert (True, "lost") in phases_seen                        # the page showed the dead one
    assert {(False, "loading"), (False, "ready")} & phases_seen  # and the new one coming up
    assert backend.generate(req(seed=99), timeout=120).images[0].seed == 99


def test_a_replicas_answer_carries_the_peak_vram_and_its_shared_batch(settings, tmp_path):
    """What a replica's manager reports (here a real batch of two queued requests) reaches the app's
    answer: peak_vram_bytes, and the batch size that seconds_per_image divides by. The peak is set by
    hand: this machine has no GPU to measure one."""
    import threading

    from zimage.engine.manager import PipelineManager
    from zimage.scale.ray_backend import RayBackend, RemoteJob
    from zimage.scale.ray_replica import remote_result
    from zimage.scale.replicas import ReplicaStatus

    manager = PipelineManager(dataclasses.replace(settings, batch_max=2)).start()
    try:
        manager.ensure_ready(60)
        entered, release = threading.Event(), threading.Event()

        def hold(*_):
            entered.set()
            assert release.wait(60)
        hook = manager._pipe.transformer.register_forward_pre_hook(hold)
        first = manager.submit(req(seed=1))                  # runs, held at the gate
        assert entered.wait(30)
        hook.remove()
        second, third = manager.submit(req(seed=2)), manager.submit(req(seed=3))   # share one call
        release.set()
        first.future.result(60)
        local = dataclasses.replace(second.future.result(60), peak_vram_bytes=7 * 2**30)
        third.future.result(60)
    finally:
        manager.close()
    assert local.batch_images == 2
    app = RayBackend(dataclasses.replace(settings, outputs_dir=str(tmp_path / "app-outputs"), backend="ray"))
    answer = app._land(remote_result(local, ReplicaStatus(replica_id="r1", reported_at=time.time())),
                       RemoteJob(kind="generate", fn=None))
    assert answer.peak_vram_bytes == 7 * 2**30 and answer.batch_images == 2
    assert answer.seconds_per_image == pytest.approx(local.seconds / 2)
    assert answer.images[0].path.is_relative_to(app._store.root) and not local.images[0].path.exists()
    landed = app._store.history.get(answer.images[0].path.relative_to(app._store.root).as_posix())   # the History tab's
    assert landed.seed == answer.images[0].seed and landed.seconds == pytest.approx(local.seconds / 2)
