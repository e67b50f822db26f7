import pytest

from zimage.config import ConfigError, Settings
from zimage.config_load import load_settings


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_match_the_product():
    s = load_settings([], env={}, default_config=None)
    assert (s.host, s.port, s.model) == ("127.0.0.1", 7860, "Tongyi-MAI/Z-Image-Turbo")
    assert s.idle_unload_s == 3600 and s.queue_max == 8 and not s.low_vram


def test_precedence_cli_over_env_over_toml_over_defaults(tmp_path):
    base = write(tmp_path, "default.toml", 'port = 7000\nmodel = "toml/model"\nqueue_max = 3\n')
    extra = write(tmp_path, "extra.toml", "port = 7100\nidle_unload_s = 10\n")
    env = {"ZIMAGE_PORT": "7200", "ZIMAGE_LOW_VRAM": "true"}
    s = load_settings(["--config", str(extra), "--port", "7300"], env=env, default_config=base)
    assert s.port == 7300                     # CLI wins
    assert s.low_vram is True                 # env
    assert s.idle_unload_s == 10              # --config file over the default file
    assert s.queue_max == 3 and s.model == "toml/model"   # default file over built-in defaults
    s = load_settings(["--config", str(extra)], env=env, default_config=base)
    assert s.port == 7200                     # env over both files


def test_config_file_from_env(tmp_path):
    extra = write(tmp_path, "x.toml", "idle_drop_s = 5\n")
    assert load_settings([], env={"ZIMAGE_CONFIG": str(extra)}, default_config=None).idle_drop_s == 5


def test_cli_flags_map_to_fields():
    s = load_settings(["--model", "/m", "--preload", "--low-vram", "--idle-unload", "0", "--outputs", "/o",
                       "--demo", "--queue-max", "2"], env={}, default_config=None)
    assert (s.model, s.preload, s.low_vram, s.idle_unload_s, s.outputs_dir, s.demo, s.queue_max) == \
        ("/m", True, True, 0, "/o", True, 2)


@pytest.mark.parametrize("env,fragment", [
    ({"ZIMAGE_PORT": "seventy"}, "ZIMAGE_PORT"),
    ({"ZIMAGE_LOW_VRAM": "maybe"}, "ZIMAGE_LOW_VRAM"),
    ({"ZIMAGE_PORT": "70000"}, "port"),
    ({"ZIMAGE_QUEUE_MAX": "0"}, "queue_max"),
    ({"ZIMAGE_IDLE_UNLOAD_S": "-1"}, "idle"),
    ({"ZIMAGE_DTYPE": "int3"}, "dtype"),
])
def test_bad_values_name_the_setting(env, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings([], env=env, default_config=None)


def test_range_errors_name_where_the_value_came_from(tmp_path):
    bad = write(tmp_path, "bad.toml", "queue_max = 0\n")
    with pytest.raises(ConfigError, match=rf"queue_max must be >= 1, got 0 \(from {bad}\)"):
        load_settings(["--config", str(bad)], env={}, default_config=None)
    with pytest.raises(ConfigError, match=r"idle_drop_s must be >= 0 .* \(from ZIMAGE_IDLE_DROP_S\)"):
        load_settings([], env={"ZIMAGE_IDLE_DROP_S": "-5"}, default_config=None)
    with pytest.raises(ConfigError, match=r"--auth .*\(from the command line\)"):
        load_settings(["--host", "0.0.0.0"], env={}, default_config=None)


def test_bad_toml_and_unknown_keys(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings([], env={}, default_config=write(tmp_path, "a.toml", "port = = 1"))
    with pytest.raises(ConfigError, match="unknown settings"):
        load_settings([], env={}, default_config=write(tmp_path, "b.toml", "colour = 1"))
    with pytest.raises(ConfigError, match="not found"):
        load_settings(["--config", str(tmp_path / "missing.toml")], env={}, default_config=None)


def test_listening_beyond_loopback_requires_auth():
    with pytest.raises(ConfigError, match="--auth"):
        load_settings(["--listen"], env={}, default_config=None)
    s = load_settings(["--listen", "--auth", "me:secret"], env={}, default_config=None)
    assert s.host == "0.0.0.0" and s.auth_pairs == [("me", "secret")] and not s.is_loopback
    with pytest.raises(ConfigError, match="user:password"):
        load_settings(["--auth", "nopassword"], env={}, default_config=None)
    assert Settings(host="::1").is_loopback and Settings(host="localhost").is_loopback


def test_repo_default_config_parses():
    from zimage.config_load import DEFAULT_CONFIG

    assert DEFAULT_CONFIG.exists()
    assert load_settings([], env={}).model == "Tongyi-MAI/Z-Image-Turbo"


def test_auth_file_adds_users(tmp_path):
    f = write(tmp_path, "users.txt", "# team\nann:one\n\nbob:two:with-colon\n")
    s = load_settings(["--listen", "--auth-file", str(f), "--auth", "me:secret"], env={}, default_config=None)
    assert s.auth_pairs == [("me", "secret"), ("ann", "one"), ("bob", "two:with-colon")]
    with pytest.raises(ConfigError, match="auth_file"):
        load_settings(["--auth-file", str(tmp_path / "none.txt")], env={}, default_config=None)


def test_backend_defaults_to_local_without_ray():
    s = load_settings([], env={}, default_config=None)
    assert s.backend == "local" and s.ray_address == "auto" and s.ray_replicas == 1
    assert not s.ray_autoscaling and s.generation_concurrency == 1


def test_ray_flags_and_env_map_to_fields():
    s = load_settings(["--backend", "ray", "--ray-address", "head:6379", "--ray-replicas", "3",
                       "--ray-gpus-per-replica", "0.5"], env={}, default_config=None)
    assert (s.backend, s.ray_address, s.ray_replicas, s.ray_gpus_per_replica) == ("ray", "head:6379", 3, 0.5)
    assert not s.ray_autoscaling and s.generation_concurrency == 6
    s = load_settings([], env={"ZIMAGE_BACKEND": "ray", "ZIMAGE_RAY_MIN_REPLICAS": "1",
                               "ZIMAGE_RAY_MAX_REPLICAS": "4"}, default_config=None)
    assert s.ray_autoscaling and (s.ray_min_replicas, s.ray_max_replicas) == (1, 4)
    assert s.generation_concurrency == 8


@pytest.mark.parametrize("argv,fragment", [
    (["--backend", "spark"], "backend"),
    (["--ray-replicas", "0"], "ray_replicas"),
    (["--ray-min-replicas", "3", "--ray-max-replicas", "2"], "ray_max_replicas"),
    (["--ray-min-replicas", "-1"], "ray_min_replicas"),
    (["--ray-gpus-per-replica", "-2"], "ray_gpus_per_replica"),
    (["--ray-address", " "], "ray_address"),
])
def test_bad_ray_values_name_the_setting(argv, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_settings(argv, env={}, default_config=None)
