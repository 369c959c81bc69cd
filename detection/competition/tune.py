"""Search the post-processing keys on out-of-fold predictions, with an honest (nested) estimate.

``cxrdet tune --truth T [--meta M] --pred OOF.csv [OOF2.csv ...] [--cls-probs C.csv] --folds
folds.csv --metric M [--space space.yaml] [--trials N] [--seed S] --out tuned.yaml [key=value ...]``,
or ``cxrdet tune --cv DIR [--space ...] [--trials N] [key=value ...]``: a ``cxrdet cv`` folder,
whose ``cv.json`` names the truth, meta and folds, with its raw out-of-fold table
``oof_raw.csv`` and probabilities ``oof_probs.csv`` (:func:`read_cv`); tuning starts from the
keys that made its ``oof.csv`` and writes ``DIR/tuned.yaml`` + ``DIR/tuned.json``
(:func:`tune_cv`; ``cxrdet cv --tune`` calls it).

Maximises the metric of :func:`detection.competition.postprocess.postprocess` over the keys of a search space
(optuna TPE with a seeded sampler; an exhaustive grid when every key is a list of choices and the
grid has at most ``--trials`` points). Writes ``tuned.yaml`` (every post-processing key, the
tuned ones changed: usable as ``--config`` by predict, postprocess and cv) and beside it
``tuned.json``::

    {"metric", "before", "after", "params", "trials", "nested": {"per_fold": [...], "mean"}}

``before`` = the metric of the predictions as given (several tables: their WBF at the config's
``ens_*`` keys, nothing else); ``after`` = with the tuned keys, in-sample: ``cxrdet postprocess
--config tuned.yaml`` then ``cxrdet evaluate`` on the same images gives exactly this number.
``nested`` = leave-one-fold-out: for each fold of ``folds.csv``, tune on the other folds (same
trials, seed + 1 + k) and score that fold with what was found (``per_fold`` in fold order): the
estimate to believe when ``after`` looks too good. A mean of per-fold scores is not the pooled
score (mAP over fewer images differs), so beside it the in-sample keys are scored per fold too:
``nested`` below that mean is what tuning on the same images overstated. The evaluated images are
the truth's images that ``folds.csv`` lists.

Fast: everything is parsed once; a trial runs the steps on arrays
(:func:`detection.competition.postprocess.apply_arrays`) and the metric from arrays
(:func:`detection.evaluation.metrics.score_encoded`, the same code ``cxrdet evaluate`` runs); WBF results
are cached per (iou, skip, conf_type, weights). Several tables of >= ``postprocess.FAST_WBF_MIN``
boxes (cv's per-model OOF tables at competition scale) are fused by :mod:`detection.competition.fast_wbf` straight
into arrays (the prefilter kept per (weights, skip); a skip that drops the same boxes as another is
the same key), and the ensemble keys are sampled every :data:`ENS_BLOCK` trials only, the trials
between searching the other keys on that fusion (``bench/tune.py``'s 3-model case).

Search space (``--space`` YAML: ``key: [choices]`` or ``key: {low, high[, log, step]}``; keys that
need an input not given are dropped with a warning). Every choice and bound must be a value the
config merge accepts for its key (data_prep/core/keys.py), so tune never proposes, scores or writes a
key postprocess would reject; a bad space is a one-line error before any trial (:func:`check_space`),
and tuned.yaml is checked by the same rules before it is written. Defaults per metric:

* vinbigdata / coco (low-confidence boxes cost nothing): ``box_scale`` 0.85-1.15; with an
  ``abnormal`` probability ``cls_low`` 0-0.3 and ``cls_high`` 0.5-1; with per-class probabilities
  ``alpha`` 0-2 (``cls_fusion: multiply``, one shared exponent; ``alpha: {low: 0, high: 2,
  per_class: true}`` in ``--space`` searches one exponent per class that has a probability
  column: VinBigData 3rd place's per-class gating, written as ``alpha: {class: exponent}``); with several tables ``ens_iou`` 0.3-0.6 (step 0.05),
  ``ens_skip`` {0, 0.0001, 0.001}, ``ens_conf_type`` {avg, max, box_and_model_avg}, ``ens_weights``
  {equal, each table x2}.
* rsna (every false positive costs): ``score_thr`` 0-0.9, ``box_scale`` 0.75-1.05, ``top_k``
  {0, 1, 2, 3, 4}, plus the same probability and ensemble keys.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from detection.evaluation import metrics as M
from detection.competition import postprocess as PP

log = logging.getLogger(__name__)

ENS_SPACE = {"ens_iou": [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6], "ens_skip": [0.0, 0.0001, 0.001],
             "ens_conf_type": ["avg", "max", "box_and_model_avg"]}
PROB_SPACE = {"cls_low": {"low": 0.0, "high": 0.3}, "cls_high": {"low": 0.5, "high": 1.0}}
FUSION_SPACE = {"alpha": {"low": 0.0, "high": 2.0}}
DEFAULT_SPACE = {
    "vinbigdata": {"box_scale": {"low": 0.85, "high": 1.15}},
    "coco": {"box_scale": {"low": 0.85, "high": 1.15}},
    "rsna": {"score_thr": {"low": 0.0, "high": 0.9}, "box_scale": {"low": 0.75, "high": 1.05},
             "top_k": [0, 1, 2, 3, 4]},
}


def ens_weights_choices(n_tables: int) -> list:
    """``ens_weights`` choices for ``n_tables`` tables: equal (null), and each table counted twice."""
    return [None] + [[2.0 if j == i else 1.0 for j in range(n_tables)] for i in range(n_tables)]


def default_space(metric: str, n_tables: int, has_abnormal: bool, has_class_probs: bool) -> dict:
    """The documented default search space for ``metric`` given the inputs (module docstring)."""
    space = dict(DEFAULT_SPACE[metric])
    if has_abnormal:
        space.update(PROB_SPACE)
    if has_class_probs:
        space.update(FUSION_SPACE)
    if n_tables > 1:
        space.update(ENS_SPACE)
        space["ens_weights"] = ens_weights_choices(n_tables)
    return space


def check_space(space, source: str = "space", cfg: dict | None = None) -> dict:
    """Validate a search space before any trial: every key a post-processing key; each a list of
    choices or ``{low, high[, log, step]}``; every choice and both bounds values the config merge
    accepts for that key (data_prep/core/keys.py: a box_scale range from 0 or below, a score_thr above
    1, a top_k of 2.5 are refused), numbers for a range, ``log`` a boolean with ``low > 0``,
    ``step`` a number > 0 (an integer for an integer key) and not with ``log``. A bad space is one
    :class:`~data_prep.core.errors.InputError` naming ``source``, the key and what was expected."""
    from data_prep.core import keys
    from data_prep.core.errors import InputError

    form = "[choices] or {low, high[, log, step]}"
    if not isinstance(space, dict):
        raise InputError(source, f"a {type(space).__name__}; expected a mapping of post-processing key: {form}")
    keys.check_tree(space, source)
    cfg = cfg or {}
    d = PP.defaults()
    out = {}
    for k, v in space.items():
        if k not in PP.POST_KEYS:
            raise InputError(source, f"key {k!r} is not a post-processing key; expected one of {list(PP.POST_KEYS)}")
        where = f"{source}: key {k}"
        if isinstance(v, list):
            if not v:
                raise InputError(source, f"key {k!r} has no choices; expected a non-empty list")
            for c in v:
                keys.check_value(k, c, cfg, where, d[k])
        elif isinstance(v, dict):
            allowed = {"low", "high", "log", "step"} | ({"per_class"} if k == "alpha" else set())
            if not {"low", "high"} <= set(v) or not set(v) <= allowed:
                raise InputError(source, f"key {k!r} = {v!r}; expected {form}"
                                         + (" (alpha also takes per_class: true)" if k == "alpha" else ""))
            if not isinstance(v.get("per_class", False), bool):
                raise InputError(source, f"key {k!r}: per_class {v['per_class']!r}; expected true or false")
            numeric = isinstance(d[k], (int, float)) and not isinstance(d[k], bool)
            if not numeric:
                raise InputError(source, f"key {k!r} = {v!r}: a range of a non-numeric key; expected [choices]")
            integer = isinstance(d[k], int)
            for b in ("low", "high"):
                x = v[b]
                if isinstance(x, bool) or not isinstance(x, (int, float)) or (integer and not isinstance(x, int)):
                    raise InputError(source, f"key {k!r}: {b} {x!r} is {type(x).__name__}; expected "
                                             f"{'an integer' if integer else 'a number'}")
                keys.check_value(k, x, cfg, f"{where} ({b})", d[k])
            if not v["low"] <= v["high"]:
                raise InputError(source, f"key {k!r}: low {v['low']} > high {v['high']}; expected low <= high")
            log_ = v.get("log", False)
            if not isinstance(log_, bool):
                raise InputError(source, f"key {k!r}: log {log_!r}; expected true or false")
            if log_ and not v["low"] > 0:
                raise InputError(source, f"key {k!r}: a log range from {v['low']}; expected low > 0 with log: true")
            if "step" in v:
                st = v["step"]
                if isinstance(st, bool) or not isinstance(st, (int, float)) or not np.isfinite(st) or st <= 0 \
                        or (integer and not isinstance(st, int)):
                    raise InputError(source, f"key {k!r}: step {st!r}; expected "
                                             f"{'an integer' if integer else 'a number'} > 0")
                if log_:
                    raise InputError(source, f"key {k!r}: step and log together; expected one of them")
        else:
            raise InputError(source, f"key {k!r} = {v!r}; expected {form}")
        out[k] = v
    return out


# ----------------------------------------------------------------------------- scoring from arrays
@dataclass
class Scorer:
    """Truth of the evaluated images encoded once; scores post-processed arrays."""
    enc: M.Encoded        # truth only (p_* empty)
    img_map: np.ndarray   # (U,) union image index -> position in enc.images, -1 = not evaluated
    metric: str
    iou_thr: float
    drop_cls: int | None  # class dropped from predictions before scoring (rsna on VinBigData tables)

    def subset(self, keep_images: np.ndarray) -> "Scorer":
        """The same scorer restricted to the evaluated images where ``keep_images`` (I,) is True."""
        new = np.full(len(self.enc.images), -1, "int64")
        new[keep_images] = np.arange(int(keep_images.sum()))
        e = self.enc
        t = keep_images[e.t_img]
        enc = replace(e, images=e.images[keep_images], t_img=new[e.t_img[t]], t_cls=e.t_cls[t], t_box=e.t_box[t])
        m = np.where(self.img_map >= 0, new[np.maximum(self.img_map, 0)], -1)
        return Scorer(enc, m, self.metric, self.iou_thr, self.drop_cls)

    def __call__(self, img, cls, box, score) -> float:
        """Score predictions (union image positions) given in table order (the metric's tie-break)."""
        pos = self.img_map[img]
        keep = pos >= 0
        if self.drop_cls is not None:
            keep &= cls != self.drop_cls
        k = np.flatnonzero(keep)
        enc = replace(self.enc, p_img=pos[k], p_cls=cls[k], p_box=box[k], p_score=score[k], p_row=k.astype("int64"))
        return M.score_encoded(enc, self.metric, self.iou_thr)


@dataclass
class Problem:
    """Everything a trial needs, parsed once."""
    tables: list
    probs: pd.DataFrame | None
    sizes: pd.DataFrame | None
    images: list           # every image id of the inputs and the truth: the arrays' image index
    folds: np.ndarray      # (I,) fold of each evaluated image (enc.images order)
    normal: tuple | None
    base: dict             # post-processing keys before tuning
    scorer: Scorer
    _cache: dict
    _wbf: dict = field(default_factory=dict)   # the fast WBF's inputs and prefilters (big tables)

    def arrays(self, cfg: dict) -> PP.Arrays:
        """The (ensembled) table as arrays for ``cfg``'s ``ens_*`` keys, cached per key set. Tables
        of >= postprocess.FAST_WBF_MIN boxes are fused by detection.competition.fast_wbf straight into arrays: the
        boxes' image codes, normalisation and each (weights, skip)'s prefilter are made once, and a
        skip that drops the same boxes as another is the same key (what does not change between
        trials is not redone). At most ~20 million cached rows are kept (oldest out)."""
        fast = self.fast_fusion()
        key = None if len(self.tables) == 1 else (
            cfg["ens_iou"], self._skip_key(cfg["ens_skip"]) if fast else cfg["ens_skip"], cfg["ens_conf_type"],
            str(cfg["ens_weights"]))
        if key not in self._cache:
            if fast:
                a = self._fused_arrays(cfg)
            else:
                t = PP.ensemble(self.tables, self.sizes, cfg["ens_iou"], cfg["ens_skip"], cfg["ens_conf_type"],
                                cfg["ens_weights"])
                a = PP.to_arrays(t, self.probs, self.sizes, self.images)
                # rows grouped by image (stable): then, within each class, the order of the arrays is
                # the order postprocess writes wherever scores tie, and the metric needs no lexsort
                o = np.argsort(a.img, kind="stable")
                a = replace(a, img=a.img[o], cls=a.cls[o], box=a.box[o], score=a.score[o], cache={})
            limit = max(2, int(2e7 // max(len(a.cls), 1)))
            while len(self._cache) >= limit:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = a
        return self._cache[key]

    def fast_fusion(self) -> bool:
        """Whether several tables are fused by detection.competition.fast_wbf (>= postprocess.FAST_WBF_MIN boxes)."""
        return len(self.tables) > 1 and sum(len(t) for t in self.tables) >= PP.FAST_WBF_MIN and PP.numba_available()

    def table_order(self, a: PP.Arrays) -> np.ndarray:
        """The row order :func:`detection.competition.postprocess.ensemble` writes (images in order of first
        appearance in the tables, each image's fused rows in their order) for arrays grouped by image."""
        if "rank" not in self._wbf:
            ids = pd.unique(pd.concat([t["image_id"].astype(str) for t in self.tables]))
            rank = pd.Index(ids).get_indexer(pd.Index(a.images).astype(str))
            self._wbf["rank"] = np.where(rank < 0, len(ids), rank)
        return np.argsort(self._wbf["rank"][a.img], kind="stable")

    def _skip_key(self, skip: float) -> int:
        """How many input boxes ``ens_skip`` drops: two skips that drop the same boxes fuse alike."""
        if "sorted_scores" not in self._wbf:
            self._wbf["sorted_scores"] = np.sort(np.concatenate([t["score"].to_numpy("float64") for t in self.tables]))
        return int(np.searchsorted(self._wbf["sorted_scores"], float(skip), "left"))

    def _fused_arrays(self, cfg: dict) -> PP.Arrays:
        """:func:`detection.competition.postprocess.ensemble` then :func:`detection.competition.postprocess.to_arrays` (grouped
        by image), computed by detection.competition.fast_wbf on arrays made once (the same rows; tests/test_wbf.py)."""
        from detection.competition import fast_wbf as wbf

        if "input" not in self._wbf:
            base = PP.to_arrays(self.tables[0].iloc[:0], self.probs, self.sizes, self.images)
            index = pd.Index(base.images)
            code, model, box, score, label, names = [], [], [], [], [], {}
            for m, t in enumerate(self.tables):
                code.append(index.get_indexer(t["image_id"].astype(str)).astype(np.int64))
                model.append(np.full(len(t), m, np.int64))
                box.append(t[["x_min", "y_min", "x_max", "y_max"]].to_numpy("float64"))
                score.append(t["score"].to_numpy("float64"))
                label.append(t["class_id"].to_numpy("int64"))
                u = t[["class_id", "class_name"]].drop_duplicates()
                names.update(dict(zip(u["class_id"].astype("int64"), u["class_name"].astype(str))))
            code, model, box = np.concatenate(code), np.concatenate(model), np.concatenate(box)
            score, label = np.concatenate(score), np.concatenate(label)
            o = np.lexsort((np.arange(len(code)), model, code))   # per image: table by table, each in its order
            code, model, box, score, label = code[o], model[o], box[o], score[o], label[o]
            hw = base.hw.copy()                                    # as ensemble(): else the boxes' largest x2, y2
            unknown = np.isnan(hw).any(1)
            if unknown.any():
                mx = np.zeros_like(hw)
                np.maximum.at(mx, code, box[:, [3, 2]])
                hw[unknown] = np.maximum(mx[unknown], 1.0)
            whwh = hw[:, [1, 0, 1, 0]]
            self._wbf["input"] = (base, code, model, np.clip(box / whwh[code], 0.0, 1.0), score, label, names, whwh)
        base, code, model, nbox, score, label, names, whwh = self._wbf["input"]
        pkey = ("pre", str(cfg["ens_weights"]), self._skip_key(cfg["ens_skip"]))
        if pkey not in self._wbf:
            for k in [k for k in self._wbf if isinstance(k, tuple)][:-3]:   # four prefilters kept (memory)
                self._wbf.pop(k)
            self._wbf[pkey] = wbf.prefilter(code, model, nbox, score, label, len(self.tables), cfg["ens_weights"],
                                            float(cfg["ens_skip"]))
        img, fb, fs, fl = wbf.fuse(self._wbf[pkey], float(cfg["ens_iou"]), cfg["ens_conf_type"])
        present = {int(c): names.get(int(c), str(int(c))) for c in np.unique(fl)}
        return replace(base, img=img, cls=fl, box=fb * whwh[img], score=np.asarray(fs, "float64"), names=present,
                       cache={})

    def outputs(self, cfg: dict):
        """The post-processed table as arrays ``(img, cls, box, score)``: within each class, in the
        order ``cxrdet postprocess`` writes them wherever scores tie (image, then table order),
        which is all the metric needs of the file's order (ties never cross classes)."""
        a = self.arrays(cfg)
        nid = self.normal[0] if self.normal else None
        rows, box, score, n_img, n_score = PP.apply_arrays(a, cfg, nid)
        img = np.concatenate([a.img[rows], n_img])
        cls = np.concatenate([a.cls[rows], np.full(len(n_img), -1 if nid is None else nid, "int64")])
        box = np.concatenate([box, np.tile([0.0, 0.0, 1.0, 1.0], (len(n_img), 1))])
        score = np.concatenate([score, n_score])
        return img, cls, box, score

    def score(self, cfg: dict, scorer: Scorer | None = None) -> float:
        return (scorer or self.scorer)(*self.outputs(cfg))

    def gated_classes(self) -> list[str]:
        """Class names of the predictions that have a probability column (class_id order): what a
        per-class ``alpha`` is searched for."""
        if self.probs is None:
            return []
        cols = set(self.probs.columns) - {"image_id", "abnormal"}
        named = pd.concat([t[["class_id", "class_name"]] for t in self.tables]).drop_duplicates("class_name")
        named = named[named["class_name"].astype(str).isin(cols)]
        if self.normal is not None:
            named = named[named["class_id"] != self.normal[0]]
        return named.sort_values("class_id", kind="stable")["class_name"].astype(str).tolist()


def load_problem(truth, pred, folds, metric: str, cls_probs=None, meta=None, cfg: dict | None = None) -> Problem:
    """Read truth, predictions, probabilities and folds once (``cxrdet evaluate``'s readers)."""
    from data_prep.datasets import DEFAULT_DATASET, describe
    from data_prep.core.tables import probs_for, read_folds, read_probs, read_truth
    from detection.competition.submission import read_predictions

    rule = M.metric_named(metric)   # an unknown name: one line listing the registered ones
    cfg = cfg or {}
    timages, tboxes, ds = read_truth(truth, describe(cfg if cfg.get("dataset") else DEFAULT_DATASET), meta)
    fdf = read_folds(folds)
    fold_of = dict(zip(fdf["image_id"], fdf["fold"].astype("int64")))
    ids = [i for i in timages["image_id"].astype(str) if i in fold_of]
    if not ids:
        raise ValueError(f"{folds}: none of its images is in the truth {truth}")
    if len(ids) < len(timages):
        log.warning("%d truth image(s) are not in %s: tuning on the %d that are", len(timages) - len(ids), folds,
                    len(ids))
    names = ds.names if ds.normal is not None else None
    normal_id = ds.normal_id
    paths = pred if isinstance(pred, (list, tuple)) else [pred]
    tables = [read_predictions(p, ds) for p in paths]
    probs = read_probs(cls_probs) if cls_probs is not None else None
    if probs is not None:   # another split's probabilities: an error; part: a warning (data_prep.core.tables)
        probs = probs_for(probs, _named(tables), str(cls_probs))
    ids = _predicted_folds_only(ids, fold_of, tables, probs, folds)
    from detection.evaluation.evaluate import warn_coverage

    warn_coverage(pd.DataFrame({"image_id": sorted(_named(tables))}), ids, " + ".join(map(str, paths)), folds)
    sizes = PP.image_sizes(meta)
    t = tboxes
    drop = None
    if not rule.scores_normal and normal_id is not None:  # as evaluate(): rsna never scores the normal class
        t, drop, normal_id = t[t["class_id"] != normal_id], normal_id, None
    enc = M.encode(t, t.iloc[:0], ids, normal_id, names)
    union = pd.unique(pd.concat([x["image_id"].astype(str) for x in tables]
                                + ([probs["image_id"]] if probs is not None else []) + [pd.Series(ids)]))
    union = np.sort(union.astype(str))  # the image index of every trial's arrays (WBF may lose images)
    img_map = pd.Index(enc.images).get_indexer(union).astype("int64")
    base = PP.post_config(cfg)
    scorer = Scorer(enc, img_map, metric, float(cfg.get("iou_thr", 0.4)), drop)
    return Problem(tables, probs, sizes, list(union), np.array([fold_of[i] for i in enc.images], "int64"),
                   ds.normal, base, scorer, {})


def _named(tables: list) -> set[str]:
    """Every image a prediction table names (a submission also lists its images without boxes)."""
    return set().union(*(set(t["image_id"].astype(str)) | set(map(str, t.attrs.get("image_ids", []))) for t in tables))


def _predicted_folds_only(ids: list[str], fold_of: dict, tables: list, probs, folds) -> list[str]:
    """The evaluated images of the folds that have predictions (out-of-fold tables of some folds
    only: the others would score as predicted empty); the folds left out are named."""
    seen = _named(tables)
    if probs is not None:
        seen |= set(probs["image_id"].astype(str))
    have = {int(fold_of[i]) for i in ids if i in seen}
    empty = sorted({int(fold_of[i]) for i in ids} - have)
    if empty and have:
        log.warning("%s: fold(s) %s have no prediction: tuned and estimated on fold(s) %s only", folds, empty,
                    sorted(have))
        return [i for i in ids if int(fold_of[i]) in have]
    return ids


# ----------------------------------------------------------------------------- search
def _suggest(trial, key: str, spec, classes: list[str] = ()):
    if isinstance(spec, dict) and spec.get("per_class"):   # one exponent per class: {class name: value}
        one = {k: v for k, v in spec.items() if k != "per_class"}
        return {c: _suggest(trial, f"{key}:{c}", one) for c in classes}
    if isinstance(spec, list):
        labels = [json.dumps(c) if isinstance(c, (list, dict)) else c for c in spec]
        v = trial.suggest_categorical(key, labels)
        return spec[labels.index(v)]
    lo, hi = spec["low"], spec["high"]
    if isinstance(lo, int) and isinstance(hi, int) and not isinstance(PP.defaults()[key], float):
        return trial.suggest_int(key, lo, hi, step=int(spec.get("step", 1)), log=bool(spec.get("log", False)))
    return trial.suggest_float(key, float(lo), float(hi), step=spec.get("step"), log=bool(spec.get("log", False)))


def _per_class(space: dict) -> list[str]:
    return [k for k, v in space.items() if isinstance(v, dict) and v.get("per_class")]


def _cfg_with(base: dict, params: dict) -> dict:
    cfg = dict(base, **params)
    if "alpha" in params:
        cfg["cls_fusion"] = "multiply"
    if cfg["cls_low"] > cfg["cls_high"]:
        cfg["cls_high"] = cfg["cls_low"]
    return cfg


ENS_KEYS = ("ens_iou", "ens_skip", "ens_conf_type", "ens_weights")
ENS_BLOCK = 10   # big tables: the ensemble keys change every ENS_BLOCK trials (each new set is one WBF)


def search(problem: Problem, space: dict, trials: int = 100, seed: int = 0, scorer: Scorer | None = None,
           ens_every: int | None = None):
    """Best params over ``space`` -> (params, best score, n trials run). Grid if small and discrete.

    ``ens_every`` (default: :data:`ENS_BLOCK` for tables fused by the fast path, else 1): the
    ensemble keys are sampled on every ``ens_every``-th trial only and kept by the trials between,
    which search the other keys on that cached fusion (a new ensemble key set costs one WBF of
    every box; the other keys a few array steps). The grid sampler samples every key each trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    grid = all(isinstance(v, list) for v in space.values())
    n_grid = int(np.prod([len(v) for v in space.values()])) if grid else 0
    if grid and n_grid <= trials:
        labels = {k: [json.dumps(c) if isinstance(c, (list, dict)) else c for c in v] for k, v in space.items()}
        sampler = optuna.samplers.GridSampler(labels, seed=seed)
        trials = n_grid
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    classes = problem.gated_classes() if _per_class(space) else []
    if not grid or n_grid > trials:  # the first trial is the starting point, where the space holds it
        start = {k: problem.base[k] for k, v in space.items() if (problem.base[k] in v if isinstance(v, list) else
                 isinstance(problem.base[k], (int, float)) and v["low"] <= problem.base[k] <= v["high"])}
        for k in _per_class(space):   # the shared starting value for every class
            if k in start:
                v0 = start.pop(k)
                start.update({f"{k}:{c}": v0 for c in classes})
        if start:
            study.enqueue_trial(start, skip_if_exists=True)

    if ens_every is None:
        ens_every = ENS_BLOCK if problem.fast_fusion() else 1
    ens = [k for k in space if k in ENS_KEYS] if not (grid and n_grid <= trials) else []
    held: dict = {}

    def objective(trial):
        fresh = ens_every <= 1 or not held or trial.number % ens_every == 0
        params = {k: held[k] if k in ens and not fresh else _suggest(trial, k, v, classes) for k, v in space.items()}
        if fresh:
            held.update({k: params[k] for k in ens})
        trial.set_user_attr("params", params)
        s = problem.score(_cfg_with(problem.base, params), scorer)
        return s if np.isfinite(s) else -1.0

    study.optimize(objective, n_trials=trials)
    best = study.best_trial
    return best.user_attrs["params"], float(best.value), len(study.trials)


def tune(problem: Problem, space: dict, trials: int = 100, seed: int = 0, nested: bool = True) -> dict:
    """The whole tuning: before, in-sample search, nested leave-one-fold-out. Returns tuned.json's dict
    plus ``config`` (every post-processing key, tuned) and ``seconds``/``trials_per_s``."""
    t0 = time.perf_counter()
    if len(problem.tables) > 1:   # their WBF at the config's keys (cached for the trials), in ensemble()'s row order
        a = problem.arrays(problem.base)
        o = problem.table_order(a)
        before = problem.scorer(a.img[o], a.cls[o], a.box[o], a.score[o])
    else:                         # the table as given, in its row order
        a = PP.to_arrays(problem.tables[0], problem.probs, problem.sizes, problem.images)
        before = problem.scorer(a.img, a.cls, a.box, a.score)
    params, after, n = search(problem, space, trials, seed)
    t1 = time.perf_counter()
    per_fold, same = [], []
    if nested and len(np.unique(problem.folds)) < 2:
        log.warning("folds.csv gives the evaluated images a single fold: no leave-one-fold-out estimate")
        nested = False
    if nested:
        for i, k in enumerate(np.unique(problem.folds)):
            inner = problem.scorer.subset(problem.folds != k)
            outer = problem.scorer.subset(problem.folds == k)
            v = float(problem.score(_cfg_with(problem.base, params), outer))
            same.append(v if np.isfinite(v) else None)  # the in-sample keys on that fold: like for like
            p, _, _ = search(problem, space, trials, seed + 1 + i, inner)
            v = float(problem.score(_cfg_with(problem.base, p), outer))
            per_fold.append(v if np.isfinite(v) else None)  # a fold with nothing to score (RSNA: no box anywhere)
    cfg = _cfg_with(problem.base, params)
    d = PP.defaults()
    cfg = {k: float(v) if isinstance(d[k], float) and isinstance(v, (int, float)) and not isinstance(v, bool) else v
           for k, v in cfg.items()}
    return {"metric": problem.scorer.metric, "before": float(before), "after": float(after),
            "params": {k: cfg[k] for k in params} | ({"cls_fusion": "multiply"} if "alpha" in params else {}),
            "trials": int(n), "nested": {"per_fold": per_fold, "mean": _mean(per_fold)},
            "config": cfg, "seconds": time.perf_counter() - t0, "trials_per_s": n / max(t1 - t0, 1e-9),
            "after_per_fold": same}


def _mean(values: list) -> float | None:
    ok = [v for v in values if v is not None]
    return float(np.mean(ok)) if ok else None


def write_outputs(res: dict, out) -> tuple[Path, Path]:
    """tuned.yaml (post-processing keys only) and tuned.json beside it."""
    import yaml

    from data_prep.core.atomic import write_text

    from data_prep.core import keys

    out = Path(out)
    keys.check(res["config"], lambda k: f"tune result {k}")  # what tune writes passes the merge's rules
    head = (f"# cxrdet tune: post-processing keys tuned for {res['metric']} ({res['trials']} trials); before "
            f"{res['before']:.6f}, after {res['after']:.6f} (in-sample), nested {_fmt(res['nested']['mean'])}\n")
    write_text(out, head + yaml.safe_dump({k: res["config"][k] for k in PP.POST_KEYS}, sort_keys=False))
    js = out.with_suffix(".json")
    keep = ("metric", "before", "after", "params", "trials", "nested")
    write_text(js, json.dumps({k: res[k] for k in keep}, indent=2) + "\n")
    return out, js


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def summary(res: dict) -> str:
    n = res["nested"]
    folds = " ".join(_fmt(v) for v in n["per_fold"])
    line = (f"{res['metric']}: before {res['before']:.4f} | after {res['after']:.4f} (in-sample) | "
            f"nested {_fmt(n['mean'])} (leave-one-fold-out: {folds})")
    if res.get("after_per_fold"):  # per-fold means are not the pooled metric: compare nested with this
        line += (f"\n  the in-sample keys scored per fold: mean {_fmt(_mean(res['after_per_fold']))} "
                 f"({' '.join(_fmt(v) for v in res['after_per_fold'])}); nested - in-sample per fold = "
                 + _fmt(None if n['mean'] is None or _mean(res['after_per_fold']) is None
                        else n['mean'] - _mean(res['after_per_fold'])))
    return line + f"\nparams: {json.dumps(res['params'])}"


def read_space(path, cfg: dict | None = None) -> dict:
    """A ``--space`` YAML file, read and checked (:func:`check_space`): one-line errors only."""
    import yaml

    from data_prep.core import keys
    from data_prep.core.errors import InputError, reading

    with reading(path, "search space YAML"):
        keys.check_size(path)
        with open(path) as f:
            try:
                text = yaml.safe_load(f)
            except yaml.YAMLError as e:
                raise InputError(path, f"not valid YAML ({' '.join(str(e).split())[:200]}); expected "
                                       "key: [choices] or key: {low, high[, log, step]}") from None
    return check_space({} if text is None else text, str(path), cfg)


# ----------------------------------------------------------------------------- a cv folder
def choose_space(prob: Problem, metric: str, space: dict | None = None, cfg: dict | None = None,
                 source: str = "space") -> dict:
    """The search space: ``space`` (read by :func:`read_space`; keys that need an input not given
    dropped with a warning naming ``source``) or the default for ``metric`` and the inputs; an
    empty one is an error."""
    arr = prob.arrays(prob.base)
    has_abn = "abnormal" in arr.labels
    has_cls = any(lab in set(arr.names.values()) for lab in arr.labels)
    if space is not None:
        need = {"cls_low": has_abn, "cls_high": has_abn, "alpha": has_cls}
        for k in [k for k in space if not need.get(k, True) or (k.startswith("ens_") and len(prob.tables) < 2)]:
            log.warning("%s: key %r needs an input not given (probabilities / several tables); left out", source, k)
            space.pop(k)
    else:
        space = check_space(default_space(metric, len(prob.tables), has_abn, has_cls), "default space", cfg)
    if not space:
        raise ValueError("nothing to tune: the search space is empty for these inputs")
    return space


def read_cv(cv_dir) -> dict:
    """What ``tune --cv DIR`` reads of a ``cxrdet cv`` folder: ``truth``, ``meta``, ``folds``
    (the prep folder's fused_boxes.csv, images.csv, folds.csv), ``pred`` (``[oof_raw.csv]``; a cv
    of several models: each model's ``models/<name>/oof_raw.csv``, so that the ``ens_*`` keys are
    searched with the others),
    ``probs`` (``oof_probs.csv`` or None) and ``config`` (the dataset, metric and the
    post-processing keys that made ``oof.csv``), from ``DIR/cv.json``."""
    cv_dir = Path(cv_dir)
    path = cv_dir / "cv.json"
    if not path.is_file():
        raise FileNotFoundError(f"--cv {cv_dir}: no cv.json; expected the output folder of `cxrdet cv`")
    js = json.loads(path.read_text())
    if "files" not in js or "inputs" not in js:
        raise ValueError(f"{path}: no 'inputs'/'files' (written by an older cxrdet cv, before oof_raw.csv); run "
                         "the same `cxrdet cv` again (finished folds are reused)")
    files = js["files"]
    models = files.get("model_oof_raw") or []   # several models: their tables, fused by each trial's ens_* keys
    out = {"truth": js["inputs"]["truth"], "meta": js["inputs"]["meta"], "folds": js["inputs"]["folds"],
           "pred": [cv_dir / m for m in models] or [cv_dir / files["oof_raw"]], "probs": cv_dir / files["oof_probs"] if files.get("oof_probs") else None,
           "config": {**PP.defaults(), **js["config"]}}
    for p in [*out["pred"], out["probs"], out["truth"], out["folds"]]:
        if p is not None and not Path(p).is_file():
            raise FileNotFoundError(f"{path} names {p}: no such file; expected the cv's own tables (run the same "
                                    "`cxrdet cv` again)")
    return out


def tune_cv(cv_dir, trials: int = 100, seed: int | None = None, nested: bool = True, space_path=None,
            overrides: dict | None = None, out=None) -> dict:
    """``cxrdet tune --cv DIR``: tune the post-processing keys on the cv's raw out-of-fold tables
    (``oof_raw.csv``) and probabilities (``oof_probs.csv``) against its truth and folds
    (:func:`read_cv`), starting from the keys that made ``oof.csv`` (``overrides`` on top);
    writes ``DIR/tuned.yaml`` + ``DIR/tuned.json`` (or ``out``). Returns :func:`tune`'s dict plus
    ``yaml``, ``json`` and ``inputs`` (read_cv's)."""
    cv_dir = Path(cv_dir)
    inp = read_cv(cv_dir)
    cfg = {**inp["config"], **(overrides or {})}
    space = read_space(space_path, cfg) if space_path else None  # a bad space: an error before any reading
    prob = load_problem(inp["truth"], inp["pred"], inp["folds"], cfg["metric"], inp["probs"], inp["meta"], cfg)
    space = choose_space(prob, cfg["metric"], space, cfg, str(space_path))
    res = tune(prob, space, trials, int(cfg.get("seed", 0) if seed is None else seed), nested)
    res["yaml"], res["json"] = write_outputs(res, Path(out) if out else cv_dir / "tuned.yaml")
    res["inputs"] = inp
    return res


def print_tuned(res: dict) -> None:
    """The summary, the files written and the command that applies them."""
    inp = res["inputs"]
    print(summary(res))
    print(f"{res['yaml']}, {res['json']}: {res['trials']} trials ({res['trials_per_s']:.1f}/s), "
          f"{res['seconds']:.1f} s in all")
    ds = res["config"].get("dataset") or inp.get("config", {}).get("dataset")
    extra = f" dataset={ds}" if ds and ds != "vinbigdata" else ""
    print(f"apply with: cxrdet postprocess --pred {' '.join(map(str, inp['pred']))}"
          + (f" --cls-probs {inp['probs']}" if inp.get("probs") else "") + (f" --meta {inp['meta']}" if inp.get("meta") else "")
          + f" --config {res['yaml']} --out final.csv{extra}", flush=True)


# ----------------------------------------------------------------------------- CLI
def add_arguments_tune(p: argparse.ArgumentParser) -> None:
    from data_prep.core.config import add_config_arguments

    p.add_argument("--cv", default=None, help="a `cxrdet cv` output folder: tune on its oof_raw.csv (+ oof_probs.csv) "
                   "against its truth and folds, from the keys that made its oof.csv; writes DIR/tuned.yaml + "
                   "tuned.json (no --truth/--pred/--folds/--cls-probs/--meta then)")
    p.add_argument("--truth", default=None, help="train.csv / fused.csv / stage_2_train_labels.csv / box table CSV")
    p.add_argument("--meta", default=None, help="image sizes (needed to fuse a raw train.csv; WBF normalisation)")
    p.add_argument("--pred", action="extend", nargs="+", default=None,
                   help="out-of-fold prediction table(s); several = WBF ensemble (--pred A B or --pred A --pred B)")
    p.add_argument("--cls-probs", default=None, help="probabilities table (image_id + one column per label, abnormal)")
    p.add_argument("--folds", default=None, help="folds.csv (image_id,fold): the nested estimate leaves one out")
    p.add_argument("--space", default=None, help="search space YAML (key: [choices] | {low, high}); default per metric")
    p.add_argument("--trials", type=int, default=100, help="trials per search (the grid size if smaller and discrete)")
    p.add_argument("--no-nested", action="store_true", help="skip the leave-one-fold-out estimate")
    p.add_argument("--out", default=None, help="tuned.yaml (tuned.json is written beside it); with --cv: DIR/tuned.yaml")
    add_config_arguments(p, ["dataset", "metric", "seed"], help={"seed": "sampler seed"})


def run_tune(args: argparse.Namespace) -> int:
    """One tune per ``--out`` (a lock beside it, :func:`data_prep.core.atomic.file_lock`): a second tune
    on the same ``--out`` stops at once naming the first, so tuned.yaml and tuned.json always come
    from one run."""
    from data_prep.core.atomic import file_lock
    from data_prep.core.errors import check_output

    out = args.out or (Path(args.cv) / "tuned.yaml" if args.cv else None)   # --cv DIR: DIR/tuned.yaml
    if out is None or (args.cv and not (Path(args.cv) / "cv.json").is_file()):
        return _run_tune(args)   # the one-line error naming what is missing (no folder made for a lock)
    check_output(out, arg="--out")
    with file_lock(out, "cxrdet tune"):
        return _run_tune(args)


def _run_tune(args: argparse.Namespace) -> int:
    from data_prep.core.config import from_command_line, stage_config
    from data_prep.core.errors import InputError, check_output

    cfg = stage_config(args)
    if args.trials < 1:
        raise InputError("--trials", f"{args.trials}; expected >= 1")
    if args.cv:
        given = [f for f, v in (("--truth", args.truth), ("--pred", args.pred), ("--folds", args.folds),
                                ("--cls-probs", args.cls_probs), ("--meta", args.meta)) if v]
        if given:
            raise InputError(" ".join(given), f"not with --cv {args.cv} (its cv.json names the truth, predictions, "
                             "probabilities and folds); drop them, or drop --cv")
        out = check_output(args.out or Path(args.cv) / "tuned.yaml", arg="--out")
        over = {k: cfg[k] for k in (*PP.POST_KEYS, "dataset", "metric", "iou_thr", "seed") if from_command_line(cfg, k)}
        res = tune_cv(args.cv, args.trials, None, not args.no_nested, args.space, over, out)
        print_tuned(res)
        return 0
    missing = [f for f, v in (("--truth", args.truth), ("--pred", args.pred), ("--folds", args.folds),
                              ("--out", args.out)) if not v]
    if missing:
        raise InputError(" ".join(missing), "required (or --cv DIR: a `cxrdet cv` folder, which names them all)")
    args.metric, args.seed = cfg["metric"], cfg["seed"]
    check_output(args.out, arg="--out")
    for p in [*args.pred, args.truth] + ([args.cls_probs] if args.cls_probs else []):
        if Path(p).resolve() in (Path(args.out).resolve(), Path(args.out).with_suffix(".json").resolve()):
            raise ValueError(f"--out {args.out}: would write over the input {p}")
    space = read_space(args.space, cfg) if args.space else None  # a bad space: an error before any reading
    prob = load_problem(args.truth, args.pred, args.folds, args.metric, args.cls_probs, args.meta, cfg)
    space = choose_space(prob, args.metric, space, cfg, str(args.space))
    seed = int(cfg["seed"] if args.seed is None else args.seed)
    res = tune(prob, space, args.trials, seed, not args.no_nested)
    res["yaml"], res["json"] = write_outputs(res, args.out)
    res["inputs"] = {"pred": args.pred, "probs": args.cls_probs, "meta": args.meta, "config": cfg}
    print_tuned(res)
    return 0
