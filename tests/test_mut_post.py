"""Post-processing and submission edges the other tests left open (issue 28 item 6, mutation survivors
of detection/competition/postprocess.py, submission.py and submission_numbers.py): WBF's
normalisation and its fast path against ensemble-boxes, class exponents, the 2-class filter's rows
in a table with a fold column, tables of whole numbers, files post-processed = tables
post-processed, and submission bytes and grids."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest

import detection.competition.postprocess as PP
from data_prep.core.boxes import COORDS, empty_boxes, make_boxes
from data_prep.core.errors import InputError
from data_prep.datasets import describe

NF = (14, "No finding")
NAMES = describe("vinbigdata").names


def _boxes(rows, names=None):
    """rows of (image_id, class_id, x0, y0, x1, y1, score) -> box table (class_name = 'c<id>', or
    the names given)."""
    r = list(zip(*rows))
    cls = [names[c] if names else (f"c{c}" if c != 14 else "No finding") for c in r[1]]
    return make_boxes(list(r[0]), list(r[1]), cls, np.array(r[2:6], float).T, score=list(r[6]))


def _cfg(**kw):
    return {**PP.defaults(), **kw}


def _wbf(tables, iid, h, w, **kw):
    """ensemble-boxes' weighted_boxes_fusion of image ``iid`` of ``tables``, boxes divided by
    (w, h, w, h), result mapped back: (boxes, scores, labels)."""
    from ensemble_boxes import weighted_boxes_fusion

    ts = [t[t["image_id"] == iid] for t in tables]
    whwh = np.array([w, h, w, h], "float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b, s, lab = weighted_boxes_fusion([t[COORDS].to_numpy("float64") / whwh for t in ts],
                                          [t["score"].to_numpy("float64") for t in ts],
                                          [t["class_id"].to_numpy("int64") for t in ts], **kw)
    return b * whwh, s, lab.astype("int64")


# ----------------------------------------------------------------------------- ensemble
def test_ensemble_without_sizes_divides_each_image_by_its_largest_coordinates(monkeypatch):
    """No image sizes: WBF sees an image's boxes divided by their largest x_max (width) and y_max
    (height), each at least 1. ensemble-boxes works in float32, so the divisor shows in the last
    digits: the result equals ensemble-boxes on exactly these divided boxes, bit for bit."""
    t1 = _boxes([("a", 0, 0.7, 0.1, 1.0, 1.13, 0.9), ("b", 2, 0.2, 0.3, 0.6, 0.8, 0.5)])
    t2 = _boxes([("a", 0, 0.74, 0.07, 1.02, 1.08, 0.3), ("b", 2, 0.25, 0.3, 0.6, 0.75, 0.7)])
    out = PP.ensemble([t1, t2])
    if PP.numba_available():   # the fast path (FAST_WBF_MIN boxes and more) normalises the same way
        monkeypatch.setattr(PP, "FAST_WBF_MIN", 0)
        pd.testing.assert_frame_equal(PP.ensemble([t1, t2]), out, check_exact=True)
    for iid, (h, w) in {"a": (1.13, 1.02), "b": (1.0, 1.0)}.items():   # b: both below 1, so 1
        b, s, lab = _wbf([t1, t2], iid, h, w, iou_thr=0.55, skip_box_thr=0.0001)
        got = out[out["image_id"] == iid]
        np.testing.assert_array_equal(got[COORDS].to_numpy(), b)
        np.testing.assert_array_equal(got["score"].to_numpy(), s)
        assert got["class_id"].tolist() == lab.tolist() and len(got) == 1
    # a: scores 0.9 and 0.3 averaged over the 2 tables; box = score-weighted mean of the two
    a = out[out["image_id"] == "a"]
    assert a["score"].item() == pytest.approx(0.6)
    np.testing.assert_allclose(a[COORDS].to_numpy()[0], (0.9 * np.array([0.7, 0.1, 1.0, 1.13]) +
                                                         0.3 * np.array([0.74, 0.07, 1.02, 1.08])) / 1.2, rtol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning")   # ensemble-boxes on a table of one box
def test_ensemble_fast_path_forced_on_three_images_gives_each_image_its_fusion(monkeypatch):
    """The numba path (``FAST_WBF_MIN`` boxes and more; forced here on 6 boxes) = the per-image
    loop = ensemble-boxes image by image: an image in both tables, one in one table only, one
    without a size (normalised by its boxes)."""
    pytest.importorskip("numba")
    t1 = _boxes([("a", 0, 10, 10, 50, 60, 0.9), ("b", 1, 5, 5, 25, 45, 0.8), ("c", 2, 1, 2, 3, 4, 0.4),
                 ("a", 3, 70, 70, 90, 95, 0.2)])
    t2 = _boxes([("a", 0, 12, 8, 52, 58, 0.5), ("c", 2, 1.5, 2, 3.5, 4, 0.6)])
    sizes = pd.DataFrame({"height": [100, 80], "width": [120, 90]}, index=["a", "b"])   # c: no size
    monkeypatch.setattr(PP, "FAST_WBF_MIN", 10**9)
    loop = PP.ensemble([t1, t2], sizes)
    monkeypatch.setattr(PP, "FAST_WBF_MIN", 0)
    fast = PP.ensemble([t1, t2], sizes)
    pd.testing.assert_frame_equal(fast, loop, check_exact=True)
    assert fast["image_id"].tolist() == ["a", "a", "b", "c"]
    for iid, (h, w) in {"a": (100, 120), "b": (80, 90), "c": (4, 3.5)}.items():
        b, s, lab = _wbf([t1, t2], iid, h, w, iou_thr=0.55, skip_box_thr=0.0001)
        got = fast[fast["image_id"] == iid]
        np.testing.assert_array_equal(got[COORDS].to_numpy(), b)
        np.testing.assert_array_equal(got["score"].to_numpy(), s)
        assert got["class_id"].tolist() == lab.tolist()
    # by hand: a's class-0 pair (0.9 + 0.5) / 2; boxes seen by one table of two: half their score
    assert fast["score"].tolist() == pytest.approx([0.7, 0.1, 0.4, 0.5])
    # weights 3:1 (ens_weights), both paths: a (3 * 0.9 + 0.5) / 4, c (3 * 0.4 + 0.6) / 4; t1's lone boxes: 3/4
    kw = dict(iou_thr=0.55, skip_box_thr=0.0001, conf_type="avg", weights=[3, 1])
    fast = PP.ensemble([t1, t2], sizes, **kw)
    monkeypatch.setattr(PP, "FAST_WBF_MIN", 10**9)
    pd.testing.assert_frame_equal(fast, PP.ensemble([t1, t2], sizes, **kw), check_exact=True)
    b, s, lab = _wbf([t1, t2], "a", 100, 120, **kw)
    np.testing.assert_array_equal(fast[fast["image_id"] == "a"]["score"].to_numpy(), s)
    assert fast["score"].tolist() == pytest.approx([0.8, 0.15, 0.6, (3 * 0.4 + 0.6) / 4])
    # no sizes at all, conf_type max: each image normalised by its boxes, on both paths
    kw = dict(iou_thr=0.55, skip_box_thr=0.0001, conf_type="max")
    loop = PP.ensemble([t1, t2], None, **kw)
    monkeypatch.setattr(PP, "FAST_WBF_MIN", 0)
    fast = PP.ensemble([t1, t2], None, **kw)
    pd.testing.assert_frame_equal(fast, loop, check_exact=True)
    for iid, (h, w) in {"a": (95, 90), "b": (45, 25), "c": (4, 3.5)}.items():
        b, s, lab = _wbf([t1, t2], iid, h, w, **kw)
        got = fast[fast["image_id"] == iid]
        np.testing.assert_array_equal(got[COORDS].to_numpy(), b)
        np.testing.assert_array_equal(got["score"].to_numpy(), s)
    assert fast["score"].tolist() == pytest.approx([0.9, 0.2, 0.8, 0.6])   # max: the best score, lone boxes kept


# ----------------------------------------------------------------------------- class gating
def test_class_exponents_one_per_class_id():
    """alpha as a number: every class; as a mapping by class name or id: the classes it names,
    0 (score kept) for the others; one exponent per class id up to the largest, none for no box."""
    a = PP.to_arrays(_boxes([("a", 0, 1, 1, 5, 5, 0.5), ("a", 2, 1, 1, 5, 5, 0.5)]))
    np.testing.assert_array_equal(PP.class_exponents(a, 0.5), [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(PP.class_exponents(a, {"c0": 2, "2": 0.25}), [2.0, 0.0, 0.25])
    one = PP.to_arrays(_boxes([("a", 0, 1, 1, 5, 5, 0.5)]))
    assert PP.class_exponents(one, 0.5).tolist() == [0.5]
    assert PP.class_exponents(one, {"c0": 3}).tolist() == [3.0]
    none = PP.to_arrays(empty_boxes())
    assert PP.class_exponents(none, 0.5).shape == (0,) and PP.class_exponents(none, {"c0": 1}).shape == (0,)


def test_per_class_alpha_gating_by_hand():
    """score * p_class ** alpha_class: Cardiomegaly (alpha 2) squared, Aortic enlargement (alpha 0.5)
    square-rooted, Atelectasis (not in the mapping) kept; an image without a probability row kept."""
    t = _boxes([("a", 3, 1, 1, 9, 9, 0.8), ("a", 0, 1, 1, 9, 9, 0.5), ("a", 1, 1, 1, 9, 9, 0.6),
                ("b", 3, 1, 1, 9, 9, 0.7)], NAMES)
    probs = pd.DataFrame({"image_id": ["a"], "Cardiomegaly": [0.5], "Aortic enlargement": [0.25],
                          "Atelectasis": [0.1]})
    alpha = {"Cardiomegaly": 2.0, "Aortic enlargement": 0.5}
    out = PP.apply(t, probs, _cfg(cls_fusion="multiply", alpha=alpha, cls_low=0.0, cls_high=0.0), NF)
    assert [(r.image_id, r.class_id, r.score) for r in out.itertuples()] == \
        [("a", 1, 0.6), ("a", 0, 0.25), ("a", 3, 0.2), ("b", 3, 0.7)]
    # one alpha for all: every class with a column multiplied; ILD (no column) kept
    t = pd.concat([t, _boxes([("a", 5, 1, 1, 9, 9, 0.3)], NAMES)], ignore_index=True)
    out = PP.apply(t, probs, _cfg(cls_fusion="multiply", alpha=1.0, cls_low=0.0, cls_high=0.0), NF)
    assert [(r.image_id, r.class_id, r.score) for r in out.itertuples()] == \
        [("a", 3, 0.4), ("a", 5, 0.3), ("a", 0, 0.125), ("a", 1, pytest.approx(0.06)), ("b", 3, 0.7)]


# ----------------------------------------------------------------------------- 2-class filter
def test_two_class_filter_rows_carry_the_image_fold():
    """cv's oof_raw.csv has a fold column: the "No finding" rows the filter writes get their image's
    fold (a: normal only; b: boxes + No finding 1 - p; c: boxes only)."""
    t = _boxes([("a", 0, 1, 2, 30, 40, 0.6), ("b", 3, 5, 5, 9, 9, 0.3), ("c", 1, 5, 5, 9, 9, 0.8)]).assign(
        fold=[0, 1, 2])
    probs = pd.DataFrame({"image_id": ["a", "b", "c"], "abnormal": [0.01, 0.5, 0.99]})
    out = PP.apply(t, probs, _cfg(), NF)
    assert [(r.image_id, r.class_id, r.score, r.fold) for r in out.itertuples()] == \
        [("a", 14, 1.0, 0), ("b", 14, 0.5, 1), ("b", 3, 0.3, 1), ("c", 1, 0.8, 2)]
    assert out["fold"].dtype == "int64"
    # a row for an image the table has no box of (its fold unknown), or for an image with two folds:
    # the column is left out rather than blank or guessed
    probs_n = pd.DataFrame({"image_id": ["a", "n"], "abnormal": [0.5, 0.01]})
    assert "fold" not in PP.apply(t, probs_n, _cfg(), NF)
    two = t.assign(fold=[0, 1, 2]).iloc[[0, 0, 1]].assign(fold=[0, 1, 1])   # a's two boxes: folds 0 and 1
    out = PP.apply(two, probs, _cfg(), NF)
    assert "fold" not in out and out["class_id"].tolist() == [14, 14, 3]


def test_no_box_at_all_with_probabilities_gives_the_normal_rows():
    """The model found nothing on any image: the 2-class filter still writes "No finding" for the
    images its probabilities call normal (class fusion on: no box to fuse)."""
    probs = pd.DataFrame({"image_id": ["a", "b"], "abnormal": [0.01, 0.5], "Cardiomegaly": [0.2, 0.9]})
    out = PP.apply(empty_boxes(), probs, _cfg(cls_fusion="multiply", alpha=1.0), NF)
    assert [(r.image_id, r.class_id, r.class_name, r.score) for r in out.itertuples()] == \
        [("a", 14, "No finding", 1.0), ("b", 14, "No finding", 0.5)]


# ----------------------------------------------------------------------------- steps at their defaults
def test_min_box_size_zero_drops_nothing_not_even_a_degenerate_box():
    """At the defaults the steps are no-ops: an inverted box (x_max < x_min) and a zero-width one
    go through as they are (the submission writer names the inverted one); min_box_size 1 drops both."""
    t = _boxes([("a", 0, 30, 2, 10, 40, 0.6), ("a", 1, 5, 5, 5, 9, 0.3), ("a", 2, 5, 5, 9, 9, 0.1)])
    pd.testing.assert_frame_equal(PP.apply(t, None, _cfg(), NF), t)
    assert PP.apply(t, None, _cfg(min_box_size=1), NF)["class_id"].tolist() == [2]


def test_a_csv_of_whole_numbers_is_post_processed_as_floats(tmp_path):
    """pandas reads whole-pixel coordinates and scores of 1 as int64 (and ids written 0.0 as floats):
    scaled boxes and fused scores are still computed in float, not truncated."""
    f = tmp_path / "p.csv"
    f.write_text("image_id,class_id,class_name,x_min,y_min,x_max,y_max,score\n"
                 "a,0,Aortic enlargement,10,20,31,41,1\na,3,Cardiomegaly,0,0,4,4,1\n")
    probs = pd.DataFrame({"image_id": ["a"], "Aortic enlargement": [0.25]})
    cfg = _cfg(box_scale=1.5, cls_fusion="multiply", alpha=1.0, score_thr=0.1, cls_low=0.0, cls_high=0.0)
    t = pd.read_csv(f).assign(rater="")
    assert t["x_min"].dtype == t["score"].dtype == "int64"
    for table in (t, t.astype({"class_id": "float64"})):
        out = PP.apply(table, probs, cfg, NF)
        # centre (20.5, 30.5), half 10.5 * 1.5; centre (2, 2), half 3 -> clipped at 0
        np.testing.assert_array_equal(out[COORDS].to_numpy(), [[0, 0, 5, 5], [4.75, 14.75, 36.25, 46.25]])
        assert out["score"].tolist() == [1.0, 0.25]


# ----------------------------------------------------------------------------- postprocess(_files)
def test_probabilities_in_memory_are_named_in_the_coverage_error():
    t = _boxes([("a", 0, 1, 2, 30, 40, 0.6)])
    probs = pd.DataFrame({"image_id": ["z"], "abnormal": [0.5]})
    with pytest.raises(InputError, match=r"^probabilities table: probabilities for none of the 1 predicted images"):
        PP.postprocess([t], probs, _cfg(), NF)


def test_postprocess_files_equals_postprocess_of_the_tables(tmp_path):
    """What ``cxrdet postprocess`` writes = postprocess() of the same tables in memory: two tables
    fused, the probabilities' 2-class filter, boxes scaled then clipped to the meta's sizes; n_in
    counts the boxes read. Without a config and probabilities: the defaults (only sorting)."""
    t1 = _boxes([("a", 0, 100, 10, 120, 30, 0.9), ("b", 3, 5, 5, 25, 25, 0.6), ("c", 1, 2, 2, 8, 8, 0.7)], NAMES)
    t2 = _boxes([("a", 0, 98, 12, 118, 32, 0.7), ("b", 5, 30, 30, 40, 40, 0.2)], NAMES)
    t1.to_csv(tmp_path / "p1.csv", index=False)
    t2.to_csv(tmp_path / "p2.csv", index=False)
    (tmp_path / "meta.csv").write_text("image_id,height,width\na,100,120\nb,50,60\nc,10,10\n")
    (tmp_path / "probs.csv").write_text("image_id,abnormal\na,0.99\nb,0.5\nc,0.01\n")
    cfg = {**_cfg(box_scale=1.5), "dataset": "vinbigdata"}
    got = PP.postprocess_files([tmp_path / "p1.csv", tmp_path / "p2.csv"], tmp_path / "probs.csv", cfg,
                               tmp_path / "meta.csv")
    sizes = pd.DataFrame({"height": [100, 50, 10], "width": [120, 60, 10]}, index=["a", "b", "c"])
    probs = pd.DataFrame({"image_id": ["a", "b", "c"], "abnormal": [0.99, 0.5, 0.01]})
    want = PP.postprocess([t1, t2], probs, cfg, NF, sizes)
    pd.testing.assert_frame_equal(got, want)
    assert got.attrs["n_in"] == 5
    assert [(r.image_id, r.class_id) for r in got.itertuples()] == [("a", 0), ("b", 14), ("b", 3), ("b", 5),
                                                                      ("c", 14)]
    # a's fused box ends at x 119.x * 1.5 about its centre: past the image's width 120, clipped to it
    assert got.loc[0, "x_max"] == 120.0 and got.loc[0, "x_min"] < 100
    plain = PP.postprocess_files([tmp_path / "p1.csv"])
    pd.testing.assert_frame_equal(plain, PP.postprocess([t1], None, None, NF))
    assert plain["image_id"].tolist() == ["a", "b", "c"] and plain.attrs["n_in"] == 3


def test_an_image_a_submission_lists_without_boxes_is_a_predicted_image(tmp_path):
    """A submission's image with an empty PredictionString was predicted (no box): its probability
    row is used and the 2-class filter writes its "No finding" row."""
    (tmp_path / "sub.csv").write_text("image_id,PredictionString\na,3 0.5 10 20 30 40\nb,\n")
    (tmp_path / "probs.csv").write_text("image_id,abnormal\na,0.99\nb,0.01\n")
    out = PP.postprocess_files([tmp_path / "sub.csv"], tmp_path / "probs.csv")
    assert [(r.image_id, r.class_id, r.score, r.x_max) for r in out.itertuples()] == \
        [("a", 3, 0.5, 30.0), ("b", 14, 1.0, 1.0)]
    assert out.attrs["n_in"] == 1
    # the table of b alone covers a predicted image (a warning for a, not an error)
    (tmp_path / "b.csv").write_text("image_id,abnormal\nb,0.01\n")
    assert PP.postprocess_files([tmp_path / "sub.csv"], tmp_path / "b.csv")["class_id"].tolist() == [3, 14]


# ----------------------------------------------------------------------------- submission
def _sample(path, ids):
    pd.DataFrame({"image_id": ids, "PredictionString": "14 1 0 0 1 1"}).to_csv(path, index=False)
    return path


def test_submission_lines_end_in_a_newline_on_every_platform(tmp_path, monkeypatch):
    """Byte-identical files on Windows (os.linesep '\\r\\n') and Linux."""
    from detection.competition.submission import write_submission

    monkeypatch.setattr(os, "linesep", "\r\n")
    pred = make_boxes(["a", "a"], [3, 0], ["Cardiomegaly", "Aortic enlargement"], [[10, 20, 30, 40], [1, 2, 3, 4]],
                      score=[0.5, 0.75])
    out = write_submission(pred, _sample(tmp_path / "s.csv", ["a", "b"]), "vinbigdata", tmp_path / "o.csv")
    assert out.read_bytes() == b"image_id,PredictionString\na,0 0.75 1 2 3 4 3 0.5 10 20 30 40\nb,14 1 0 0 1 1\n"


@pytest.mark.parametrize("decimals, string", [
    (1, "3 0.5 10 20 10.1 20.5 0 0.25 7.5 1 7.6 2"),
    (5, "3 0.5 10 20 10.00001 20.5 0 0.25 7.5 1 7.50001 2"),
    (6, "3 0.5 10 20 10.000001 20.5 0 0.25 7.5 1 7.500001 2"),
    (7, "3 0.5 10 20 10.0000001 20.5 0 0.25 7.5 1 7.5000001 2"),
    (10, "3 0.5 10 20 10.0000000001 20.5 0 0.25 7.5 1 7.5000000001 2"),
])
def test_a_zero_width_box_is_widened_one_grid_step_at_every_allowed_decimals(tmp_path, decimals, string):
    """decimals 0..10 (keys.py): a zero-width box becomes one grid step wide, so the written file is a
    valid submission (a 1e-6 px tolerance once kept 6 decimals and more at zero width: 'x_max <= x_min')."""
    from detection.competition.submission import parse_submission, submit

    pred = make_boxes(["a", "a"], [3, 0], ["Cardiomegaly", "Aortic enlargement"],
                      [[10, 20, 10, 20.5], [7.5, 1, 7.5, 2]], score=[0.5, 0.25])
    out = submit(pred, _sample(tmp_path / "s.csv", ["a"]), "vinbigdata", tmp_path / "o.csv", decimals=decimals)
    assert out.read_text().splitlines()[1] == f"a,{string}"
    back = parse_submission(out, "vinbigdata")
    widths = (back["x_max"] - back["x_min"]).to_numpy()
    np.testing.assert_allclose(widths, 10.0 ** -decimals, rtol=1e-4)


def test_validator_a_line_without_a_comma_is_one_field_and_an_empty_string(tmp_path):
    from detection.competition.submission import validate_submission

    f = tmp_path / "sub.csv"
    f.write_text("image_id,PredictionString\na,14 1 0 0 1 1\nb\n")
    assert validate_submission(f, _sample(tmp_path / "s.csv", ["a", "b"]), "vinbigdata") == [
        "line 3: 1 fields; expected 2 (image_id,PredictionString)",
        "line 3 (image_id 'b'): empty PredictionString; expected at least '14 1 0 0 1 1'"]
