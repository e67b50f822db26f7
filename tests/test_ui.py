import pytest
import requests
from gradio_client import Client
from PIL import Image

from zimage.manager import Job
from zimage.memory import MemoryInfo
from zimage.state import LoadStage, LoadState, Status
from zimage.ui import job_progress, parse_preset, render_status

MEM = MemoryInfo(process_rss_bytes=2**30, ram_total_bytes=16 * 2**30, ram_available_bytes=8 * 2**30)


def test_status_panel_shows_stage_bytes_and_progress():
    s = Status(state=LoadState.LOADING, stage=LoadStage.READ, progress=0.42, bytes_done=420 * 2**20,
               bytes_total=1000 * 2**20, current_file="transformer")
    out = render_status(s, MEM)
    assert 'data-state="loading"' in out and 'value="42"' in out and "read weights" in out
    assert "420 / 1,000 MiB" in out and "transformer" in out and "RAM: process 1.0 GiB" in out


def test_status_panel_shows_error_and_hint_escaped():
    s = Status(state=LoadState.ERROR, message="bad <file>", hint="Press Preload")
    out = render_status(s, MEM)
    assert "bad &lt;file&gt;" in out and "Press Preload" in out and "<file>" not in out


def test_status_panel_vram_and_device():
    mem = MemoryInfo(1, 2, 3, vram_allocated_bytes=3 * 2**30, vram_used_bytes=4 * 2**30,
                     vram_total_bytes=80 * 2**30)
    out = render_status(Status(state=LoadState.ON_GPU, device="cuda:0"), mem)
    assert "Ready (GPU)" in out and "cuda:0" in out and "VRAM: 3.0 GiB" in out and "80.0 GiB" in out


def test_job_progress_texts():
    job = Job(kind="generate", fn=lambda j: None, queue_position=3)
    assert job_progress(job, Status())[1] == "Waiting in queue (position 3)"
    job.phase, job.step, job.total_steps = "generating", 3, 9
    assert job_progress(job, Status()) == (pytest.approx(1 / 3), "Step 3/9")
    job.phase = "loading"
    frac, desc = job_progress(job, Status(state=LoadState.LOADING, stage=LoadStage.MOVE, progress=0.5))
    assert frac == 0.5 and "move to device" in desc
    assert parse_preset("1216x832") == (1216, 832)


def test_gradio_client_generates_through_the_page_endpoint(server):
    client = Client(server.url, verbose=False)
    gallery, info = client.predict("a lighthouse", "", 256, 320, 2, 0.0, 77, 1, [], api_name="/generate")
    assert len(gallery) == 1 and "seed 77" in gallery[0]["caption"]
    image = gallery[0]["image"]
    img = Image.open(image if isinstance(image, str) else image["path"])
    assert img.size == (256, 320) and "Seed: 77" in img.text["parameters"]
    assert "seeds 77" in info
    assert server.manager.load_count == 1
    # Internal events (preload, unload, status timer) are not callable by clients.
    names = list(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert names == ["/generate"]


def test_gradio_client_validation_error_is_shown_not_a_crash(server):
    client = Client(server.url, verbose=False)
    with pytest.raises(Exception, match="multiple of 16"):
        client.predict("x", "", 264, 256, 2, 0.0, 1, 1, [], api_name="/generate")
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_page_serves_with_status_panel_and_safe_gradio_routes(server, tmp_path):
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200
    config = requests.get(server.url + "/config", timeout=10).json()
    labels = {str(c.get("props", {}).get("value")) for c in config["components"]}
    assert {"Preload model", "Unload", "Generate", "Stop"} <= labels
    for path in ["/gradio_api/file=/etc/passwd", "/gradio_api/file=../../etc/passwd",
                 f"/gradio_api/file={server.settings.cache_dir}/x"]:
        assert requests.get(server.url + path, timeout=10).status_code in (403, 404)
    assert requests.get(server.url + "/gradio_api/monitoring/summary", timeout=10).status_code in (403, 404)
    outputs = tmp_path / "outputs"
    outputs.mkdir(exist_ok=True)
    (outputs / "link.png").symlink_to("/etc/passwd")          # a symlink planted in the served folder
    assert requests.get(server.url + f"/gradio_api/file={outputs}/link.png", timeout=10).status_code in (403, 404)
    for size in (10, 2_000_000):                               # the page takes no files: no upload lands on disk
        up = requests.post(server.url + "/gradio_api/upload", files={"files": ("a.bin", b"0" * size)}, timeout=30)
        assert up.status_code == 403 and "no file uploads" in up.text


def test_one_listener_on_loopback_only(server):
    import psutil

    listening = [c.laddr for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", server.settings.port)]   # no SSR/share listener


def test_status_panel_lists_every_replica_with_node_device_state_queue_and_last_image():
    from zimage.replicas import ReplicaStatus, aggregate

    ready = ReplicaStatus("r1", node="gpu-a (1f2e3d4c)", gpu_ids=("3",), last_image_at=1_700_000_000.0,
                          status=Status(state=LoadState.ON_GPU, device="cuda:0", queue_length=2, last_image_s=1.25))
    loading = ReplicaStatus("r2", node="gpu-b (9a8b7c6d)",
                            status=Status(state=LoadState.LOADING, stage=LoadStage.READ, progress=0.5))
    lost = ReplicaStatus("r0", node="gpu-b <old>", alive=False, status=Status(state=LoadState.ON_GPU))
    out = render_status(aggregate([ready, loading, lost], "m"), MEM)
    assert out.count('class="zi-replica"') == 3
    assert "gpu-a (1f2e3d4c)" in out and "cuda:0 (GPU 3)" in out and "1.25 s at" in out and "<td>2</td>" in out
    assert 'data-phase="loading"' in out and "read weights 50%" in out
    assert 'data-phase="lost"' in out and "restarting" in out and "gpu-b &lt;old&gt;" in out
    assert "zi-replicas" not in render_status(Status(state=LoadState.ON_GPU), MEM)    # local backend: no table
