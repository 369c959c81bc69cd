"""Competition metrics on box tables: matching (per image) -> accumulation (PR curve) -> summary.
(Image-level numbers, ROC AUC / F1 and per-image costs: :mod:`detection.evaluation.image_metrics`.)

Inputs are box tables (``data_prep/core/boxes.py``: absolute xyxy, ``score``) for truth and
predictions, plus the list of evaluated image ids (normal images included). Predictions on
images outside that list are ignored; evaluated images without predictions just add FNs.

Matching rules (one (image, class) group at a time, predictions in the order stated):

* ``vinbigdata`` (mAP@0.4, VOC 2010+ all-point AP): predictions of a class sorted by score,
  descending, STABLE (ties keep input row order). Each takes, among the still UNMATCHED truths
  of its image and class, the one of highest IoU (ties: the first truth in table order); it is a
  TP if that IoU >= ``iou_thr``, else an FP and the truth stays free. A truth already taken never
  counts, even if its IoU is higher. AP = area under the monotone precision envelope over all
  recall points; mAP = mean over classes with truth. With ``normal_class`` N (VinBigData's
  "No finding"), each evaluated image without truth boxes gets a truth ``N 0 0 1 1``; a
  prediction ``N p 0 0 1 1`` matches it (IoU 1). IoU is continuous (no +1).
* ``coco``: pycocotools COCOeval (bbox, iouThrs=[thr], areaRng all, maxDets 100, no crowd),
  reproduced operation for operation: per (image, class) the predictions sorted by -score
  (mergesort) and cut to ``max_dets`` (pycocotools cuts per image AND class); each takes the
  unmatched truth of highest IoU among those with IoU >= min(thr, 1-1e-10), ties going to the
  LAST truth in table order; IoU on xywh exactly as maskApi's bbIou. Accumulation sorts by
  -score (mergesort) over images in ``images`` order (pycocotools' sorted image ids), precision
  tp/(tp+fp+eps), 101 recall points; classes without truth are excluded (pycocotools' -1).
* ``rsna``: per image and threshold t in 0.40, 0.45, ..., 0.75, predictions by descending score
  (stable) each take the unmatched truth of highest IoU if IoU > t (strict); the image scores
  TP / (TP + FP + FN), averaged over the 8 thresholds; images with neither truth nor prediction
  are skipped, images with predictions but no truth score 0; the result is the mean over images.

Matching is vectorised across groups: step k handles the k-th prediction of every
(image, class) group at once, so a step is a few numpy calls on arrays of the groups' size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from data_prep.core.boxes import COORDS, iou, validate_boxes, xyxy_to_xywh
from data_prep.datasets import DATASETS

# what a caller that names no normal class gets: the default dataset's (None when it has none)

log = logging.getLogger(__name__)

NORMAL_BOX = (0.0, 0.0, 1.0, 1.0)
RSNA_THRESHOLDS = tuple(np.round(np.arange(0.40, 0.76, 0.05), 2))  # 0.40 ... 0.75 (8 values)
COCO_REC_THRS = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)  # (101,)


def _normal_name(class_id: int) -> str:
    """The name a registered dataset gives its normal class ``class_id`` ("normal" if none does)."""
    return next((d.normal_name for d in DATASETS.values() if d.normal_id == class_id), "normal")


# ----------------------------------------------------------------------------- encoding
@dataclass
class Encoded:
    """Truth and predictions as flat arrays over the evaluated images.

    images (I,) str; names {class_id: class_name}.
    t_img, t_cls (Nt,) int64 (image position, class id); t_box (Nt, 4) float64 xyxy.
    p_img, p_cls (Np,) int64; p_box (Np, 4) float64; p_score (Np,) float64; p_row (Np,) int64 =
    row position in the caller's prediction table (input order, the stable tie-break).
    """
    images: np.ndarray
    names: dict
    t_img: np.ndarray
    t_cls: np.ndarray
    t_box: np.ndarray
    p_img: np.ndarray
    p_cls: np.ndarray
    p_box: np.ndarray
    p_score: np.ndarray
    p_row: np.ndarray


def encode(truth: pd.DataFrame, pred: pd.DataFrame, images, normal_class: int | None = None,
           class_names=None) -> Encoded:
    """Box tables -> :class:`Encoded`. Drops truth/predictions of images not in ``images``.

    With ``normal_class``: truth rows of that class are dropped and every evaluated image left
    without truth gets one truth box ``normal_class 0 0 1 1``."""
    images = pd.Index(pd.unique(pd.Series(list(images), dtype=object).astype(str)))
    for df, src in ((truth, "truth"), (pred, "predictions")):
        if len(df):
            validate_boxes(df, source=src)
    if len(pred) and pred["score"].isna().any():
        i = int(np.flatnonzero(pred["score"].isna().to_numpy())[0])
        raise ValueError(f"predictions row {pred.index[i]}: score is NaN; expected a confidence")
    names = {}
    for df in (pred, truth):  # truth names win over predictions', class_names over both
        if len(df):
            u = df[["class_id", "class_name"]].drop_duplicates("class_id")
            names.update({int(k): str(v) for k, v in zip(u["class_id"], u["class_name"])})
    if class_names is not None:
        items = class_names.items() if isinstance(class_names, dict) else enumerate(class_names)
        names.update({int(k): str(v) for k, v in items})

    def arrays(df, src):
        pos = images.get_indexer(df["image_id"].astype(str))
        keep = pos >= 0
        if (~keep).any():
            log.info("%s: %d box(es) on %d image(s) outside the evaluated set ignored", src, int((~keep).sum()),
                     df["image_id"][~keep].nunique())
        return (keep, pos[keep].astype("int64"), df["class_id"].to_numpy("int64")[keep],
                df[COORDS].to_numpy("float64")[keep])

    keep, t_img, t_cls, t_box = arrays(truth, "truth")
    if normal_class is not None:
        drop = t_cls == normal_class
        if drop.any():
            log.warning("truth: %d row(s) of the normal class %d dropped; normal truth comes from images "
                        "without findings", int(drop.sum()), normal_class)
        t_img, t_cls, t_box = t_img[~drop], t_cls[~drop], t_box[~drop]
        normal = np.setdiff1d(np.arange(len(images)), t_img)
        t_img = np.concatenate([t_img, normal])
        t_cls = np.concatenate([t_cls, np.full(len(normal), normal_class, "int64")])
        t_box = np.concatenate([t_box, np.tile(NORMAL_BOX, (len(normal), 1))])
        names.setdefault(normal_class, _normal_name(normal_class))
    keep, p_img, p_cls, p_box = arrays(pred, "predictions")
    p_score = pred["score"].to_numpy("float64")[keep]
    p_row = np.flatnonzero(keep).astype("int64")
    return Encoded(images.to_numpy(), dict(sorted(names.items())), t_img, t_cls, t_box, p_img, p_cls, p_box,
                   p_score, p_row)


# ----------------------------------------------------------------------------- IoU
iou_xyxy = iou  # data_prep.core.boxes.iou: continuous IoU (no +1) of broadcastable (..., 4) xyxy arrays


def iou_coco(d: np.ndarray, g: np.ndarray) -> np.ndarray:
    """IoU of broadcastable ``(..., 4)`` xywh arrays, the same float operations as pycocotools'
    ``bbIou`` (maskApi.c): w = min(x+w) - max(x); 0 unless w > 0 and h > 0; i / (da + ga - i)."""
    w = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1], g[..., 1])
    ok = (w > 0) & (h > 0)
    i = w * h
    u = d[..., 2] * d[..., 3] + g[..., 2] * g[..., 3] - i
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, i / np.where(ok, u, 1.0), 0.0)


# ----------------------------------------------------------------------------- matching
def greedy_match(t_grp, t_box, p_grp, p_seq, p_box, thr: float, strict: bool = False,
                 ties_last: bool = False, iou=iou_xyxy) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching inside groups (a group = one image and class).

    t_grp (Nt,) int group of each truth, t_box (Nt, 4); p_grp (Np,) int, p_seq (Np,) processing
    order (lower first; ties broken by position), p_box (Np, 4). Each prediction, in ``p_seq``
    order within its group, takes the unmatched truth of its group with the highest IoU (ties: the
    first truth in table order, or the last with ``ties_last``) if that IoU >= thr (> thr if
    ``strict``). Returns ``pred_truth`` (Np,) int64 = index of the matched truth or -1, and
    ``pred_iou`` (Np,) float64 = IoU with the matched truth (0 if unmatched)."""
    t_grp, p_grp = np.asarray(t_grp, "int64"), np.asarray(p_grp, "int64")
    n_p = len(p_grp)
    pred_truth = np.full(n_p, -1, "int64")
    pred_iou = np.zeros(n_p)
    p_seq, p_box, t_box = np.asarray(p_seq), np.asarray(p_box, "float64"), np.asarray(t_box, "float64")
    # (without truth or without predictions no bucket below has both: nothing is matched)
    keys, inv = np.unique(np.concatenate([t_grp, p_grp]), return_inverse=True)
    tg, pg = inv[: len(t_grp)], inv[len(t_grp):]
    ng = np.bincount(tg, minlength=len(keys))
    # groups are independent: bucket them by their number of truths (1, 2, 3-4, 5-8, ...) so the
    # truths padded per group stay narrow for the many small groups
    bucket = np.where(ng > 0, np.ceil(np.log2(np.maximum(ng, 1))), -1).astype("int64")
    for b in np.unique(bucket[bucket >= 0]):
        ti = np.flatnonzero(bucket[tg] == b)
        pi = np.flatnonzero(bucket[pg] == b)
        if len(pi):
            pt, pio = _greedy_bucket(tg[ti], t_box[ti], pg[pi], p_seq[pi], p_box[pi], thr, strict, ties_last, iou)
            ok = pt >= 0
            pred_truth[pi[ok]] = ti[pt[ok]]
            pred_iou[pi[ok]] = pio[ok]
    return pred_truth, pred_iou


def _greedy_bucket(tg, t_box, pg, p_seq, p_box, thr, strict, ties_last, iou):
    """:func:`greedy_match` on groups that all have truth (indices local to the arguments)."""
    n_p = len(pg)
    pred_truth = np.full(n_p, -1, "int64")
    pred_iou = np.zeros(n_p)
    keys, inv = np.unique(np.concatenate([tg, pg]), return_inverse=True)
    tg, pg = inv[: len(tg)], inv[len(tg):]
    # truths padded per group: TB (G, M, 4), TI (G, M) truth index or -1
    t_ord = np.lexsort((np.arange(len(tg)), tg))
    ng = np.bincount(tg)   # every group here has truth: no group is missing from the count
    start = np.concatenate([[0], np.cumsum(ng)[:-1]])
    col = np.arange(len(tg)) - start[tg[t_ord]]
    m = int(ng.max())
    TB = np.zeros((len(keys), m, 4))
    TI = np.full((len(keys), m), -1, "int64")
    TB[tg[t_ord], col] = t_box[t_ord]
    TI[tg[t_ord], col] = t_ord
    taken = TI < 0  # (G, M): padding counts as taken
    # IoU of each prediction with every truth of its group, once. A prediction below thr with
    # EVERY truth can neither match nor take a truth from another: it is left out of the loop
    # (the same result, far fewer steps; the loop applies the strict rule to the ones at thr). The
    # padding's IoU (with a 0 0 0 0 box: 0) is never read in the loop: padding is taken from the start
    IOU = iou(p_box[:, None, :], TB[pg])  # (Np, M)
    pi = np.flatnonzero(IOU.max(1) >= thr)
    p_ord = pi[np.lexsort((pi, p_seq[pi], pg[pi]))]
    rank = _position_in_run(pg[p_ord])
    by_rank = np.argsort(rank)   # a step holds one prediction per group: their order in it is free
    bounds = np.searchsorted(rank[by_rank], np.arange(rank.max() + 2 if len(rank) else 1))
    for k in range(len(bounds) - 1):
        sel = p_ord[by_rank[bounds[k]:bounds[k + 1]]]  # the k-th prediction of each group
        g = pg[sel]
        free = ~taken[g]  # (n, M)
        ious = np.where(free, IOU[sel], -np.inf)
        j = m - 1 - np.argmax(ious[:, ::-1], 1) if ties_last else np.argmax(ious, 1)
        best = ious[np.arange(len(sel)), j]
        ok = best > thr if strict else best >= thr
        taken[g[ok], j[ok]] = True
        pred_truth[sel[ok]] = TI[g[ok], j[ok]]
        pred_iou[sel[ok]] = best[ok]
    return pred_truth, pred_iou


def _position_in_run(gs: np.ndarray) -> np.ndarray:
    """Each entry's position within its run of equal values of the sorted group ids ``gs``."""
    return np.arange(len(gs)) - np.searchsorted(gs, gs)


def _n_classes(enc: Encoded) -> int:
    """The stride of :func:`_group`: one more than the largest class id."""
    return int(max(enc.t_cls.max(initial=0), enc.p_cls.max(initial=0))) + 1


def _group(img, cls, n_cls):
    """One int64 per (image, class) pair (``cls`` < ``n_cls``)."""
    return np.asarray(img, "int64") * n_cls + np.asarray(cls, "int64")


def _ranks(seq: np.ndarray) -> np.ndarray:
    """The inverse permutation of ``seq``: each prediction's processing position."""
    out = np.empty(len(seq), "int64")
    out[seq] = np.arange(len(seq))
    return out


def score_order(enc: Encoded) -> np.ndarray:
    """Predictions by descending score, ties in input order (``p_row``)."""
    if (np.diff(enc.p_row) > 0).all():  # rows already in input order (or < 2 rows): one stable sort
        return np.argsort(-enc.p_score, kind="stable")
    return np.lexsort((enc.p_row, -enc.p_score))


def match_vinbigdata(enc: Encoded, iou_thr: float = 0.4,
                     seq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-prediction match of the vinbigdata rule: (pred_truth (Np,) int64, pred_iou (Np,)).
    ``seq``: :func:`score_order` of ``enc`` when the caller has it."""
    n_cls = _n_classes(enc)
    seq = score_order(enc) if seq is None else seq  # descending score, stable on input order
    return greedy_match(_group(enc.t_img, enc.t_cls, n_cls), enc.t_box, _group(enc.p_img, enc.p_cls, n_cls),
                        _ranks(seq), enc.p_box, iou_thr)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC 2010+): area under the monotone precision envelope.
    recall, precision (N,) cumulative, in prediction order."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(np.diff(mrec))
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _summary(metric, enc: Encoded, ap: dict, pr: dict, extra=None) -> dict:
    n_truth, n_pred = np.bincount(enc.t_cls), np.bincount(enc.p_cls)
    ids = sorted(set(enc.names) | set(ap))
    table = [{"class_id": c, "class_name": enc.names.get(c, str(c)),
              "n_truth": int(n_truth[c]) if c < len(n_truth) else 0,
              "n_pred": int(n_pred[c]) if c < len(n_pred) else 0, "ap": ap.get(c)} for c in ids]
    vals = [v for v in ap.values() if v is not None]
    out = {"metric": metric, "mAP": float(np.mean(vals)) if vals else np.nan,
           "per_class": {r["class_name"]: r["ap"] for r in table}, "n_images": int(len(enc.images)),
           "table": table, "pr": {enc.names.get(c, str(c)): v for c, v in pr.items()}}
    out.update(extra or {})
    return out


def vinbigdata_map(truth: pd.DataFrame, pred: pd.DataFrame, images, iou_thr: float = 0.4, *,
                   normal_class: int | None, class_names=None) -> dict:
    """VinBigData mAP@iou_thr (rule in the module docstring).

    ``normal_class``: the dataset's normal class id (``describe(cfg).normal_id``) or None; no default
    (a silent default would score another dataset's class as the normal one).

    Returns {"metric", "iou_thr", "mAP", "per_class" {name: AP or None}, "n_images", "table"
    (rows class_id, class_name, n_truth, n_pred, ap), "pr" {name: {"precision", "recall",
    "score"} (n_c,) arrays in ranking order}}. Classes with predictions but no truth: None."""
    return vinbigdata_from(encode(truth, pred, images, normal_class, class_names), iou_thr)


def vinbigdata_from(enc: Encoded, iou_thr: float = 0.4) -> dict:
    """:func:`vinbigdata_map` on an already :class:`Encoded` truth + predictions."""
    seq = score_order(enc)
    pred_truth, _ = match_vinbigdata(enc, iou_thr, seq)
    pc = enc.p_cls[seq]
    # per class (a stable sort keeps the score order); the int16 copy only makes the sort faster
    by_cls = seq[np.argsort(pc.astype("int16") if pc.max(initial=0) < 32767 else pc, kind="stable")]

    classes = np.unique(np.concatenate([enc.t_cls, enc.p_cls]))
    lo, hi = (np.searchsorted(enc.p_cls[by_cls], classes, side=side) for side in ("left", "right"))
    n_pos = np.bincount(enc.t_cls, minlength=int(classes.max(initial=0)) + 1)
    ap, pr = {}, {}
    for i, c in enumerate(classes):
        npos = int(n_pos[c])
        idx = by_cls[lo[i]:hi[i]]
        if npos == 0:
            ap[int(c)] = None
            continue
        tp = np.cumsum(pred_truth[idx] >= 0)
        fp = np.cumsum(pred_truth[idx] < 0)
        rec, prec = tp / npos, tp / np.maximum(tp + fp, 1)
        ap[int(c)] = voc_ap(rec, prec)   # 0.0 without predictions
        pr[int(c)] = {"precision": prec, "recall": rec, "score": enc.p_score[idx]}
    return _summary("vinbigdata", enc, ap, pr, {"iou_thr": iou_thr})


def match_coco(enc: Encoded, iou_thr: float = 0.4, max_dets: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Per-prediction match of the coco rule: ``keep`` (K,) int64 = sorted positions of the
    predictions within ``max_dets`` of their (image, class) (the rest are ignored by the metric),
    and ``pred_truth`` (K,) int64 = matched truth index or -1 for each kept prediction."""
    n_cls = _n_classes(enc)
    # per (image, class): mergesort on -score (stable on input order), cut to max_dets
    pg = _group(enc.p_img, enc.p_cls, n_cls)
    o = np.lexsort((enc.p_row, -enc.p_score, pg))
    keep = np.sort(o[_position_in_run(pg[o]) < max_dets])
    p_seq = _ranks(o)
    t_xywh, p_xywh = xyxy_to_xywh(enc.t_box), xyxy_to_xywh(enc.p_box[keep])
    pred_truth, _ = greedy_match(_group(enc.t_img, enc.t_cls, n_cls), t_xywh, pg[keep], p_seq[keep], p_xywh,
                                 min(iou_thr, 1 - 1e-10), ties_last=True, iou=iou_coco)
    return keep.astype("int64"), pred_truth


def match_rsna(enc: Encoded, thresholds=RSNA_THRESHOLDS, tm=None, pm=None) -> np.ndarray:
    """Per-prediction match of the rsna rule: ``(Np', T)`` bool, True where the prediction (of
    the ``pm`` subset, all by default) is a TP at IoU threshold t (strict >), truth of ``tm``."""
    tm = np.ones(len(enc.t_cls), bool) if tm is None else tm
    pm = np.ones(len(enc.p_cls), bool) if pm is None else pm
    n_cls = _n_classes(enc)
    p_seq = _ranks(np.lexsort((enc.p_row[pm], -enc.p_score[pm])))
    out = np.zeros((int(pm.sum()), len(thresholds)), bool)
    for i, t in enumerate(thresholds):
        pt, _ = greedy_match(_group(enc.t_img[tm], enc.t_cls[tm], n_cls), enc.t_box[tm],
                             _group(enc.p_img[pm], enc.p_cls[pm], n_cls), p_seq, enc.p_box[pm], float(t), strict=True)
        out[:, i] = pt >= 0
    return out


def coco_map(truth: pd.DataFrame, pred: pd.DataFrame, images, iou_thr: float = 0.4, max_dets: int = 100,
             normal_class: int | None = None, class_names=None) -> dict:
    """pycocotools COCOeval AP at one IoU threshold (101-point), reproduced exactly (see module
    docstring); ``images`` order plays the role of pycocotools' sorted integer image ids.
    Same return layout as :func:`vinbigdata_map`; ``pr`` also holds ``"q"`` (101,) precisions."""
    return coco_from(encode(truth, pred, images, normal_class, class_names), iou_thr, max_dets)


def coco_from(enc: Encoded, iou_thr: float = 0.4, max_dets: int = 100) -> dict:
    """:func:`coco_map` on an already :class:`Encoded` truth + predictions."""
    keep, pred_truth = match_coco(enc, iou_thr, max_dets)
    ap, pr = {}, {}
    eps = np.spacing(1)
    for c in np.unique(np.concatenate([enc.t_cls, enc.p_cls[keep]])):
        npig = int((enc.t_cls == c).sum())
        if npig == 0:
            ap[int(c)] = None
            continue
        idx = np.flatnonzero(enc.p_cls[keep] == c)
        idx = idx[np.lexsort((enc.p_row[keep][idx], enc.p_img[keep][idx], -enc.p_score[keep][idx]))]
        tp = np.cumsum(pred_truth[idx] >= 0).astype(float)
        fp = np.cumsum(pred_truth[idx] < 0).astype(float)
        rc, prc = tp / npig, tp / (fp + tp + eps)
        env = np.maximum.accumulate(prc[::-1])[::-1]
        inds = np.searchsorted(rc, COCO_REC_THRS, side="left")
        q = np.zeros(len(COCO_REC_THRS))  # (101,) precision at each recall threshold, 0 beyond the curve
        q[inds < len(env)] = env[inds[inds < len(env)]]
        ap[int(c)] = float(np.mean(q))
        pr[int(c)] = {"precision": prc, "recall": rc, "score": enc.p_score[keep][idx], "q": q}
    out = _summary("coco", enc, ap, pr, {"iou_thr": iou_thr, "max_dets": max_dets})
    qs = [pr[c]["q"] for c in sorted(pr)]
    if qs:  # pycocotools' summarize: mean over every precision entry > -1
        out["mAP"] = float(np.mean(np.stack(qs, 1)))
    return out


def rsna_score(truth: pd.DataFrame, pred: pd.DataFrame, images, thresholds=RSNA_THRESHOLDS,
               class_names=None) -> dict:
    """RSNA Pneumonia score: mean over images of mean over thresholds of TP/(TP+FP+FN) (rule in
    the module docstring). ``mAP`` is the all-class score, ``per_class`` the score restricted to
    each class; ``per_image`` a DataFrame image_id, score (NaN = skipped); ``per_threshold``."""
    return rsna_from(encode(truth, pred, images, None, class_names), thresholds)


def rsna_from(enc: Encoded, thresholds=RSNA_THRESHOLDS) -> dict:
    """:func:`rsna_score` on an already :class:`Encoded` truth + predictions."""
    res = _rsna(enc, np.ones(len(enc.t_cls), bool), np.ones(len(enc.p_cls), bool), thresholds)
    per_class = {}
    for c in sorted(enc.names):
        tm, pm = enc.t_cls == c, enc.p_cls == c
        per_class[c] = _rsna(enc, tm, pm, thresholds)[0] if tm.any() else None
    out = _summary("rsna", enc, per_class, {}, {"thresholds": [float(t) for t in thresholds]})
    out["mAP"] = res[0]
    out["per_threshold"] = {f"{t:.2f}": float(v) for t, v in zip(thresholds, res[2])}
    out["per_image"] = pd.DataFrame({"image_id": enc.images, "score": res[1]})
    out["n_scored"] = int(np.isfinite(res[1]).sum())
    return out


def score_encoded(enc: Encoded, metric: str, iou_thr: float = 0.4) -> float:
    """The headline number (``mAP``) of ``metric`` on an :class:`Encoded`: what ``cxrdet tune``
    calls per trial, the same code as :func:`vinbigdata_map` / :func:`coco_map` / :func:`rsna_score`."""
    return metric_named(metric).score(enc, iou_thr)


def _rsna(enc: Encoded, tm, pm, thresholds):
    n_img = len(enc.images)
    t_img, p_img = enc.t_img[tm], enc.p_img[pm]
    n_t = np.bincount(t_img, minlength=n_img)
    n_p = np.bincount(p_img, minlength=n_img)
    scored = (n_t + n_p) > 0
    per_t = np.zeros((len(thresholds), n_img))  # (T, I)
    tps = match_rsna(enc, thresholds, tm, pm)
    for i, t in enumerate(thresholds):
        tp = np.bincount(p_img[tps[:, i]], minlength=n_img)
        per_t[i] = np.where(scored, tp / np.maximum(n_t + n_p - tp, 1), np.nan)
    img = per_t.mean(0)
    mean = float(np.nanmean(img)) if scored.any() else np.nan
    return mean, img, np.nanmean(per_t[:, scored], 1) if scored.any() else np.full(len(thresholds), np.nan)


# ----------------------------------------------------------------------------- the registry
def _matches_vinbigdata(enc: Encoded, iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    pt, _ = match_vinbigdata(enc, iou_thr)
    return (pt >= 0).astype("int64"), pt.astype("int64")


def _matches_coco(enc: Encoded, iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    keep, pt = match_coco(enc, iou_thr)
    tp, match = np.full((2, len(enc.p_cls)), -1, "int64")
    tp[keep] = pt >= 0       # 1 / 0 (-1 stays: a prediction COCO ignores, beyond max_dets)
    match[keep] = pt
    return tp, match


def _rsna_groups(enc: Encoded):
    """greedy_match's arguments for the rsna rule's first threshold (same order as match_rsna)."""
    n_cls = _n_classes(enc)
    return (_group(enc.t_img, enc.t_cls, n_cls), enc.t_box, _group(enc.p_img, enc.p_cls, n_cls),
            _ranks(np.lexsort((enc.p_row, -enc.p_score))), enc.p_box)


def _matches_rsna(enc: Encoded, iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    bits = match_rsna(enc)
    pt, _ = greedy_match(*_rsna_groups(enc), float(RSNA_THRESHOLDS[0]), strict=True)
    return (bits * (1 << np.arange(bits.shape[1]))).sum(1).astype("int64"), pt.astype("int64")


def _score_rsna(enc: Encoded, iou_thr: float) -> float:
    return _rsna(enc, np.ones(len(enc.t_cls), bool), np.ones(len(enc.p_cls), bool), RSNA_THRESHOLDS)[0]


@dataclass(frozen=True)
class Metric:
    """One box metric: how it scores, how it is named and how it matches a prediction.

    ``scorer(enc, iou_thr) -> dict`` (the full result: metric, mAP, per_class, table, ...);
    ``headline`` / ``summary``: its name in a report head and in ``cxrdet evaluate``'s summary
    line (``{iou:g}`` = the IoU threshold); ``score_names``: (per class, overall) as the reports
    call them; ``matches(enc, iou_thr) -> (tp, match)``: each encoded prediction's match by the
    metric's own rule (tp: 0/1, -1 = ignored, or one bit per threshold; match: truth row or -1);
    ``per_image``: the score is a mean over images (an image costs 1 - its score; ``thresholds``
    fixed), else AP over boxes at ``iou_thr``; ``scores_normal``: the dataset's normal class is a
    class of its own (rsna: never scored, its rows dropped)."""
    name: str
    scorer: Callable[[Encoded, float], dict]
    score: Callable[[Encoded, float], float]
    matches: Callable[[Encoded, float], tuple[np.ndarray, np.ndarray]]
    headline: str
    summary: str
    score_names: tuple[str, str] = ("AP", "mAP")
    per_image: bool = False
    scores_normal: bool = True
    fixed_thresholds: tuple[float, ...] | None = None

    def thresholds(self, iou_thr: float) -> list[float]:
        """The IoU thresholds it matches at: its own fixed ones, else ``[iou_thr]``."""
        return [float(t) for t in self.fixed_thresholds] if self.fixed_thresholds else [float(iou_thr)]

    def head(self, iou_thr: float) -> str:
        return self.headline.format(iou=iou_thr)

    def describe(self, iou_thr: float) -> str:
        return self.summary.format(iou=iou_thr)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("vinbigdata", vinbigdata_from, lambda enc, t: vinbigdata_from(enc, t)["mAP"], _matches_vinbigdata,
           "mAP@{iou:g}", "mAP@{iou:g} (VOC all-point)"),
    Metric("rsna", lambda enc, t: rsna_from(enc), _score_rsna, _matches_rsna, "RSNA score",
           "RSNA score (mean TP/(TP+FP+FN), IoU 0.40:0.75)", ("RSNA score", "RSNA score"), per_image=True,
           scores_normal=False, fixed_thresholds=RSNA_THRESHOLDS),
    Metric("coco", coco_from, lambda enc, t: coco_from(enc, t)["mAP"], _matches_coco,
           "COCO AP@{iou:g}", "AP@{iou:g} (COCO 101-point)"),
)}


def metric_named(name: str) -> Metric:
    """The registered :class:`Metric` ``name``; an unknown name: ValueError listing the known ones."""
    if name not in METRICS:
        raise ValueError(f"metric {name!r}; expected one of {list(METRICS)}")
    return METRICS[name]
