"""The independent reference of the fusion tests: ensemble-boxes called directly, image by image,
and the small table builders (shared by test_fusion.py and test_fusion_edges.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from ensemble_boxes import nms, non_maximum_weighted, soft_nms, weighted_boxes_fusion

from data_prep.core.boxes import as_image_table, denormalize_xyxy, make_boxes, normalize_xyxy

KEY = ["image_id", "class_id", "x_min", "y_min", "x_max", "y_max", "score"]


def _images(ids_hw_raters):
    return as_image_table(pd.DataFrame(
        [{"image_id": i, "height": h, "width": w, "raters": r} for i, h, w, r in ids_hw_raters]))


def _boxes(rows):
    """rows: (image_id, class_id, rater, x1, y1, x2, y2[, score])."""
    rows = [r if len(r) == 8 else (*r, 1.0) for r in rows]
    return make_boxes([r[0] for r in rows], [r[1] for r in rows], [f"c{r[1]}" for r in rows],
                      [r[3:7] for r in rows], [r[7] for r in rows], [r[2] for r in rows])


def reference(boxes, images, method="wbf", iou_thr=0.4, skip_box_thr=0.0, conf_type="avg", weights=None):
    """ensemble-boxes called directly, image by image, sorted raters as models
    (``weights``: rater -> model weight, passed as ensemble-boxes' ``weights=``)."""
    sizes = images.set_index("image_id")
    parts = []
    for image_id, g in boxes.groupby("image_id", sort=False):
        h, w = sizes.at[image_id, "height"], sizes.at[image_id, "width"]
        raters = sorted(set(sizes.at[image_id, "raters"].split("|")) - {""} | set(g["rater"]))
        gs = g[g["score"] >= skip_box_thr] if method != "wbf" else g
        bl = [normalize_xyxy(gs.loc[gs.rater == r, ["x_min", "y_min", "x_max", "y_max"]].to_numpy(), h, w)
              for r in raters]
        sl = [gs.loc[gs.rater == r, "score"].to_numpy() for r in raters]
        ll = [gs.loc[gs.rater == r, "class_id"].to_numpy() for r in raters]
        wl = None if weights is None else [weights.get(r, 1) for r in raters]
        if method == "wbf":
            fb, fs, fl = weighted_boxes_fusion(bl, sl, ll, weights=wl, iou_thr=iou_thr, skip_box_thr=skip_box_thr,
                                               conf_type=conf_type)
        elif method == "nms":
            fb, fs, fl = nms(bl, sl, ll, iou_thr=iou_thr, weights=wl)
        elif method == "soft_nms":
            fb, fs, fl = soft_nms(bl, sl, ll, iou_thr=iou_thr, weights=wl)
        else:
            fb, fs, fl = non_maximum_weighted(bl, sl, ll, weights=wl, iou_thr=iou_thr, skip_box_thr=skip_box_thr)
        xyxy = denormalize_xyxy(np.asarray(fb).reshape(-1, 4), h, w)
        parts.append(pd.DataFrame({"image_id": image_id, "class_id": np.asarray(fl).astype("int64"),
                                   "x_min": xyxy[:, 0], "y_min": xyxy[:, 1], "x_max": xyxy[:, 2],
                                   "y_max": xyxy[:, 3], "score": np.asarray(fs, dtype="float64")}))
    return pd.concat(parts, ignore_index=True)


def assert_same(ours, ref):
    a = ours[KEY].sort_values(KEY, kind="stable").reset_index(drop=True)
    b = ref[KEY].sort_values(KEY, kind="stable").reset_index(drop=True)
    assert len(a) == len(b)
    assert (a["image_id"].to_numpy() == b["image_id"].to_numpy()).all()
    for c in KEY[1:]:
        np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy(), err_msg=c)
