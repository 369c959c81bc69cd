"""detection.evaluation.image_metrics: image-level AUC / F1 from detections, against scikit-learn and a best-F1
sweep written here (every threshold tried, counts by hand), and the per-image scores by hand."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ref_metrics import boxes as xyxy_boxes

from data_prep.core.boxes import empty_boxes, make_boxes
from detection.evaluation import image_metrics as IM
from detection.evaluation.image_metrics import auc_f1, image_level, image_scores


def boxes(rows):
    """rows: (image_id, class_id, score)."""
    if not rows:
        return empty_boxes()
    return make_boxes([r[0] for r in rows], [r[1] for r in rows], [f"c{r[1]}" for r in rows],
                      [[0, 0, 5, 5]] * len(rows), [r[2] for r in rows])


def best_f1(y, s):
    """(best F1, its threshold) over the thresholds "predict positive when score >= t", t in the
    distinct scores; the first (lowest) threshold wins a tie. Counted sample by sample."""
    best = (-1.0, None)
    for t in sorted(set(s.tolist())):
        tp = sum(1 for yi, si in zip(y, s) if si >= t and yi)
        fp = sum(1 for yi, si in zip(y, s) if si >= t and not yi)
        fn = sum(1 for yi, si in zip(y, s) if si < t and yi)
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best[0] + 1e-12:
            best = (f1, t)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_auc_f1_equals_sklearn_and_a_threshold_sweep(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    y = rng.random(n) < [0.1, 0.3, 0.5, 0.7, 0.9, 0.2][seed]
    y[0], y[1] = True, False
    s = np.round(rng.random(n), 1)  # one decimal: ties between scores
    if seed % 2:
        s = np.where(y, s * 0.3, s)  # a poor classifier: the best F1 has precision + recall < 1
    r = auc_f1(y, s)
    assert r["n"] == n and r["n_pos"] == int(y.sum())
    assert r["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    f1, t = best_f1(y, s)
    assert r["f1"] == pytest.approx(f1, abs=1e-12) and r["threshold"] == t


def test_auc_f1_edges():
    # one positive: AUC defined (0.5 = ranked in the middle of the two negatives)
    r = auc_f1(np.array([False, True, False]), np.array([0.2, 0.5, 0.8]))
    assert r["auc"] == pytest.approx(0.5) and r["f1"] == pytest.approx(2 / 3) and r["threshold"] == 0.5
    # every image positive: no AUC, F1 still (threshold at the lowest score: all predicted positive)
    r = auc_f1(np.ones(3, bool), np.array([0.2, 0.5, 0.8]))
    assert r["auc"] is None and r["f1"] == 1.0 and r["threshold"] == 0.2
    # the best threshold is the highest score (precision 1 there)
    r = auc_f1(np.array([False, True]), np.array([0.1, 0.9]))
    assert r["auc"] == 1.0 and r["f1"] == 1.0 and r["threshold"] == 0.9
    # the top-scored image is negative: precision = recall = 0 there counts as F1 0, not NaN
    r = auc_f1(np.array([True, False, False]), np.array([0.3, 0.9, 0.1]))
    assert r["f1"] == pytest.approx(2 / 3) and r["threshold"] == 0.3
    r = auc_f1(np.array([False, True]), np.array([0.9, 0.1]))
    assert r["auc"] == 0.0 and r["f1"] == pytest.approx(2 / 3) and r["threshold"] == 0.1
    # best F1 where precision + recall < 1: 1 TP, 2 FP, 1 FN at t = 0.7 (p 1/3, r 1/2): F1 0.4
    y = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1], bool)
    r = auc_f1(y, np.linspace(0.9, 0.4, 11).round(2))
    assert r["f1"] == pytest.approx(0.4) and r["threshold"] == 0.8


def test_image_scores_take_the_highest_score_and_ignore_unknown_images_and_classes():
    b = boxes([("a", 1, 0.3), ("a", 1, 0.7), ("b", 2, 0.4), ("zz", 1, 0.99), ("b", 5, 0.95), ("a", 2, 0.2)])
    out = image_scores(b, ["a", "b", "c"], [1, 2])
    np.testing.assert_array_equal(out, [[0.7, 0.2], [0.0, 0.4], [0.0, 0.0]])
    assert image_scores(empty_boxes(), ["a"], [1]).tolist() == [[0.0]]


def test_image_level_classes_normal_rows_and_no_findings():
    truth = boxes([("a", 0, 1.0), ("b", 14, 1.0)])  # b: an explicit "No finding" row, a normal image
    pred = boxes([("a", 0, 0.9), ("b", 0, 0.2), ("b", 3, 0.6), ("b", 14, 0.7), ("c", 14, 0.1)])
    r = image_level(truth, pred, ["a", "b", "c"], normal_class=14)
    # class 3 is only predicted: it is still a class, with no positive image
    assert sorted(r["per_class"]) == ["c0", "c3"]
    assert r["per_class"]["c0"]["auc"] == 1.0 and r["per_class"]["c3"]["n_pos"] == 0
    # abnormal: only a has a finding; scores a 0.9 (no normal row), b 1 - 0.7, c 1 - 0.1
    ab = r["abnormal"]
    assert ab["n_pos"] == 1 and ab["auc"] == pytest.approx(0.75) and ab["threshold"] == 0.9  # a ties c
    # without a normal class, class 14 is a finding like the others
    r = image_level(truth, pred, ["a", "b", "c"], normal_class=None)
    assert sorted(r["per_class"]) == ["c0", "c14", "c3"]
    assert r["per_class"]["c14"]["n_pos"] == 1 and r["per_class"]["c14"]["auc"] == 1.0
    assert r["abnormal"]["n_pos"] == 2 and r["abnormal"]["auc"] == pytest.approx(1.0)
    # only normal rows: no finding class, abnormal from the normal scores alone
    r = image_level(boxes([("b", 14, 1.0)]), boxes([("b", 14, 0.8), ("c", 14, 0.3)]), ["b", "c"], normal_class=14)
    assert r["per_class"] == {} and r["abnormal"]["n_pos"] == 0 and r["abnormal"]["auc"] is None


def test_image_costs_defaults_and_images_without_errors():
    from detection.evaluation.image_metrics import image_costs

    t = make_boxes(["A", "B"], [0, 0], ["c0", "c0"], [[0, 0, 10, 10], [0, 0, 10, 10]])
    # A: IoU 0.45 with its truth (TP at the default 0.4, FP at 0.5); a 0.25 box kept (>=), a 0.2 one dropped
    p = make_boxes(["A", "A", "A"], [0, 0, 0], ["c0"] * 3, [[0, 0, 10, 4.5], [50, 50, 60, 60], [70, 70, 80, 80]],
                   [0.9, 0.25, 0.2])
    df = image_costs(t, p, ["A", "B", "C"], metric="vinbigdata", normal_class=14).set_index("image_id")
    assert df.loc["A", ["n_tp", "n_fp", "n_fn"]].tolist() == [1, 1, 0] and df.loc["A", "cost"] == pytest.approx(0.25)
    assert df.loc["B", ["n_tp", "n_fp", "n_fn"]].tolist() == [0, 0, 1] and df.loc["B", "cost"] == 1.0
    assert df.loc["C", ["n_tp", "n_fp", "n_fn", "cost"]].tolist() == [0, 0, 0, 0.0]   # last image: nothing
    strict = image_costs(t, p, ["A", "B", "C"], metric="vinbigdata", normal_class=14, iou_thr=0.5).set_index("image_id")
    assert strict.loc["A", ["n_tp", "n_fp", "n_fn"]].tolist() == [0, 2, 1]
    assert strict.loc["A", "cost"] == pytest.approx(1 + 0.9 + 0.25)


def test_auc_f1_takes_any_truthy_label_and_always_has_its_keys():
    # labels as box counts per image: 0 = negative, any count = positive
    counts = np.array([0, 2, 1, 0, 3])
    s = np.array([0.1, 0.8, 0.3, 0.4, 0.9])
    r = auc_f1(counts, s)
    assert r["n_pos"] == 3 and r["auc"] == pytest.approx(roc_auc_score(counts > 0, s), abs=1e-12)
    assert (r["f1"], r["threshold"]) == pytest.approx(best_f1(counts > 0, s), abs=1e-12)
    r = auc_f1(np.zeros(3, bool), np.array([0.1, 0.2, 0.3]))
    assert r == {"n": 3, "n_pos": 0, "auc": None, "f1": None, "threshold": None}


def test_image_costs_dtypes_and_ties_in_image_order():
    from detection.evaluation.image_metrics import image_costs

    # 40 images: every third has a missed truth (cost 1), the others nothing (cost 0); ties keep
    # the images' order, whatever the number of images
    imgs = [f"im{k:02d}" for k in range(40)][::-1]
    miss = imgs[::3]
    t = make_boxes(miss, [0] * len(miss), ["c0"] * len(miss), [[0, 0, 10, 10]] * len(miss))
    df = image_costs(t, empty_boxes(), imgs, metric="vinbigdata", normal_class=14)
    assert df.dtypes.astype(str).tolist()[1:] == ["int64", "int64", "int64", "float64"]
    assert df["image_id"].tolist() == miss + [im for im in imgs if im not in miss]
    assert df["cost"].tolist() == [1.0] * len(miss) + [0.0] * (40 - len(miss))


# ----------------------------------------------------------------------------- by hand, from box tables
def test_image_level_auc_f1():
    t = xyxy_boxes([("A", 0, 0, 0, 10, 10), ("B", 0, 0, 0, 10, 10)])
    p = xyxy_boxes([("A", 0, 0, 0, 5, 5, 0.9), ("B", 0, 0, 0, 5, 5, 0.3), ("C", 0, 0, 0, 5, 5, 0.5),
               ("B", 14, 0, 0, 1, 1, 0.2), ("C", 14, 0, 0, 1, 1, 0.9)])
    r = IM.image_level(t, p, ["A", "B", "C", "D"], normal_class=14)
    c0 = r["per_class"]["c0"]
    assert c0["auc"] == pytest.approx(0.75)  # pairs (pos, neg): .9>.5, .9>0, .3<.5, .3>0
    assert c0["f1"] == pytest.approx(0.8) and c0["threshold"] == pytest.approx(0.3)
    assert c0["n_pos"] == 2
    # abnormal: A 0.9 (max finding), B 1-0.2, C 1-0.9 (its 14 row wins over its 0.5 box), D 0
    ab = r["abnormal"]
    assert ab["auc"] == 1.0 and ab["f1"] == 1.0 and ab["threshold"] == pytest.approx(0.8)


def test_auc_undefined_with_one_label():
    r = IM.auc_f1(np.zeros(3, bool), np.array([0.1, 0.2, 0.3]))
    assert r["auc"] is None and r["f1"] is None


def test_image_costs():
    t = xyxy_boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 20, 20, 30, 30), ("B", 1, 0, 0, 10, 10)])
    p = xyxy_boxes([("A", 0, 0, 0, 10, 10, 0.9), ("A", 0, 50, 50, 60, 60, 0.8), ("A", 0, 60, 60, 70, 70, 0.1),
               ("B", 1, 0, 0, 10, 10, 0.95), ("C", 2, 0, 0, 5, 5, 0.4), ("C", 14, 0, 0, 1, 1, 0.9)])
    df = IM.image_costs(t, p, ["A", "B", "C"], metric="vinbigdata", normal_class=14, conf_thr=0.25)
    assert list(df.columns) == ["image_id", "n_tp", "n_fp", "n_fn", "cost"]
    assert df["image_id"].tolist() == ["A", "C", "B"]
    a = df.set_index("image_id")
    assert a.loc["A", ["n_tp", "n_fp", "n_fn"]].tolist() == [1, 1, 1] and a.loc["A", "cost"] == pytest.approx(1.8)
    assert a.loc["C", "cost"] == pytest.approx(0.4) and a.loc["B", "cost"] == 0


# ----------------------------------------------------------------------------- one cost per metric (issue 28)
def test_rsna_image_cost_is_one_minus_the_image_score_by_hand_and_by_the_metric():
    """RSNA: cost = 1 - the image's score (mean over the 8 thresholds of TP/(TP+FP+FN)), as the
    explorer computes it, not missed boxes + FP confidence (the same image cost 2.00 in the gallery)."""
    from detection.evaluation import metrics as M

    t = make_boxes(["A", "B", "B"], [0, 0, 0], ["Lung Opacity"] * 3,
                   [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    # A: IoU 0.6 (a TP at 0.40..0.55, strict >) and a false positive; D: a false positive alone
    p = make_boxes(["A", "A", "D"], [0, 0, 0], ["Lung Opacity"] * 3,
                   [[0, 0, 10, 6], [30, 30, 40, 40], [0, 0, 5, 5]], [0.9, 0.3, 0.3])
    ids = ["A", "B", "C", "D"]
    df = IM.image_costs(t, p, ids, metric="rsna", normal_class=None, conf_thr=0.0).set_index("image_id")
    # A: 4 thresholds at 1/(1+2-1) = 0.5, 4 at 0 -> score 0.25; B: 2 missed -> score 0; C: nothing -> skipped
    assert df.loc["A", "cost"] == pytest.approx(0.75)
    assert df.loc["B", "cost"] == 1.0 and df.loc["C", "cost"] == 0.0 and df.loc["D", "cost"] == 1.0
    assert df.loc["A", ["n_tp", "n_fp", "n_fn"]].tolist() == [1, 1, 0]
    ref = M.rsna_score(t, p, ids)["per_image"].set_index("image_id")["score"]
    for i in ("A", "B", "D"):
        assert df.loc[i, "cost"] == pytest.approx(1 - ref[i])
    # at conf 0.5 the 0.3 boxes are gone: A is 1/1 at four thresholds -> score 0.5; D costs nothing
    hi = IM.image_costs(t, p, ids, metric="rsna", normal_class=None, conf_thr=0.5).set_index("image_id")
    assert hi.loc["A", "cost"] == pytest.approx(0.5) and hi.loc["D", "cost"] == 0.0
    assert list(IM.image_costs(t, p, ids, metric="rsna", normal_class=None, conf_thr=0.0)["image_id"]) == list("BDAC")


def test_coco_cost_ignores_what_coco_ignores():
    """coco: the predictions beyond max_dets per image and class are ignored by the metric, so they
    cost nothing; the rest as vinbigdata (missed truth + FP confidence)."""
    t = make_boxes(["A"], [0], ["c0"], [[0, 0, 10, 10]])
    p = make_boxes(["A"] * 102, [0] * 102, ["c0"] * 102, [[0, 0, 10, 10]] + [[50, 50, 60, 60]] * 101,
                   [0.99] + [0.5] * 100 + [0.4])
    coco = IM.image_costs(t, p, ["A"], metric="coco", normal_class=None, conf_thr=0.0).set_index("image_id")
    voc = IM.image_costs(t, p, ["A"], metric="vinbigdata", normal_class=None, conf_thr=0.0).set_index("image_id")
    assert coco.loc["A", "n_fp"] == 99 and coco.loc["A", "cost"] == pytest.approx(99 * 0.5)
    assert voc.loc["A", "n_fp"] == 101 and voc.loc["A", "cost"] == pytest.approx(100 * 0.5 + 0.4)
