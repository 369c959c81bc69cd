"""The metric registry's per-prediction matches (what explore.html, the worst-images galleries and
report-eval read), per-image costs and tie-breaks, on small box tables worked out by hand (issue 28
item 6: cases a mutation run found unguarded). Boxes are xyxy in pixels; IoU = inter / union."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from ref_metrics import _ref_rsna, boxes

from detection.evaluation import image_metrics as IM
from detection.evaluation import metrics as M

# truth 0 0 10 10 (area 100) against a prediction 0 0 10 h: IoU = 10 h / 100 = h / 10
TRUTH_BOX = (0, 0, 10, 10)


# ----------------------------------------------------------------------------- rsna matches
def rsna_case():
    """Class 1 only (an RSNA table whose finding is not class 0), three images.
    A: truth 0 0 10 10, prediction 0 0 10 4.2 (IoU 0.42: a TP at 0.40 only, > 0.40 but not > 0.45);
    B: truth 20 20 30 30, a prediction on it (IoU 1: TP at all 8 thresholds);
    C: no truth, a prediction at A's truth's place (score 0.95, the highest): it must not take A's truth."""
    t = boxes([("A", 1, *TRUTH_BOX), ("B", 1, 20, 20, 30, 30)])
    p = boxes([("A", 1, 0, 0, 10, 4.2, 0.9), ("B", 1, 20, 20, 30, 30, 0.8), ("C", 1, *TRUTH_BOX, 0.95)])
    return t, p


def test_rsna_matches_stay_in_their_image_and_class():
    t, p = rsna_case()
    tp, match = IM.pred_matches(t, p, ["A", "B", "C"], "rsna", 0.4)
    assert tp.tolist() == [0b1, 0b11111111, 0]
    assert match.tolist() == [0, 1, -1]   # the match is the one at the first threshold (0.40)
    # the same prediction on class 0 has no class-0 truth to take
    tp, match = IM.pred_matches(t, p.assign(class_id=[1, 1, 0]), ["A", "B", "C"], "rsna", 0.4)
    assert tp.tolist() == [0b1, 0b11111111, 0] and match.tolist() == [0, 1, -1]
    # the RSNA score of these three images by hand: A (1 of 8 thresholds at 1/1) 1/8, B 1, C 0 (an FP alone)
    r = M.rsna_score(t, p, ["A", "B", "C"])
    assert r["per_image"]["score"].tolist() == pytest.approx([1 / 8, 1.0, 0.0])
    assert r["mAP"] == pytest.approx((1 / 8 + 1 + 0) / 3) == pytest.approx(_ref_rsna(t, p, ["A", "B", "C"]))


def test_rsna_match_is_strict_at_exactly_040():
    t = boxes([("A", 0, *TRUTH_BOX)])
    p = boxes([("A", 0, 0, 0, 10, 4, 0.9)])   # IoU 40 / 100 = 0.4 exactly: not > 0.40
    tp, match = IM.pred_matches(t, p, ["A"], "rsna", 0.4)
    assert tp.tolist() == [0] and match.tolist() == [-1]
    p = boxes([("A", 0, 0, 0, 10, 4.5, 0.9)])   # IoU 0.45: > 0.40 only (not > 0.45)
    tp, match = IM.pred_matches(t, p, ["A"], "rsna", 0.4)
    assert tp.tolist() == [0b1] and match.tolist() == [0]


@pytest.mark.parametrize("name", ["vinbigdata", "rsna", "coco"])
def test_matches_without_truth_or_without_predictions(name):
    t, p = boxes([("A", 0, *TRUTH_BOX)]), boxes([("A", 0, *TRUTH_BOX, 0.9), ("B", 0, *TRUTH_BOX, 0.8)])
    tp, match = IM.pred_matches(boxes([]), p, ["A", "B"], name, 0.4)
    assert tp.tolist() == [0, 0] and match.tolist() == [-1, -1]
    tp, match = IM.pred_matches(t, boxes([]), ["A", "B"], name, 0.4)
    assert tp.tolist() == [] and match.tolist() == []


@pytest.mark.parametrize("name", ["vinbigdata", "rsna", "coco"])
def test_a_prediction_outside_the_evaluated_images_matches_nothing(name):
    # row 1 is on image Z, not evaluated: neither a TP nor a match, whatever its box
    t = boxes([("A", 0, *TRUTH_BOX), ("Z", 0, *TRUTH_BOX)])
    p = boxes([("A", 0, *TRUTH_BOX, 0.9), ("Z", 0, *TRUTH_BOX, 0.8), ("A", 0, 0, 0, 10, 9, 0.7)])
    tp, match = IM.pred_matches(t, p, ["A"], name, 0.4)
    assert tp.tolist() == [255 if name == "rsna" else 1, 0, 0] and match.tolist() == [0, -1, -1]


@pytest.mark.parametrize("name", ["vinbigdata", "rsna", "coco"])
def test_registry_matches_are_integers_one_bit_per_threshold(name):
    # the registry's own output (before pred_matches spreads it over the table): integers, so a
    # caller reads threshold k as (tp >> k) & 1; match = the truth row
    t = boxes([("A", 0, *TRUTH_BOX), ("A", 0, 20, 20, 30, 30)])
    p = boxes([("A", 0, 0, 0, 10, 6, 0.9), ("A", 0, 50, 50, 60, 60, 0.8), ("A", 0, 20, 20, 30, 30, 0.7)])
    enc = M.encode(t, p, ["A"])
    rule = M.metric_named(name)
    tp, match = rule.matches(enc, 0.4)
    assert tp.dtype.kind == "i" and match.dtype.kind == "i"
    bits = [[int(b) for b in (tp >> k) & 1] for k in range(len(rule.thresholds(0.4)))]
    # IoU 0.6: > 0.40 ... 0.55 for rsna (strict), >= 0.4 for the others; IoU 0 -> FP; IoU 1 -> TP
    want = [[1, 0, 1]] * 4 + [[0, 0, 1]] * 4 if name == "rsna" else [[1, 0, 1]]
    assert bits == want and match.tolist() == [0, -1, 1]


# ----------------------------------------------------------------------------- coco matches
def test_coco_matches_use_the_asked_threshold():
    t = boxes([("A", 0, *TRUTH_BOX)])
    p = boxes([("A", 0, 0, 0, 10, 4.5, 0.9)])   # IoU 0.45: a TP at 0.4, an FP at 0.5
    assert [x.tolist() for x in IM.pred_matches(t, p, ["A"], "coco", 0.4)] == [[1], [0]]
    assert [x.tolist() for x in IM.pred_matches(t, p, ["A"], "coco", 0.5)] == [[0], [-1]]
    assert M.coco_map(t, p, ["A"], 0.5)["mAP"] == 0.0 and M.coco_map(t, p, ["A"], 0.4)["mAP"] == pytest.approx(1.0)


def test_coco_ignored_predictions_have_no_match():
    # 101 predictions in one image and class: COCO keeps the 100 best (max_dets); the 101st (lowest
    # score, placed on the truth) is ignored: tp -1 and no truth row
    t = boxes([("A", 0, *TRUTH_BOX)])
    p = boxes([("A", 0, 50, 50, 60, 60, 0.5)] * 100 + [("A", 0, *TRUTH_BOX, 0.1)])
    tp, match = IM.pred_matches(t, p, ["A"], "coco", 0.4)
    assert tp.tolist() == [0] * 100 + [-1] and match.tolist() == [-1] * 101
    # vinbigdata has no such cut: the 101st takes the truth
    tp, match = IM.pred_matches(t, p, ["A"], "vinbigdata", 0.4)
    assert tp.tolist() == [0] * 100 + [1] and match.tolist() == [-1] * 100 + [0]


# ----------------------------------------------------------------------------- tie-break by input row
def test_score_order_sorts_by_score_then_by_the_callers_row():
    """Encoded.p_row is the row in the caller's table (tune hands over its own rows): descending
    score first, the lower row wins a tie. Two truths; predictions (array position: score, hit?):
    0: 0.9 on truth 0, 1: 0.5 miss, 2: 0.5 on truth 1.
    Rows 0 1 2: order 0 1 2 -> TP FP TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1:
      AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    Rows 2 1 0 (position 2 is the caller's row 0): order 0 2 1 -> TP TP FP: AP = 1."""
    t = boxes([("A", 0, *TRUTH_BOX), ("A", 0, 20, 20, 30, 30)])
    p = boxes([("A", 0, *TRUTH_BOX, 0.9), ("A", 0, 50, 50, 60, 60, 0.5), ("A", 0, 20, 20, 30, 30, 0.5)])
    enc = M.encode(t, p, ["A"])
    assert M.score_order(enc).tolist() == [0, 1, 2]
    assert M.vinbigdata_from(enc)["mAP"] == pytest.approx(5 / 6)
    rows = dataclasses.replace(enc, p_row=np.array([2, 1, 0]))
    assert M.score_order(rows).tolist() == [0, 2, 1]
    assert M.vinbigdata_from(rows)["mAP"] == 1.0
    assert M.match_vinbigdata(rows)[0].tolist() == [0, -1, 1]


# ----------------------------------------------------------------------------- per-image costs
def test_image_costs_take_an_image_table():
    """``images`` may be the prepared image table (image_id plus other columns), as the galleries pass it."""
    t = boxes([("A", 0, *TRUTH_BOX), ("B", 0, *TRUTH_BOX)])
    p = boxes([("A", 0, *TRUTH_BOX, 0.9), ("C", 0, *TRUTH_BOX, 0.6)])
    table = pd.DataFrame({"image_id": ["A", "B", "C"], "path": ["a.png", "b.png", "c.png"], "width": [64] * 3})
    df = IM.image_costs(t, p, table, metric="vinbigdata", normal_class=None)
    # B: a missed truth (1); C: an FP of confidence 0.6; A: a TP (0)
    assert df["image_id"].tolist() == ["B", "C", "A"] and df["cost"].tolist() == pytest.approx([1.0, 0.6, 0.0])
    pd.testing.assert_frame_equal(df, IM.image_costs(t, p, ["A", "B", "C"], metric="vinbigdata", normal_class=None))


@pytest.mark.parametrize("name", ["vinbigdata", "rsna", "coco"])
def test_image_costs_without_any_finding_truth(name):
    # every truth row is the normal class (14), left out: nothing to miss, each prediction an FP
    t = boxes([("A", 14, 0, 0, 1, 1), ("B", 14, 0, 0, 1, 1)])
    p = boxes([("A", 0, *TRUTH_BOX, 0.7), ("A", 14, 0, 0, 1, 1, 0.9)])
    df = IM.image_costs(t, p, ["A", "B"], metric=name, normal_class=14).set_index("image_id")
    assert df.loc["A", ["n_tp", "n_fp", "n_fn"]].tolist() == [0, 1, 0]
    assert df.loc["B", ["n_tp", "n_fp", "n_fn"]].tolist() == [0, 0, 0]
    # vinbigdata / coco: the FP's confidence; rsna: 1 - 0/(0+1+0); B has nothing: 0
    assert df["cost"].tolist() == pytest.approx([1.0 if name == "rsna" else 0.7, 0.0])


def test_rsna_image_cost_counts_one_tp_as_a_perfect_threshold():
    # A: one truth, one prediction at IoU 0.42: TP at 0.40 (1/(1+1-1) = 1), at the 7 others FP + FN
    # (0/2): score 1/8, cost 7/8; B: one truth, one prediction at IoU 1: score 1, cost 0
    t, p = rsna_case()
    df = IM.image_costs(t, p, ["A", "B"], metric="rsna", normal_class=None, conf_thr=0.0).set_index("image_id")
    assert df.loc["A", "cost"] == pytest.approx(7 / 8) and df.loc["B", "cost"] == 0.0
    assert df.loc["A", ["n_tp", "n_fp", "n_fn"]].tolist() == [1, 0, 0]


# ----------------------------------------------------------------------------- loose input dtypes
def test_tables_read_from_csv_with_integer_pixels_encode_to_the_documented_dtypes(tmp_path):
    """A box table read back from CSV has int64 coordinates (whole pixels), int64 scores (truth's 1)
    and, after a merge that left a hole, float class ids: encoded, they are the documented dtypes
    and the metrics are those of the float table."""
    head = "image_id,class_id,class_name,x_min,y_min,x_max,y_max,score,rater\n"
    (tmp_path / "t.csv").write_text(head + "A,0,c0,0,0,10,10,1,\nB,1,c1,20,20,30,30,1,\n")
    (tmp_path / "p.csv").write_text(head + "A,0,c0,0,0,10,6,1,\nB,1,c1,20,20,30,30,1,\nB,0,c0,0,0,5,5,1,\n")
    tc = pd.read_csv(tmp_path / "t.csv", keep_default_na=False).astype({"class_id": "float64"})
    pc = pd.read_csv(tmp_path / "p.csv", keep_default_na=False).astype({"class_id": "float64"})
    t = boxes([("A", 0, *TRUTH_BOX), ("B", 1, 20, 20, 30, 30)])
    p = boxes([("A", 0, 0, 0, 10, 6, 1.0), ("B", 1, 20, 20, 30, 30, 1.0), ("B", 0, 0, 0, 5, 5, 1.0)])
    assert tc["x_max"].dtype.kind == pc["score"].dtype.kind == "i" and tc["class_id"].dtype.kind == "f"
    for normal in (None, 14):
        enc = M.encode(tc, pc, ["A", "B", "C"], normal_class=normal)
        assert [a.dtype.name for a in (enc.t_img, enc.t_cls, enc.p_img, enc.p_cls, enc.p_row)] == ["int64"] * 5
        assert [a.dtype.name for a in (enc.t_box, enc.p_box, enc.p_score)] == ["float64"] * 3
    # the same numbers as the float tables: class 0 AP 1 (one truth, its TP first), class 1 AP 1
    r = M.vinbigdata_map(tc, pc, ["A", "B"], normal_class=None)
    assert r["mAP"] == M.vinbigdata_map(t, p, ["A", "B"], normal_class=None)["mAP"] == 1.0
    assert [(x["class_id"], x["n_truth"], x["n_pred"]) for x in r["table"]] == [(0, 1, 2), (1, 1, 1)]


def test_image_costs_spell_each_image_id_by_str():
    # ids handed over as Python numbers of mixed types: 7 -> "7", 7.5 -> "7.5" (as encode spells them),
    # not "7.0" (what a float column would give); B's truth is missed, its FP counted on "7"
    t = boxes([("7", 0, *TRUTH_BOX), ("7.5", 0, *TRUTH_BOX)])
    p = boxes([("7", 0, 50, 50, 60, 60, 0.8), ("7.5", 0, *TRUTH_BOX, 0.9)])
    df = IM.image_costs(t, p, [7, 7.5], metric="vinbigdata", normal_class=None)
    assert df["image_id"].tolist() == ["7", "7.5"] and df["cost"].tolist() == pytest.approx([1.8, 0.0])
    assert df["n_tp"].tolist() == [0, 1] and df["n_fn"].tolist() == [1, 0]


def test_image_costs_of_a_prediction_table_indexed_by_its_image_id():
    # a table indexed by one of its own columns (set_index("image_id", drop=False)), as a groupby leaves it
    t = boxes([("A", 0, *TRUTH_BOX)])
    p = boxes([("A", 0, *TRUTH_BOX, 0.9), ("B", 0, *TRUTH_BOX, 0.4)])
    want = IM.image_costs(t, p, ["A", "B"], metric="vinbigdata", normal_class=None)
    got = IM.image_costs(t, p.set_index("image_id", drop=False), ["A", "B"], metric="vinbigdata", normal_class=None)
    pd.testing.assert_frame_equal(got, want)
    assert want["image_id"].tolist() == ["B", "A"] and want["cost"].tolist() == pytest.approx([0.4, 0.0])
