"""Typed, validated settings from one TOML file, environment variables and flags, in that order of precedence.

A settings class is a dataclass of sections; each section is a dataclass of scalar fields. Every error names the key
(`mqtt.keepalive: expected an integer, got "ten"`), so a bad config fails at start-up in one readable line. Both daemons
(edge-gw and cloud-ingest) load their config through this module.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message names the key."""


class Size(int):
    """A byte count; TOML may give an integer or a string such as "512MiB"."""


class Duration(float):
    """Seconds; TOML may give a number or a string such as "30d", "90s", "250ms"."""


class AutoBool(str):
    """"true", "false" or "auto" (the program decides); TOML may give a boolean or the string "auto"."""


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_auto_bool(key: str, value: object) -> AutoBool:
    if isinstance(value, bool):
        return AutoBool("true" if value else "false")
    if isinstance(value, str):
        low = value.strip().lower()
        if low == "auto":
            return AutoBool("auto")
        if low in _TRUE:
            return AutoBool("true")
        if low in _FALSE:
            return AutoBool("false")
    raise ConfigError(f'{key}: expected true, false or "auto", got {value!r}')


def parse_size(key: str, value: object) -> Size:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return Size(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return Size(int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]))
    raise ConfigError(f'{key}: expected a size such as 536870912 or "512MiB", got {value!r}')


def parse_duration(key: str, value: object) -> Duration:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return Duration(float(value))
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _DURATION_UNITS:
            return Duration(float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()])
    raise ConfigError(f'{key}: expected a duration such as 30 or "30d", "90s", "250ms", got {value!r}')


def _describe(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def _coerce(key: str, tp: Any, value: object, *, from_text: bool) -> object:
    """Check (TOML) or convert (env/flag text) one value against its declared type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (from_text and value == ""):
            return None
        return _coerce(key, args[0], value, from_text=from_text)
    if tp is Size:
        return parse_size(key, int(value) if from_text and isinstance(value, str) and value.isdigit() else value)
    if tp is Duration:
        return parse_duration(key, value)
    if tp is AutoBool:
        return parse_auto_bool(key, value)
    if tp is bool:
        if from_text and isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if from_text and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {_describe(value)} {value!r}")
    if tp is float:
        if from_text and isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {_describe(value)} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {_describe(value)} {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected an array, got {_describe(value)} {value!r}")
        return [_coerce(f"{key}[{i}]", item, v, from_text=from_text) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _table(key, tp, value, from_text=from_text)
    raise ConfigError(f"{key}: unsupported setting type {tp!r}")  # a programming error, named all the same


def _table(key: str, tp: type, value: object, *, from_text: bool) -> object:
    """One table of an array of tables (`[[alerts.rules]]`): a dataclass of scalars, checked like a section."""
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table, got {_describe(value)} {value!r}")
    fields = _section_fields(tp)
    for k in value:
        if k not in fields:
            raise ConfigError(f"{key}.{k}: unknown key (known: {', '.join(fields)})")
    values = {k: _coerce(f"{key}.{k}", fields[k], v, from_text=from_text) for k, v in value.items()}
    try:
        return tp(**values)
    except ConfigError as e:
        raise ConfigError(f"{key}.{e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None


def _section_fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def load(
    cls: type[T],
    path: Path | None,
    *,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> T:
    """Build `cls` from TOML at `path` (optional), then `<PREFIX>_<SECTION>_<KEY>` variables, then `overrides`
    ({"section.key": value}, from command-line flags; None values are ignored)."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except PermissionError:
            raise ConfigError(f"config file {path} is not readable") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    environ = os.environ if environ is None else environ
    sections = _section_fields(cls)
    for name in data:
        if name not in sections:
            raise ConfigError(f"{name}: unknown section (known: {', '.join(sections)})")
    built: dict[str, Any] = {}
    for sname, stype in sections.items():
        raw = data.get(sname, {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{sname}: expected a table, got {_describe(raw)}")
        fields = _section_fields(stype)
        for key in raw:
            if key not in fields:
                raise ConfigError(f"{sname}.{key}: unknown key (known: {', '.join(fields)})")
        values: dict[str, Any] = {}
        for key, ftype in fields.items():
            dotted = f"{sname}.{key}"
            if key in raw:
                values[key] = _coerce(dotted, ftype, raw[key], from_text=False)
            env_name = f"{env_prefix}_{sname}_{key}".upper()
            if env_name in environ:
                values[key] = _coerce(f"{dotted} (from ${env_name})", ftype, environ[env_name], from_text=True)
            if overrides and overrides.get(dotted) is not None:
                values[key] = _coerce(f"{dotted} (from the command line)", ftype, overrides[dotted], from_text=True)
        try:
            built[sname] = stype(**values)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{sname}: {e}") from None
    for dotted in overrides or {}:
        sname, _, key = dotted.partition(".")
        if sname not in sections or key not in _section_fields(sections[sname]):
            raise ConfigError(f"{dotted}: unknown setting")
    return cls(**built)


def as_dict(settings: object, *, redact: tuple[str, ...] = ("password", "token", "secret")) -> dict[str, Any]:
    """The effective settings as plain data, with secrets replaced, for `config check` and logs."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):  # type: ignore[arg-type]
        section = getattr(settings, f.name)
        sec: dict[str, Any] = {}
        for sf in dataclasses.fields(section):
            value = getattr(section, sf.name)
            if value and any(word in sf.name for word in redact) and not sf.name.endswith("_file"):
                value = "***"
            if isinstance(value, list):
                value = [dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
                         for v in value]
            sec[sf.name] = value
        out[f.name] = sec
    return out


def read_secret_file(key: str, path: str) -> str:
    """Read a credential file, refusing one that others can read (it must be mode 0600 or stricter)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror}") from None
    if st.st_mode & 0o077:
        raise ConfigError(f"{key}: {path} is readable by group or others (mode {st.st_mode & 0o777:04o}); chmod 600 it")
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def check_private(key: str, path: Path) -> None:
    """A config file that carries a secret inline must not be readable by others."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError(
            f"{key} is set inline in {path}, which is readable by group or others (mode {mode & 0o777:04o}); "
            f"chmod 600 {path} or use a password file"
        )


def state_dir(daemon: str, environ: Mapping[str, str] | None = None) -> Path:
    """Where a daemon keeps its state when its config names no path. One rule for both daemons:

    1. `$STATE_DIRECTORY`, which systemd sets for a unit with `StateDirectory=` (system or user service);
    2. `/var/lib/<daemon>` when running as root;
    3. otherwise the XDG state directory, `$XDG_STATE_HOME/<daemon>` (by default `~/.local/state/<daemon>`).
    """
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib") / daemon
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / daemon


def ensure_dir(key: str, path: Path) -> Path:
    """Create `path` (mode 0750, parents as needed) if it is missing and check that it is a writable folder; a
    ConfigError that names `key` otherwise."""
    try:
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{key}: cannot create the folder {path}: {e.strerror or e}") from None
    if not path.is_dir():
        raise ConfigError(f"{key}: {path} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: the folder {path} is not writable by this user")
    return path
