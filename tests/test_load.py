"""Many clients at once against the real server (127.0.0.1, tiny model): one load, every request
answered, no server error; switches and unloads fired mid-run never break a request."""
from __future__ import annotations

import collections
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from zimage.state import READY_STATES, LoadState

REQ = {"prompt": "load test", "width": 256, "height": 256, "num_inference_steps": 1}


def client(url: str, n: int, seed0: int) -> list[tuple[int, float, dict]]:
    out = []
    with requests.Session() as http:
        for i in range(n):
            t0 = time.perf_counter()
            r = http.post(url + "/generate", json=dict(REQ, seed=seed0 + i), timeout=120)
            out.append((r.status_code, time.perf_counter() - t0, {k.lower(): v for k, v in r.headers.items()}))
    return out


def test_16_clients_x_10_requests_one_load_no_server_errors(server):
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        results = [x for f in [pool.submit(client, server.url, 10, 1000 * c) for c in range(16)] for x in f.result()]
    wall = time.perf_counter() - started
    codes = collections.Counter(code for code, _, _ in results)
    assert len(results) == 160 and set(codes) <= {200, 429}, codes
    assert codes[200] >= 16
    assert all(int(h["retry-after"]) >= 1 for code, _, h in results if code == 429)
    assert server.manager.load_count == 1
    ok = sorted(t for code, t, _ in results if code == 200)
    p95 = ok[int(0.95 * (len(ok) - 1))]
    print(f"\nload: {dict(codes)}; {codes[200] / wall:.1f} images/s; p50 {statistics.median(ok):.3f} s, "
          f"p95 {p95:.3f} s over {wall:.1f} s")


def test_preload_pressed_10_times_at_once_loads_once(server):
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: requests.post(server.url + "/preload", json={"wait": True},
                                                      timeout=120).status_code, range(10)))
    assert codes == [200] * 10 and server.manager.load_count == 1


def test_unload_and_low_vram_switches_during_generations(server):
    stop = threading.Event()
    fired = collections.Counter()

    def chaos():
        i = 0
        while not stop.is_set():
            if i % 3 == 0:
                r = requests.post(server.url + "/unload", json={"to": "none"}, timeout=120)
                fired[f"unload {r.status_code}"] += 1
            else:
                server.manager.set_low_vram(i % 2 == 0).future.result(60)
                fired["low_vram"] += 1
            i += 1
            time.sleep(0.05)

    t = threading.Thread(target=chaos)
    t.start()
    with ThreadPoolExecutor(4) as pool:
        results = [x for f in [pool.submit(client, server.url, 6, 100 * c) for c in range(4)] for x in f.result()]
    stop.set()
    t.join(60)
    codes = collections.Counter(code for code, _, _ in results)
    assert set(codes) <= {200, 429} and codes[200] >= 4, codes
    assert fired["unload 200"] >= 1 and fired["low_vram"] >= 1
    s = server.manager.status()
    assert s.state in READY_STATES | {LoadState.UNLOADED}          # never half loaded
    assert requests.post(server.url + "/generate", json=dict(REQ, seed=1), timeout=120).status_code == 200
