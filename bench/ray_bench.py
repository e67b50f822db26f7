"""Many GPUs: images per second through Ray Serve replicas against the local backend, one run.

    python -m bench.ray_bench DIR [--replicas 1,2,all] [--clients 16] [--per-client 4]
    python -m bench.ray_bench --tiny            # CPU check of the bench itself (tiny model, 256x256)

DIR is a full-scale Z-Image folder in diffusers layout. The local backend runs first (the baseline,
one GPU), then the Ray backend with each replica count (one replica per GPU; `all` = every GPU Ray
sees). Each configuration: replicas started and loaded (time to ready), one untimed image per
replica, then `--clients` threads each asking `--per-client` images in turn (1024x1024, 9 steps).
After the largest configuration one replica is killed (SIGKILL) and the time until Ray Serve's
replacement is loaded and ready is measured. Prints JSON lines: one per configuration, one for the
replacement, then the summary with the targets (N replicas >= 0.9 x N x one replica's throughput;
ray with one replica within 5% of local).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)

from zimage.config import Settings
from zimage.request import GenerationRequest


def emit(record: dict) -> dict:
    print(json.dumps(record), flush=True)
    return record


def machine() -> dict:
    import ray
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"figure": "machine", "gpus": gpus, "torch": torch.__version__, "ray": ray.__version__,
            "python": platform.python_version(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}


def run_clients(backend, clients: int, per_client: int, size: int, steps: int) -> dict:
    """`clients` threads, each sending `per_client` requests one after the other."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(per_client):
            req = GenerationRequest(prompt=f"a lighthouse at dusk, client {n}", width=size, height=size,
                                    num_inference_steps=steps, seed=n * 1000 + i)
            t0 = time.perf_counter()
            try:
                backend.generate(req, owner=f"client-{n}", timeout=1800)
            except Exception as e:  # noqa: BLE001 - a bench counts failures instead of stopping
                with lock:
                    errors.append(f"{e.__class__.__name__}: {e}")
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    cuts = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    return {"images": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else None,
            "wall_s": round(wall, 3), "images_per_s": round(len(latencies) / wall, 4),
            "p50_s": round(statistics.median(latencies), 3) if latencies else None, "p95_s": round(cuts[18], 3)}


def warm(backend, replicas: int, size: int, steps: int) -> None:
    jobs = [backend.submit(GenerationRequest(prompt="warm-up", width=size, height=size,
                                             num_inference_steps=steps, seed=i)) for i in range(replicas)]
    for job in jobs:
        job.future.result(1800)


def bench_local(settings: Settings, args) -> dict:
    from zimage.app import create_backend

    t0 = time.perf_counter()
    manager = create_backend(settings).start()
    try:
        manager.ensure_ready(1800)
        ready_s = time.perf_counter() - t0
        warm(manager, 1, args.size, args.steps)
        figures = run_clients(manager, args.clients, args.per_client, args.size, args.steps)
    finally:
        manager.close()
    return emit({"figure": "throughput", "backend": "local", "replicas": 1, "ready_s": round(ready_s, 2),
                 **figures})


def bench_ray(settings: Settings, replicas: int, args, measure_replacement: bool) -> dict:
    from zimage.scale.ray_backend import RayBackend

    t0 = time.perf_counter()
    backend = RayBackend(dataclasses.replace(settings, backend="ray", ray_replicas=replicas)).start()
    try:
        backend.ensure_ready(1800)
        ready_s = time.perf_counter() - t0
        warm(backend, replicas, args.size, args.steps)
        figures = run_clients(backend, args.clients, args.per_client, args.size, args.steps)
        out = emit({"figure": "throughput", "backend": "ray", "replicas": replicas, "ready_s": round(ready_s, 2),
                    "gpus_per_replica": backend.gpus_per_replica, **figures})
        if measure_replacement:
            emit(replacement(backend))
    finally:
        backend.close()
    return out


def replacement(backend) -> dict:
    """SIGKILL one replica; seconds until Serve's new replica reports ready (it loads at once: Preload
    was pressed). The bench runs on the replicas' host, so the pid is local."""
    victim = next(r for r in backend.status().replicas if r.alive)
    before = {r.replica_id for r in backend.status().replicas}
    t0 = time.perf_counter()
    os.kill(victim.pid, signal.SIGKILL)
    deadline = t0 + 1800
    while time.perf_counter() < deadline:
        fresh = [r for r in backend.status().replicas if r.replica_id not in before and r.alive]
        if fresh and fresh[0].phase == "ready":
            return {"figure": "new_replica_ready", "seconds": round(time.perf_counter() - t0, 2),
                    "node": fresh[0].node, "device": fresh[0].status.device}
        time.sleep(0.1)
    return {"figure": "new_replica_ready", "seconds": None, "error": "no new replica within 30 minutes"}


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ray_bench", description=__doc__.split("\n")[0])
    p.add_argument("model", nargs="?", help="full-scale Z-Image folder (diffusers layout)")
    p.add_argument("--tiny", action="store_true", help="the tiny random model on the CPU, 256x256: checks the bench")
    p.add_argument("--replicas", default="1,2,all", help="replica counts, comma separated; all = every GPU")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--per-client", type=int, default=4, dest="per_client", help="images each client asks in turn")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--steps", type=int, default=9)
    p.add_argument("--ray-address", default="auto", dest="ray_address")
    args = p.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging_setup()
    scratch = tempfile.mkdtemp(prefix="zimage-ray-bench-")
    if args.tiny:
        from zimage.testing.tiny_model import make_tiny_model

        args.model = str(make_tiny_model(os.path.join(scratch, "tiny")))
        if args.size == 1024:
            args.size = 256
    elif not args.model:
        p.error("give the model folder, or --tiny")

    import ray

    from zimage.scale.ray_cluster import connect_ray

    connect_ray(args.ray_address)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    every = gpus or 2                       # CPU replicas (--tiny): two
    counts = sorted({every if c.strip() == "all" else int(c) for c in args.replicas.split(",")})
    if gpus and counts[-1] > gpus:
        p.error(f"{counts[-1]} replicas need {counts[-1]} GPUs; Ray sees {gpus}")
    emit(machine() | {"ray_gpus": gpus, "model": args.model, "size": args.size, "steps": args.steps,
                      "clients": args.clients, "per_client": args.per_client})
    settings = Settings(model=args.model, outputs_dir=os.path.join(scratch, "outputs"), queue_max=4 * args.clients,
                        idle_unload_s=0, idle_drop_s=0, ray_gpus_per_replica=-1 if gpus else 0)
    local = bench_local(settings, args)
    rays = {n: bench_ray(settings, n, args, measure_replacement=n == counts[-1]) for n in counts}
    one = rays.get(1)
    summary = {"figure": "summary", "local_images_per_s": local["images_per_s"],
               "ray_images_per_s": {n: r["images_per_s"] for n, r in rays.items()}}
    if one:
        summary["ray1_over_local"] = ratio(one["images_per_s"], local["images_per_s"])
        summary["ray1_overhead_met"] = bool(summary["ray1_over_local"] and summary["ray1_over_local"] >= 0.95)
        summary["scaling"] = {n: ratio(r["images_per_s"], one["images_per_s"]) for n, r in rays.items()}
        summary["scaling_met"] = all((summary["scaling"][n] or 0) >= 0.9 * n for n in rays)
    emit(summary)
    ray.shutdown()
    return 0


def logging_setup() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
