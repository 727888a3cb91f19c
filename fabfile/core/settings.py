"""gpufab's own settings (`gpufab:` in Invoke's config files, `GPUFAB_*` variables): read and checked here.

Invoke reads its config files with `yaml.safe_load` and hands on whatever they
hold: invalid YAML was Invoke's traceback, and a value of the wrong type
(`workers: abc`, `known_hosts: [a]`) one from deep inside the first task.
Every known setting is checked where it is read, naming where it came from,
and the files are read through gpufab's bounded YAML loader.
"""

from __future__ import annotations

import errno
import math
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from invoke.env import Environment
from invoke.exceptions import AmbiguousEnvVar, UncastableEnvVar

from .errors import InputError, reported
from .inventory import load_yaml
from .localfs import read_text
from .declared import check_config_section

#: gpufab's own settings and the kind of each value (`GPUFAB_<KEY>` sets them too, but `inventory`:
#: that one is the GPUFAB_INVENTORY variable, read before any config).
SETTINGS: Dict[str, Callable[[str], Any]] = {
    "workers": int, "connect_timeout": float, "command_timeout": float, "dead_after": float,
    "known_hosts": str, "inventory": str,
}

#: Invoke's levels of config files, highest precedence first (`env` sits between runtime and project).
_LEVELS = ("runtime", "env", "project", "user", "system")


def check_setting(key: str, value: Any, where: str, label: str = "") -> Any:
    """`value` as setting `key` takes it: a positive finite number, or a file path; else named."""
    kind = SETTINGS[key]
    if kind is str:
        if not isinstance(value, str) or not value.strip() or "\0" in value:
            raise InputError(f"{label}not a file path: {value!r}", path=where)
        return value
    return check_number(value, where, kind, label)


def check_number(value: Any, where: str, kind: Callable[[str], Any] = float, label: str = "") -> Any:
    """A positive finite number of `kind` (int: a whole one), from a file or a variable; else named.

    nan and inf are refused: `dead_after: nan` was accepted, then every host failed.
    """
    try:
        number = None if isinstance(value, bool) else kind(str(value))
    except ValueError:
        number = None
    if number is None:
        raise InputError(f"{label}not a {'whole ' if kind is int else ''}number: {value!r}", path=where)
    if isinstance(number, float) and not math.isfinite(number):
        raise InputError(f"{label}not a finite number: {value!r}", path=where)
    if number <= 0:
        raise InputError(f"{label}must be positive: {value!r}", path=where)
    return number


def gpufab_setting(config: Any, key: str, default: Any = None) -> Any:
    """Read `gpufab.<key>` from an Invoke/Fabric config, tolerating its absence; a known setting is checked."""
    section = config.get("gpufab") if hasattr(config, "get") else None
    if section is None:
        return default
    value = section.get(key) if hasattr(section, "get") else None
    if value is None:
        return default
    return check_setting(key, value, *setting_source(config, key)) if key in SETTINGS else value


def check_gpufab_section(config: Any) -> None:
    """Every key under `gpufab:` in the config files is a declared setting; a misspelt one names its file."""
    section = config.get("gpufab") if hasattr(config, "get") else None
    if hasattr(section, "keys"):
        check_config_section(section, lambda key: setting_source(config, key)[0])


def fabric_timeout(config: Any, section: str, key: str) -> Optional[float]:
    """One of Fabric's own timeouts (`timeouts.connect`, `connect_kwargs.timeout`: `fab -t`, GPUFAB_TIMEOUTS_*), checked.

    Invoke takes `GPUFAB_TIMEOUTS_CONNECT=abc` as text: every host then failed on it.
    """
    value = ((config.get(section) if hasattr(config, "get") else None) or {}).get(key)
    return None if value is None else check_number(value, f"{section}.{key}")


def setting_source(config: Any, key: str) -> Tuple[str, str]:
    """(where, label) of a setting's value for an error: the config file that set it, or its variable."""
    for level in _LEVELS:
        data = getattr(config, f"_{level}", None)
        section = data.get("gpufab") if isinstance(data, dict) else None
        if isinstance(section, dict) and section.get(key) is not None:
            if level == "env":
                return f"GPUFAB_{key.upper()}", ""
            return str(getattr(config, f"_{level}_path", None) or f"{level} config"), f"gpufab.{key}: "
    return f"gpufab.{key}", ""


def bad_variable(config: Any, prefix: str, exc: Exception) -> InputError:
    """The `<prefix>*` variable that Invoke could not cast (`GPUFAB_PORT=abc`), found by casting each as it does.

    Invoke's own error names no variable; its Environment's crawl and cast are the only record of which.
    """
    env = Environment(config=config, prefix=prefix)
    try:
        variables = env._crawl(key_path=[], env_vars={})
    except AmbiguousEnvVar as ambiguous:
        return InputError(f"two settings would take one variable ({ambiguous})", path=f"{prefix}*")
    for name, key_path in variables.items():
        raw = os.environ.get(prefix + name)
        try:
            if raw is not None:
                env._path_set(key_path, raw)
        except (ValueError, UncastableEnvVar) as cast:
            return InputError(f"not a value for {'.'.join(key_path)}: {raw!r} ({cast})", path=prefix + name)
    return InputError(f"Invoke cannot read these variables: {exc}", path=f"{prefix}*")


def read_config_file(path: str, defaults: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """One YAML config file as Invoke's loader returns it; a file that cannot be one is named.

    A mapping where Invoke has a value (`run: 5`) or the reverse cannot be merged:
    Invoke says so in a traceback, so it is refused here, against its `defaults`.
    """
    text = read_text(path)
    if text is None:  # Invoke's sign to try the next suffix (invoke.yml after invoke.yaml)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    data = load_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError("a config file must be a mapping (gpufab: {workers: 8, ...})", path=path)
    clash = _clash(defaults or {}, data)
    if clash is not None:
        key, mapping = clash
        raise InputError(f"{key!r} must be {'a mapping' if mapping else 'a single value'}, as Invoke and Fabric "
                         "have it", path=path)
    if data.get("gpufab") is None and "gpufab" in data:
        data["gpufab"] = {}  # every setting commented out: none set (a None would not merge with GPUFAB_*)
    if not isinstance(data.get("gpufab", {}), dict):
        raise InputError("'gpufab' must be a mapping of settings (workers: 8, ...)", path=path)
    return data


def _clash(defaults: Mapping[str, Any], data: Mapping[Any, Any], prefix: str = "") -> Optional[Tuple[str, bool]]:
    """(dotted key, whether the default is a mapping) of the first key that is a mapping on one side only."""
    for key, value in data.items():
        if key not in defaults:
            continue
        if isinstance(defaults[key], dict) != isinstance(value, dict):
            return f"{prefix}{key}", isinstance(defaults[key], dict)
        if isinstance(value, dict):
            found = _clash(defaults[key], value, f"{prefix}{key}.")
            if found is not None:
                return found
    return None


def check_config_files(config_class: type) -> None:
    """Invoke's config classes (and so Fabric's and gpufab's) read their YAML files through `read_config_file`.

    Invoke gives no hook for it; its two loader names are the one seam. A bad
    file is then one `gpufab: error:` line from `inv`, `fab` and `gpufab` alike.
    """

    def load(config: Any, path: str) -> Dict[str, Any]:
        return reported(read_config_file)(path, config._defaults)

    config_class._load_yaml = load
    config_class._load_yml = load

