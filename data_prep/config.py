"""One config merge for every stage: ``configs/default.yaml`` < dataset config < ``key=value``.

``configs/default.yaml`` documents every key with a ``# (type) description`` comment. A dataset
config (``configs/vinbigdata.yaml``...) overrides some of them; command-line ``key=value`` pairs
override both. Unknown keys are rejected with the list of valid ones, and a value whose type does
not match the default's type is rejected too (ints are accepted where a float is expected, and a
``null`` default accepts anything).
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

CONFIG_DIR = Path(os.environ.get("CXRDET_CONFIGS", Path(__file__).resolve().parents[1] / "configs"))
DEFAULT = CONFIG_DIR / "default.yaml"


def resolve_config_path(name: str | os.PathLike) -> Path:
    """A config path, or a bare name (``vinbigdata``) looked up as ``configs/<name>.yaml``."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / f"{name}.yaml", CONFIG_DIR / str(name)):
        if cand.is_file():
            return cand
    known = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {str(name)!r}: no such file, and not one of configs/{{{','.join(known)}}}.yaml")


def _read_yaml(path: Path) -> dict:
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["epochs=3", "device=cpu"]`` -> ``{"epochs": 3, "device": "cpu"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"argument {item!r}: expected key=value")
        k, v = item.split("=", 1)
        k = k.strip().lstrip("-").replace("-", "_")
        out[k] = yaml.safe_load(v) if v != "" else None
    return out


def _check(key: str, value: Any, default: Any, where: str, valid: Iterable[str]) -> None:
    if default is None or value is None:
        return
    ok = isinstance(value, type(default))
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if isinstance(default, bool) != isinstance(value, bool):
        ok = False
    if not ok:
        raise ValueError(f"{where}: key {key!r} = {value!r} is {type(value).__name__}; "
                         f"expected {type(default).__name__} (default {default!r})")


def load_config(config: str | os.PathLike | None = None, overrides: Iterable[str] | dict | None = None) -> dict:
    """Merge defaults < ``config`` (path or name) < ``overrides`` and validate every key.

    Returns a plain dict with every key of ``configs/default.yaml``; ``_config`` holds the path of
    the dataset config used (or None)."""
    defaults = _read_yaml(DEFAULT)
    cfg = dict(defaults)
    valid = sorted(defaults)
    layers: list[tuple[str, dict]] = []
    path = None
    if config:
        path = resolve_config_path(config)
        layers.append((str(path), _read_yaml(path)))
    if overrides:
        ov = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        layers.append(("command line", ov))
    for where, layer in layers:
        for k, v in layer.items():
            if k not in defaults:
                close = difflib.get_close_matches(k, valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{where}: unknown key {k!r}{hint}. Valid keys: {', '.join(valid)}")
            _check(k, v, defaults[k], where, valid)
            cfg[k] = float(v) if isinstance(defaults[k], float) and isinstance(v, int) and not isinstance(v, bool) else v
    cfg["_config"] = str(path) if path else None
    return cfg
