"""--backend ray: the PipelineManager as Ray Serve replicas, one per GPU, behind the same surface the
page and the HTTP routes use on the local backend (status, submit -> Job with a future, preload,
unload, cancel, ...). No scheduler of ours: Serve places replicas, routes each request to one,
autoscales on queue length and replaces dead replicas.

- Generations go through the deployment handle; a replica that dies during one (killed, out of
  memory, node lost) costs one retry on another replica, and a second death answers ReplicaFailed.
- Preload, Unload and the other model commands reach every replica through the replica board
  (ray_board.py); the status the page shows is the board's picture of every replica, aggregated.
- Images come back as PNG bytes and are saved here, in this machine's outputs folder.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, Settings
from ..errors import BackendUnavailable, Cancelled, QueueFull, ReplicaFailed, ZImageError
from ..jobs import CACHE, GENERATE, IMPORT, LOAD, LOW_VRAM, UNLOAD, Job, check_unload_target, matches, preload_and_wait
from ..request import GeneratedImage, GenerationRequest, GenerationResult
from ..state import LoadState, MemoryInfo, Status
from ..store.cache_ops import check_confirmed
from ..store.hub import RepairReport, VerifyReport, merge_verify_reports
from ..store.outputs import OutputStore, unsaved_warning
from .ray_cluster import APP_NAME, BOARD_NAME, NAMESPACE, connect_ray, death_errors, replica_deployment_options
from .replicas import REPORT_PERIOD_S, aggregate

log = logging.getLogger(__name__)

POLL_S = 0.25                 # how often the app reads the board (status, progress, outcomes)
SERVE_STATUS_EVERY_S = 2.0    # Serve's own replica counts (starting / running) for the page
# A replica's job on its GPU (Job.phase), as current_generation reports it.
RUNNING_PHASES = frozenset({"encoding", "generating", "decoding"})


@dataclass(eq=False)
class RemoteJob(Job):
    """A generation sent to a replica; progress fields are filled from the replica's reports."""
    key: str = ""
    replica_id: str = ""
    attempts: int = 0
    response: Any = None          # Serve's DeploymentResponse, to cancel it


def _never_run(job: Job) -> None:
    raise AssertionError("a remote job runs on a replica, not here")


class RayBackend:
    def __init__(self, settings: Settings, *, deployment_options: dict | None = None):
        """`deployment_options` are extra Serve options (e.g. max_replicas_per_node=1 to spread
        CPU replicas over nodes in tests; GPU replicas are spread by their num_gpus)."""
        self.settings = settings
        self._store = OutputStore(settings.outputs_dir)
        self._extra_options = deployment_options or {}
        self._lock = threading.Lock()
        self._jobs: dict[str, RemoteJob] = {}                  # generations sent and not answered
        self._broadcasts: dict[int, Job] = {}                  # board seq -> the Job waiting for it
        self._noted: dict[str, Any] = {}                       # replica id -> report that came with an answer
        self._ids = itertools.count(1)
        self._status = aggregate((), settings.model)
        self._serve_note = ""
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="zimage-ray-call")
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="zimage-ray-status", daemon=True)
        self._connected_here = False                     # ray.init was ours: ray.shutdown on close
        self._handle = None
        self._board = None
        self.retries = 0                                       # requests retried after a replica died
        self._lora_hashes: dict = {}                           # store.loras.file_key -> autov3, for loras()
        self._lora_headers: dict = {}                          # path -> its header's reading, for loras()
        self.gpus_per_replica = 0.0

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> RayBackend:
        try:
            import ray
            from ray import serve
        except ModuleNotFoundError:
            raise ConfigError("--backend ray needs Ray Serve: pip install -r requirements-ray.txt "
                              "(or use the default --backend local).") from None

        from .ray_board import ReplicaBoard
        from .ray_replica import ZImageReplica

        self._connect(ray)
        self.gpus_per_replica = self._gpus_per_replica(ray)
        try:                               # a board left by an app that did not shut down cleanly
            ray.kill(ray.get_actor(BOARD_NAME, namespace=NAMESPACE))
        except ValueError:
            pass
        self._board = ray.remote(ReplicaBoard).options(
            name=BOARD_NAME, namespace=NAMESPACE, num_cpus=0, max_restarts=0).remote(self.settings.preload)
        options = replica_deployment_options(self.settings, self.gpus_per_replica, extra=self._extra_options)
        deployment = serve.deployment(ZImageReplica).options(**options)
        serve.start(proxy_location="Disabled")       # our FastAPI app is the only HTTP entry
        log.info("starting Ray Serve deployment: %s", {k: v for k, v in options.items() if k != "ray_actor_options"})
        try:
            self._handle = serve.run(deployment.bind(self.settings, BOARD_NAME, NAMESPACE), name=APP_NAME,
                                     route_prefix=None, logging_config={"enable_access_log": False})
        except Exception as e:
            raise BackendUnavailable(f"The Ray Serve deployment did not start: {e.__class__.__name__}: {str(e)[:300]}",
                                     "Check that every Ray node has the app's requirements installed.") from e
        self._poll_once()
        self._poller.start()
        return self

    def _connect(self, ray) -> None:
        if not ray.is_initialized():     # else the embedding program connected: its runtime_env holds
            connect_ray(self.settings.ray_address)
            self._connected_here = True

    def _gpus_per_replica(self, ray) -> float:
        if self.settings.ray_gpus_per_replica >= 0:
            return self.settings.ray_gpus_per_replica
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    def close(self, timeout: float = 10.0) -> None:
        import ray
        from ray import serve

        self._stop.set()
        if self._poller.is_alive():
            self._poller.join(timeout)
        with self._lock:
            pending = list(self._broadcasts.values())
            self._broadcasts.clear()
        for job in pending:
            if not job.future.done():
                job.future.set_exception(BackendUnavailable("The server is shutting down."))
        try:
            serve.delete(APP_NAME)
            if self._board is not None:
                ray.kill(self._board)
        except Exception as e:  # noqa: BLE001 - the cluster may already be gone; shutting down anyway
            log.warning("Ray shutdown: %s", e)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._connected_here:
            ray.shutdown()

    # ---- reading --------------------------------------------------------------------------------
    def status(self) -> Status:
        return self._status

    @property
    def gpu_device(self) -> str | None:
        return None          # GPUs are on the replicas; the page's memory line shows this machine

    def preview_png(self, job: Job) -> bytes | None:
        return None          # a replica keeps its latents; the progress route answers without a preview

    def memory(self) -> MemoryInfo:
        """This machine's RAM (the replicas' GPUs are in their own rows of the status panel)."""
        from ..engine.memory import memory_info

        return memory_info(self.gpu_device)

    def loras(self, refresh: bool = False, hash_files: bool = True) -> list[dict]:
        """This machine's LoRA folder: the replicas read the same --lora-dir (one shared folder, or
        a copy on each node, as with the model cache)."""
        from ..store.lora_folders import a1111_list_all, lora_folders

        if refresh:
            self._lora_hashes, self._lora_headers = {}, {}
        return a1111_list_all(lora_folders(self.settings), self._lora_hashes, hash_files, self._lora_headers)

    @property
    def load_count(self) -> int:
        return sum(r.load_count for r in self._status.replicas)

    def current_generation(self) -> Job | None:
        with self._lock:
            return next((j for j in self._jobs.values() if j.phase in RUNNING_PHASES), None)

    # ---- generations ----------------------------------------------------------------------------
    def submit(self, req: GenerationRequest, owner: str | None = None, user: str | None = None) -> Job:
        req = req.with_resolved_seed()
        replicas = self.settings.ray_max_replicas if self.settings.ray_autoscaling else self.settings.ray_replicas
        with self._lock:
            waiting = len(self._jobs) - replicas
            if waiting >= self.settings.queue_max:
                retry = max(1, round((self._status.last_image_s or 5.0) * (waiting + 1) / max(replicas, 1)))
                raise QueueFull(waiting, retry)
            job = RemoteJob(kind=GENERATE, fn=_never_run, owner=owner, user=user, id=next(self._ids),
                            key=uuid.uuid4().hex, total_steps=req.num_inference_steps,
                            queue_position=max(waiting + 1, 1))
            self._jobs[job.key] = job
        self._pool.submit(self._run_remote, job, req)
        return job

    def generate(self, req: GenerationRequest, owner: str | None = None,
                 timeout: float | None = None) -> GenerationResult:
        return self.submit(req, owner).future.result(timeout)

    def cancel(self, owner: str | None = None, user: str | None = None, current_only: bool = False) -> int:
        """Stop the generations matching `owner` and `user` (all when neither is given), as
        PipelineManager.cancel does: Serve cancels the request, and the replica stops the job after
        its current step (or drops it while it waits). `current_only`: only those a replica runs now
        (as its last report said; one sent a moment ago still reads as waiting)."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if matches(j, owner, user) and not j.cancelled
                    and not (current_only and j.phase == "waiting")]
        for job in jobs:
            job.skipped = current_only
            job.cancel_event.set()
            if job.response is not None:
                job.response.cancel()
        return len(jobs)

    def enhance_prompt(self, req, owner: str | None = None, user: str | None = None) -> Job:
        """Enhance on --enhancer-url's endpoint (the replicas' text encoders are not offered for it)."""
        from ..engine.enhance_job import remote_job
        from ..errors import EnhancerFailed

        if self.settings.enhancer_url:
            return remote_job(self.settings, req, owner, user)
        job = Job(kind="enhance", fn=_never_run, owner=owner)
        job.future.set_exception(EnhancerFailed(
            "Enhance on the loaded text encoder needs --backend local.",
            "Start with --backend local, or give an endpoint with --enhancer-url and --enhancer-model."))
        return job

    def _run_remote(self, job: RemoteJob, req: GenerationRequest) -> None:
        try:
            job.future.set_result(self._call_with_retry(job, req))
        except BaseException as e:
            if not isinstance(e, ZImageError):
                log.exception("remote generation failed")
            job.future.set_exception(e)
        finally:
            job.phase = "done"
            with self._lock:
                self._jobs.pop(job.key, None)

    def _call_with_retry(self, job: RemoteJob, req: GenerationRequest) -> GenerationResult:
        from ray.serve.exceptions import DeploymentUnavailableError, RequestCancelledError

        deaths = death_errors()
        for attempt in (1, 2):
            if job.cancelled:
                raise Cancelled()
            job.attempts = attempt
            try:
                job.response = self._handle.generate.remote(req, job.owner, job.key, job.user)
                answer = job.response.result()
            except RequestCancelledError:
                raise Cancelled() from None
            except deaths as e:
                if job.cancelled:
                    raise Cancelled() from None
                if attempt == 2:
                    raise ReplicaFailed(
                        "The GPU worker running this image stopped twice (killed or out of memory).",
                        "Ray Serve is starting a new one; try again in a minute.") from e
                log.warning("replica died during a request (%s); retrying once on another replica",
                            e.__class__.__name__)
                with self._lock:
                    self.retries += 1
                job.phase, job.step = "waiting", 0
                continue
            except DeploymentUnavailableError as e:
                raise BackendUnavailable("The Ray Serve deployment is not running.",
                                         "See the server log; restart the app.") from e
            if "error" in answer:
                raise answer["error"]
            return self._land(answer["result"], job)
        raise AssertionError("unreachable")

    def _land(self, remote, job: RemoteJob) -> GenerationResult:
        """Save the replica's PNGs in this machine's outputs folder, as they are."""
        import io

        from PIL import Image

        job.replica_id = remote.replica_status.replica_id
        self._note_replica(remote.replica_status)
        images, warning = [], remote.warning
        per_image_s = remote.seconds / max(1, remote.batch_images or len(remote.images))
        for item in remote.images:
            path = None
            if not warning:
                try:
                    path = self._store.save_png(item.png, item.seed, seconds=per_image_s)
                except OSError as e:
                    warning = unsaved_warning(self._store, e)
            image = Image.open(io.BytesIO(item.png))      # decoded only if the page needs the pixels
            images.append(GeneratedImage(image=image, seed=item.seed, infotext=item.infotext, path=path))
        return GenerationResult(request=remote.request, images=images, seconds=remote.seconds, warning=warning,
                                peak_vram_bytes=remote.peak_vram_bytes, batch_images=remote.batch_images)

    # ---- commands for every replica -------------------------------------------------------------
    def preload(self) -> Job:
        return self._broadcast(LOAD, "preload")

    def ensure_ready(self, timeout: float | None = None) -> Status:
        return preload_and_wait(self, timeout)

    def unload(self, to: str = "none") -> Job:
        check_unload_target(to)
        return self._broadcast(UNLOAD, "unload", to)

    def set_low_vram(self, enabled: bool) -> Job:
        return self._broadcast(LOW_VRAM, "set_low_vram", bool(enabled))

    def import_model_stack(self) -> Job:
        return self._broadcast(IMPORT, "import_model_stack")

    def repair(self, model_id: str | None = None) -> Job:
        return self._broadcast(CACHE, "repair", model_id or self.settings.model)

    def verify(self, model_id: str | None = None) -> Job:
        """Broadcast like repair: each replica hashes its node's cache on its own worker, so never
        beside its load; the answers merge into one report (see _settle)."""
        return self._broadcast(CACHE, "verify", model_id or self.settings.model)

    def delete_cached(self, model_id: str, confirmed_id: str | None = None) -> Job:
        check_confirmed(model_id, confirmed_id)
        return self._broadcast(CACHE, "delete_cached", model_id)

    def cancel_download(self) -> bool:
        if not any(r.status.state == LoadState.DOWNLOADING for r in self._status.replicas):
            return False
        self._broadcast(CACHE, "cancel_download")
        return True

    def _broadcast(self, kind: str, name: str, *args) -> Job:
        import ray

        seq = ray.get(self._board.post.remote(name, *args), timeout=30)
        job = Job(kind=kind, fn=_never_run, id=next(self._ids))
        with self._lock:
            self._broadcasts[seq] = job
        return job

    def _settle(self, outcome, job: Job) -> None:
        """Every replica answered: fail with the first error, else combine what they returned."""
        errors = [value for ok, value in outcome.results.values() if not ok]
        if errors:
            job.future.set_exception(errors[0])
            return
        values = [value for _, value in outcome.results.values()]
        if job.kind == CACHE and values and all(isinstance(v, RepairReport) for v in values):
            job.future.set_result(RepairReport(values[0].model_id, tuple(sorted({f for v in values for f in v}))))
        elif job.kind == CACHE and values and all(isinstance(v, VerifyReport) for v in values):
            job.future.set_result(merge_verify_reports(values))
        elif job.kind == CACHE and values and all(isinstance(v, list) for v in values):
            job.future.set_result(sorted({f for v in values for f in v}))        # files repaired anywhere
        elif job.kind == CACHE and values and all(isinstance(v, int) for v in values):
            job.future.set_result(sum(values))                                  # bytes freed in all
        else:
            job.future.set_result(self._status)

    # ---- the status poller ------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        last_serve = 0.0
        while not self._stop.wait(POLL_S):
            if time.monotonic() - last_serve >= SERVE_STATUS_EVERY_S:
                self._serve_note = self._read_serve_counts()
                last_serve = time.monotonic()
            try:
                self._poll_once()
            except Exception as e:  # noqa: BLE001 - any failure: the page shows lost contact, we retry
                log.warning("reading the replica board failed: %s", e)
                self._status = Status(model=self.settings.model, state=LoadState.ERROR,
                                      message="Lost contact with the Ray cluster.",
                                      hint="Check that the Ray head node is up; restart the app if it was restarted.")

    def _poll_once(self) -> None:
        import ray

        with self._lock:
            seqs = tuple(self._broadcasts)
        snap = ray.get(self._board.snapshot.remote(seqs), timeout=max(10 * REPORT_PERIOD_S, 5))
        with self._lock:
            replicas = []
            for r in snap.replicas:      # a report that came with an answer may be newer than the board's
                noted = self._noted.get(r.replica_id)
                if noted is not None and noted.reported_at > r.reported_at:
                    r = dataclasses.replace(noted, alive=r.alive, seen_s_ago=r.seen_s_ago)
                else:
                    self._noted.pop(r.replica_id, None)
                replicas.append(r)
            self._status = aggregate(replicas, self.settings.model, self._serve_note)
        progress = {p.key: (p, r.replica_id) for r in snap.replicas if r.alive for p in r.jobs}
        with self._lock:
            for key, job in self._jobs.items():
                if key in progress and job.phase != "done":
                    p, replica_id = progress[key]
                    job.phase, job.step, job.queue_position = p.phase, p.step, p.queue_position
                    job.total_steps, job.replica_id = p.total_steps or job.total_steps, replica_id
            settled = [(o, self._broadcasts.pop(o.seq)) for o in snap.outcomes if o.complete]
        for outcome, job in settled:
            self._settle(outcome, job)
            self._board.forget_outcome.remote(outcome.seq)

    def _note_replica(self, report) -> None:
        """A replica's status that came with its answer: newer than the board's copy."""
        with self._lock:
            self._noted[report.replica_id] = report
            replicas = tuple(dataclasses.replace(report, alive=r.alive, seen_s_ago=r.seen_s_ago)
                             if r.replica_id == report.replica_id else r for r in self._status.replicas)
            self._status = aggregate(replicas, self.settings.model, self._serve_note)

    def _read_serve_counts(self) -> str:
        """Serve's own view: how many replicas run, start or stop (a replacement shows here first)."""
        from ray import serve

        try:
            app = serve.status().applications.get(APP_NAME)
            if app is None:
                return "Ray Serve: the app is not deployed."
            counts = next(iter(app.deployments.values())).replica_states
        except Exception as e:  # noqa: BLE001 - a status line only; never fail the poll for it
            return f"Ray Serve status unavailable ({e.__class__.__name__})."
        parts = [f"{n} {str(getattr(state, 'value', state)).lower()}" for state, n in sorted(counts.items()) if n]
        return "Ray Serve replicas: " + (", ".join(parts) or "none")
