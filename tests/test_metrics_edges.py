"""detection.evaluation.metrics at its edges (found unguarded by a mutation run): messages, ids, class names,
strict and inclusive thresholds at exact ties, max_dets exactly at the limit, dtypes, nothing to score;
against pycocotools and the plain-Python references of ref_metrics.py."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ref_metrics import _pycocotools, _ref_rsna, _ref_vinbigdata, boxes, random_case

from detection.evaluation import image_metrics as IM
from detection.evaluation import metrics as M

def test_bad_rows_name_the_table_they_are_in():
    bad = boxes([("A", 0, 5, 0, 1, 10, 0.9)])
    with pytest.raises(ValueError, match="^truth row 0: x_max"):
        M.vinbigdata_map(bad, boxes([("A", 0, 0, 0, 1, 1, 0.5)]), ["A"], normal_class=None)
    with pytest.raises(ValueError, match="^predictions row 0: x_max"):
        M.coco_map(boxes([("A", 0, 0, 0, 1, 1)]), bad, ["A"])


def test_boxes_outside_the_evaluated_images_are_counted_in_the_log(caplog):
    t = boxes([("A", 0, 0, 0, 10, 10), ("Z", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("Y", 0, 0, 0, 10, 10, 0.8), ("Y", 0, 1, 1, 9, 9, 0.7),
               ("X", 0, 0, 0, 5, 5, 0.6)])
    with caplog.at_level("INFO", logger="detection.evaluation.metrics"):
        assert M.vinbigdata_map(t, p, ["A"], normal_class=None)["mAP"] == 1.0
    msgs = [r.getMessage() for r in caplog.records if "outside the evaluated set" in r.getMessage()]
    assert msgs == ["truth: 1 box(es) on 1 image(s) outside the evaluated set ignored",
                    "predictions: 3 box(es) on 2 image(s) outside the evaluated set ignored"]
    caplog.clear()
    with caplog.at_level("INFO", logger="detection.evaluation.metrics"):   # everything evaluated: nothing said
        M.vinbigdata_map(t, p, ["A", "X", "Y", "Z"], normal_class=None)
    assert not [r for r in caplog.records if "outside the evaluated set" in r.getMessage()]


def test_image_ids_are_matched_by_their_str_spelling():
    # ids handed over as Python numbers of mixed types are each spelled by str(): 7 -> "7", 7.5 -> "7.5"
    t = boxes([("7", 0, 0, 0, 10, 10), ("7.5", 0, 0, 0, 10, 10)])
    p = boxes([("7", 0, 0, 0, 10, 10, 0.9), ("7.5", 0, 0, 0, 10, 10, 0.8)])
    enc = M.encode(t, p, [7, 7.5])
    assert enc.images.tolist() == ["7", "7.5"] and enc.t_img.tolist() == [0, 1] and enc.p_img.tolist() == [0, 1]
    np.testing.assert_array_equal(IM.image_scores(p, [7, 7.5], [0]), [[0.9], [0.8]])
    r = IM.image_level(t, boxes([("7", 0, 0, 0, 10, 10, 0.9)]), [7, 7.5, 8], normal_class=None)
    assert r["per_class"]["c0"]["n_pos"] == 2 and r["per_class"]["c0"]["auc"] == 0.75


def test_class_name_comes_from_the_first_row_of_each_class_truth_first():
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("A", 1, 0, 0, 10, 10, 0.8)]).assign(class_name=["p0", "p1"])
    p = pd.concat([p, p.assign(class_name=["late0", "late1"])], ignore_index=True)
    t = boxes([("A", 1, 0, 0, 10, 10)]).assign(class_name="t1")
    assert M.encode(t, p, ["A"]).names == {0: "p0", 1: "t1"}
    assert M.encode(t, p, ["A"], class_names={0: "named"}).names == {0: "named", 1: "t1"}


def test_one_truth_and_one_prediction():
    t, p = boxes([("A", 0, 0, 0, 10, 10)]), boxes([("A", 0, 0, 0, 10, 8, 0.5)])   # IoU 0.8
    assert M.vinbigdata_map(t, p, ["A"], normal_class=None)["mAP"] == 1.0
    assert M.coco_map(t, p, ["A"])["mAP"] == _pycocotools(t, p, ["A"], [0])[0] == pytest.approx(1.0, abs=1e-12)
    r = M.rsna_score(t, p, ["A"])   # TP at 0.40 ... 0.75 (0.8 > t)
    assert r["mAP"] == 1.0 and r["per_threshold"]["0.75"] == 1.0
    assert M.rsna_score(t, p, ["A"], thresholds=(0.8,))["mAP"] == 0.0   # 0.8 is not > 0.8


def test_iou_coco_equals_pycocotools_on_degenerate_boxes():
    from pycocotools import mask as mask_utils
    # xywh: zero width / zero height / both, apart in x only, apart in y only, touching, nested
    b = [[5, 5, 0, 10], [5, 5, 10, 0], [5, 5, 0, 0], [5, 5, 10, 10], [20, 5, 10, 10], [5, 30, 10, 10],
         [15, 5, 10, 10], [7, 7, 2, 2], [0, 0, 30, 30], [5.5, 5, 10, 10]]
    ref = mask_utils.iou(b, b, [0] * len(b))
    ours = M.iou_coco(np.array(b, float)[:, None, :], np.array(b, float)[None, :, :])
    np.testing.assert_array_equal(ours, ref)
    assert ours[0, 0] == 0.0 and ours[2, 2] == 0.0 and ours[3, 5] == 0.0 and ours[3, 4] == 0.0
    # coco at IoU threshold 0 matches boxes that do not overlap at all (IoU 0 >= 0), as pycocotools does
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 100, 0, 110, 10)])
    p = boxes([("A", 0, 0, 30, 10, 40, 0.9), ("A", 0, 130, 0, 140, 10, 0.8), ("A", 0, 0, 0, 10, 10, 0.7)])
    ref, _ = _pycocotools(t, p, ["A"], [0], iou_thr=0.0)
    assert M.coco_map(t, p, ["A"], iou_thr=0.0)["mAP"] == ref == pytest.approx(1.0, abs=1e-12)


def test_rsna_is_strict_at_the_free_truth_iou_exactly_at_a_threshold():
    # P1 takes T1 (IoU 1); P2's best truth T1 is taken and the free T2 has IoU exactly 0.5:
    # a TP at 0.40 and 0.45, not at 0.50 (strict >). Image: 2 thresholds at 2/(2+2-2) = 1,
    # 6 at 1/(2+2-1) -> (2 + 6/3) / 8 = 1/2
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 0, 0, 10, 5)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("A", 0, 0, 0, 10, 10, 0.8)])
    r = M.rsna_score(t, p, ["A"])
    assert r["mAP"] == pytest.approx(0.5, abs=1e-12)
    assert r["per_threshold"]["0.45"] == 1.0 and r["per_threshold"]["0.50"] == pytest.approx(1 / 3)
    assert r["mAP"] == pytest.approx(_ref_rsna(t, p, ["A"]), abs=1e-12)
    assert M.match_rsna(M.encode(t, p, ["A"]))[1].tolist() == [True, True] + [False] * 6
    # vinbigdata at iou_thr 0.5 is >=: the same P2 is a TP
    assert M.vinbigdata_map(t, p, ["A"], iou_thr=0.5, normal_class=None)["mAP"] == 1.0
    assert M.vinbigdata_map(t, p, ["A"], iou_thr=0.51, normal_class=None)["mAP"] == 0.5


def test_rsna_takes_predictions_by_descending_score():
    # X, Y truths; P_high overlaps X (0.905) and Y (0.739), P_low overlaps X only (0.538).
    # High first: P_high takes X, P_low is left with Y (0.333) -> 1 TP at every threshold: 1/3
    # (low first would give 2 TPs at 0.40-0.50)
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 2, 0, 12, 10)])
    p = boxes([("A", 0, -3, 0, 7, 10, 0.5), ("A", 0, 0.5, 0, 10.5, 10, 0.9)])
    r = M.rsna_score(t, p, ["A"])
    assert r["mAP"] == pytest.approx(1 / 3, abs=1e-12) == pytest.approx(_ref_rsna(t, p, ["A"]), abs=1e-12)
    assert M.match_rsna(M.encode(t, p, ["A"])).sum(1).tolist() == [0, 8]


def test_rsna_never_matches_across_images_or_classes():
    t = boxes([("A", 0, 0, 0, 10, 10), ("B", 1, 0, 0, 10, 10), ("C", 1, 0, 0, 10, 10)])
    p = boxes([("B", 0, 0, 0, 10, 10, 0.9), ("A", 1, 0, 0, 10, 10, 0.8), ("C", 1, 0, 0, 10, 10, 0.7),
               ("D", 0, 0, 0, 10, 10, 0.6)])
    r = M.rsna_score(t, p, ["A", "B", "C", "D", "E"])
    s = r["per_image"]
    assert s["image_id"].tolist() == ["A", "B", "C", "D", "E"] and s["score"].dtype == "float64"
    # A, B: a truth and a prediction of the other class -> 0; C: 1; D: prediction without truth -> 0; E skipped
    np.testing.assert_array_equal(s["score"].to_numpy(), [0, 0, 1, 0, np.nan])
    assert r["n_scored"] == 4 and r["mAP"] == 0.25
    assert list(r["per_threshold"]) == ["0.40", "0.45", "0.50", "0.55", "0.60", "0.65", "0.70", "0.75"]
    assert set(r["per_threshold"].values()) == {0.25}
    # per class: c0 A 0, B 0, D 0 -> 0; c1 A 0 (prediction only), B 0 (truth only), C 1 -> 1/3
    assert r["per_class"] == {"c0": 0.0, "c1": pytest.approx(1 / 3, abs=1e-12)}


def test_vinbigdata_result_keys_pr_scores_and_own_iou_thr():
    t = boxes([("A", 0, 0, 0, 10, 10), ("B", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 4.5, 0.6), ("B", 0, 0, 0, 10, 10, 0.8), ("B", 0, 50, 50, 60, 60, 0.7)])
    r = M.vinbigdata_map(t, p, ["A", "B"], normal_class=None)   # TP FP TP: 1/2 + 1/2 * 2/3
    assert (r["metric"], r["iou_thr"], r["mAP"]) == ("vinbigdata", 0.4, pytest.approx(5 / 6, abs=1e-12))
    assert set(r) == {"metric", "iou_thr", "mAP", "per_class", "n_images", "table", "pr"}
    assert sorted(r["pr"]["c0"]) == ["precision", "recall", "score"]
    np.testing.assert_array_equal(r["pr"]["c0"]["score"], [0.8, 0.7, 0.6])
    r = M.vinbigdata_map(t, p, ["A", "B"], iou_thr=0.5, normal_class=None)   # IoU 0.45 is an FP at 0.5
    assert (r["iou_thr"], r["mAP"]) == (0.5, 0.5)


@pytest.mark.parametrize("thr", [0.0, 0.5])
def test_vinbigdata_equals_reference_at_other_thresholds(thr):
    """IoU threshold 0: a prediction takes any free truth of its image and class, even one it does
    not overlap (IoU 0 >= 0); images with 3 and 4 truths of a class share the matcher's padded
    blocks, where padding must never be taken."""
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 20, 0, 30, 10), ("A", 0, 40, 0, 50, 10)]
              + [("B", 0, 20 * k, 0, 20 * k + 10, 10) for k in range(4)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("A", 0, 20, 0, 30, 10, 0.8), ("A", 0, 40, 0, 50, 10, 0.7),
               ("A", 0, 200, 200, 210, 210, 0.95), ("A", 0, 300, 300, 310, 310, 0.6), ("B", 0, 0, 0, 10, 9, 0.5)])
    r = M.vinbigdata_map(t, p, ["A", "B"], iou_thr=thr, normal_class=None)
    assert r["mAP"] == pytest.approx(_ref_vinbigdata(t, p, ["A", "B"], thr), abs=1e-12)
    if thr == 0.0:   # by hand: 0.95 TP (takes a truth at IoU 0), 0.9 TP, 0.8 TP, 0.7 FP (A's 3 truths
        # taken), 0.6 FP, 0.5 TP; npos 7
        assert r["mAP"] == pytest.approx(3 / 7 + 1 / 7 * 4 / 6, abs=1e-12)
    rng = np.random.default_rng(200)
    for i in range(3):
        t, p, imgs = random_case(rng, n_p=int(rng.integers(1, 200)), grid=i % 2 == 0)
        r = M.vinbigdata_map(t, p, imgs, iou_thr=thr, normal_class=None)
        assert r["mAP"] == pytest.approx(_ref_vinbigdata(t, p, imgs, thr), abs=1e-12)


def test_vinbigdata_with_class_ids_beyond_int16():
    t = boxes([("A", 1, 0, 0, 10, 10), ("A", 40000, 0, 0, 10, 10), ("B", 40000, 0, 0, 10, 10)])
    p = boxes([("A", 40000, 0, 0, 10, 10, 0.9), ("A", 1, 50, 50, 60, 60, 0.8), ("B", 40000, 50, 50, 60, 60, 0.7),
               ("A", 1, 0, 0, 10, 10, 0.6)])
    r = M.vinbigdata_map(t, p, ["A", "B"], normal_class=None)
    # class 1: FP TP -> 1/2; class 40000: TP FP, npos 2 -> 1/2
    assert r["per_class"] == {"c1": 0.5, "c40000": 0.5} and r["mAP"] == 0.5


def test_nothing_to_evaluate_and_no_predictions():
    for fn in (M.vinbigdata_map, M.coco_map):
        r = fn(boxes([]), boxes([]), ["A"], normal_class=None)
        assert np.isnan(r["mAP"]) and r["per_class"] == {} and r["table"] == [] and r["n_images"] == 1
        r = fn(boxes([("A", 0, 0, 0, 10, 10)]), boxes([]), ["A"], normal_class=None)   # truth, no prediction
        assert r["mAP"] == 0.0 and r["per_class"] == {"c0": 0.0}
        r = fn(boxes([]), boxes([("A", 2, 0, 0, 10, 10, 0.5)]), ["A"], normal_class=None)   # no truth at all
        assert np.isnan(r["mAP"]) and r["per_class"] == {"c2": None}
    keep, pt = M.match_coco(M.encode(boxes([("A", 0, 0, 0, 1, 1)]), boxes([]), ["A"]))
    assert keep.dtype == pt.dtype == "int64" and len(keep) == len(pt) == 0


def test_coco_max_dets_cut_per_image_and_class_exactly_at_the_limit():
    """max_dets 2: image A class 0 has 3 predictions (the 3rd, lowest, the only one on its truth
    is cut), class 1 on A exactly 2 (both kept), image B 2 of class 0 (kept: the cut is per image
    AND class, not per class); against pycocotools with maxDets [2], [3] and the default [100]."""
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 50, 50, 60, 60), ("A", 1, 0, 0, 10, 10), ("B", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("A", 0, 20, 20, 30, 30, 0.8), ("A", 0, 50, 50, 60, 60, 0.3),
               ("A", 1, 20, 20, 30, 30, 0.9), ("A", 1, 0, 0, 10, 10, 0.2),
               ("B", 0, 0, 0, 10, 10, 0.85), ("B", 0, 0, 0, 10, 10, 0.84)])
    imgs = ["A", "B"]
    enc = M.encode(t, p, imgs)
    for md in (2, 3, 100):
        ref, ref_per, ref_pr = _pycocotools(t, p, imgs, [0, 1], max_dets=md, precision=True)
        r = M.coco_map(t, p, imgs, max_dets=md)
        assert r["max_dets"] == md and r["mAP"] == ref and [r["per_class"]["c0"], r["per_class"]["c1"]] == ref_per
        np.testing.assert_array_equal(np.stack([r["pr"]["c0"]["q"], r["pr"]["c1"]["q"]], 1), ref_pr)
        assert M.coco_from(enc, 0.4, md)["mAP"] == ref
    keep, pt = M.match_coco(enc, 0.4, 2)
    assert keep.tolist() == [0, 1, 3, 4, 5, 6] and pt.tolist() == [0, -1, -1, 2, 3, -1]
    # c0 at 2: TP(.9) TP(.85) FP(.84) FP(.8), npos 3 -> q 1 up to recall 2/3; with 3 the .3 TP adds 1/2 at recall 1
    assert M.coco_map(t, p, imgs, max_dets=2)["per_class"]["c0"] == pytest.approx(67 / 101, abs=1e-12)
    assert M.coco_map(t, p, imgs, max_dets=3)["per_class"]["c0"] == pytest.approx((67 + 34 * 0.6) / 101, abs=1e-12)


def test_coco_defaults_and_the_tuner_entry_point_pass_their_arguments():
    # 101 predictions on one image and class: the 101st (lowest score, the only TP) is cut at 100
    t = boxes([("A", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 20 + k * 0.1, 20, 30, 30, 0.9 - k * 0.001) for k in range(100)] + [("A", 0, 0, 0, 10, 10, 0.01)])
    enc = M.encode(t, p, ["A"])
    keep, pt = M.match_coco(enc)
    assert keep.tolist() == list(range(100)) and (pt == -1).all()
    one = M.encode(t, boxes([("A", 0, 0, 0, 10, 8, 0.5)]), ["A"])   # IoU 0.8: a TP at the default 0.4
    assert [a.tolist() for a in M.match_coco(one)] == [[0], [0]]
    assert M.coco_from(enc)["mAP"] == M.coco_map(t, p, ["A"])["mAP"] == _pycocotools(t, p, ["A"], [0])[0] == 0.0
    assert M.coco_map(t, p, ["A"], max_dets=101)["mAP"] == pytest.approx(1 / 101, abs=1e-12)   # the TP last: precision 1/101 everywhere
    # the tuner's score at its own IoU threshold: IoU 0.8 is a TP at 0.4, an FP at 0.9
    t = boxes([("A", 0, 0, 0, 10, 10), ("B", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 8, 0.9), ("B", 0, 0, 0, 10, 10, 0.5)])
    enc = M.encode(t, p, ["A", "B"])
    ref = _pycocotools(t, p, ["A", "B"], [0], iou_thr=0.9)[0]
    assert M.score_encoded(enc, "coco", 0.9) == M.coco_from(enc, 0.9)["mAP"] == ref == pytest.approx(51 * 0.5 / 101, abs=1e-12)
    assert M.score_encoded(enc, "coco") == pytest.approx(1.0, abs=1e-12)
    assert M.coco_from(enc)["iou_thr"] == 0.4 and M.coco_from(enc)["mAP"] == M.score_encoded(enc, "coco")


def test_coco_threshold_1_matches_boxes_within_1e_10_like_pycocotools():
    t = boxes([("A", 0, 0, 0, 10, 10), ("B", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10 + 1e-12, 0.9), ("B", 0, 0, 0, 10, 9, 0.8)])   # IoU 1 - 1e-13 and 0.9
    ref = _pycocotools(t, p, ["A", "B"], [0], iou_thr=1.0)[0]
    assert M.coco_map(t, p, ["A", "B"], iou_thr=1.0)["mAP"] == ref == pytest.approx(51 / 101, abs=1e-12)


def test_coco_with_a_normal_class_equals_pycocotools_with_those_boxes():
    t = boxes([("A", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("B", 14, 0, 0, 1, 1, 0.8), ("A", 14, 0, 0, 1, 1, 0.7),
               ("C", 14, 0, 0, 1, 1, 0.6)])
    r = M.coco_map(t, p, ["A", "B", "C", "D"], normal_class=14)
    t_full = pd.concat([t, boxes([(im, 14, 0, 0, 1, 1) for im in "BCD"])], ignore_index=True)
    ref, ref_per = _pycocotools(t_full, p, ["A", "B", "C", "D"], [0, 14])
    assert r["mAP"] == ref and r["per_class"] == {"c0": ref_per[0], "c14": ref_per[1]}   # the predictions' name
    assert r["table"][1]["n_truth"] == 3


def test_score_order_breaks_ties_by_input_row():
    import dataclasses
    t, p = boxes([("A", 0, 0, 0, 10, 10)]), boxes([("A", 0, 0, 0, 10, 10, 0.5), ("A", 0, 0, 0, 10, 9, 0.5)])
    enc = M.encode(t, p, ["A"])
    assert M.score_order(enc).tolist() == [0, 1]
    swapped = dataclasses.replace(enc, p_row=np.array([1, 0]))   # rows handed over in another order
    assert M.score_order(swapped).tolist() == [1, 0]
    assert M.match_vinbigdata(swapped)[0].tolist() == [-1, 0]   # the row-0 box (now second) comes first
    three = dataclasses.replace(M.encode(t, pd.concat([p, p.iloc[:1]], ignore_index=True), ["A"]),
                                p_row=np.array([2, 0, 1]))
    assert M.score_order(three).tolist() == [1, 2, 0]


def test_summary_of_an_encoded_that_does_not_name_every_class():
    """An Encoded built by hand may name no class: table rows and PR curves then go by the id,
    counts stay right for a class with predictions only, then with truth only (class 1 in turn)."""
    import dataclasses
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 1, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("A", 1, 0, 0, 10, 10, 0.8)])
    for tt, pp, want in ((t.iloc[:1], p, [(0, "0", 1, 1, 1.0), (1, "1", 0, 1, None)]),
                         (t, p.iloc[:1], [(0, "0", 1, 1, 1.0), (1, "1", 1, 0, 0.0)])):
        enc = dataclasses.replace(M.encode(tt, pp, ["A"]), names={})
        for fn in (M.vinbigdata_from, M.coco_from):
            r = fn(enc)
            got = [(x["class_id"], x["class_name"], x["n_truth"], x["n_pred"], x["ap"]) for x in r["table"]]
            assert got == [(c, n, a, b, pytest.approx(v) if v is not None else None) for c, n, a, b, v in want]
            assert "0" in r["pr"] and set(r["per_class"]) == {w[1] for w in want}


def test_encoded_arrays_have_the_documented_dtypes():
    t = boxes([("A", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("Z", 1, 0, 0, 5, 5, 0.5), ("B", 1, 0, 0, 5, 5, 0.4)])
    for tt, pp in ((t, p), (boxes([]), boxes([]))):
        enc = M.encode(tt, pp, ["A", "B"], normal_class=14)
        assert [a.dtype.name for a in (enc.t_img, enc.t_cls, enc.p_img, enc.p_cls, enc.p_row)] == ["int64"] * 5
        assert [a.dtype.name for a in (enc.t_box, enc.p_box, enc.p_score)] == ["float64"] * 3
        assert enc.t_box.shape[1:] == enc.p_box.shape[1:] == (4,)
    enc = M.encode(t, p, ["A", "B"], normal_class=14)
    assert enc.p_row.tolist() == [0, 2] and enc.t_cls.tolist() == [0, 14] and enc.p_score.tolist() == [0.9, 0.4]


def test_nothing_to_score_gives_nan_without_warnings():
    import warnings
    t, p = boxes([]), boxes([("A", 0, 0, 0, 10, 10, 0.5)])   # a prediction, no truth anywhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no "Mean of empty slice" in the user's log
        assert np.isnan(M.vinbigdata_map(t, p, ["A"], normal_class=None)["mAP"])
        assert np.isnan(M.coco_map(t, p, ["A"])["mAP"])
        r = M.rsna_score(t, boxes([]), ["A", "B"])
        assert np.isnan(r["mAP"]) and all(np.isnan(v) for v in r["per_threshold"].values())
        assert r["per_image"]["score"].isna().all() and r["n_scored"] == 0
        assert M.rsna_score(t, p, ["A"])["mAP"] == 0.0
