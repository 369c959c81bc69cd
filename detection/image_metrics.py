"""Image-level numbers from box tables: per-image errors for the worst-images galleries
(:func:`image_costs`) and image-level classification from detections (per finding class and
abnormal vs normal: ROC AUC and best F1, :func:`image_level`, :func:`auc_f1`).

The box metrics (matching, VOC/COCO AP, RSNA) are :mod:`detection.metrics`; :func:`image_costs`
matches with its vinbigdata rule."""
from __future__ import annotations

import numpy as np
import pandas as pd

from detection.metrics import DEFAULT_NORMAL, encode, match_vinbigdata


def image_costs(truth: pd.DataFrame, pred: pd.DataFrame, images, iou_thr: float = 0.4, conf_thr: float = 0.25,
                normal_class: int | None = DEFAULT_NORMAL) -> pd.DataFrame:
    """Per-image errors for a worst-images gallery, on findings only (``normal_class`` rows of
    both tables are left out). Predictions scored below ``conf_thr`` are dropped, the rest are
    matched by the vinbigdata rule at ``iou_thr``. cost = n_fn + sum of the FPs' scores, so a
    missed truth costs 1 and a confident false positive almost 1.

    Returns a DataFrame image_id, n_tp, n_fp, n_fn (int64), cost (float64), one row per evaluated
    image, sorted by cost descending (ties in ``images`` order)."""
    if normal_class is not None:
        truth = truth[truth["class_id"] != normal_class]
        pred = pred[pred["class_id"] != normal_class]
    pred = pred[pred["score"] >= conf_thr]
    enc = encode(truth, pred, images)
    pt, _ = match_vinbigdata(enc, iou_thr)
    n = len(enc.images)
    tp = np.bincount(enc.p_img[pt >= 0], minlength=n)
    fp = np.bincount(enc.p_img[pt < 0], minlength=n)
    fn = np.bincount(enc.t_img, minlength=n) - tp
    cost = fn + np.bincount(enc.p_img[pt < 0], weights=enc.p_score[pt < 0], minlength=n)
    df = pd.DataFrame({"image_id": enc.images, "n_tp": tp.astype("int64"), "n_fp": fp.astype("int64"),
                       "n_fn": fn.astype("int64"), "cost": cost.astype("float64")})
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


def image_level(truth: pd.DataFrame, pred: pd.DataFrame, images, normal_class: int | None = DEFAULT_NORMAL,
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
