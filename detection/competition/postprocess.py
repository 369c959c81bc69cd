"""Post-processing of prediction box tables: the deterministic steps after inference.

``cxrdet postprocess --pred P.csv [P2.csv ...] [--cls-probs C.csv] [--meta M] [--config tuned.yaml]
--out final.csv [key=value ...]``

``cxrdet predict`` is inference followed by these very functions (:func:`fuse_views` for its TTA
views and ensemble members, :func:`apply` for the rest), so a table post-processed here equals
what predict would have written with the same keys. Steps, in this order, all keys in
``configs/default.yaml`` (defaults = today's predict output, every step below a no-op except the
2-class filter, which needs a probabilities table):

1. **ensemble** (several tables): ensemble-boxes ``weighted_boxes_fusion`` per image, boxes
   normalised by the image size (``--meta``; without it by the largest coordinate of the image's
   boxes: WBF is invariant to that scaling); ``ens_iou``, ``ens_skip``, ``ens_conf_type``,
   ``ens_weights`` (one per table, null = equal).
2. **class-probability fusion** (``cls_fusion: multiply``): ``score * p_class ** alpha_c``, with
   ``p_class`` the probabilities table's column named like the box's class (the multi-label
   classifier's; VinBigData 3rd place's class gating) and ``alpha_c`` = ``alpha`` when it is one
   number, ``alpha[class name]`` when it is a mapping (classes it does not name: exponent 0, their
   score kept); boxes of classes without a column, or of images without a row, keep their score.
3. **box scaling** about the centre: width and height times ``box_scale`` (clipped to the image
   when its size is known).
4. **minimum box size**: boxes narrower or lower than ``min_box_size`` original pixels dropped.
5. **score threshold**: boxes scored below ``score_thr`` (or ``class_thr[name]``) dropped.
6. **top-k**: the ``top_k_per_class`` best boxes per image and class, then the ``top_k`` best
   per image (0 = all); ties keep table order.
7. **2-class filter** (the probabilities table has an ``abnormal`` column), p = p(abnormal):
   ``p < cls_low``: the image's boxes dropped and one "No finding" row ``14 1.0 0 0 1 1``;
   ``cls_low <= p < cls_high``: boxes kept plus "No finding" scored ``1 - p``; ``p >= cls_high``:
   boxes only. "No finding" rows exist only for datasets with that class (VinBigData); elsewhere
   normal images just lose their boxes. ``cls_low = cls_high = 0`` switches the
   filter off.

Steps 2-6 leave the normal class's rows alone; step 7 replaces the ones already there. The output
is sorted by image_id, then score (descending, stable).

A probabilities table is ``image_id`` plus one column per label in [0, 1] (``abnormal`` for
p(abnormal)), written by the classifiers. Applied to prediction tables (:func:`postprocess`, cxrdet
postprocess / tune) it must be of the same images (:func:`data_prep.core.tables.probs_for`): one that
covers none of the predicted images is an error; one that covers part is a warning with the counts,
and the predicted images without a row are left unfiltered (boxes and scores as predicted, no
"No finding" row); its rows for images no prediction table names are ignored (counted), so no
"No finding 1.0" is made for an image that was never predicted.
"""
from __future__ import annotations

import argparse
import copy
import functools
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from data_prep.core.boxes import BOX_COLUMNS, COORDS, denormalize_xyxy, empty_boxes, make_boxes, normalize_xyxy
from data_prep.datasets import DEFAULT_DATASET, describe
from data_prep.core.tables import read_probs


log = logging.getLogger(__name__)

# every key the steps read (configs/default.yaml documents them); tune writes only these
POST_KEYS = ("ens_iou", "ens_skip", "ens_conf_type", "ens_weights", "cls_fusion", "alpha", "box_scale",
             "min_box_size", "score_thr", "class_thr", "top_k_per_class", "top_k", "cls_low", "cls_high")
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
FUSIONS = ("none", "multiply")


def defaults() -> dict:  # pragma: no mutate block, config
    """The post-processing keys at their ``configs/default.yaml`` values (a fresh copy)."""
    return copy.deepcopy(_defaults())


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:  # pragma: no mutate block, config
    from data_prep.core.config import load_config

    cfg = load_config()
    return {k: cfg[k] for k in POST_KEYS}


def post_config(cfg: dict | None = None) -> dict:  # pragma: no mutate block, config check
    """The post-processing keys of ``cfg`` (missing ones at their defaults), checked."""
    base = defaults() if cfg is None or any(k not in cfg for k in POST_KEYS) else {}
    out = {k: (cfg or {}).get(k, base.get(k)) for k in POST_KEYS}
    from data_prep.core import keys
    from data_prep.core.config import normalise_alpha

    try:
        out["alpha"] = normalise_alpha(out["alpha"])
    except ValueError as e:
        raise ValueError(f"alpha = {e}") from None
    # the merge's rules (data_prep/core/keys.py), for settings handed in without the merge
    keys.check({**out, "dataset": (cfg or {}).get("dataset"), "classes": (cfg or {}).get("classes")},
               lambda k: "post-processing settings", {k: keys.RULES[k] for k in POST_KEYS})
    return out


def normal_class_for(dataset: str) -> tuple[int, str] | None:  # pragma: no mutate block, config
    """(class_id, name) of the normal class the 2-class filter writes (the dataset description's
    ``normal``), or None."""
    return describe(dataset).normal


# ----------------------------------------------------------------------------- WBF
@dataclass
class View:
    """One model's boxes for one image (one TTA view, or one table): original pixels."""
    xyxy: np.ndarray    # (N, 4) float64, original pixels
    scores: np.ndarray  # (N,) float64
    labels: np.ndarray  # (N,) int64


def fuse_views(views: Sequence[View], hw: tuple[float, float], iou_thr: float = 0.55,
               skip_box_thr: float = 0.0001, conf_type: str = "avg", weights=None) -> View:
    """Weighted boxes fusion (ensemble-boxes) of several views of one image; one view is returned
    as it is. Boxes are normalised by ``hw = (height, width)`` for WBF and mapped back."""
    if len(views) == 1:
        return views[0]
    from ensemble_boxes import weighted_boxes_fusion

    h, w = hw
    bl = [normalize_xyxy(v.xyxy, h, w) for v in views]
    if not any(len(b) for b in bl):
        return View(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype="int64"))
    boxes, scores, labels = weighted_boxes_fusion(
        bl, [v.scores for v in views], [v.labels for v in views], weights=None if weights is None else list(weights),
        iou_thr=iou_thr, skip_box_thr=skip_box_thr, conf_type=conf_type)
    return View(denormalize_xyxy(boxes, h, w), np.asarray(scores, "float64"), np.asarray(labels).astype("int64"))


def image_sizes(meta) -> pd.DataFrame | None:  # pragma: no mutate block, input reading
    """``image_id``-indexed ``height, width`` from a meta file (either form), or None."""
    if meta is None:
        return None
    from data_prep.datasets.common import read_meta

    return read_meta(meta, str(meta)).set_index("image_id")[["height", "width"]]


def ensemble(tables: Sequence[pd.DataFrame], sizes: pd.DataFrame | None = None, iou_thr: float = 0.55,
             skip_box_thr: float = 0.0001, conf_type: str = "avg", weights=None) -> pd.DataFrame:
    """WBF of several prediction box tables of the same images -> one box table.

    Per image, each table is one WBF input (an image missing from a table is an empty input).
    ``sizes``: ``image_id``-indexed height, width; images it lacks are normalised by their boxes'
    largest coordinates. Extra columns constant per image in the first table (``fold``) are kept."""
    if weights is not None and len(weights) != len(tables):
        raise ValueError(f"ens_weights {list(weights)}: {len(weights)} weight(s) for {len(tables)} table(s); "
                         "expected one weight per table, in --pred order")
    if len(tables) == 1:
        return tables[0]
    names: dict[int, str] = {}
    for t in tables:
        u = t[["class_id", "class_name"]].drop_duplicates()
        names.update(zip(u["class_id"].tolist(), u["class_name"].astype(str)))
    ids = pd.Index(pd.unique(pd.concat([t["image_id"].astype(str) for t in tables])))
    if not len(ids):   # no box in any table
        return empty_boxes()
    split = []  # per table: (boxes, scores, labels) sorted by image, and each image's slice bounds
    for t in tables:
        code = ids.get_indexer(t["image_id"].astype(str))
        o = np.argsort(code, kind="stable")
        bounds = np.searchsorted(code[o], np.arange(len(ids) + 1))
        split.append((t[COORDS].to_numpy("float64")[o], t["score"].to_numpy("float64")[o],
                      t["class_id"].to_numpy("int64")[o], bounds))
    lim = None if sizes is None else sizes.reindex(ids)[["height", "width"]].to_numpy("float64")
    out_i, out_b, out_s, out_l = [], [], [], []
    if sum(len(t) for t in tables) >= FAST_WBF_MIN and numba_available():
        out_i, out_b, out_s, out_l = _ensemble_fast(split, len(ids), lim, iou_thr, skip_box_thr, conf_type, weights)
    for i in range(len(ids) if not out_i else 0):
        views = [View(b[bd[i]:bd[i + 1]], s[bd[i]:bd[i + 1]], lab[bd[i]:bd[i + 1]]) for b, s, lab, bd in split]
        if lim is not None and not np.isnan(lim[i]).any():
            hw = (float(lim[i, 0]), float(lim[i, 1]))
        else:
            allb = np.concatenate([v.xyxy for v in views])
            hw = (max(float(allb[:, 3].max()), 1.0), max(float(allb[:, 2].max()), 1.0))
        v = fuse_views(views, hw, iou_thr, skip_box_thr, conf_type, weights)
        out_i.append(np.full(len(v.xyxy), i))
        out_b.append(v.xyxy)                      # (N, 4) from every branch of fuse_views
        out_s.append(v.scores)
        out_l.append(v.labels)
    lab = np.concatenate(out_l)   # every fused label is a class of the tables: it has a name
    res = make_boxes(ids.to_numpy()[np.concatenate(out_i)], lab, [names[int(c)] for c in lab], np.concatenate(out_b),
                     score=np.concatenate(out_s))
    first = tables[0]
    for c in (c for c in first.columns if c not in BOX_COLUMNS):
        per = first.groupby("image_id")[c].nunique(dropna=False)
        if len(first) and (per <= 1).all():
            res[c] = res["image_id"].map(first.drop_duplicates("image_id").set_index("image_id")[c])
    return res


FAST_WBF_MIN = 200_000  # boxes from which ensemble() fuses every image at once (detection/competition/fast_wbf.py, numba)


@functools.lru_cache(maxsize=1)
def numba_available() -> bool:  # pragma: no mutate block, optional speed-up
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _ensemble_fast(split: list, n_images: int, lim, iou_thr, skip_box_thr, conf_type, weights):
    """What :func:`ensemble`'s per-image loop returns (``[image codes], [boxes], [scores],
    [labels]``), computed by :func:`detection.competition.fast_wbf.wbf_tables` for every image at once: the same
    ensemble-boxes WBF (normalised by each image's size, else its boxes' largest coordinates)."""
    from detection.competition.fast_wbf import wbf_tables

    code, model, box, score, label = [], [], [], [], []
    for t, (b, s, lab, bd) in enumerate(split):
        code.append(np.repeat(np.arange(n_images), np.diff(bd)))
        model.append(np.full(len(b), t))
        box.append(b)
        score.append(s)
        label.append(lab)
    code, model, box = np.concatenate(code), np.concatenate(model), np.concatenate(box)
    score, label = np.concatenate(score), np.concatenate(label)
    o = np.lexsort((np.arange(len(code)), model, code))   # per image: table by table, each in its order
    code, model, box, score, label = code[o], model[o], box[o], score[o], label[o]
    hw = np.full((n_images, 2), np.nan) if lim is None else lim.copy()
    unknown = np.isnan(hw).any(1)
    if unknown.any():   # as the loop: the largest x2 / y2 of the image's boxes, at least 1
        mx = np.zeros((n_images, 2))
        np.maximum.at(mx, code, box[:, [3, 2]])
        hw[unknown] = np.maximum(mx[unknown], 1.0)
    h, w = hw[code, 0], hw[code, 1]
    whwh = np.stack([w, h, w, h], 1)
    nb = box / whwh   # wbf_tables clips to [0, 1] itself (ensemble-boxes' prefilter rule)
    img, fb, fs, fl = wbf_tables(code, model, nb, score, label, len(split), weights, iou_thr, skip_box_thr, conf_type)
    fb = fb * np.stack([hw[img, 1], hw[img, 0], hw[img, 1], hw[img, 0]], 1)
    return [img], [fb], [fs], [fl]   # wbf_tables: float64 scores, int64 labels


# ----------------------------------------------------------------------------- probabilities
# ----------------------------------------------------------------------------- the steps on arrays
@dataclass
class Arrays:
    """A prediction table over an image index: what the steps and ``cxrdet tune`` work on.

    images (I,) str, sorted; hw (I, 2) float64 original height, width (NaN = unknown);
    img, cls (N,) int64; box (N, 4) float64; score (N,) float64; names {class_id: name};
    probs (I, L) float64 (NaN = image without a row), labels (L,) the probability columns."""
    images: np.ndarray
    hw: np.ndarray
    img: np.ndarray
    cls: np.ndarray
    box: np.ndarray
    score: np.ndarray
    names: dict
    probs: np.ndarray
    labels: list
    cache: dict = field(default_factory=dict)


def to_arrays(table: pd.DataFrame, probs: pd.DataFrame | None = None, sizes: pd.DataFrame | None = None,
              images=None) -> Arrays:
    """Box table (+ probabilities, sizes) -> :class:`Arrays`; the image index is the sorted union
    of the table's, the probabilities' and ``images``."""
    ids = [table["image_id"].astype(str)]
    if probs is not None:
        ids.append(probs["image_id"].astype(str))
    if images is not None:
        ids.append(pd.Series(list(images)).astype(str))
    index = pd.Index(np.unique(np.concatenate([s.to_numpy() for s in ids]).astype(str)))
    names = dict(zip(table["class_id"].tolist(), table["class_name"].astype(str)))
    hw = np.full((len(index), 2), np.nan)
    if sizes is not None:
        pos = index.get_indexer(sizes.index.astype(str))
        hw[pos[pos >= 0]] = sizes[["height", "width"]].to_numpy()[pos >= 0]
    labels: list = []
    P = np.zeros((len(index), 0))
    if probs is not None:
        labels = [c for c in probs.columns if c != "image_id"]
        P = np.full((len(index), len(labels)), np.nan)
        P[index.get_indexer(probs["image_id"].astype(str))] = probs[labels].to_numpy()
    return Arrays(index.to_numpy(), hw, index.get_indexer(table["image_id"].astype(str)).astype("int64"),
                  table["class_id"].to_numpy("int64"), table[COORDS].to_numpy("float64"),
                  table["score"].to_numpy("float64"), {int(k): v for k, v in names.items()}, P, labels)


def _rank_in_group(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Rank (0 = best) of each row within its group by descending score; ties keep row order."""
    o = np.lexsort((np.arange(len(group)), -score, group))
    g = group[o]
    first = np.concatenate([[0], np.flatnonzero(g[1:] != g[:-1]) + 1])  # [0] for no rows: repeat() counts 0
    rank = np.empty_like(o)
    rank[o] = np.arange(len(g)) - np.repeat(first, np.diff(np.concatenate([first, [len(g)]])))
    return rank


def _prepared(a: Arrays, normal_id: int | None) -> dict:
    """What the steps need of ``a`` that no key changes, computed once per ``a`` (tune calls the
    steps hundreds of times on the same arrays)."""
    key = ("prepared", normal_id)
    if key in a.cache:
        return a.cache[key]
    find = a.cls != normal_id if normal_id is not None else np.ones(len(a.cls), bool)
    f = np.flatnonzero(find)
    b = a.box[f]
    hw = a.hw[a.img[f]][:, [1, 0, 1, 0]]
    p = np.full(len(a.cls), np.nan)   # each box's probability of its class; NaN: no column, or no row
    if a.labels:
        col = {lab: j for j, lab in enumerate(a.labels)}
        cj = np.array([col.get(a.names.get(k), -1) for k in range(_n_classes(a))], "int64")   # class -> column
        j = cj[a.cls]
        p[j >= 0] = a.probs[a.img[j >= 0], j[j >= 0]]
    fuse = np.flatnonzero(find & ~np.isnan(p))   # the boxes class-probability fusion changes
    pre = {"find": find, "find_rows": f, "centre": (b[:, :2] + b[:, 2:]) / 2, "half": (b[:, 2:] - b[:, :2]) / 2,
           "lim": np.where(np.isnan(hw), np.inf, hw), "fuse": fuse, "p_cls": p[fuse]}
    if "abnormal" in a.labels:
        pre["p_abnormal"] = a.probs[a.img, a.labels.index("abnormal")]
    a.cache[key] = pre
    return pre


def _n_classes(a: Arrays) -> int:
    """K: the class ids of ``a`` (its names' and its boxes') are 0 .. K-1; 0 without any."""
    return max(max(a.names, default=-1), int(a.cls.max(initial=-1))) + 1


def class_exponents(a: Arrays, alpha) -> np.ndarray:
    """``alpha`` (one number, or {class name or id: exponent}) as an exponent per class id (K,);
    classes a mapping does not name get 0 (score kept)."""
    n = _n_classes(a)
    if not isinstance(alpha, dict):
        return np.full(n, float(alpha))
    out = np.zeros(n)
    for k in range(n):
        v = alpha.get(a.names.get(k), alpha.get(str(k)))   # by name, else by id
        if v is not None:
            out[k] = float(v)
    return out


def apply_arrays(a: Arrays, cfg: dict, normal_id: int | None = None):
    """Steps 2-7 on :class:`Arrays` -> ``(rows, box, score, normal_img, normal_score)``.

    ``rows`` (K,) int64 = kept rows of ``a`` in their order, with their new ``box`` (K, 4) and
    ``score`` (K,); ``normal_img``/``normal_score`` = the "No finding" rows the 2-class filter adds
    (image positions, ascending), appended after the kept rows (only when ``normal_id`` is not None)."""
    pre = _prepared(a, normal_id)
    box, score, find = a.box, a.score, pre["find"]
    keep = np.ones(len(a.cls), bool)
    if cfg["cls_fusion"] == "multiply" and len(pre["fuse"]):
        u = pre["fuse"]
        score = score.copy()
        score[u] = score[u] * np.power(pre["p_cls"], class_exponents(a, cfg["alpha"])[a.cls[u]])
    s = float(cfg["box_scale"])
    if s != 1.0:
        f = pre["find_rows"]
        half = pre["half"] * s
        box = box.copy()
        box[f] = np.clip(np.concatenate([pre["centre"] - half, pre["centre"] + half], 1), 0.0, pre["lim"])
    m = float(cfg["min_box_size"])
    if m > 0:
        keep &= ~find | (((box[:, 2] - box[:, 0]) >= m) & ((box[:, 3] - box[:, 1]) >= m))
    thr = np.full(_n_classes(a), float(cfg["score_thr"]))
    for name, t in (cfg["class_thr"] or {}).items():
        ids = [k for k, v in a.names.items() if v == str(name) or str(k) == str(name)]
        thr[ids] = float(t)
    if thr.any():
        keep &= ~find | (score >= thr[a.cls])
    for key, group in (("top_k_per_class", a.img * (len(thr) + 1) + a.cls), ("top_k", a.img)):
        k = int(cfg[key])
        if k > 0:
            sel = np.flatnonzero(keep & find)
            r = _rank_in_group(group[sel], score[sel])
            keep[sel[r >= k]] = False
    n_img, n_score = np.zeros(0, "int64"), np.zeros(0)
    low, high = float(cfg["cls_low"]), float(cfg["cls_high"])
    if "abnormal" in a.labels and high > 0:
        pa = a.probs[:, a.labels.index("abnormal")]
        keep &= ~(pre["p_abnormal"] < low)  # NaN (no probability) keeps its boxes
        if normal_id is not None:
            keep &= find  # the filter's rows replace any "No finding" rows already there
            has = np.flatnonzero(~np.isnan(pa) & (pa < high))
            n_img = has
            n_score = np.where(pa[has] < low, 1.0, 1.0 - pa[has])
    rows = np.flatnonzero(keep)
    return rows, box[rows], score[rows], n_img, n_score


def final_order(img: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The output order: image (sorted index), then score descending; ties keep input order."""
    return np.lexsort((-score, img))  # lexsort is stable: ties stay in input order


def apply(table: pd.DataFrame, probs: pd.DataFrame | None, cfg: dict | None,
          normal_class: tuple[int, str] | None, sizes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Steps 2-7 on one box table -> the post-processed box table (sorted; module docstring).

    ``normal_class``: (class_id, name) of the dataset's normal class (``describe(cfg).normal``) or None.

    ``probs``: a probabilities table or None; ``sizes``: image_id-indexed height, width or None."""
    cfg = post_config(cfg)
    a = to_arrays(table, probs, sizes)
    rows, box, score, n_img, n_score = apply_arrays(a, cfg, normal_class[0] if normal_class else None)
    out = table.iloc[rows].copy()
    out[COORDS] = box
    out["score"] = score
    parts = [out]
    if len(n_img):
        added = make_boxes(a.images[n_img], normal_class[0], normal_class[1], [[0, 0, 1, 1]] * len(n_img),
                           score=n_score)
        parts.append(added)
        out = _carry_columns(table, added, out)
        parts[0] = out
    parts = [p for p in parts if len(p)]
    res = pd.concat(parts) if parts else empty_boxes()
    res = res[BOX_COLUMNS + [c for c in res.columns if c not in BOX_COLUMNS]].reset_index(drop=True)
    # sorting on two keys pandas always sorts stably (lexsort; its kind= applies to one key only)
    return res.sort_values(["image_id", "score"], ascending=[True, False]).reset_index(drop=True)


def _carry_columns(table: pd.DataFrame, added: pd.DataFrame, out: pd.DataFrame) -> pd.DataFrame:
    """Give the 2-class filter's rows ``added`` the extra columns of ``table`` that are constant per
    image (``fold`` of cv's oof_raw.csv). A column the table cannot give every added row (an image
    without a box there, or two values on one image) is dropped from ``out``: no row is left with
    a blank ``fold``. Returns ``out`` (``added`` is filled in place)."""
    extra = [c for c in table.columns if c not in BOX_COLUMNS]
    if not extra:
        return out
    ids = table["image_id"].astype(str)
    want = pd.Series(added["image_id"].astype(str).to_numpy())
    for c in extra:
        per = table[c].groupby(ids).agg(["nunique", "first"])
        if (per["nunique"] <= 1).all() and want.isin(per.index).all() and not table[c].isna().any():
            added[c] = want.map(per["first"]).to_numpy()
        else:
            log.info("postprocess: column %r is not known for every image the 2-class filter writes a row for: "
                     "left out", c)
            out = out.drop(columns=c)
    return out


def two_class_filter(boxes: pd.DataFrame, p_abnormal: dict[str, float], low: float = 0.08, high: float = 0.95, *,
                     normal_class: tuple[int, str] | None) -> pd.DataFrame:
    """The 2-class filter alone (step 7) with ``p_abnormal`` {image_id: p(abnormal)}; images absent
    from it keep their boxes."""
    probs = pd.DataFrame({"image_id": [str(i) for i in p_abnormal], "abnormal": list(p_abnormal.values())})
    return apply(boxes, probs, {"cls_low": low, "cls_high": high}, normal_class)


def postprocess(tables: Sequence[pd.DataFrame], probs: pd.DataFrame | None, cfg: dict | None,
                normal_class: tuple[int, str] | None, sizes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every step (module docstring) on one or several prediction box tables."""
    c = post_config(cfg)
    if not tables:
        raise ValueError("postprocess: no prediction table given")
    if probs is not None:   # the probabilities' contract with the predictions (data_prep.core.tables.probs_for)
        from data_prep.core.tables import probs_for

        probs = probs_for(probs, predicted_images(tables), probs.attrs.get("source", "probabilities table"))
    table = ensemble(list(tables), sizes, c["ens_iou"], c["ens_skip"], c["ens_conf_type"], c["ens_weights"])
    return apply(table, probs, c, normal_class, sizes)


def postprocess_files(preds: Sequence, probs=None, cfg: dict | None = None, meta=None) -> pd.DataFrame:
    """:func:`postprocess` of files: prediction tables (or submissions) ``preds``, a probabilities
    table ``probs`` (or None), image sizes ``meta`` (or None), the keys and dataset of ``cfg`` (a
    merged config; None: the defaults). What ``cxrdet postprocess`` writes, and what ``cxrdet cv``
    writes as ``oof.csv`` and the submission's table: one reading, one code path."""
    from detection.competition.submission import read_predictions

    c = cfg if cfg is not None else {**defaults(), "dataset": DEFAULT_DATASET}
    tables = [read_predictions(p, describe(c)) for p in preds]
    out = postprocess(tables, read_probs(probs) if probs is not None else None, c, normal_class_for(c["dataset"]),
                      image_sizes(meta))
    out.attrs["n_in"] = sum(len(t) for t in tables)  # boxes read, for the caller's summary line
    return out


def predicted_images(tables: Sequence[pd.DataFrame]) -> set[str]:
    """Every image the prediction tables name: their boxes' images, and the images a submission
    lists without a box (``attrs["image_ids"]``)."""
    return set().union(*(set(t["image_id"].astype(str)) | set(map(str, t.attrs.get("image_ids", [])))
                         for t in tables))


# ----------------------------------------------------------------------------- CLI
def add_arguments_postprocess(p: argparse.ArgumentParser) -> None:  # pragma: no mutate block, CLI
    p.add_argument("--pred", action="extend", nargs="+", required=True,
                   help="prediction box table(s) or submissions; several = WBF (--pred A B or --pred A --pred B)")
    p.add_argument("--cls-probs", default=None,
                   help="probabilities table: image_id + one column per label (abnormal, ...)")
    p.add_argument("--meta", default=None, help="original image sizes (WBF normalisation, clipping scaled boxes)")
    p.add_argument("--config", default=None, help="config (e.g. tuned.yaml from `cxrdet tune`); key=value overrides")
    p.add_argument("--out", required=True, help="post-processed box table CSV")


def run_postprocess(args: argparse.Namespace) -> int:  # pragma: no mutate block, CLI
    from pathlib import Path

    from data_prep.core.atomic import write_csv
    from data_prep.core.config import stage_config
    from data_prep.core.errors import check_output

    cfg = stage_config(args)
    out = check_output(args.out, arg="--out")
    inputs = [Path(p) for p in args.pred] + ([Path(args.cls_probs)] if args.cls_probs else [])
    if any(out.resolve() == p.resolve() for p in inputs if p.exists()):
        raise ValueError(f"--out {out} is one of the inputs; postprocess never writes over its inputs")
    res = postprocess_files(args.pred, args.cls_probs, cfg, args.meta)
    write_csv(res, out)
    print(f"{out}: {len(res)} box(es) on {res['image_id'].nunique()} image(s) from {res.attrs['n_in']} in "
          f"{len(args.pred)} table(s)")
    return 0
