import json

import pytest
import requests
from page_events import page_facts, position, small_generate
from PIL import Image

from zimage.errors import QueueFull
from zimage.jobs import Job
from zimage.state import LoadStage, LoadState, MemoryInfo, Status
from zimage.web.page.page_jobs import PageJobs, Result, new_client_id, valid_client_id
from zimage.web.page.ui import failure_text, job_progress, parse_preset, preset_for, render_status, size_problem
from zimage.web.page.ui_lora import NO_LORA, lora_tags, render_refused, render_triggers, with_loras

from conftest import page_client, wait_for

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


def test_job_progress_names_the_phase_step_image_and_eta():
    job = Job(kind="generate", fn=lambda j: None, queue_position=3)
    assert job_progress(job, Status())[1] == "Waiting in queue (position 3)"
    job.phase = "loading"
    frac, desc = job_progress(job, Status(state=LoadState.LOADING, stage=LoadStage.MOVE, progress=0.5))
    assert frac == 0.5 and "move to device" in desc
    job.phase, job.total_steps = "encoding", 9
    assert job_progress(job, Status())[1] == "Encoding the prompt"
    job.phase, job.step = "generating", 3
    frac, desc = job_progress(job, Status())
    assert desc == "Step 3 of 9" and 0 < frac < job_progress(Job(kind="generate", fn=None, phase="decoding"),
                                                             Status())[0]
    job.step_seconds = 0.5                       # measured: 6 steps left at 0.5 s
    assert job_progress(job, Status())[1] == "Step 3 of 9 · about 3.0 s left"
    job.images_total, job.images_done = 4, 1     # the manager's measured decode and save: its ETA wins
    job.decode_s_per_image, job.save_s_per_image = 2.0, 1.0
    # one pipeline call per image: (6 + 2 x 9 steps) x 0.5 s, then 3 decodes x 2 s and 4 saves x 1 s
    assert job_progress(job, Status())[1] == "Image 2 of 4 · Step 3 of 9 · about 22 s left"
    job.phase = "decoding"
    assert job_progress(job, Status())[1].startswith("Image 2 of 4 · Decoding")
    job.phase = "saving"
    assert "Saving" in job_progress(job, Status())[1]
    assert parse_preset("1216x832") == (1216, 832)


def test_a_stopped_job_says_stopping_where_its_progress_was_until_it_ends():
    """Stop's "Stopping…" is the job's progress line (the live panel), no longer an answer to the
    result line, where it could land after the run's "Stopped" and stay there."""
    from zimage.web.page.ui_preview import progress_key

    job = Job(kind="generate", fn=lambda j: None, phase="generating", total_steps=9, step=3)
    frac, before = job_progress(job, Status())[0], progress_key(job)
    job.cancel_event.set()
    assert job_progress(job, Status()) == (frac, "Stopping… (the image being made ends after its current step)")
    assert job_progress(job, Status(), "zh")[1].startswith("正在停止")
    assert progress_key(job) != before                 # the panel's tick sends the new line


def test_size_problems_name_the_field_and_the_preset_follows():
    assert size_problem(1024, 1008) == ""
    assert "**Width** must be a multiple of 16: 1000 lies between 992 and 1008" in size_problem(1000, 512)
    assert "**Height** must be between 256 and 2048" in size_problem(512, 4096)
    assert preset_for(1216, 832) == "1216x832" and preset_for(1000, 1000) == "Custom"
    assert preset_for(512.0, 512.0) == "512x512"


def test_failure_text_names_an_unexpected_error():
    assert "injected fault" in failure_text(RuntimeError("injected fault"))
    assert failure_text(ValueError()).startswith("The generation failed: ValueError")
    assert failure_text(QueueFull(3, 9)) == QueueFull(3, 9).user_text()


def test_page_jobs_keeps_results_per_browser_bounded_and_only_existing_files(tmp_path):
    jobs = PageJobs(max_clients=2, max_results=3)
    a, b, c = (new_client_id() for _ in range(3))
    assert valid_client_id(a) == a and valid_client_id("../../x") is None and valid_client_id([]) is None
    files = [tmp_path / f"{i}.png" for i in range(4)]
    for f in files:
        f.write_bytes(b"png")
    jobs.start(a, "job1")
    assert jobs.running(a) == ["job1"] and jobs.running(b) == []
    jobs.finish(a, "job1", [Result("one", files[0]), Result("two", files[1])])
    jobs.finish(a, "job2", [Result("three", files[2]), Result("four", files[3])])
    assert jobs.running(a) == [] and [cap for _, cap in jobs.gallery(a)] == ["three", "four", "one"]
    files[2].unlink()
    assert [cap for _, cap in jobs.gallery(a)] == ["four", "one"]
    assert jobs.gallery(b) == [] and jobs.gallery(None) == []
    jobs.start(b, "busy")
    jobs.finish(c, "x", [])                       # a third browser: the idle one (a) is forgotten, not b
    assert jobs.gallery(a) == [] and jobs.running(b) == ["busy"]


def test_gradio_client_generates_through_the_page_endpoint(server):
    client = page_client(server.url)
    gallery, info = client.predict(prompt="a lighthouse", negative="", width=256, height=320, steps=2, seed=77,
                                   api_name="/generate")      # by name: the other inputs take their defaults
    assert len(gallery) == 1 and "seed 77" in gallery[0]["caption"]
    image = gallery[0]["image"]
    img = Image.open(image if isinstance(image, str) else image["path"])
    assert img.size == (256, 320) and "Seed: 77" in img.text["parameters"]
    assert "seeds 77" in info
    assert server.manager.load_count == 1
    # Internal events (preload, unload, status timer) are not callable by clients; PNG info and Edit are.
    names = list(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert sorted(names) == ["/edit", "/generate", "/png_info"]
    # The caption says how the image was made, not only its seed.
    assert "256x320" in gallery[0]["caption"] and "steps" in gallery[0]["caption"]
    # gradio_client uploads the saved PNG and reads its parameters back.
    from gradio_client import handle_file

    read = client.predict(handle_file(str(image if isinstance(image, str) else image["path"])), api_name="/png_info")
    assert "77" in read[3] and "256x320" in read[3]


def test_gradio_client_validation_error_is_shown_not_a_crash(server):
    client = page_client(server.url)
    with pytest.raises(Exception, match="multiple of 16"):
        client.predict(prompt="x", negative="", width=264, height=256, steps=2, seed=1, api_name="/generate")
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_page_serves_with_status_panel_and_safe_gradio_routes(server, tmp_path):
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200
    config = requests.get(server.url + "/config", timeout=10).json()
    tables = config["i18n_translations"]          # the buttons' values are page_text keys, in both tables
    keys = {json.loads(str(v).removeprefix("__i18n__"))["key"] for c in config["components"]
            if str(v := c.get("props", {}).get("value")).startswith("__i18n__")}
    assert {"Preload model", "Unload", "Generate", "Stop"} <= {tables["en"][k] for k in keys}
    assert {"预加载模型", "卸载", "生成", "停止"} <= {tables["zh-CN"][k] for k in keys}
    for path in ["/gradio_api/file=/etc/passwd", "/gradio_api/file=../../etc/passwd",
                 f"/gradio_api/file={server.settings.cache_dir}/x"]:
        assert requests.get(server.url + path, timeout=10).status_code in (403, 404)
    assert requests.get(server.url + "/gradio_api/monitoring/summary", timeout=10).status_code in (403, 404)
    outputs = tmp_path / "outputs"
    outputs.mkdir(exist_ok=True)
    (outputs / "link.png").symlink_to("/etc/passwd")          # a symlink planted in the served folder
    assert requests.get(server.url + f"/gradio_api/file={outputs}/link.png", timeout=10).status_code in (403, 404)
    # Uploads (the PNG info tab's only) are capped before Gradio reads them (tests/test_uploads.py).
    cap = server.settings.max_upload_bytes
    up = requests.post(server.url + "/gradio_api/upload", files={"files": ("a.bin", b"0" * (cap + 100_000))},
                       timeout=30)
    assert up.status_code == 413


def test_one_listener_on_loopback_only(server):
    import psutil

    listening = [c.laddr for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", server.settings.port)]   # no SSR/share listener


def test_status_panel_lists_every_replica_with_node_device_state_queue_and_last_image():
    from zimage.scale.replicas import ReplicaStatus, aggregate

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


def test_no_event_of_the_page_takes_a_file_and_a_crafted_gallery_downloads_nothing(server, tmp_path):
    """The gallery was an input of the generate event and went back out as a result: a request
    naming any file as a gallery item got that file served. Now no event takes a file-carrying
    component (results stay server-side) but PNG info's and ControlNet's uploads, and the guard refuses a file named
    in any other input."""
    config = requests.get(server.url + "/config", timeout=10).json()
    kinds = {c["id"]: c["type"] for c in config["components"]}
    file_kinds = {"gallery", "image", "file", "imageeditor", "video", "audio", "model3d", "uploadbutton",
                  "multimodaltextbox", "imageslider"}
    takes_files = [(d.get("api_name"), kinds[i]) for d in config["dependencies"] for i in d["inputs"]
                   if kinds.get(i) in file_kinds]
    assert sorted(takes_files) == [("controlnet_image", "file"), ("edit", "imageeditor"), ("png_info", "file")]

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not yours")
    item = {"image": {"path": str(secret), "meta": {"_type": "gradio.FileData"}}, "caption": "x"}
    facts = page_facts(server.url)
    data = small_generate(facts, "a lighthouse", 5, client=[item])      # in the one input that takes any JSON
    r = requests.post(server.url + "/gradio_api/call/generate", json={"data": data}, timeout=10)
    assert r.status_code == 422 and "not yours" not in r.text
    assert r.json()["error"]["field"].startswith(f"data[{position(facts, 'generate', 'client')}]"), r.text


def test_the_settings_are_saved_in_the_browser_with_no_round_trip(server):
    """The save went to the server and back: under load a reload overtook it and a width set a
    moment before came back as 1024. Every event that writes the saved settings runs in the browser."""
    from zimage.web.page.ui import SAVED_FIELDS

    config = requests.get(server.url + "/config", timeout=10).json()
    store = next(c["id"] for c in config["components"] if c.get("props", {}).get("storage_key") == "zimage-settings")
    savers = [d for d in config["dependencies"] if store in d["outputs"]]
    assert savers and all(not d["backend_fn"] and d["js"] for d in savers)
    assert all(len(d["inputs"]) == len(SAVED_FIELDS) for d in savers)


def test_every_waiting_page_job_is_counted_in_the_queue(server):
    """Three pages waiting: the status panel's queue said 1 (Gradio held the other two back)."""
    server.manager.ensure_ready(60)
    clients = [page_client(server.url) for _ in range(3)]
    jobs = [c.submit(f"slow {i}", "", 256, 256, 40, 0.0, i, 1, None, api_name="/generate")
            for i, c in enumerate(clients)]
    try:
        wait_for(lambda: server.manager.status().queue_length == 3, 60, message="three generations queued")
        panel = render_status(server.manager.status(), MEM)
        assert "Queue: 3" in panel
    finally:
        server.manager.cancel()
    for job in jobs:                          # each one says it stopped; none left waiting in Gradio's queue
        assert job.result(60)[1] == "Stopped. No image was kept."
    assert server.manager.status().queue_length == 0


def test_lora_picks_become_prompt_tags_the_validator_reads():
    from zimage.request import GenerationRequest

    assert lora_tags(["styles/a", NO_LORA, "b"], [1, 0.5, 0.30000000000000004]) == " <lora:styles/a:1> <lora:b:0.3>"
    assert lora_tags([NO_LORA, None, ""], [1, 1, 1]) == ""
    assert lora_tags(["neg"], [-1.25]) == " <lora:neg:-1.25>"
    assert with_loras("a cat", [NO_LORA] * 3, [1] * 3) == "a cat"          # nothing picked: the prompt as typed
    req = GenerationRequest.from_mapping({"prompt": with_loras("a cat", ["x", NO_LORA, "y"], [0.75, 1, -2])})
    assert req.loras == (("x", 0.75), ("y", -2.0))


def test_the_lora_panel_shows_the_picks_trigger_words_and_why_a_file_is_refused():
    listing = [{"name": "styles/t", "usable": True, "refused_reason": "", "trigger_words": ["zkw", "red hat"]},
               {"name": "plain", "usable": True, "refused_reason": "", "trigger_words": []},
               {"name": "pickled", "usable": False, "refused_reason": "a .pt <file> is never unpickled",
                "trigger_words": []}]
    assert render_triggers(listing, ["styles/t", NO_LORA, "plain"]) == "**styles/t** trigger words: `zkw`, `red hat`"
    assert render_triggers(listing, [NO_LORA] * 3) == ""
    refused = render_refused(listing)
    assert "pickled" in refused and "a .pt &lt;file&gt; is never unpickled" in refused and "plain" not in refused
    assert render_refused(listing[:2]) == ""


def test_the_gallery_has_no_share_button(server):
    """Gradio's Share button on the results only answered "Share failed" (no Hugging Face Space here)."""
    config = requests.get(server.url + "/config", timeout=10).json()
    gallery = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "gallery")
    assert "share" not in gallery["props"]["buttons"] and "download" in gallery["props"]["buttons"]
