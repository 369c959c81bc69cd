"""The one function that scores a prediction box table against truth: ``evaluate(truth, pred, ids, metric)``.

The metric is chosen by name from :data:`METRICS` (vinbigdata: mAP@iou_thr, VOC all-point;
coco: pycocotools' 101-point at iou_thr; rsna: the mean over images of TP/(TP+FP+FN) over IoU
0.40:0.75), each computed by :mod:`detection.evaluation.metrics`; the dataset's description supplies the
defaults (metric, normal class, class names). It reads no file and prints nothing: ``cxrdet
evaluate`` (detection/evaluation/evaluate.py), per-radiologist scoring (detection/evaluation/raters.py), tune, cv and the
reports call it. Imports only detection.evaluation.metrics, detection.evaluation.image_metrics and data_prep.
"""
from __future__ import annotations

import pandas as pd

from data_prep.datasets import DEFAULT_DATASET, Dataset, describe
from detection.evaluation import image_metrics as IM
from detection.evaluation import metrics as M

METRICS = M.METRICS   # name -> Metric (scorer, headline, summary, thresholds, matching rule)
_FROM_DATASET = object()  # normal_class not given: the dataset's own


def evaluate(truth_boxes: pd.DataFrame, pred_boxes: pd.DataFrame, images, metric: str | None = None,
             iou_thr: float = 0.4, normal_class=_FROM_DATASET, class_names=None,
             image_level: bool = False, dataset: Dataset | str | None = None) -> dict:
    """Score predictions against truth on ``images`` (ids, or an image table with ``image_id``).

    ``dataset`` (a description or a name; default ``DEFAULT_DATASET``) gives the defaults:
    ``metric`` (its default metric), ``normal_class`` (its normal class id: the class whose truth
    is ``0 0 1 1`` on images without findings, or None; the rsna metric never uses it and drops
    rows of that class) and ``class_names`` (its names, when ``dataset`` is given).
    ``metric``: vinbigdata (mAP@iou_thr, VOC all-point) | coco (pycocotools 101-point at iou_thr)
    | rsna (mean over images of TP/(TP+FP+FN) over IoU 0.40:0.75).
    Returns the metric's dict (see :mod:`detection.evaluation.metrics`: metric, mAP, per_class, n_images,
    table, pr, ...) plus ``image_level`` when asked."""
    ds = describe(dataset if dataset is not None else DEFAULT_DATASET)
    metric = metric or (ds.metric if dataset is not None else next(iter(METRICS)))
    if normal_class is _FROM_DATASET:
        normal_class = ds.normal_id
    if class_names is None and dataset is not None:
        class_names = ds.names
    rule = M.metric_named(metric)
    ids = images["image_id"] if isinstance(images, pd.DataFrame) else images
    ids = pd.unique(pd.Series(list(ids), dtype=object).astype(str))
    if rule.scores_normal:
        res = rule.scorer(M.encode(truth_boxes, pred_boxes, ids, normal_class, class_names), iou_thr)
    else:   # rsna: the normal class is never scored
        if normal_class is not None and len(pred_boxes):
            pred_boxes = pred_boxes[pred_boxes["class_id"] != normal_class]
            truth_boxes = truth_boxes[truth_boxes["class_id"] != normal_class]
        names = None if class_names is None else {k: v for k, v in (class_names.items() if isinstance(
            class_names, dict) else enumerate(class_names)) if k != normal_class}
        res = rule.scorer(M.encode(truth_boxes, pred_boxes, ids, None, names), iou_thr)
    if image_level:
        res["image_level"] = IM.image_level(truth_boxes, pred_boxes, ids, normal_class, class_names)
    return res
