"""detection.evaluation.metrics: hand-computed cases per metric, cross-checks against pycocotools and a
plain-Python reference of the vinbigdata / rsna rules on seeded random cases (the references:
ref_metrics.py; edges: test_metrics_edges.py; image-level numbers: test_image_metrics.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ref_metrics import _pycocotools, _ref_rsna, _ref_rsna_by_class, _ref_vinbigdata, _ref_voc_ap, boxes, random_case

from data_prep.core.boxes import empty_boxes
from data_prep.datasets import describe
from detection.evaluation import metrics as M

NF_ID = describe("vinbigdata").normal_id


# ----------------------------------------------------------------------------- vinbigdata by hand
TRUTH = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 20, 20, 30, 30), ("B", 0, 0, 0, 10, 10), ("A", 1, 0, 0, 10, 10)])
PRED_ROWS = [
    ("A", 0, 0, 0, 10, 10, 0.9),    # TP (IoU 1)
    ("A", 0, 0, 0, 10, 10, 0.8),    # duplicate: best unmatched truth has IoU 0 -> FP
    ("B", 0, 0, 0, 10, 5, 0.8),     # tie with the row above (later row): IoU 0.5 -> TP
    ("X", 0, 0, 0, 10, 10, 0.95),   # image not evaluated: ignored
    ("A", 0, 20, 20, 30, 23, 0.7),  # IoU 0.3 -> FP
    ("A", 2, 0, 0, 5, 5, 0.6),      # class without truth: ignored (None)
    ("C", 14, 0, 0, 1, 1, 0.6),     # normal image C: TP
    ("A", 14, 0, 0, 1, 1, 0.5),     # A has findings: FP
]
IMAGES = ["A", "B", "C", "D"]  # C, D normal; D has no prediction


def test_vinbigdata_hand_computed():
    r = M.vinbigdata_map(TRUTH, boxes(PRED_ROWS), IMAGES, normal_class=NF_ID)
    # class 0: TP FP TP FP, npos 3 -> 1/3 * 1 + 1/3 * 2/3 = 5/9; class 1: no prediction -> 0;
    # class 14: truth on C and D, TP FP -> 1/2; class 2: no truth -> None
    assert r["per_class"]["c0"] == pytest.approx(5 / 9, abs=1e-12)
    assert r["per_class"]["c1"] == 0.0
    assert r["per_class"]["c2"] is None
    assert r["per_class"]["c14"] == pytest.approx(0.5, abs=1e-12)
    assert r["mAP"] == pytest.approx(19 / 54, abs=1e-12)
    assert r["n_images"] == 4
    row = {t["class_id"]: t for t in r["table"]}
    assert (row[0]["n_truth"], row[0]["n_pred"], row[14]["n_truth"]) == (3, 4, 2)
    np.testing.assert_allclose(r["pr"]["c0"]["precision"], [1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(r["pr"]["c0"]["recall"], [1 / 3, 1 / 3, 2 / 3, 2 / 3])


def test_vinbigdata_tie_keeps_input_order():
    rows = list(PRED_ROWS)
    rows[1], rows[2] = rows[2], rows[1]  # now the TP comes first among the 0.8 tie: TP TP FP FP
    r = M.vinbigdata_map(TRUTH, boxes(rows), IMAGES, normal_class=NF_ID)
    assert r["per_class"]["c0"] == pytest.approx(2 / 3, abs=1e-12)


def test_vinbigdata_best_unmatched_rule():
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 0, 0, 10, 7)])
    # the second prediction's best truth (IoU 1) is taken; the free one has IoU 0.7 -> TP
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("A", 0, 0, 0, 10, 10, 0.8)])
    assert M.vinbigdata_map(t, p, ["A"], normal_class=None)["mAP"] == 1.0
    # the free truth has IoU 0.3 < 0.4 -> FP even though a taken truth has IoU 1
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 0, 0, 10, 3)])
    r = M.vinbigdata_map(t, p, ["A"], normal_class=None)
    assert r["mAP"] == pytest.approx(0.5)


def test_truth_ties_first_for_vinbigdata_last_for_coco():
    # P1 has the same IoU (0.818) with T1 and T2; P2 only overlaps T1 enough (0.538 vs 0.333)
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 2, 0, 12, 10)])
    p = boxes([("A", 0, 1, 0, 11, 10, 0.9), ("A", 0, -3, 0, 7, 10, 0.8)])
    enc = M.encode(t, p, ["A"])
    pt, iou = M.match_vinbigdata(enc)
    assert pt.tolist() == [0, -1]  # P1 takes the first truth, P2 is left with T2 (IoU 1/3)
    assert iou[0] == pytest.approx(90 / 110)
    assert M.vinbigdata_map(t, p, ["A"], normal_class=None)["mAP"] == pytest.approx(0.5)
    # pycocotools: P1 takes the LAST truth, so P2 matches T1 -> AP 1
    assert M.coco_map(t, p, ["A"])["mAP"] == pytest.approx(1.0, abs=1e-12)
    assert _pycocotools(t, p, ["A"], [0])[0] == pytest.approx(1.0, abs=1e-12)


def test_empty_predictions_and_no_truth():
    r = M.vinbigdata_map(TRUTH, empty_boxes(), IMAGES, normal_class=NF_ID)
    assert r["per_class"] == {"c0": 0.0, "c1": 0.0, "No finding": 0.0}
    assert r["mAP"] == 0.0
    r = M.vinbigdata_map(empty_boxes(), boxes([("A", 0, 0, 0, 1, 1, 0.5)]), ["A"], normal_class=None)
    assert np.isnan(r["mAP"]) and r["per_class"] == {"c0": None}


def test_normal_truth_rows_are_replaced():
    t = pd.concat([TRUTH, boxes([("C", 14, 0, 0, 0, 0)])], ignore_index=True)  # a class-14 truth row
    r = M.vinbigdata_map(t, boxes(PRED_ROWS), IMAGES, normal_class=NF_ID)
    assert r["mAP"] == pytest.approx(19 / 54, abs=1e-12)


def test_bad_prediction_rows_raise():
    p = boxes([("A", 0, 5, 0, 1, 10, 0.9)])
    with pytest.raises(ValueError, match="x_max"):
        M.vinbigdata_map(TRUTH, p, IMAGES, normal_class=NF_ID)
    p = boxes([("A", 0, 0, 0, 1, 10, np.nan)])
    with pytest.raises(ValueError, match="score"):
        M.vinbigdata_map(TRUTH, p, IMAGES, normal_class=NF_ID)


# ----------------------------------------------------------------------------- coco
def test_coco_hand_computed_101_point():
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 20, 20, 30, 30), ("B", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("B", 0, 50, 50, 60, 60, 0.8), ("B", 0, 0, 0, 10, 10, 0.7)])
    # TP FP TP, npos 3: precision 1 for recall <= 0.33 (34 points), 2/3 up to 0.66 (33 points), then 0
    r = M.coco_map(t, p, ["A", "B"])
    assert r["mAP"] == pytest.approx(56 / 101, abs=1e-12)
    assert r["pr"]["c0"]["q"].shape == (101,)


@pytest.mark.parametrize("seed", range(6))
def test_coco_equals_pycocotools(seed):
    rng = np.random.default_rng(seed)
    for i in range(6):
        few_images = i == 5  # > 100 detections per image and class: pycocotools' maxDets cut
        t, p, imgs = random_case(rng, n_img=4 if few_images else 12, n_p=900 if few_images else int(rng.integers(0, 300)),
                                 grid=i % 2 == 0)
        ref, ref_per = _pycocotools(t, p, imgs, list(range(4)))
        r = M.coco_map(t, p, imgs, class_names=[f"c{k}" for k in range(4)])
        # bit-equal: the same float operations in the same order (mean over every (recall, class)
        # entry, not the mean of the per-class means; precision tp / (tp + fp + eps))
        assert r["mAP"] == ref, (seed, i, r["mAP"], ref)
        ours = [r["per_class"][f"c{k}"] for k in range(4)]
        assert [v is None for v in ours] == [v is None for v in ref_per]
        assert [v or 0 for v in ours] == [v or 0 for v in ref_per]


# ----------------------------------------------------------------------------- plain-Python references


@pytest.mark.parametrize("seed", range(4))
def test_vinbigdata_equals_reference(seed):
    rng = np.random.default_rng(100 + seed)
    for i in range(5):
        t, p, imgs = random_case(rng, n_p=int(rng.integers(1, 250)), grid=i % 2 == 0)
        r = M.vinbigdata_map(t, p, imgs, normal_class=None)
        assert r["mAP"] == pytest.approx(_ref_vinbigdata(t, p, imgs), abs=1e-12)


def test_voc_ap_envelope():
    # hand-computed: recall steps 0 -> 0.5 at precision max(1, .5, 2/3) = 1, 0.5 -> 1 at 2/3
    assert _ref_voc_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert M.voc_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert M.voc_ap(np.zeros(0), np.zeros(0)) == 0.0


# ----------------------------------------------------------------------------- rsna
def test_rsna_hand_computed():
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 20, 20, 30, 30), ("D", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("A", 0, 20, 20, 30, 26, 0.8), ("A", 0, 50, 50, 60, 60, 0.3),
               ("C", 0, 0, 0, 5, 5, 0.5)])
    r = M.rsna_score(t, p, ["A", "B", "C", "D"])
    # A: thresholds 0.40-0.55 -> 2/(2+1+0); IoU 0.6 is not > 0.60 -> 1/(1+2+1) for 0.60-0.75 -> 11/24
    # B: nothing -> skipped; C: prediction without truth -> 0; D: missed truth -> 0
    assert r["mAP"] == pytest.approx(11 / 72, abs=1e-12)
    s = r["per_image"].set_index("image_id")["score"]
    assert s["A"] == pytest.approx(11 / 24) and np.isnan(s["B"]) and s["C"] == 0 and s["D"] == 0
    assert r["n_scored"] == 3
    assert r["per_class"]["c0"] == pytest.approx(11 / 72)
    assert r["per_threshold"]["0.40"] == pytest.approx(2 / 9) and r["per_threshold"]["0.75"] == pytest.approx(1 / 12)


def test_rsna_equals_reference():
    rng = np.random.default_rng(7)
    for i in range(6):
        t, p, imgs = random_case(rng, n_cls=2, n_p=int(rng.integers(1, 80)), grid=i % 2 == 0)
        t, p = t.assign(class_id=0), p.assign(class_id=0)
        assert M.rsna_score(t, p, imgs)["mAP"] == pytest.approx(_ref_rsna(t, p, imgs), abs=1e-12)


def test_normal_class_truth_named_by_its_dataset_or_normal():
    # the normal class' truth boxes (one per image without findings) carry the registered dataset's
    # name for that class ("No finding" for VinBigData's 14), else "normal"
    t = boxes([("A", 0, 0, 0, 10, 10)])
    for cls, name in ((14, "No finding"), (99, "normal")):
        enc = M.encode(t, boxes([]), ["A", "B"], normal_class=cls)
        assert enc.names == {0: "c0", cls: name}
        assert enc.t_cls.tolist() == [0, cls] and enc.t_img.tolist() == [0, 1]
        np.testing.assert_array_equal(enc.t_box[1], [0, 0, 1, 1])


def test_rsna_with_several_classes_and_own_thresholds_equals_reference():
    rng = np.random.default_rng(11)
    t, p, imgs = random_case(rng, n_cls=4, n_p=90)
    p = p[p["image_id"].isin(imgs)].reset_index(drop=True)
    names = {0: "zero", 1: "one", 2: "two", 3: "three"}
    for thresholds in (M.RSNA_THRESHOLDS, (0.3, 0.5)):
        r = M.rsna_score(t, p, imgs, thresholds=thresholds, class_names=names)
        mean, per_t = _ref_rsna_by_class(t, p, imgs, thresholds)
        assert r["metric"] == "rsna" and r["thresholds"] == [float(x) for x in thresholds]
        assert r["mAP"] == pytest.approx(mean, abs=1e-12)
        assert r["per_threshold"] == {f"{x:.2f}": pytest.approx(v, abs=1e-12) for x, v in per_t.items()}
        for c, name in names.items():
            tc = t[t["class_id"] == c]
            want = _ref_rsna_by_class(tc, p[p["class_id"] == c], imgs, thresholds)[0] if len(tc) else None
            assert r["per_class"][name] == (pytest.approx(want, abs=1e-12) if want is not None else None)
    enc = M.encode(t, p, imgs)
    np.testing.assert_array_equal(M.match_rsna(enc), M.match_rsna(enc, tm=np.ones(len(enc.t_cls), bool),
                                                                 pm=np.ones(len(enc.p_cls), bool)))


def test_rsna_with_nothing_to_score():
    r = M.rsna_score(boxes([]), boxes([]), ["A", "B"])
    assert np.isnan(r["mAP"]) and r["n_scored"] == 0
    assert len(r["per_threshold"]) == 8 and all(np.isnan(v) for v in r["per_threshold"].values())


def test_coco_cut_at_100_per_image_and_class_thresholds_0_and_1_and_keys():
    """Against pycocotools: 101 predictions of one class on one image (the 101st, lowest scored, is
    the only one on the second truth: cut), IoU thresholds 1.0 (exact copies match) and 0.0, a class
    without truth sorted before one with truth; plus the result's keys and the tuner's entry point."""
    t = boxes([("A", 1, 0, 0, 10, 10), ("A", 1, 50, 50, 60, 60), ("B", 1, 0, 0, 10, 10)])
    rows = [("A", 1, 20 + k * 0.1, 20, 30, 30, 0.9 - k * 0.001) for k in range(98)] + [("A", 1, 50, 50, 60, 60, 0.1)]
    rows += [("A", 1, 0, 0, 10, 10, 0.95), ("B", 1, 0, 0, 10, 10, 0.5), ("B", 0, 0, 0, 4, 4, 0.99),
             ("B", 1, 10, 0, 20, 10, 0.97), ("A", 1, 0, 10, 10, 20, 0.96)]   # touching, not overlapping
    p = boxes(rows)
    imgs = ["A", "B"]
    for thr in (0.4, 1.0, 0.0):
        ref, ref_per = _pycocotools(t, p, imgs, [0, 1], iou_thr=thr)
        r = M.coco_map(t, p, imgs, iou_thr=thr) if thr != 0.4 else M.coco_map(t, p, imgs)
        assert r["mAP"] == pytest.approx(ref, abs=1e-12), thr
        assert r["per_class"]["c0"] is None and r["per_class"]["c1"] == pytest.approx(ref_per[1], abs=1e-12)
    r = M.coco_map(t, p, imgs)
    assert (r["metric"], r["iou_thr"], r["max_dets"]) == ("coco", 0.4, 100)
    assert sorted(r["pr"]["c1"]) == ["precision", "q", "recall", "score"] and len(r["pr"]["c1"]["q"]) == 101
    enc = M.encode(t, p, imgs)
    assert M.score_encoded(enc, "coco") == r["mAP"]
    assert M.score_encoded(enc, "vinbigdata") == M.vinbigdata_from(enc)["mAP"]
    assert M.score_encoded(enc, "rsna") == M.rsna_from(enc)["mAP"]
    assert M.score_encoded(enc, "vinbigdata", 0.0) == M.vinbigdata_from(enc, 0.0)["mAP"] != M.score_encoded(enc, "vinbigdata")
    with pytest.raises(ValueError, match="metric 'x'"):
        M.score_encoded(enc, "x")


# ----------------------------------------------------------------------------- the summary table's rows
@pytest.mark.parametrize("metric", ["vinbigdata", "coco", "rsna"])
def test_summary_table_lists_every_named_class_with_counts(metric):
    """class_names naming a class with neither truth nor prediction (3), one with predictions
    only (1) and one with truth only (2): every named class has a table row with its own counts;
    AP is None without truth, 0 with truth and no prediction; the headline averages classes
    with truth only (class 0 AP 1 by hand, class 2 AP 0 -> 0.5)."""
    t = boxes([("A", 0, 0, 0, 10, 10), ("B", 0, 0, 0, 10, 10), ("B", 2, 5, 5, 9, 9)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("B", 0, 0, 0, 10, 10, 0.8), ("A", 1, 0, 0, 4, 4, 0.7),
               ("A", 1, 1, 1, 4, 4, 0.6), ("B", 1, 1, 1, 4, 4, 0.5)])
    names = {0: "zero", 1: "one", 2: "two", 3: "three"}
    if metric == "rsna":
        r = M.rsna_score(t, p, ["A", "B", "C"], class_names=names)
    else:
        fn = M.vinbigdata_map if metric == "vinbigdata" else M.coco_map
        r = fn(t, p, ["A", "B", "C"], normal_class=None, class_names=names)
    rows = [(x["class_id"], x["class_name"], x["n_truth"], x["n_pred"]) for x in r["table"]]
    assert rows == [(0, "zero", 2, 2), (1, "one", 0, 3), (2, "two", 1, 0), (3, "three", 0, 0)]
    ap = {x["class_id"]: x["ap"] for x in r["table"]}
    assert ap[1] is None and ap[3] is None and ap[2] == 0.0
    assert r["per_class"]["three"] is None and r["n_images"] == 3
    if metric == "rsna":
        # class 0 alone: A and B score 1, C skipped -> 1; all classes: A 1/(1+2+0) (the two class-1
        # predictions are FPs) ... per image: A TP 1 FP 2 -> 1/3, B TP 1 FP 1 FN 1 -> 1/3, C skipped
        assert ap[0] == 1.0 and r["mAP"] == pytest.approx(1 / 3, abs=1e-12)
    else:
        assert ap[0] == pytest.approx(1.0, abs=1e-12) and r["mAP"] == pytest.approx(0.5, abs=1e-12)
        assert set(r["pr"]) == {"zero", "two"}     # PR curves only for classes with truth
