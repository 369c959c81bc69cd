"""THE config merge of every stage: defaults < dataset config < ``--config FILE`` < flags < ``key=value``.

* ``configs/default.yaml`` holds every key with a ``# (type) description`` comment;
* the dataset config ``configs/<dataset>.yaml`` of the ``dataset`` the higher layers name (or the
  default's) is layered next, unless it is the ``--config`` file itself;
* ``--config FILE`` (a path or a bare name such as ``rsna`` or ``phantom``);
* flags: each flag is declared ONCE, in :data:`ALIASES`, as an alias of one key, so ``--iou`` means
  ``iou_thr`` in every stage; a stage declares which keys it takes flags for with
  :func:`add_config_arguments` and reads the merged dict with :func:`stage_config`;
* ``key=value`` pairs on the command line (values parsed as YAML), highest.

A stage function takes the merged dict, or a small frozen settings dataclass made from it
(:class:`StageSettings`: ``ReportSettings.from_config(cfg, title=...)``), not a long parameter list.

Unknown keys are rejected with the closest valid one and the list of valid keys; a value whose
type does not match the default's type is rejected too (ints are accepted where a float is
expected, numbers where a string is expected become strings, e.g. ``device=0``; a ``null``
default accepts anything; ``raters`` is a list of ids, ``"R8,R10"`` or ``all``). The merged dict also holds ``_config`` (the ``--config`` path or
None) and ``_sources`` (``{key: layer}`` for every key a layer above the defaults set; layers are
named ``dataset config``, the ``--config`` path, ``flag`` and ``key=value``).

Every value is then checked once, here, by its key's rule in :data:`data_prep.core.keys.RULES` (ranges
and finiteness of numbers, choices of strings, sizes of lists, known class names in ``class_thr``,
``cls_low <= cls_high``): a bad one is one line naming the layer, the key, the value and what was
expected (``key=value: key 'box_scale' = nan; expected a finite number in (0, 10]``). Each layer
is first bounded in size (a config file of at most 1 MiB, at most 100,000 values after YAML alias
expansion, 32 levels: an anchor bomb is refused before anything walks it).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Iterable

import yaml

from data_prep.core import keys
from data_prep.core.errors import InputError
from data_prep.core.resources import config_dir

log = logging.getLogger(__name__)

CONFIG_DIR = config_dir()   # the checkout's configs/, or the installed package's copy (data_prep.core.resources)
DEFAULT = CONFIG_DIR / "default.yaml"

# flag -> config key: every flag that sets a setting, declared once for every stage
ALIASES: dict[str, str] = {
    "--dataset": "dataset",
    "--size": "size", "--keep-ratio": "keep_ratio", "--workers": "workers", "--scheduler": "scheduler",
    "--method": "fusion", "--fusion-iou": "fusion_iou", "--skip": "fusion_skip", "--conf-type": "fusion_conf_type",
    "--raters": "raters", "--vote": "vote",
    "--seed": "seed",
    "--fold": "fold", "--model": "model", "--epochs": "epochs", "--imgsz": "imgsz", "--batch": "batch",
    "--device": "device",
    "--conf": "conf", "--tta": "tta", "--low": "cls_low", "--high": "cls_high", "--cls-imgsz": "cls_imgsz",
    "--metric": "metric", "--iou": "iou_thr",
    "--show-conf": "show_conf", "--decimals": "decimals",
}
_FLAG_OF = {}
for _f, _k in ALIASES.items():
    _FLAG_OF.setdefault(_k, []).append(_f)


def normalise_raters(value: Any) -> list[str] | str | None:
    """``raters``: ``[R8, R10]``, ``"R8,R10"`` -> ``["R8", "R10"]``; ``all`` stays ``"all"``; empty -> None
    (what the merged config holds; :func:`data_prep.labels.fusion.parse_raters` reads it)."""
    if isinstance(value, str):
        value = "all" if value.strip() == "all" else value.split(",")
    if value == "all":
        return value
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{value!r}; expected a list of radiologist ids (e.g. [R8, R10] or R8,R10) or all")
    out = [str(r).strip() for r in value if str(r).strip()]
    return out or None


class _OptionalValue(argparse.Action):
    """A flag whose value may be left out (``--raters`` = ``const``): a ``key=value`` token right
    after it is not its value but an override, handed on to :func:`stage_config`."""

    def __call__(self, parser, namespace, values, option_string=None):
        if isinstance(values, str) and "=" in values:
            namespace._overrides_after_flags = [*getattr(namespace, "_overrides_after_flags", []), values]
            values = self.const
        setattr(namespace, self.dest, values)


def _ratio(value: Any) -> float:
    """``squarify``: a number >= 1 (null = off is handled before)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
        raise ValueError(f"{value!r}; expected a number >= 1 (the longest allowed side ratio) or null (off)")
    return float(value)


def normalise_alpha(value: Any) -> float | dict[str, float]:
    """``alpha``: one shared exponent (a number >= 0), or ``{class name: exponent}`` (each >= 0)."""
    def num(v, what):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"{what}{v!r}; expected a number >= 0")
        return float(v)

    if isinstance(value, dict):
        return {str(k): num(v, f"class {k!r}: ") for k, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{value!r}; expected a number >= 0 (shared) or a mapping class name -> number (per class)")
    return num(value, "")


TRAIN_LABELS = ("fused", "variants", "both")


def _train_labels(value: Any) -> str:
    """``train_labels``: fused | variants | both."""
    if str(value) not in TRAIN_LABELS:
        raise ValueError(f"{value!r}; expected one of {', '.join(TRAIN_LABELS)}")
    return str(value)


_NORMALISE = {"device": lambda v: str(v).replace(" ", ""), "raters": normalise_raters, "squarify": _ratio,
              "alpha": normalise_alpha, "train_labels": _train_labels}
# argparse settings of a flag beyond what the key's default type gives: --raters alone = every radiologist
_ARGPARSE = {"raters": {"nargs": "?", "const": "all", "metavar": "R8,R10", "action": _OptionalValue},
             "vote": {"choices": ("any", "majority")}}


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


def load_yaml(source, where: str, expected: str = "a YAML mapping of key: value lines") -> Any:
    """``yaml.safe_load(source)`` with every failure one :class:`~data_prep.core.errors.InputError`:
    ``where`` (file or ``key=value``), the line and column PyYAML marks, its problem (scanner,
    parser, composer, constructor errors; nesting past Python's recursion limit)."""
    from data_prep.core.errors import InputError

    try:
        return yaml.safe_load(source)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x) or type(e).__name__
        raise InputError(f"{where}{at}", f"not valid YAML ({what}); expected {expected}") from None
    except yaml.YAMLError as e:
        raise InputError(where, f"not valid YAML ({' '.join(str(e).split())[:160]}); expected {expected}") from None
    except RecursionError:
        raise InputError(where, f"YAML nested too deeply to read (past Python's recursion limit); expected "
                         f"{expected}, at most {keys.MAX_DEPTH} levels deep") from None


def _read_yaml(path: Path) -> dict:
    with open(path) as f:
        data = load_yaml(f, str(path)) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def _value(text: str, where: str = "key=value") -> Any:
    """A command-line value: YAML, plus numbers YAML 1.1 leaves as text (``1e-3``)."""
    v = load_yaml(text, where, "a YAML value (a number, text, [list] or {key: value})") if text != "" else None
    if isinstance(v, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", v.strip()):
        return float(v)
    return v


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["epochs=3", "device=cpu"]`` -> ``{"epochs": 3, "device": "cpu"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        if len(item) > keys.MAX_BYTES:
            raise ValueError(f"argument {item[:40]!r}...: {len(item):,} characters; expected at most {keys.MAX_BYTES:,}")
        if "=" not in item:
            raise ValueError(f"argument {item!r}: expected key=value")
        k, v = item.split("=", 1)
        k = k.strip().lstrip("-").replace("-", "_")
        out[k] = _value(v, f"key=value {item[:80]!r}")
    return out


def _coerce(key: str, value: Any, default: Any, where: str) -> Any:
    """``value`` checked against the default's type (see the module docstring) and normalised."""
    if key in _NORMALISE and value is not None:
        try:
            return _NORMALISE[key](value)
        except ValueError as e:
            raise ValueError(f"{where}: key {key!r} = {e}") from None
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif isinstance(default, str) and isinstance(value, (int, float)):
        return str(value)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ValueError(f"{where}: key {key!r} = {value!r} is {type(value).__name__}; "
                         f"expected {type(default).__name__} (default {default!r})")
    return value


def _dataset_layer(layers: list[tuple[str, dict]], defaults: dict, config_path: Path | None) -> list:
    name = next((layer["dataset"] for _, layer in reversed(layers) if "dataset" in layer), defaults.get("dataset"))
    if not isinstance(name, str):
        return []
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file() or (config_path is not None and path.resolve() == config_path.resolve()):
        return []
    return [("dataset config", _read_yaml(path))]


def _layer_name(key: str, sources: dict) -> str:
    """Where ``key``'s value came from, for a message: the flag itself (``--size``), ``key=value``,
    the config file, or configs/default.yaml."""
    where = sources.get(key, str(DEFAULT))
    return _FLAG_OF[key][0] if where == "flag" and key in _FLAG_OF else where


def load_config(config: str | os.PathLike | None = None, overrides: Iterable[str] | dict | None = None,
                flags: dict | None = None) -> dict:
    """Merge defaults < dataset config < ``config`` (path or name) < ``flags`` ({key: value} set
    by flags) < ``overrides`` (``key=value`` strings or a dict) and validate every key.

    Returns a plain dict with every key of ``configs/default.yaml`` plus ``_config`` and
    ``_sources`` (see the module docstring)."""
    defaults = _read_yaml(DEFAULT)
    valid = sorted(defaults)
    path = resolve_config_path(config) if config else None
    upper: list[tuple[str, dict]] = []
    if path is not None:
        keys.check_size(path)
        upper.append((str(path), _read_yaml(path)))
    if flags:
        upper.append(("flag", dict(flags)))
    if overrides:
        upper.append(("key=value", overrides if isinstance(overrides, dict) else parse_overrides(overrides)))
    for where, layer in upper:
        for k in layer:
            if k not in defaults:
                close = difflib.get_close_matches(k, valid, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{where}: unknown key {k!r}{hint}. Valid keys: {', '.join(valid)}")
    cfg = dict(defaults)
    sources: dict[str, str] = {}
    layers = _dataset_layer(upper, defaults, path) + upper
    for where, layer in layers:
        keys.check_tree(layer, where)  # an anchor bomb stops here, before anything walks it
    for where, layer in layers:
        for k, v in layer.items():
            if k not in defaults:
                raise ValueError(f"{where}: unknown key {k!r}. Valid keys: {', '.join(valid)}")
            cfg[k] = _coerce(k, v, defaults[k], where)
            sources[k] = where
    keys.check(cfg, lambda k: _layer_name(k, sources))  # every key's rule (data_prep/core/keys.py), once
    cfg["_config"] = str(path) if path else None
    cfg["_sources"] = sources
    return cfg


# ----------------------------------------------------------------------------- stages' CLI side
def _help(key: str) -> str:
    """The ``# (type) description`` comment of ``key`` in default.yaml."""
    for line in DEFAULT.read_text().splitlines():
        m = re.match(rf"{re.escape(key)}:[^#]*#\s*(.*)", line)
        if m:
            return m.group(1).replace("%", "%%")
    return key


def add_config_arguments(parser: argparse.ArgumentParser, keys: Iterable[str] = (),
                         help: dict[str, str] | None = None, retired_positional: bool = False) -> None:
    """Add ``--config`` and the flag of each of
    ``keys`` (from :data:`ALIASES`; help from default.yaml unless ``help`` says it for this
    stage). Flags default to None: only a flag given on the command line is a layer of the merge.
    ``retired_positional``: the stage took its config positionally before (``cxrdet train
    phantom``); such a word is now a one-line error naming ``--config`` (:func:`stage_config`)."""
    if retired_positional:
        parser.add_argument("_positional_config", nargs="?", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None,
                        help="config: a name (vinbigdata, rsna, nih, phantom, ...) or a YAML path; key=value overrides any key")
    defaults = _read_yaml(DEFAULT)
    keys = list(keys)
    for key in keys:
        if key not in _FLAG_OF:
            raise KeyError(f"no flag is declared for config key {key!r} in data_prep.core.config.ALIASES")
        d = defaults[key]
        text = (help or {}).get(key) or _help(key)
        # --help says the default, unless this stage's own help (its own default) replaces the key's
        shown = "" if d is None or d == "" or "default" in text else f" (default: {str(d).replace('%', '%%')})"
        kw: dict[str, Any] = dict(dest=key, default=None, help=f"{text}{shown} [config key `{key}`]")
        if isinstance(d, bool):
            kw["action"] = "store_true"
        elif isinstance(d, (int, float)):
            kw["type"] = type(d)
        elif isinstance(d, list):
            kw["nargs"] = "+"
        kw.update(_ARGPARSE.get(key, {}))
        parser.add_argument(*_FLAG_OF[key], **kw)
    parser.set_defaults(_config_keys=tuple(keys))
    parser.epilog = (parser.epilog + " " if parser.epilog else "") + \
        "Priority: defaults < dataset config < --config < flags < key=value."


def retired_flag(parser: argparse.ArgumentParser, flag: str, key: str) -> None:
    """A flag this stage once gave another meaning than :data:`ALIASES` does: given now, it is a
    one-line error naming the flag that sets ``key`` (README's changelog lists the renames)."""
    dest = f"_retired_{key}"
    parser.add_argument(flag, dest=dest, default=None, metavar=key.upper(), help=argparse.SUPPRESS)
    retired = dict(parser.get_default("_retired") or {})
    retired[dest] = (flag, key)
    parser.set_defaults(_retired=retired)


def stage_config(args: argparse.Namespace) -> dict:
    """The merged config of a stage's parsed arguments: ``args.config``, the flags its parser
    declared with :func:`add_config_arguments` that were given (for a hand-made Namespace: its
    attributes named like a key that has a flag), and ``args.overrides``."""
    keys = getattr(args, "_config_keys", None)
    if keys is None:  # a Namespace built by hand: its attributes named like an aliased key
        keys = sorted(set(ALIASES.values()))
    flags = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    for dest, (flag, key) in (getattr(args, "_retired", None) or {}).items():
        if getattr(args, dest, None) is not None:
            raise InputError(flag, f"renamed; use {_FLAG_OF[key][0]} (it sets `{key}`)")
    overrides = [*getattr(args, "_overrides_after_flags", []), *(getattr(args, "overrides", None) or [])]
    old = getattr(args, "_positional_config", None)
    if old is not None:
        if "=" not in old:
            raise InputError(old, f"a config given positionally; use --config {old} (every stage takes its "
                                  "config with --config since issue 28)")
        overrides = [old, *overrides]   # the first key=value, taken by the hidden positional
    return load_config(getattr(args, "config", None), overrides, flags)


def from_command_line(cfg: dict, key: str) -> bool:
    """Whether ``key`` was set by a flag or a ``key=value`` (not by a config file or the defaults)."""
    return cfg.get("_sources", {}).get(key) in ("flag", "key=value")


def held_out_fold(cfg: dict, folds) -> int | None:
    """The fold an evaluation is restricted to: the config's ``fold`` when a folds table
    (``--folds``) is given, else None; a fold set on the command line without one is an error."""
    if folds is None:
        if from_command_line(cfg, "fold"):
            raise ValueError("--folds and --fold go together")
        return None
    return int(cfg["fold"])


# ----------------------------------------------------------------------------- stages' settings objects
class StageSettings:
    """Base of a stage's small frozen settings dataclass (``@dataclass(frozen=True)``), what its
    stage function takes instead of a long parameter list.

    :meth:`from_config` reads the fields named like a config key from the merged config (typed
    by the field's default), :meth:`derived` adds what the class makes of the config (the
    dataset's normal class, DICOM rendering options, ...), ``changes`` override fields last.
    ``OLD``: keyword names the stage function took before its settings object, kept for one
    release (``{"conf": "show_conf"}``)."""

    OLD: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_config(cls, cfg: dict, **changes):
        kw = {}
        for f in dataclasses.fields(cls):
            if f.name in cfg:
                v, d = cfg[f.name], f.default
                kw[f.name] = type(d)(v) if isinstance(d, (bool, int, float, str)) and v is not None else v
        kw.update(cls.derived(cfg))
        return cls(**kw).replace(**changes)

    @classmethod
    def of(cls, settings=None, **changes):
        """``settings`` as this class: an instance, a merged config dict (:meth:`from_config`) or
        None (the defaults), with ``changes`` applied: what a stage function taking settings does first."""
        if isinstance(settings, dict):
            settings = cls.from_config(settings)
        return (settings or cls()).replace(**changes)

    @classmethod
    def derived(cls, cfg: dict) -> dict:
        """Fields the class makes of the merged config beyond its keys (none here)."""
        return {}

    def replace(self, **changes):
        """A copy with ``changes`` (field names, or the old keyword names of :attr:`OLD`)."""
        changes = {self.OLD.get(k, k): v for k, v in changes.items()}
        names = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown setting(s) {unknown}; expected {names}")
        return dataclasses.replace(self, **changes)
