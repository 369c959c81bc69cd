"""What each config key may hold: one rule per key of ``configs/default.yaml``, applied once, by the merge.

:data:`RULES` maps every key to a rule; :func:`check` runs them on a merged config (after the
type check of :mod:`data_prep.core.config`) and raises one :class:`~data_prep.core.errors.InputError` naming
the layer that set the key, the key, the value and what was expected::

    key=value: key 'box_scale' = nan; expected a finite number in (0, 10]

Rules: :class:`Num` (finite, a range, open or closed ends, extra allowed values such as ``batch:
-1``), :class:`Choice`, :class:`Text` (a non-empty string: paths, names), :class:`ListOf` (items
by a rule, sizes, unique), :class:`MapOf` (keys and values by rules; ``class_thr``'s keys are the
dataset's class names or ids), :class:`Nullable`, :class:`AnyOf`. Cross-key rules
(``cls_low <= cls_high``) are in :func:`check` too.

:func:`check_tree` bounds what a YAML document may expand to (:data:`MAX_NODES` values after
alias expansion, :data:`MAX_DEPTH` levels): an anchor bomb ("billion laughs") is a few hundred
bytes that PyYAML loads as shared references in no time, and that every later walk of the value
(deepcopy, printing, hashing) would expand for minutes. :data:`MAX_BYTES` bounds a config file.

The choices spelled here are the modules' own constants (tests/test_sweep3_keys.py checks that
they agree); they are repeated so that the merge imports nothing heavy.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from data_prep.core.errors import InputError

MAX_BYTES = 1 << 20      # a config file or key=value larger than 1 MiB is not a config
MAX_NODES = 100_000      # values after alias expansion, in one document
MAX_DEPTH = 32           # nesting levels


class _TooBig(Exception):
    pass


def check_tree(value: Any, where: str, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a loaded YAML value that expands past ``max_nodes`` values or ``max_depth`` levels
    (aliases count each time they are used: what a walk of the value would visit). Stops at the
    first value past the limit, so a billion-laughs document is refused in microseconds."""
    count = 0

    def walk(v, depth):
        nonlocal count
        count += 1
        if count > max_nodes:
            raise _TooBig(f"more than {max_nodes:,} values once its aliases (*name) are expanded")
        if depth > max_depth:
            raise _TooBig(f"nested more than {max_depth} levels deep")
        if isinstance(v, dict):
            for k, x in v.items():
                walk(k, depth + 1)
                walk(x, depth + 1)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x, depth + 1)

    try:
        walk(value, 0)
    except _TooBig as e:
        raise InputError(where, f"{e} (an alias/anchor bomb?); expected a config of at most "
                                f"{max_nodes:,} values and {max_depth} levels") from None
    except RecursionError:
        raise InputError(where, f"nested too deep; expected at most {max_depth} levels") from None


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Num:
    """A finite number (an integer where the key's default is one) in ``[lo, hi]`` (``lo_open`` /
    ``hi_open``: ends excluded; None: unbounded); ``also``: other allowed values."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    also: tuple = ()

    def expect(self) -> str:
        what = "an integer" if self.integer else "a finite number"
        if self.lo is not None and self.hi is not None:
            rng = f" in {'(' if self.lo_open else '['}{_fmt(self.lo)}, {_fmt(self.hi)}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            rng = f" {'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        elif self.hi is not None:
            rng = f" {'<' if self.hi_open else '<='} {_fmt(self.hi)}"
        else:
            rng = ""
        return what + rng + "".join(f" or {a}" for a in self.also)

    def ok(self, v, ctx) -> bool:
        if not _num(v):
            return False
        if v in self.also:
            return True
        if not math.isfinite(v) or (self.integer and v != int(v)):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True


def Int(lo=None, hi=None, also=()) -> Num:
    return Num(lo, hi, integer=True, also=also)


PROB = Num(0.0, 1.0)                     # a probability / score threshold
IOU = Num(0.0, 1.0, lo_open=True)        # an IoU threshold: 0 would match everything


@dataclass(frozen=True)
class Choice:
    values: tuple

    def expect(self) -> str:
        return "one of " + " | ".join(map(str, self.values))

    def ok(self, v, ctx) -> bool:
        return isinstance(v, (str, int)) and not isinstance(v, bool) and v in self.values


@dataclass(frozen=True)
class Text:
    """A non-empty string (a path, a name); ``pattern``: a regular expression it must match."""
    pattern: str | None = None
    what: str = "a non-empty string"

    def expect(self) -> str:
        return self.what

    def ok(self, v, ctx) -> bool:
        return isinstance(v, str) and v.strip() != "" and (self.pattern is None or bool(re.fullmatch(self.pattern, v)))


@dataclass(frozen=True)
class Bool:
    def expect(self) -> str:
        return "true or false"

    def ok(self, v, ctx) -> bool:
        return isinstance(v, bool)


@dataclass(frozen=True)
class Nullable:
    rule: Any

    def expect(self) -> str:
        return f"null or {self.rule.expect()}"

    def ok(self, v, ctx) -> bool:
        return v is None or self.rule.ok(v, ctx)


@dataclass(frozen=True)
class AnyOf:
    rules: tuple

    def expect(self) -> str:
        return " or ".join(r.expect() for r in self.rules)

    def ok(self, v, ctx) -> bool:
        return any(r.ok(v, ctx) for r in self.rules)


@dataclass(frozen=True)
class ListOf:
    item: Any
    min_len: int = 0
    max_len: int | None = None
    unique: bool = False
    some_positive: bool = False   # at least one item > 0 (weights)

    def expect(self) -> str:
        size = (f"{self.min_len} to {self.max_len} " if self.max_len is not None
                else f"at least {self.min_len} " if self.min_len else "")
        return (f"a list of {size}item(s), each {self.item.expect()}" + (", no repeats" if self.unique else "")
                + (", at least one > 0" if self.some_positive else ""))

    def ok(self, v, ctx) -> bool:
        if not isinstance(v, list) or len(v) < self.min_len or (self.max_len is not None and len(v) > self.max_len):
            return False
        if not all(self.item.ok(x, ctx) for x in v):
            return False
        if self.unique and len({str(x) for x in v}) < len(v):
            return False
        return not self.some_positive or any(_num(x) and x > 0 for x in v)

    def first_bad(self, v, ctx):
        """The first offending item of a list (the message names it), or None."""
        if isinstance(v, list):
            for x in v:
                if not self.item.ok(x, ctx):
                    return x, None, f"item {x!r} is not {self.item.expect()}"
        return None


@dataclass(frozen=True)
class ClassName:
    """A class name (or id) of the merged config's dataset (its ``classes`` when set)."""

    def expect(self) -> str:
        return "a class name of the dataset"

    def ok(self, v, ctx) -> bool:
        names = ctx.get("class_names")
        if names is None:        # a dataset we do not know: the dataset rule says so
            return isinstance(v, (str, int))
        return isinstance(v, (str, int)) and not isinstance(v, bool) and (
            str(v) in names or str(v) in {str(i) for i in range(len(names))})


@dataclass(frozen=True)
class MapOf:
    key: Any
    value: Any

    def expect(self) -> str:
        return f"a mapping of {self.key.expect()} -> {self.value.expect()}"

    def ok(self, v, ctx) -> bool:
        return isinstance(v, dict) and all(self.key.ok(k, ctx) and self.value.ok(x, ctx) for k, x in v.items())

    def first_bad(self, v, ctx):
        """The first offending ``(key, value)`` of a mapping (the message names it)."""
        for k, x in v.items():
            if not self.key.ok(k, ctx):
                return k, x, f"key {k!r} is not {self.key.expect()}"
            if not self.value.ok(x, ctx):
                return k, x, f"{k}: {x!r} is not {self.value.expect()}"
        return None


@dataclass(frozen=True)
class Check:
    """A value checked by a function returning None (fine) or raising ValueError with its message."""
    fn: Any
    what: str

    def expect(self) -> str:
        return self.what

    def ok(self, v, ctx) -> bool:
        try:
            self.fn(v)
        except (ValueError, TypeError):
            return False
        return True


def _scheduler(v):
    from data_prep.core.cluster import check_scheduler

    if v is not None and not isinstance(v, str):
        raise ValueError(v)
    check_scheduler(v)


MODEL_KEYS = ("name", "model", "epochs", "imgsz", "batch", "seed", "patience", "select_by", "keep_epochs", "yolo_args",
              "tv_lr", "tv_args", "backbone_weights", "tta", "conf", "nms_iou", "max_det")  # cv's `models:` items


def _models(v):
    """``models``: null, or a non-empty list of mappings, each with a unique ``name`` and a
    ``model``, every other key one of :data:`MODEL_KEYS` holding what that key may hold."""
    if v is None:
        return
    if not isinstance(v, list) or not v:
        raise ValueError(f"{v!r} is not a non-empty list")
    seen = set()
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise ValueError(f"item {i + 1} = {m!r} is not a mapping; expected {{name: ..., model: ..., ...}}")
        missing = [k for k in ("name", "model") if k not in m]
        if missing:
            raise ValueError(f"item {i + 1} has no {' and no '.join(missing)}; expected each model to have a name "
                             "and a model")
        name = m["name"]
        if not NAME.ok(name, {}):
            raise ValueError(f"item {i + 1}: name {name!r}; expected {NAME.expect()}")
        if name in seen:
            raise ValueError(f"item {i + 1}: name {name!r} is used twice; expected one name per model")
        seen.add(name)
        bad = sorted(set(m) - set(MODEL_KEYS))
        if bad:
            raise ValueError(f"model {name!r}: {bad} not per-model settings; expected some of {list(MODEL_KEYS)}")
        for k, x in m.items():
            rule = RULES.get(k) if k != "name" else None
            if rule is not None and not rule.ok(x, {}):
                raise ValueError(f"model {name!r}: {k} = {x!r}; expected {rule.expect()}")


ANY_DICT = MapOf(Text(), AnyOf((Num(), Text(), Bool(), Nullable(Num()), ListOf(Num()), ListOf(Text()))))
NAME = Text(r"[^\s/\\]([^/\\]*[^\s/\\])?", "a name without / or \\ or surrounding spaces")
PATH = Text()

# choices (the modules' constants; see the module docstring)
DATASETS = ("vinbigdata", "rsna", "nih")
FUSIONS = ("wbf", "nms", "soft_nms", "nmw", "none")
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
VOI_MODES = ("auto", "window", "lut", "none")
STRETCH_MODES = ("minmax", "window")
EXPORTS = ("yolo", "coco")
METRICS = ("vinbigdata", "rsna", "coco")
SELECT_BY = ("competition", "fitness")
CLS_TASKS = ("binary", "multilabel")
CLS_IMAGES = ("all", "labels_or_normal")
CLS_FUSIONS = ("none", "multiply")
DEVICE = r"(?i)\s*(auto|cpu|mps|(cuda:)?\d+(\s*,\s*\d+)*)\s*"

RULES: dict[str, Any] = {
    # dataset
    "dataset": Choice(DATASETS),
    "labels": PATH,
    "meta": Nullable(PATH),
    "images_dir": PATH,
    "test_dir": Nullable(PATH),
    "sample": Nullable(PATH),
    "classes": Nullable(ListOf(Text(), min_len=1, max_len=1000, unique=True)),
    "vote": Choice(("any", "majority")),
    # convert
    "size": Int(32, 8192),             # data_prep.dicom.convert.SIZE_RANGE
    "keep_ratio": Bool(),
    "workers": Int(0, 512),
    "voi": Choice(VOI_MODES),
    "window_index": Int(0, 1000),
    "stretch": Choice(STRETCH_MODES),
    "padding": Bool(),
    "scheduler": Check(_scheduler, "null, local or tcp://host:port"),
    # fusion
    "fusion": Choice(FUSIONS),
    "fusion_iou": IOU,
    "fusion_skip": Num(0.0, 1.0, hi_open=True),
    "fusion_conf_type": Choice(CONF_TYPES),
    "raters": Nullable(AnyOf((Choice(("all",)), ListOf(Text(), min_len=1)))),  # ids checked by fusion.parse_raters
    "extra": ListOf(Choice(DATASETS), unique=True),  # which ones merge into which: data_prep.labels.extra
    "extra_dirs": MapOf(Choice(DATASETS), PATH),
    "rater_weights": MapOf(AnyOf((NAME, Int())), Num(0.0, 1000.0, lo_open=True)),
    # folds and export
    "folds": Int(2, 1000),
    "seed": Int(0, 2 ** 32 - 1),
    "channels": Choice((1, 3)),
    "export": ListOf(Choice(EXPORTS), unique=True),
    "include_normal": Bool(),
    "squarify": Nullable(Num(1.0, 100.0)),
    # detector training
    "fold": Int(0, 999),
    "model": PATH,
    "epochs": Int(1, 100_000),
    "train_labels": Choice(("fused", "variants", "both")),
    "init": Nullable(PATH),
    "imgsz": Int(16, 16384),
    "batch": Int(1, 100_000, also=(-1,)),
    "device": Text(DEVICE, "auto, cpu, mps, a GPU number (0) or numbers (0,1)"),
    "patience": Int(0, 100_000),
    "select_by": Choice(SELECT_BY),
    "project": PATH,
    "name": Nullable(NAME),
    "resume": Bool(),
    "keep_epochs": Int(0, 1000),
    "trust_weights": Bool(),
    "yolo_args": ANY_DICT,
    "backbone_weights": Nullable(PATH),
    "tv_lr": Num(0.0, 1.0, lo_open=True),
    "tv_args": ANY_DICT,
    "models": Check(_models, "null or a list of model settings [{name, model, epochs, imgsz, ...}]"),
    # classifier
    "cls_model": PATH,
    "cls_epochs": Int(1, 100_000),
    "cls_imgsz": Int(16, 16384),
    "cls_task": Choice(CLS_TASKS),
    "cls_arch": NAME,
    "cls_pretrained": Nullable(PATH),
    "cls_labels": Nullable(ListOf(Text(), min_len=1, unique=True)),
    "cls_images": Choice(CLS_IMAGES),
    "cls_label_table": Nullable(PATH),
    "cls_lr": Num(0.0, 1.0, lo_open=True),
    "cls_weight_decay": Num(0.0, 1.0, hi_open=True),
    "cls_pos_weight": Nullable(AnyOf((Choice(("auto", "none")), ListOf(Num(0.0, 1e6, lo_open=True), min_len=1)))),
    "cls_augment": Bool(),
    "cls_amp": Bool(),
    # prediction
    "conf": PROB,
    "nms_iou": IOU,
    "max_det": Int(1, 100_000),
    "tta": Bool(),
    "ckpt_ensemble": Int(0, 1000),
    "ens_iou": IOU,
    "ens_skip": Num(0.0, 1.0, hi_open=True),
    "cls_low": PROB,
    "cls_high": PROB,
    # submission
    "decimals": Int(0, 10),
    # evaluation and pictures
    "metric": Choice(METRICS),
    "iou_thr": IOU,
    "show_conf": PROB,
    # post-processing
    "ens_conf_type": Choice(CONF_TYPES),
    "ens_weights": Nullable(ListOf(Num(0.0, 1000.0), min_len=1, max_len=100, some_positive=True)),
    "cls_fusion": Choice(CLS_FUSIONS),
    "alpha": AnyOf((Num(0.0, 100.0), MapOf(ClassName(), Num(0.0, 100.0)))),  # shared, or per class
    "box_scale": Num(0.0, 10.0, lo_open=True),
    "min_box_size": Num(0.0, 1e6),
    "score_thr": PROB,
    "class_thr": MapOf(ClassName(), PROB),
    "top_k_per_class": Int(0, 100_000),
    "top_k": Int(0, 100_000),
}


def _class_names(cfg: dict) -> list[str] | None:
    """Every class name of the config's dataset (its ``classes`` when set; normal class included)."""
    from data_prep.datasets import DATASETS as KNOWN, describe

    if cfg.get("dataset") not in KNOWN:
        return None
    return describe({"dataset": cfg["dataset"], "classes": cfg.get("classes")}).names


def check(cfg: dict, where_of, rules: dict | None = None) -> None:
    """Every key of ``cfg`` that has a rule, checked once; ``where_of(key)`` names the layer that
    set it (the message's first part). The first bad key raises :class:`InputError`."""
    rules = RULES if rules is None else rules
    ctx = {}
    # the class names only where a mapping names classes: reading them imports data_prep.datasets and
    # pandas, which `cxrdet convert` (whose pool workers fork from it) otherwise never holds
    if any(k in rules and isinstance(cfg.get(k), dict) and cfg[k] for k in ("class_thr", "alpha")):
        ctx["class_names"] = _class_names(cfg)
    for key, rule in rules.items():
        if key not in cfg or key.startswith("_"):
            continue
        v = cfg[key]
        if isinstance(rule, Check):
            try:
                rule.fn(v)
            except (ValueError, TypeError) as e:
                raise InputError(where_of(key), f"key {key!r}: {' '.join(str(e).split())}") from None
            continue
        if not rule.ok(v, ctx):
            inner = rule.rule if isinstance(rule, Nullable) and v is not None else rule
            detail = inner.first_bad(v, ctx) if isinstance(inner, (MapOf, ListOf)) else None
            if detail is not None and isinstance(getattr(inner, "key", None), ClassName) and ctx.get("class_names") is not None:
                import difflib

                close = difflib.get_close_matches(str(detail[0]), ctx["class_names"], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close and not inner.key.ok(detail[0], ctx) else ""
                raise InputError(where_of(key), f"key {key!r}: {detail[2]}{hint}; expected class names of dataset "
                                                f"{cfg.get('dataset')!r}: {', '.join(ctx['class_names'])}")
            if detail is not None:
                raise InputError(where_of(key), f"key {key!r}: {detail[2]}; expected {rule.expect()}")
            raise InputError(where_of(key), f"key {key!r} = {v!r}; expected {rule.expect()}")
    if "cls_low" in rules and "cls_high" in rules and "cls_low" in cfg and "cls_high" in cfg \
            and cfg["cls_low"] > cfg["cls_high"]:
        raise InputError(where_of("cls_low"), f"key 'cls_low' = {cfg['cls_low']!r} > cls_high {cfg['cls_high']!r}; "
                                              "expected 0 <= low <= high <= 1 (cls_low = cls_high = 0: filter off)")


def check_size(path) -> None:
    """Refuse a config file over :data:`MAX_BYTES` before reading it."""
    import os

    n = os.path.getsize(path)
    if n > MAX_BYTES:
        raise InputError(path, f"{n:,} bytes; expected a config file of at most {MAX_BYTES:,} bytes")


OTHER_TYPES = {"alpha": dict}  # keys that take another type than their default's (default.yaml: (float | dict))


def check_value(key: str, value: Any, cfg: dict, where: str, default: Any = None) -> None:
    """One value of ``key`` (a tune search-space choice or bound) checked by the key's rule and by
    the type of its ``default`` (its default.yaml value), as the merge would; ``cfg`` gives the
    dataset (class names)."""
    if isinstance(default, bool):
        typed = isinstance(value, bool)
    elif isinstance(default, int):
        typed = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        typed = _num(value) or (key in OTHER_TYPES and isinstance(value, OTHER_TYPES[key]))
    elif isinstance(default, str):
        typed = isinstance(value, str)
    else:
        typed = True
    rule = RULES.get(key)
    if rule is None:
        return
    ctx = {"class_names": _class_names(cfg)} if key in ("class_thr", "alpha") else {}
    if not typed or not rule.ok(value, ctx):
        kind = "" if typed else f" ({type(value).__name__}; expected {type(default).__name__})"
        raise InputError(where, f"key {key!r} = {value!r}{kind}; expected {rule.expect()}")
