"""Image-level numbers from box tables: each prediction's match by the metric's own rule
(:func:`pred_matches`), what each image costs the metric (:func:`image_costs`: the one definition
of the worst-images galleries, report-eval and the explorer) and image-level classification from
detections (per finding class and abnormal vs normal: ROC AUC and best F1, :func:`image_level`,
:func:`auc_f1`).

The box metrics (matching, VOC/COCO AP, RSNA) are :mod:`detection.evaluation.metrics`."""
from __future__ import annotations

import numpy as np
import pandas as pd

from detection.evaluation import metrics as M


def pred_matches(truth: pd.DataFrame, pred: pd.DataFrame, ids, metric: str,
                  iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Matches of ``pred`` rows against ``truth`` rows (both limited to ``ids``, findings only)
    by the metric's rule: (tp bits (Np,) int64, -1 = ignored; matched truth row (Np,) or -1)."""
    enc = M.encode(truth, pred, ids)
    tp = np.zeros(len(pred), "int64")
    match = np.full(len(pred), -1, "int64")
    tp[enc.p_row], match[enc.p_row] = M.metric_named(metric).matches(enc, iou_thr)
    return tp, match


def image_costs(truth: pd.DataFrame, pred: pd.DataFrame, images, *, metric: str, normal_class: int | None,
                iou_thr: float = 0.4, conf_thr: float = 0.25) -> pd.DataFrame:
    """What each image costs ``metric`` at confidence ``conf_thr``: THE definition used by
    ``cxrdet show --gallery worst|best``, ``report-eval``'s worst images and the explorer's list
    (explore.html computes the same numbers in the page from :func:`pred_matches`' bits).

    Findings only (``normal_class`` rows of both tables are left out; None = none). Predictions
    are matched once by the metric's own rule (:func:`pred_matches`: vinbigdata at ``iou_thr``,
    coco at ``iou_thr`` within its max_dets, rsna at its eight thresholds), then those scored below
    ``conf_thr`` (and the ones COCO ignores) are dropped: every rule takes predictions in
    descending score order, so this equals matching the kept ones alone.

    * vinbigdata, coco: cost = missed truth boxes + the confidence of each false positive (a
      missed truth box costs 1, a confident false positive almost 1);
    * rsna: cost = 1 - the image's score (the mean over the IoU thresholds of TP/(TP+FP+FN)); an
      image with neither truth nor prediction costs 0 (the metric skips it).

    Returns image_id, n_tp, n_fp, n_fn (int64; at the first threshold), cost (float64), one row per
    image of ``images``, sorted by cost descending (ties in ``images`` order)."""
    rule = M.metric_named(metric)
    if normal_class is not None:
        truth = truth[truth["class_id"] != normal_class]
        pred = pred[pred["class_id"] != normal_class]
    ids = pd.unique(pd.Series(list(images["image_id"] if isinstance(images, pd.DataFrame) else images),
                              dtype=object).astype(str))
    pos = {i: k for k, i in enumerate(ids)}
    truth = truth[truth["image_id"].astype(str).isin(pos)]
    pred = pred[pred["image_id"].astype(str).isin(pos)].reset_index(drop=True)
    tp, _ = pred_matches(truth, pred, ids, metric, iou_thr)
    keep = (pred["score"].to_numpy(float) >= conf_thr) & (tp != -1)
    img = pred["image_id"].astype(str).map(pos).to_numpy("int64")[keep]
    bits, score = tp[keep], pred["score"].to_numpy(float)[keep]
    n = len(ids)
    nt = np.bincount(truth["image_id"].astype(str).map(pos).to_numpy("int64"), minlength=n)
    npred = np.bincount(img, minlength=n)
    n_thr = len(rule.thresholds(iou_thr))
    tpk = np.stack([np.bincount(img, weights=(bits >> k) & 1, minlength=n) for k in range(n_thr)], 1)
    tp0 = tpk[:, 0].astype("int64")
    if rule.per_image:   # the score is a mean over images: an image costs 1 - its score
        # TP/(TP+FP+FN) per threshold; TP <= both counts, so an image with a zero denominator has TP 0: 0/1
        s = (tpk / np.maximum(nt[:, None] + npred[:, None] - tpk, 1)).mean(1)
        cost = np.where(nt + npred > 0, 1.0 - s, 0.0)
    else:
        fp_score = np.bincount(img, weights=np.where(bits & 1, 0.0, score), minlength=n)
        cost = (nt - tp0) + fp_score
    df = pd.DataFrame({"image_id": ids, "n_tp": tp0, "n_fp": (npred - tp0).astype("int64"),
                       "n_fn": (nt - tp0).astype("int64"), "cost": cost.astype("float64")})
    return df.sort_values("cost", ascending=False, kind="stable").reset_index(drop=True)


def image_scores(boxes: pd.DataFrame, images, classes) -> np.ndarray:
    """(I, C) float64: each image's highest box score per class in ``classes`` (0 if none)."""
    images = pd.Index(pd.Series(list(images), dtype=object).astype(str))
    out = np.zeros((len(images), len(classes)))
    if len(boxes):
        i = images.get_indexer(boxes["image_id"].astype(str))
        c = pd.Index(list(classes)).get_indexer(boxes["class_id"].astype("int64"))
        ok = (i >= 0) & (c >= 0)
        np.maximum.at(out, (i[ok], c[ok]), boxes["score"].to_numpy("float64")[ok])
    return out


def auc_f1(y: np.ndarray, s: np.ndarray) -> dict:
    """ROC AUC (sklearn) and the best F1 over thresholds for labels y (N,) bool, scores s (N,).
    AUC is None with a single label value; F1 None without positives. ``threshold``: predict
    positive when score >= threshold."""
    from sklearn.metrics import precision_recall_curve, roc_auc_score
    y = np.asarray(y, bool)
    out = {"n": int(len(y)), "n_pos": int(y.sum()), "auc": None, "f1": None, "threshold": None}
    if 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, s))
    if y.any():
        p, r, t = precision_recall_curve(y, s)
        # F1 = 2pr / (p + r), 0 where p + r = 0 (p * r is 0 there); the last point has no threshold
        f1 = (2 * p * r / np.where(p + r > 0, p + r, 1))[:-1]
        k = int(np.argmax(f1))
        out["f1"], out["threshold"] = float(f1[k]), float(t[k])
    return out


def image_level(truth: pd.DataFrame, pred: pd.DataFrame, images, normal_class: int | None,
                class_names=None) -> dict:
    """Image-level classification from detections.

    Per finding class c (every class in truth or predictions but ``normal_class``): label =
    the image has a truth box of c, score = its highest predicted box score of c (0 if none).
    Abnormal vs normal: label = the image has any truth finding; score = 1 - (highest class
    ``normal_class`` score) when the image has ``normal_class`` prediction rows (the 2-class
    filter writes ``N p_normal 0 0 1 1``, the classifier's view), else the highest finding
    score (0 with no boxes). Returns {"per_class": {name: auc_f1 dict}, "abnormal": auc_f1 dict}."""
    images = pd.Index(pd.unique(pd.Series(list(images), dtype=object).astype(str)))
    names = {}
    for df in (pred, truth):
        names.update(dict(zip(df["class_id"].astype(int), df["class_name"].astype(str))))
    if class_names is not None:
        names.update(dict(class_names.items() if isinstance(class_names, dict) else enumerate(class_names)))
    finding = sorted(c for c in set(names) | set(truth["class_id"].astype(int)) if c != normal_class)
    # image_scores keeps the classes of `finding` only: normal rows drop out by themselves
    y = image_scores(truth, images, finding) > 0  # truth score 1.0 -> label
    s = image_scores(pred, images, finding)
    per = {names[c]: auc_f1(y[:, k], s[:, k]) for k, c in enumerate(finding)}   # every class is named
    abn = s.max(1) if len(finding) else np.zeros(len(images))
    if normal_class is not None:
        pn = pred[pred["class_id"] == normal_class]
        has = images.isin(pn["image_id"].astype(str))
        p_norm = image_scores(pn, images, [normal_class])[:, 0]
        abn = np.where(has, 1.0 - p_norm, abn)
    return {"per_class": per, "abnormal": auc_f1(y.any(1), abn)}
