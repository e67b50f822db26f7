"""Start-up as a user runs it (`python webui.py ...` in a subprocess): a bad setting, a host the app
would not answer on or an outputs folder that would expose other files stops the start with one
`error:` line and exit status 2, never a traceback; a refused request to the running page is one
log line naming the field, not a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from zimage.web.page.page_text import text as page_words

from conftest import free_port, page_client, wait_for

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], home: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """webui.py with `args`; a start that should have been refused runs until the timeout (a failure)."""
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "webui.py", "--port", str(free_port()), *args], cwd=ROOT,
                          env=dict(os.environ, HOME=str(home), **(env or {})), capture_output=True, text=True,
                          timeout=30, check=False)


def assert_refused(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr, done.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


# --- item 8: the outputs folder is served to the page -------------------------------------------

@pytest.mark.parametrize("folder,says", [
    ("/etc", "is a system folder"),
    ("/usr/share", "is a system folder"),
    ("/dev/null", "is a system folder"),
    ("/tmp", "temporary folder every user shares"),
    ("/var/tmp", "temporary folder every user shares"),
    (tempfile.gettempdir(), "temporary folder every user shares"),
    ("/", "root of the file system"),
])
def test_system_and_shared_outputs_folders_are_refused_at_start(tmp_path, folder, says):
    assert_refused(run_cli(["--outputs", folder], tmp_path / "home"), f"--outputs {Path(folder).resolve()}", says)


def test_the_home_folder_and_a_file_are_refused_as_outputs(tmp_path):
    home = tmp_path / "home"
    assert_refused(run_cli(["--outputs", str(home)], home), "your home folder")
    assert_refused(run_cli(["--outputs", "~"], home), "your home folder")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert_refused(run_cli(["--outputs", str(a_file)], home), "exists and is not a folder")
    assert a_file.read_text() == "mine"
    assert_refused(run_cli(["--outputs", str(ROOT)], home), "the app's own folder")


def test_world_writable_or_foreign_outputs_folders_are_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)              # like /tmp: anyone may drop files the page would then serve
    assert_refused(run_cli(["--outputs", str(shared)], tmp_path / "home"), "writable by every user")
    if os.getuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)    # nobody
    assert_refused(run_cli(["--outputs", str(theirs)], tmp_path / "home"), "belongs to another user")


def test_an_outputs_folder_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert_refused(run_cli(["--outputs", str(blocker / "outputs")], tmp_path / "home"), "cannot be created")


# --- item 9: a loopback address the Host check does not serve -----------------------------------

@pytest.mark.parametrize("host", ["127.0.0.2", "127.1.2.3", "0:0:0:0:0:0:0:1"])
def test_a_loopback_host_the_app_would_answer_403_on_is_refused(tmp_path, host):
    assert_refused(run_cli(["--host", host], tmp_path / "home"), f"host {host}", "127.0.0.1")


# --- item 11: config values, from every source --------------------------------------------------

@pytest.mark.parametrize("toml,says", [
    (b"port = [1, 2]\n", "port from {path}: [1, 2] is not a valid int"),
    (b"port = 1979-05-27\n", "port from {path}"),
    (b"[port]\nx = 1\n", "port from {path}"),
    (b'model = ["a"]\n', "model from {path}"),
    (b"batch_max = 1.9\n", "batch_max from {path}: 1.9 is not a valid int (a whole number)"),
    (b"queue_max = 2.5\n", "queue_max from {path}"),
    (b"idle_unload_s = nan\n", "idle_unload_s from {path}: nan is not a valid float (a finite number)"),
    (b"idle_drop_s = inf\n", "idle_drop_s from {path}"),
    (b"pin_ram_gb = nan\n", "pin_ram_gb from {path}"),
    (b"pin_ram_gb = -3\n", "pin_ram_gb must be -1 (half the RAM) or >= 0, got -3.0 (from {path})"),
    (b"ray_gpus_per_replica = nan\n", "ray_gpus_per_replica from {path}"),
    (b'vram_budget = "nan"\n', "vram_budget must be auto or a number of GB > 0, got 'nan' (from {path})"),
    (b'vram_budget = "inf"\n', "vram_budget must be"),
    (b"max_prompt_chars = -1\n", "max_prompt_chars must be 1-20000, got -1 (from {path})"),
    (b"max_prompt_chars = 0\n", "max_prompt_chars must be 1-20000"),
    (b'device = "gpu"\n', "device must be auto, cpu, cuda or cuda:N, got 'gpu' (from {path})"),
    (b'outputs_dir = ""\n', "outputs_dir must name a folder"),
    (b"ray_replicas = 0\n", "ray_replicas must be >= 1, got 0 (from {path})"),
    (b'host = "caf\xe9"\n', "is not UTF-8 text"),
])
def test_bad_config_values_stop_the_start_with_one_line(tmp_path, toml, says):
    config = tmp_path / "bad.toml"
    config.write_bytes(toml)
    assert_refused(run_cli(["--config", str(config)], tmp_path / "home"), says.format(path=config))


def test_a_folder_given_as_config_file_is_one_line(tmp_path):
    assert_refused(run_cli(["--config", str(tmp_path)], tmp_path / "home"), f"config file {tmp_path} is a folder")


@pytest.mark.parametrize("args,env,says", [
    (["--idle-unload", "nan"], {}, "idle_unload_s from command line: nan is not a valid float"),
    (["--pin-ram-gb", "inf"], {}, "pin_ram_gb from command line"),
    (["--vram-budget", "NaN"], {}, "vram_budget must be"),
    ([], {"ZIMAGE_IDLE_UNLOAD_S": "nan"}, "idle_unload_s from ZIMAGE_IDLE_UNLOAD_S"),
    ([], {"ZIMAGE_MAX_PROMPT_CHARS": "-1"}, "max_prompt_chars must be 1-20000, got -1 (from ZIMAGE_MAX_PROMPT_CHARS)"),
    ([], {"ZIMAGE_PIN_RAM_GB": "nan"}, "pin_ram_gb from ZIMAGE_PIN_RAM_GB"),
])
def test_bad_values_from_flags_and_env_stop_the_start_with_one_line(tmp_path, args, env, says):
    assert_refused(run_cli(args, tmp_path / "home", env), says)


# --- 4xx: one log line naming the field, no traceback -------------------------------------------

def test_refused_requests_log_one_line_naming_the_field_and_no_traceback(cli_server):
    url, terminal = cli_server
    fields = {"/generate": "width", "/sdapi/v1/txt2img": "width", "/v1/images/generations": "size"}   # as sent
    for path, body in [("/generate", {"prompt": "x", "width": 13}),
                       ("/sdapi/v1/txt2img", {"prompt": "x", "width": 13}),
                       ("/v1/images/generations", {"prompt": "x", "size": "13x13"})]:
        r = requests.post(url + path, json=body, timeout=30)
        assert r.status_code in (400, 422) and f"{fields[path]}: " in r.text, (path, r.text)
    client = page_client(url)
    for width in (13, 264):          # out of range, then not a multiple of 16: both ours (web/page/ui_slider.py)
        with pytest.raises(Exception, match="256|multiple of 16"):
            client.predict(prompt="a fox", negative="", width=width, height=256, steps=1, seed=5, api_name="/generate")
    wait_for(lambda: terminal().count("page request refused") >= 2, 10, message="the refusals to be logged")
    text = terminal()
    assert "Traceback" not in text, text[-4000:]
    refused = [line for line in text.splitlines() if "page request refused" in line]
    assert len(refused) == 2, text[-4000:]
    width = page_words("width", "en")       # the page's name for the field, as the page said it
    assert f"{width}: must be between 256 and 2048, got 13" in refused[0]    # ours (web/page/ui_slider.py), not Gradio's
    assert f"{width}: must be a multiple of 16, got 264" in refused[1]
    api = [line for line in text.splitlines() if "request refused (4" in line]     # one line per API refusal
    assert len(api) == 3 and [f for f in fields.values() if any(f"{f}: " in line for line in api)] == \
        list(fields.values()), text[-4000:]
