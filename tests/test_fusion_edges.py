"""data_prep.labels.fusion at its edges: empty tables, IoU thresholds 0 and 1, what reaches ensemble-boxes
(zero-area boxes, unknown readers, one-box images, weights not exact in float32, zero scores)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ref_fusion import _boxes, _images, assert_same, reference

from data_prep.labels.fusion import fuse, write_competition_csv


# ----------------------------------------------------------------------------- edges: empty tables, thresholds 0 and 1
@pytest.mark.parametrize("method", ["wbf", "nms", "soft_nms", "nmw", "none"])
def test_empty_box_table_gives_an_empty_box_table_every_method(method, tmp_path):
    """No boxes in: a box table with the canonical columns + n_raters (int64), nothing dropped,
    and it writes a train.csv whose every image is one "No finding" row."""
    from data_prep.core.boxes import BOX_COLUMNS
    images = _images([("a", 100, 100, "R1|R2"), ("b", 50, 80, "")])
    empty = _boxes([("a", 0, "R1", 10, 10, 50, 50)]).iloc[:0]
    out = fuse(empty, images, method)
    assert list(out.columns) == BOX_COLUMNS + ["n_raters"] and len(out) == 0
    assert out["n_raters"].dtype == "int64" and out["score"].dtype == "float64"
    assert out.attrs["dropped"] == {"below_skip_box_thr": 0, "zero_area": 0}
    with pytest.raises(ValueError, match="iou_thr 1.5"):                      # checks still run on no boxes
        fuse(empty, images, method, iou_thr=1.5)
    csv = pd.read_csv(write_competition_csv(out, images, tmp_path / "f.csv"), keep_default_na=False)
    assert csv["image_id"].tolist() == ["a", "b"] and csv["class_id"].tolist() == [14, 14]
    assert csv["n_raters"].astype(str).tolist() == ["2", ""]


@pytest.mark.parametrize("method", ["wbf", "nms", "soft_nms", "nmw"])
def test_iou_thresholds_zero_and_one_are_accepted_and_match_ensemble_boxes(method):
    """iou_thr 0: any overlap (IoU > 0) fuses, touching boxes (IoU exactly 0) do not; iou_thr 1:
    not even two identical boxes fuse (IoU 1 is not > 1). Both bounds are valid settings and give
    what ensemble-boxes gives; just outside them is refused."""
    images = _images([("a", 100, 100, "R1|R2|R3")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 40, 40), ("a", 0, "R2", 39, 39, 70, 70),   # overlap 1 x 1 px
                    ("a", 0, "R3", 70, 70, 90, 90),                                  # touches R2's corner
                    ("a", 1, "R1", 20, 20, 60, 60, 0.9), ("a", 1, "R2", 20, 20, 60, 60, 0.8)])  # identical
    zero = fuse(boxes, images, method, iou_thr=0.0)
    one = fuse(boxes, images, method, iou_thr=1.0)
    if method != "soft_nms":   # soft-NMS keeps every box (rescored), whatever the threshold
        assert zero.groupby("class_id").size().to_dict() == {0: 2, 1: 1}
        assert one.groupby("class_id").size().to_dict() == {0: 3, 1: 2}
    assert_same(zero, reference(boxes, images, method, iou_thr=0.0))
    assert_same(one, reference(boxes, images, method, iou_thr=1.0))
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError, match=f"iou_thr {bad}; expected a number in \\[0, 1\\]"):
            fuse(boxes, images, method, iou_thr=bad)


def test_n_raters_of_kept_boxes_at_iou_zero_and_one():
    """nms: a kept box counts the raters whose box overlaps it with IoU > iou_thr. At 0 the
    1-px overlap counts (2 raters), the touching box does not; at 1 only the box itself (1)."""
    images = _images([("a", 100, 100, "R1|R2|R3")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 40, 40, 0.9), ("a", 0, "R2", 39, 39, 70, 70, 0.8),
                    ("a", 0, "R3", 70, 70, 90, 90, 0.7)])
    zero = fuse(boxes, images, "nms", iou_thr=0.0)
    assert zero["score"].tolist() == [0.9, 0.7] and zero["n_raters"].tolist() == [2, 1]
    one = fuse(boxes, images, "nms", iou_thr=1.0)
    assert one["score"].tolist() == [0.9, 0.8, 0.7] and one["n_raters"].tolist() == [1, 1, 1]


# ----------------------------------------------------------------------------- edges: what reaches ensemble-boxes
def test_zero_height_and_zero_width_boxes_are_left_out_and_counted():
    """A box flat in y (y_min == y_max) is as empty as one flat in x; a regular box whose x_max
    equals its y_min (normalised) is not."""
    images = _images([("a", 100, 100, "R1|R2")])
    boxes = _boxes([("a", 0, "R1", 10, 30, 60, 30), ("a", 0, "R2", 20, 20, 20, 60),   # flat in y, flat in x
                    ("a", 0, "R1", 10, 50, 50, 80), ("a", 0, "R2", 0, 0, 30, 0)])       # x_max == y_min; flat on y=0
    for method in ("wbf", "nms", "none"):
        out = fuse(boxes, images, method)
        assert out.attrs["dropped"] == {"below_skip_box_thr": 0, "zero_area": 3}, method
        assert out[["x_min", "y_min", "x_max", "y_max"]].round(6).values.tolist() == [[10, 50, 50, 80]], method


def test_unknown_image_and_bad_size_messages_name_the_right_row():
    images = _images([("a", 100, 100, "R1"), ("z", 0, 0, "R1")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50), ("b", 0, "R1", 1, 1, 5, 5)])
    with pytest.raises(ValueError, match="box row 1 image_id 'b' is not in the image table"):
        fuse(boxes, images)
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50), ("z", 0, "R1", 1, 1, 5, 5)])
    with pytest.raises(ValueError, match="image 'z' has height x width 0 x 0"):
        fuse(boxes, images)
    one = _images([("p", 1, 1, "R1|R2")])                       # a 1 x 1 image is a valid size
    out = fuse(_boxes([("p", 0, "R1", 0, 0, 1, 1), ("p", 0, "R2", 0, 0, 1, 1)]), one)
    assert out[["x_min", "y_min", "x_max", "y_max", "n_raters"]].values.tolist() == [[0, 0, 1, 1, 2]]


@pytest.mark.parametrize("listed", [None, "", "R1|R2"])
def test_models_are_the_raters_seen_when_the_image_lists_none(listed):
    """An image whose readers are unknown (NaN) or empty counts as models only the raters with a
    box there (2): two agreeing boxes fuse with score 2/2 = 1; a lone box elsewhere scores 1/2.
    As ensemble-boxes with those two models."""
    images = _images([("a", 100, 100, "R1|R2")]).assign(raters=[listed])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50), ("a", 0, "R2", 12, 12, 52, 52), ("a", 0, "R2", 70, 70, 90, 90)])
    out = fuse(boxes, images)
    assert out["score"].tolist() == [1.0, 0.5] and out["n_raters"].tolist() == [2, 1]
    ref_images = images.assign(raters="R1|R2")
    assert_same(out, reference(boxes, ref_images))


@pytest.mark.parametrize("method", ["nms", "soft_nms", "nmw"])
def test_one_box_image_and_weights_per_image_in_other_methods(method):
    """Images with a single box (and weights) go through ensemble-boxes alone; the weights are
    each image's own raters' weights, in its sorted rater order."""
    images = _images([("a", 100, 100, "R1|R2"), ("b", 80, 60, "R3"), ("c", 50, 50, "R2|R3")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50, 0.9), ("a", 0, "R2", 12, 12, 52, 52, 0.6),
                    ("b", 1, "R3", 5, 5, 20, 30, 0.7),
                    ("c", 2, "R3", 1, 1, 20, 20, 0.5), ("c", 2, "R2", 2, 2, 22, 22, 0.8)])
    w = {"R1": 0.5, "R2": 3, "R3": 2}
    out = fuse(boxes, images, method, iou_thr=0.5, weights=w)
    assert_same(out, reference(boxes, images, method, iou_thr=0.5, weights=w))
    assert out[out.image_id == "b"][["x_min", "y_min", "x_max", "y_max"]].round(3).values.tolist() == [[5, 5, 20, 30]]


def test_n_raters_of_a_kept_box_counts_same_class_boxes_only():
    """nms: R2's box of another class at the same place is not one of the kept box's raters."""
    images = _images([("a", 100, 100, "R1|R2")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50, 0.9), ("a", 1, "R2", 10, 10, 50, 50, 0.8)])
    out = fuse(boxes, images, "nms")
    assert out["class_id"].tolist() == [0, 1] and out["n_raters"].tolist() == [1, 1]


def test_output_is_sorted_by_descending_score_within_a_class():
    images = _images([("a", 100, 100, "R1|R2|R3")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 20, 20, 0.3), ("a", 0, "R2", 40, 40, 60, 60, 0.9),
                    ("a", 0, "R3", 70, 70, 90, 90, 0.6)])
    for method in ("wbf", "nms", "nmw"):
        assert fuse(boxes, images, method)["x_min"].round(3).tolist() == [40, 70, 10], method


@pytest.mark.parametrize("conf_type", ["box_and_model_avg", "absent_model_aware_avg", "avg", "max"])
def test_wbf_with_weights_not_exact_in_float32_equals_ensemble_boxes(conf_type):
    """Weights like 0.1 and 0.7 sum differently in float32 and float64: the library's float32
    weight sum is what divides the score (bit-identical)."""
    rng = np.random.default_rng(7)
    rows = []
    for r in ("R1", "R2", "R3"):
        for _ in range(6):
            x, y = rng.uniform(0, 60, 2)
            rows.append(("a", int(rng.integers(0, 2)), r, x, y, x + rng.uniform(10, 30), y + rng.uniform(10, 30),
                         float(rng.uniform(0.05, 1))))
    images = _images([("a", 100, 100, "R1|R2|R3")])
    boxes = _boxes(rows)
    w = {"R1": 0.1, "R2": 0.7, "R3": 1.3}
    assert_same(fuse(boxes, images, weights=w, conf_type=conf_type, iou_thr=0.3),
                reference(boxes, images, weights=w, conf_type=conf_type, iou_thr=0.3))


def test_all_zero_scores_fuse_to_nan_like_ensemble_boxes_without_warnings():
    """Scores 0 (kept with skip_box_thr 0): the weighted box is 0 / 0 as in ensemble-boxes; no
    RuntimeWarning reaches the user."""
    import warnings
    images = _images([("a", 100, 100, "R1|R2")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50, 0.0), ("a", 0, "R2", 12, 12, 52, 52, 0.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fuse(boxes, images)
    assert len(out) == 1 and out[["x_min", "y_min", "x_max", "y_max"]].isna().all(axis=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference(boxes, images)
    assert len(ref) == 1 and ref[["x_min", "y_min", "x_max", "y_max"]].isna().all(axis=None)
    assert out["score"].iloc[0] == ref["score"].iloc[0] == 0.0


def test_untested_ensemble_boxes_version_is_a_warning_for_wbf_only(monkeypatch, caplog):
    import logging
    from data_prep.labels import wbf
    images = _images([("a", 100, 100, "R1")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50)])
    monkeypatch.setattr(wbf, "TESTED_ENSEMBLE_BOXES", "0.0.1")
    monkeypatch.setattr(wbf, "_version_checked", False)
    with caplog.at_level(logging.WARNING, logger="data_prep.labels.fusion"):
        fuse(boxes, images, "nms")
        assert "tested bit-identical against 0.0.1" not in caplog.text
        fuse(boxes, images, "wbf")
    assert "tested bit-identical against 0.0.1" in caplog.text


def test_soft_nms_scores_do_not_depend_on_iou_thr():
    """soft_nms is ensemble-boxes 1.0.9's Gaussian soft-NMS (sigma 0.5): it drops a box only when
    its decayed score falls to 0.001 and returns the INPUT scores of the boxes it keeps; the IoU
    threshold changes nothing but n_raters (as documented in configs/default.yaml)."""
    images = _images([("a", 100, 100, "R1|R2")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50, 0.9), ("a", 0, "R2", 14, 14, 54, 54, 0.8)])
    lo, hi = fuse(boxes, images, "soft_nms", iou_thr=0.1), fuse(boxes, images, "soft_nms", iou_thr=0.9)
    cols = ["x_min", "y_min", "x_max", "y_max", "score"]
    np.testing.assert_array_equal(lo[cols].to_numpy(), hi[cols].to_numpy())
    assert lo["score"].tolist() == [0.9, 0.8] and lo["n_raters"].tolist() == [2, 2] and hi["n_raters"].tolist() == [1, 1]
