"""Where the Settings come from. Precedence: CLI > env ZIMAGE_* > config TOML > defaults.

`configs/default.toml` (next to the package) is read first when present; `--config FILE` (or
ZIMAGE_CONFIG) names one more TOML file that overrides it. Keys in TOML and env names follow the
field names: `idle_unload_s = 60` in TOML, `ZIMAGE_IDLE_UNLOAD_S=60` in the environment.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import PROJECT_ROOT, ConfigError, Settings
from .config_flags import build_parser

DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.toml"
ENV_PREFIX = "ZIMAGE_"
_FIELDS = {f.name: f for f in fields(Settings)}


def _coerce(name: str, value: Any, source: str) -> Any:
    """One value from TOML (any TOML type), the environment or the command line (strings) as the
    field's type. Nothing is rounded, and no array or table passes for a scalar: 1.9 is not an int,
    nan is not a number of seconds, [1, 2] is not a port."""
    kind = type(_FIELDS[name].default)

    def bad(why: str = "") -> ConfigError:
        return ConfigError(f"{name} from {source}: {value!r} is not a valid {kind.__name__}{why}", name)

    if kind is tuple:                      # a list of folders: a TOML array, repeated flags, or os.pathsep-joined
        items = value.split(os.pathsep) if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise bad(" (a list of folders)")
        return tuple(i for i in items if i.strip())
    if isinstance(value, (list, dict)) or not isinstance(value, (str, int, float)):   # arrays, tables, dates
        raise bad()
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise bad()
    if kind is str:
        if isinstance(value, bool):        # `vram_budget = 8` is fine, `model = true` is a slip
            raise bad(" (quote it)")
        return str(value)
    if isinstance(value, bool):
        raise bad()
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise bad(" (a whole number)")
            return int(value)
        try:
            return int(value)
        except ValueError:
            raise bad() from None
    try:
        number = float(value)
    except ValueError:
        raise bad() from None
    if not math.isfinite(number):
        raise bad(" (a finite number)")
    return number


def _from_toml(path: Path) -> dict:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder: name a .toml file") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown settings {sorted(unknown)}")
    return {k: _coerce(k, v, str(path)) for k, v in data.items()}


def _from_env(env: Mapping[str, str]) -> dict:
    out = {}
    for name in _FIELDS:
        key = ENV_PREFIX + name.upper()
        if key in env:
            out[name] = _coerce(name, env[key], key)
    return out


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                  default_config: Path | None = DEFAULT_CONFIG) -> Settings:
    env = os.environ if env is None else env
    cli = vars(build_parser().parse_args(list(argv or [])))
    cli = {k: _coerce(k, v, "command line") for k, v in cli.items()}
    env_values = _from_env(env)
    values: dict = {}
    sources: dict[str, str] = {}         # setting -> the file, variable or flag its value came from

    def take(found: dict, source) -> None:
        values.update(found)
        sources.update({name: source(name) for name in found})

    if default_config is not None and default_config.exists():
        take(_from_toml(default_config), lambda _: str(default_config))
    extra_config = cli.get("config") or env_values.get("config") or ""
    if extra_config:
        path = Path(extra_config).expanduser()
        take(_from_toml(path), lambda _: str(path))
    take(env_values, lambda name: ENV_PREFIX + name.upper())
    take(cli, lambda _: "the command line")
    try:
        return dataclasses.replace(Settings(), **values).validate()
    except ConfigError as e:
        if e.setting in sources:
            raise ConfigError(f"{e} (from {sources[e.setting]})", e.setting) from None
        raise
