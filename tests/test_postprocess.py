"""detection/competition/postprocess.py: each step on hand-made tables, WBF against ensemble-boxes called
directly, and the CLI (predict running these steps: test_predict_postprocess.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import detection.competition.postprocess as PP
from data_prep.core.boxes import COORDS, make_boxes

NF = (14, "No finding")


def _boxes(rows):
    """rows of (image_id, class_id, x0, y0, x1, y1, score) -> box table (class_name = 'c<id>')."""
    r = list(zip(*rows))
    return make_boxes(list(r[0]), list(r[1]), [f"c{c}" if c != 14 else "No finding" for c in r[1]],
                      np.array(r[2:6], float).T, score=list(r[6]))


def _cfg(**kw):
    return {**PP.defaults(), **kw}


# ----------------------------------------------------------------------------- defaults
def test_every_post_key_is_documented_in_default_yaml(repo_root):
    text = (repo_root / "configs" / "default.yaml").read_text()
    for k in PP.POST_KEYS:
        line = [ln for ln in text.splitlines() if ln.startswith(f"{k}:")]
        assert len(line) == 1 and "# (" in line[0], k
    d = PP.defaults()
    assert (d["box_scale"], d["score_thr"], d["top_k"], d["cls_fusion"], d["cls_low"], d["cls_high"]) == \
        (1.0, 0.0, 0, "none", 0.08, 0.95)


def test_defaults_without_probabilities_only_sort():
    t = _boxes([("b", 0, 1, 2, 30, 40, 0.2), ("a", 1, 5, 5, 9, 9, 0.1), ("b", 1, 0, 0, 3, 3, 0.7),
                ("a", 0, 5, 6, 7, 8, 0.1)])
    out = PP.postprocess([t], None, None, NF)
    exp = t.iloc[[1, 3, 2, 0]].reset_index(drop=True)  # a (ties in table order), then b by score
    pd.testing.assert_frame_equal(out, exp, check_exact=True)


# ----------------------------------------------------------------------------- 2-class filter
@pytest.mark.parametrize("p, kept, normal_score", [
    (0.0799, False, 1.0),     # just below low: normal only, at 1.0
    (0.08, True, 0.92),       # p == low: boxes kept + No finding at 1 - p
    (0.5, True, 0.5),
    (0.9499, True, 0.0501),   # just below high
    (0.95, True, None),       # p == high: boxes only
    (1.0, True, None),
])
def test_two_class_filter_band_edges(p, kept, normal_score):
    t = _boxes([("a", 0, 1, 2, 30, 40, 0.6), ("a", 3, 5, 5, 9, 9, 0.3)])
    probs = pd.DataFrame({"image_id": ["a"], "abnormal": [p]})
    out = PP.apply(t, probs, _cfg(), NF)
    assert (out["class_id"] != 14).sum() == (2 if kept else 0)
    nf = out[out["class_id"] == 14]
    if normal_score is None:
        assert nf.empty
    else:
        assert nf["score"].tolist() == [pytest.approx(normal_score, abs=1e-12)]
        assert nf[COORDS].to_numpy().tolist() == [[0, 0, 1, 1]] and nf["class_name"].tolist() == ["No finding"]


def test_two_class_filter_replaces_old_normal_rows_keeps_unlisted_images_and_rsna_has_no_normal_rows():
    t = _boxes([("a", 0, 1, 2, 30, 40, 0.6), ("a", 14, 0, 0, 1, 1, 0.4), ("z", 2, 1, 1, 5, 5, 0.2)])
    probs = pd.DataFrame({"image_id": ["a", "n"], "abnormal": [0.3, 0.01]})  # n: no boxes at all
    out = PP.apply(t, probs, _cfg(), NF)
    assert [(r.image_id, r.class_id, round(r.score, 9)) for r in out.itertuples()] == \
        [("a", 14, 0.7), ("a", 0, 0.6), ("n", 14, 1.0), ("z", 2, 0.2)]
    out = PP.apply(t[t.class_id != 14], probs, _cfg(), None)
    assert [(r.image_id, r.class_id) for r in out.itertuples()] == [("a", 0), ("z", 2)]
    off = PP.apply(t, probs, _cfg(cls_low=0.0, cls_high=0.0), NF)  # low = high = 0: no-op
    pd.testing.assert_frame_equal(off, PP.apply(t, None, _cfg(), NF))
    with pytest.raises(ValueError, match="low <= high"):
        PP.apply(t, probs, _cfg(cls_low=0.9, cls_high=0.1), NF)


# ----------------------------------------------------------------------------- class-probability fusion
def test_class_probability_fusion_multiplies_score_by_p_to_the_alpha():
    t = _boxes([("a", 0, 1, 2, 30, 40, 0.8), ("a", 1, 5, 5, 9, 9, 0.5), ("a", 2, 5, 5, 9, 9, 0.5),
                ("b", 0, 1, 1, 5, 5, 0.4), ("a", 14, 0, 0, 1, 1, 0.3)])
    probs = pd.DataFrame({"image_id": ["a"], "c0": [0.25], "c1": [0.64]})  # no c2 column, no row for b
    out = PP.apply(t, probs, _cfg(cls_fusion="multiply", alpha=0.5), NF)
    got = {(r.image_id, r.class_id): r.score for r in out.itertuples()}
    assert got == pytest.approx({("a", 0): 0.8 * 0.5, ("a", 1): 0.5 * 0.8, ("a", 2): 0.5, ("b", 0): 0.4,
                                 ("a", 14): 0.3}, abs=1e-12)
    same = PP.apply(t, probs, _cfg(cls_fusion="none", alpha=0.5), NF)  # fusion off: scores as given
    assert sorted(same["score"]) == sorted(t["score"])


# ----------------------------------------------------------------------------- scaling, size, thresholds, top-k
def test_box_scale_keeps_the_centre_and_clips_to_the_image():
    t = _boxes([("a", 0, 10, 20, 50, 100, 0.9), ("a", 1, 0, 0, 40, 40, 0.5), ("a", 14, 0, 0, 1, 1, 0.2)])
    out = PP.apply(t, None, _cfg(box_scale=0.5), NF).set_index("class_id")
    np.testing.assert_allclose(out.loc[0, COORDS].to_numpy(float), [20, 40, 40, 80])  # centre (30, 60) kept
    np.testing.assert_allclose(out.loc[1, COORDS].to_numpy(float), [10, 10, 30, 30])
    np.testing.assert_allclose(out.loc[14, COORDS].to_numpy(float), [0, 0, 1, 1])  # normal rows untouched
    sizes = pd.DataFrame({"height": [110.0], "width": [55.0]}, index=["a"])
    big = PP.apply(t, None, _cfg(box_scale=1.5), NF, sizes).set_index("class_id")
    np.testing.assert_allclose(big.loc[0, COORDS].to_numpy(float), [0, 0, 55, 110])  # 0,0,60,120 clipped
    np.testing.assert_allclose(big.loc[1, COORDS].to_numpy(float), [0, 0, 50, 50])  # -10 -> 0


def test_min_box_size_and_score_thresholds():
    t = _boxes([("a", 0, 0, 0, 10, 3, 0.9), ("a", 0, 0, 0, 4, 4, 0.5), ("a", 1, 0, 0, 9, 9, 0.25),
                ("a", 1, 0, 0, 9, 9, 0.3), ("a", 14, 0, 0, 1, 1, 0.01)])
    out = PP.apply(t, None, _cfg(min_box_size=4.0), NF)
    assert sorted(out["score"]) == [0.01, 0.25, 0.3, 0.5]  # 10 x 3 dropped; 4 x 4 kept (>=); normal row kept
    out = PP.apply(t, None, _cfg(score_thr=0.3), NF)
    assert sorted(out["score"]) == [0.01, 0.3, 0.5, 0.9]  # score == thr kept
    out = PP.apply(t, None, _cfg(score_thr=0.3, class_thr={"c0": 0.6}), NF)
    assert sorted(out["score"]) == [0.01, 0.3, 0.9]


def test_top_k_per_class_and_per_image():
    t = _boxes([("a", 0, 0, 0, 5, 5, 0.2), ("a", 0, 0, 0, 6, 6, 0.9), ("a", 0, 0, 0, 7, 7, 0.5),
                ("a", 1, 0, 0, 5, 5, 0.6), ("a", 1, 0, 0, 8, 8, 0.6), ("b", 0, 0, 0, 5, 5, 0.1),
                ("a", 14, 0, 0, 1, 1, 0.05)])
    out = PP.apply(t, None, _cfg(top_k_per_class=1), NF)
    got = [(r.image_id, r.class_id, r.score, r.x_max) for r in out.itertuples()]
    assert got == [("a", 0, 0.9, 6), ("a", 1, 0.6, 5), ("a", 14, 0.05, 1), ("b", 0, 0.1, 5)]  # tie: first row
    out = PP.apply(t, None, _cfg(top_k=2), NF)
    assert [(r.image_id, r.score) for r in out.itertuples()] == [("a", 0.9), ("a", 0.6), ("a", 0.05), ("b", 0.1)]
    out = PP.apply(t, None, _cfg(top_k_per_class=2, top_k=3), NF)
    assert [(r.class_id, r.score) for r in out[out.image_id == "a"].itertuples()] == \
        [(0, 0.9), (1, 0.6), (1, 0.6), (14, 0.05)]


# ----------------------------------------------------------------------------- ensemble WBF
def _direct_wbf(tables, sizes, iou, skip, conf_type, weights):
    from ensemble_boxes import weighted_boxes_fusion

    rows = []
    for iid in sorted(set().union(*[set(t.image_id) for t in tables])):
        h, w = sizes.loc[iid, ["height", "width"]]
        bl, sl, ll = [], [], []
        for t in tables:
            g = t[t.image_id == iid]
            bl.append(g[COORDS].to_numpy() / [w, h, w, h])
            sl.append(g["score"].to_numpy())
            ll.append(g["class_id"].to_numpy())
        b, s, lab = weighted_boxes_fusion(bl, sl, ll, weights=weights, iou_thr=iou, skip_box_thr=skip,
                                          conf_type=conf_type)
        rows += [(iid, int(c), *(bb * [w, h, w, h]), sc) for bb, sc, c in zip(b, s, lab)]
    return pd.DataFrame(rows, columns=["image_id", "class_id", *COORDS, "score"])


@pytest.mark.filterwarnings("ignore:.*in box:UserWarning")  # the direct call warns about clipping
@pytest.mark.parametrize("iou, skip, conf_type, weights", [(0.55, 0.0001, "avg", None), (0.3, 0.2, "max", [2, 1, 1]),
                                                           (0.5, 0.0, "box_and_model_avg", [1, 3, 0.5])])
def test_ensemble_equals_ensemble_boxes_called_directly(iou, skip, conf_type, weights):
    r = np.random.default_rng(7)
    sizes = pd.DataFrame({"height": [300.0, 500.0, 200.0], "width": [400.0, 250.0, 200.0]}, index=["a", "b", "c"])
    base = []
    for iid in sizes.index:
        h, w = sizes.loc[iid]
        for _ in range(6):
            x0, y0 = r.uniform(0, w * 0.6), r.uniform(0, h * 0.6)
            base.append((iid, int(r.integers(0, 3)), x0, y0, x0 + r.uniform(10, w * 0.4), y0 + r.uniform(10, h * 0.4)))
    tables = []
    for k in range(3):
        rows = [(i, c, *(np.array(b) + r.normal(0, 4, 4)), float(r.uniform(0.05, 1))) for i, c, *b in base
                if r.uniform() < 0.8]
        tables.append(_boxes(rows))
    cfg = _cfg(ens_iou=iou, ens_skip=skip, ens_conf_type=conf_type, ens_weights=weights)
    got = PP.postprocess(tables, None, cfg, NF, sizes)
    exp = _direct_wbf(tables, sizes, iou, skip, conf_type, weights)
    exp = exp.sort_values(["image_id", "score"], ascending=[True, False], kind="stable").reset_index(drop=True)
    assert len(got) == len(exp) > 5
    assert got["image_id"].tolist() == exp["image_id"].tolist() and got["class_id"].tolist() == exp["class_id"].tolist()
    np.testing.assert_allclose(got[COORDS + ["score"]].to_numpy(float), exp[COORDS + ["score"]].to_numpy(float),
                               rtol=0, atol=1e-9)
    # without sizes the boxes are normalised by their own extent: the same fusion up to rounding
    nosize = PP.postprocess(tables, None, cfg, NF)
    np.testing.assert_allclose(nosize[COORDS + ["score"]].to_numpy(float), exp[COORDS + ["score"]].to_numpy(float),
                               rtol=1e-6, atol=1e-6)  # ensemble-boxes computes in float32
    with pytest.raises(ValueError, match="weight"):
        PP.postprocess(tables, None, _cfg(ens_weights=[1, 2]), NF)


def test_ensemble_keeps_the_fold_column():
    t = _boxes([("a", 0, 1, 2, 30, 40, 0.6), ("b", 1, 5, 5, 9, 9, 0.3)]).assign(fold=[0, 3])
    out = PP.postprocess([t, t], None, _cfg(), NF)
    assert dict(zip(out.image_id, out.fold)) == {"a": 0, "b": 3}
    np.testing.assert_allclose(out[COORDS].to_numpy(float), t[COORDS].to_numpy(float), atol=1e-9)
    # columns of the first table only, constant per image (NaN counts as a value); others left out
    t1 = t.assign(fold=[0, np.nan], site=["x", "y"], box_id=[1, 2])
    t1 = pd.concat([t1, t1.iloc[:1].assign(x_min=300.0, x_max=330.0, box_id=3)], ignore_index=True)
    t2 = t.assign(other=[7, 8])
    out = PP.postprocess([t1, t2], None, _cfg(), NF)
    assert "other" not in out and "box_id" not in out                     # not in table 1 / not constant
    assert out.groupby("image_id")["site"].first().to_dict() == {"a": "x", "b": "y"}
    assert out.set_index("image_id")["fold"].groupby(level=0).first().fillna(-1).to_dict() == {"a": 0, "b": -1}


# ----------------------------------------------------------------------------- CLI
def test_cli_postprocess_with_config_file_and_overrides(tmp_path):
    from detection.cli import main

    a = _boxes([("a", 0, 10, 20, 50, 100, 0.9), ("b", 1, 0, 0, 40, 40, 0.5), ("b", 1, 0, 0, 30, 30, 0.2)])
    b = _boxes([("a", 0, 12, 20, 50, 100, 0.7)])
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame({"image_id": ["a", "b"], "abnormal": [0.5, 0.01]}).to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "tuned.yaml").write_text("box_scale: 0.5\nens_iou: 0.3\n")
    rc = main(["postprocess", "--pred", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), "--cls-probs",
               str(tmp_path / "p.csv"), "--config", str(tmp_path / "tuned.yaml"), "--out", str(tmp_path / "f.csv"),
               "cls_high=0.6"])
    assert rc == 0
    out = pd.read_csv(tmp_path / "f.csv")
    assert [(r.image_id, r.class_id) for r in out.itertuples()] == [("a", 0), ("a", 14), ("b", 14)]
    fused_x0 = (10 * 0.9 + 12 * 0.7) / 1.6  # WBF: score-weighted mean of the two boxes
    assert out.loc[0, "x_min"] == pytest.approx(fused_x0 + (50 - fused_x0) / 4)  # then halved about its centre
    assert out.loc[0, "score"] == pytest.approx(0.8) and out.loc[1, "score"] == pytest.approx(0.5)
    # bad inputs: one line naming the file, row, column and value; never writes over an input
    pd.DataFrame({"image_id": ["a"], "abnormal": [1.7]}).to_csv(tmp_path / "bad.csv", index=False)
    assert main(["postprocess", "--pred", str(tmp_path / "a.csv"), "--cls-probs", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "g.csv")]) == 2
    assert not (tmp_path / "g.csv").exists()
    before = (tmp_path / "a.csv").read_bytes()
    assert main(["postprocess", "--pred", str(tmp_path / "a.csv"), "--out", str(tmp_path / "a.csv")]) == 2
    assert (tmp_path / "a.csv").read_bytes() == before


def test_bad_probabilities_message_names_row_column_and_value(tmp_path):
    pd.DataFrame({"image_id": ["a", "b"], "abnormal": [0.2, "x"]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ValueError, match=r"p.csv line 3: abnormal 'x'; expected a probability in \[0, 1\]"):
        PP.read_probs(tmp_path / "p.csv")


@pytest.mark.filterwarnings("ignore:.*in box:UserWarning")
def test_ensemble_defaults_sizes_in_any_order_and_empty_tables():
    """ensemble()'s defaults are ensemble-boxes' WBF at iou 0.55, skip 0.0001, conf_type avg; the
    sizes table is looked up by image id (any row order); tables without rows give an empty table."""
    sizes = pd.DataFrame({"height": [300.0, 500.0], "width": [400.0, 250.0]}, index=["a", "b"])
    t1 = _boxes([("b", 0, 10, 10, 100, 200, 0.9), ("a", 1, 20, 20, 120, 90, 0.3), ("a", 1, 200, 100, 390, 290, 0.02)])
    t2 = _boxes([("a", 1, 30, 24, 118, 96, 0.6), ("b", 0, 14, 8, 104, 190, 0.5), ("b", 2, 1, 1, 9, 9, 0.00005)])
    got = PP.ensemble([t1, t2], sizes.iloc[::-1])
    exp = _direct_wbf([t1, t2], sizes, 0.55, 0.0001, "avg", None)
    got = got.sort_values(["image_id", "class_id", "score"]).reset_index(drop=True)
    exp = exp.sort_values(["image_id", "class_id", "score"]).reset_index(drop=True)
    assert got["image_id"].tolist() == exp["image_id"].tolist() == ["a", "a", "b"]   # b's 0.00005 box skipped
    assert got["class_id"].tolist() == exp["class_id"].tolist() and got["class_name"].tolist() == ["c1", "c1", "c0"]
    np.testing.assert_allclose(got[COORDS + ["score"]].to_numpy(float), exp[COORDS + ["score"]].to_numpy(float),
                               rtol=0, atol=1e-9)
    empty = PP.ensemble([t1.iloc[:0], t2.iloc[:0]], sizes)
    assert len(empty) == 0 and list(empty.columns[:9]) == list(t1.columns[:9])


def test_scaled_boxes_clip_x_to_the_width_and_y_to_the_height():
    # a tall image (400 high, 100 wide): y may go past 100, x may not
    t = _boxes([("a", 0, 60, 300, 90, 350, 0.9)])
    sizes = pd.DataFrame({"height": [400.0], "width": [100.0]}, index=["a"])
    out = PP.apply(t, None, _cfg(box_scale=2.0), NF, sizes)
    np.testing.assert_allclose(out[COORDS].to_numpy(float), [[45, 275, 100, 375]])
    wide = PP.apply(t.assign(y_min=10.0, y_max=40.0), None, _cfg(box_scale=2.0), NF, sizes.rename(
        columns={"height": "width", "width": "height"}))  # 100 high, 400 wide: y clipped at 100, x free
    np.testing.assert_allclose(wide[COORDS].to_numpy(float), [[45, 0, 105, 55]])


def test_steps_on_the_same_arrays_twice_and_for_two_normal_classes():
    """tune runs the steps many times on one Arrays (a per-Arrays cache): every call, and a call
    for another normal class, equals a call on fresh arrays."""
    t = _boxes([("a", 0, 1, 2, 30, 40, 0.8), ("a", 14, 0, 0, 1, 1, 0.3), ("b", 1, 5, 5, 9, 9, 0.5)])
    probs = pd.DataFrame({"image_id": ["a", "b"], "c0": [0.25, 0.5], "abnormal": [0.5, 0.01]})
    cfg = PP.post_config(_cfg(cls_fusion="multiply", alpha=1.0))
    a = PP.to_arrays(t, probs)
    for normal_id in (14, None, 14):
        got = PP.apply_arrays(a, cfg, normal_id)
        want = PP.apply_arrays(PP.to_arrays(t, probs), cfg, normal_id)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    # fusion asked for but no probabilities table: scores unchanged
    rows, _, score, _, _ = PP.apply_arrays(PP.to_arrays(t), cfg, 14)
    np.testing.assert_array_equal(score, t["score"].to_numpy()[rows])


def test_size_threshold_and_top_k_steps_compose_by_hand():
    # boxes away from the origin (size = max - min, not max + min), thin in x or in y
    t = _boxes([("a", 0, 100, 10, 103, 30, 0.9), ("a", 0, 10, 100, 30, 103, 0.8), ("a", 0, 50, 60, 60, 70, 0.7),
                ("a", 1, 50, 60, 50.4, 70, 0.6)])
    out = PP.apply(t, None, _cfg(min_box_size=4.0), NF)
    assert out["score"].tolist() == [0.7]                      # 3 px wide, 3 px high, 0.4 px wide: dropped
    out = PP.apply(t, None, _cfg(min_box_size=0.5), NF)
    assert out["score"].tolist() == [0.9, 0.8, 0.7]            # a size limit below 1 px still applies
    # a box dropped by its size stays dropped whatever its score; class_thr by class id or by name
    out = PP.apply(t, None, _cfg(min_box_size=4.0, score_thr=0.65), NF)
    assert out["score"].tolist() == [0.7]
    out = PP.apply(t, None, _cfg(class_thr={"1": 0.65}), NF)
    assert out["score"].tolist() == [0.9, 0.8, 0.7]
    out = PP.apply(t, None, _cfg(class_thr={"c0": 0.85}), NF)
    assert out["score"].tolist() == [0.9, 0.6]
    # top-k per (image, class): four images, two classes -> each (image, class) keeps its best box
    rows = [(i, c, 0, 0, 10, 10, s) for i in "abcd" for c in (0, 1) for s in (0.5, 0.4)]
    out = PP.apply(_boxes(rows), None, _cfg(top_k_per_class=1), NF)
    assert sorted(zip(out["image_id"], out["class_id"], out["score"])) == [(i, c, 0.5) for i in "abcd" for c in (0, 1)]


@pytest.mark.filterwarnings("ignore:.*in box:UserWarning")
def test_fuse_views_and_two_class_filter_defaults():
    from ensemble_boxes import weighted_boxes_fusion

    a = PP.View(np.array([[10.0, 20, 50, 60], [100, 100, 150, 180]]), np.array([0.9, 0.00005]), np.array([0, 2]))
    b = PP.View(np.array([[12.0, 18, 52, 61]]), np.array([0.6]), np.array([0]))
    got = PP.fuse_views([a, b], (200, 300))             # defaults: WBF iou 0.55, skip 0.0001, avg
    wh = np.array([300, 200, 300, 200])
    eb, es, el = weighted_boxes_fusion([a.xyxy / wh, b.xyxy / wh], [a.scores, b.scores], [a.labels, b.labels],
                                       iou_thr=0.55, skip_box_thr=0.0001, conf_type="avg")
    np.testing.assert_allclose(got.xyxy, eb * wh, rtol=0, atol=1e-9)
    np.testing.assert_allclose(got.scores, es, rtol=0, atol=1e-12)
    assert got.labels.tolist() == [0] and got.scores.dtype == np.float64 and got.labels.dtype == np.int64
    # the 2-class filter's defaults: low 0.08, high 0.95
    t = _boxes([("a", 0, 1, 1, 9, 9, 0.9), ("b", 0, 1, 1, 9, 9, 0.9), ("c", 0, 1, 1, 9, 9, 0.9)])
    out = PP.two_class_filter(t, {"a": 0.079, "b": 0.94, "c": 0.95}, normal_class=NF)
    got = sorted(zip(out["image_id"], out["class_id"], out["score"].round(6)))
    assert got == [("a", 14, 1.0), ("b", 0, 0.9), ("b", 14, 0.06), ("c", 0, 0.9)]


def test_apply_to_an_empty_table_and_ties_in_input_order():
    out = PP.apply(_boxes([("a", 0, 1, 1, 5, 5, 0.5)]).iloc[:0], None, _cfg(), NF)
    assert len(out) == 0 and list(out.columns[:9]) == ["image_id", "class_id", "class_name", "x_min", "y_min",
                                                        "x_max", "y_max", "score", "rater"]
    t = _boxes([("b", 1, 0, 0, 9, 9, 0.5), ("a", 2, 0, 0, 9, 9, 0.5), ("a", 0, 0, 0, 9, 9, 0.5), ("a", 1, 1, 1, 9, 9, 0.7)])
    out = PP.apply(t, None, _cfg(), NF)
    assert list(zip(out["image_id"], out["class_id"])) == [("a", 1), ("a", 2), ("a", 0), ("b", 1)]
    assert list(out.index) == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- edges (issue 20 survivors)
@pytest.mark.filterwarnings("ignore:.*in box:UserWarning")
def test_ensemble_looks_sizes_up_by_image_id_whatever_the_row_order():
    """The sizes table is indexed by image id: rows in another order than the tables' images (and
    extra rows) change nothing; each image is normalised by its own size (ensemble-boxes clips at 1)."""
    t1 = _boxes([("b", 0, 10, 10, 100, 200, 0.9), ("a", 1, 20, 20, 120, 90, 0.3), ("a", 1, 200, 100, 390, 290, 0.4)])
    t2 = _boxes([("a", 1, 30, 24, 118, 96, 0.6), ("b", 0, 14, 8, 104, 190, 0.5), ("a", 1, 210, 110, 380, 280, 0.2)])
    sizes = pd.DataFrame({"height": [900.0, 300.0, 500.0], "width": [900.0, 400.0, 250.0]}, index=["z", "a", "b"])
    got = PP.ensemble([t1, t2], sizes)      # tables list b first; sizes list z, a, b
    exp = _direct_wbf([t1, t2], sizes, 0.55, 0.0001, "avg", None)
    got = got.sort_values(["image_id", "score"], kind="stable").reset_index(drop=True)
    exp = exp.sort_values(["image_id", "score"], kind="stable").reset_index(drop=True)
    assert got["image_id"].tolist() == exp["image_id"].tolist() == ["a", "a", "b"]
    np.testing.assert_allclose(got[COORDS + ["score"]].to_numpy(float), exp[COORDS + ["score"]].to_numpy(float),
                               rtol=0, atol=1e-9)
    assert got[COORDS].to_numpy().max() > 250  # a's box past b's width survives (normalised by a's width)


def test_ensemble_drops_a_column_with_a_value_and_a_nan_on_one_image():
    t = _boxes([("a", 0, 1, 2, 30, 40, 0.6), ("a", 1, 5, 5, 9, 9, 0.3), ("b", 1, 5, 5, 9, 9, 0.3)])
    out = PP.postprocess([t.assign(fold=[1.0, np.nan, 2.0], site=["x", "x", np.nan]), t], None, _cfg(), NF)
    assert "fold" not in out                                  # a: 1 and NaN are two values
    assert out.groupby("image_id")["site"].first().fillna("?").to_dict() == {"a": "x", "b": "?"}


def test_to_arrays_fields():
    t = _boxes([("b", 3, 1, 2, 30, 40, 0.6), ("a", 14, 0, 0, 1, 1, 0.3)])
    sizes = pd.DataFrame({"height": [100, 7], "width": [200, 9]}, index=["a", "q"])
    a = PP.to_arrays(t, None, sizes, images=["c"])
    assert a.images.tolist() == ["a", "b", "c"] and a.img.tolist() == [1, 0] and a.cls.tolist() == [3, 14]
    np.testing.assert_array_equal(a.hw, [[100, 200], [np.nan, np.nan], [np.nan, np.nan]])
    assert a.probs.shape == (3, 0) and a.labels == [] and a.names == {3: "c3", 14: "No finding"}
    assert a.box.tolist() == [[1, 2, 30, 40], [0, 0, 1, 1]] and a.score.tolist() == [0.6, 0.3]
    probs = pd.DataFrame({"image_id": ["d", "a"], "abnormal": [0.25, 0.5], "c3": [1.0, 0.0]})
    a = PP.to_arrays(t, probs)
    assert a.images.tolist() == ["a", "b", "d"] and a.labels == ["abnormal", "c3"]
    np.testing.assert_array_equal(a.probs, [[0.5, 0.0], [np.nan, np.nan], [0.25, 1.0]])


def test_apply_arrays_returns_typed_empty_normal_rows_and_the_cache_is_per_normal_class():
    t = _boxes([("a", 0, 1, 2, 30, 40, 0.8), ("a", 14, 0, 0, 1, 1, 0.3), ("b", 1, 5, 5, 9, 9, 0.5)])
    a = PP.to_arrays(t)
    cfg = PP.post_config(_cfg(score_thr=0.4))
    rows, box, score, n_img, n_score = PP.apply_arrays(a, cfg, 14)
    assert rows.tolist() == [0, 1, 2] and n_img.dtype == np.int64 and n_img.shape == n_score.shape == (0,)
    assert a.images[np.concatenate([a.img[rows], n_img])].tolist() == ["a", "a", "b"]  # what tune does
    # the same arrays with no normal class: class 14 is an ordinary class, below score_thr
    assert PP.apply_arrays(a, cfg, None)[0].tolist() == [0, 2]
    assert PP.apply_arrays(a, cfg, 14)[0].tolist() == [0, 1, 2]
    # with the filter: normal rows per image position, ascending
    probs = pd.DataFrame({"image_id": ["b", "a", "c"], "abnormal": [0.5, 0.01, 0.99]})
    rows, _, _, n_img, n_score = PP.apply_arrays(PP.to_arrays(t, probs), cfg, 14)
    assert rows.tolist() == [2] and n_img.tolist() == [0, 1] and n_score.tolist() == [1.0, 0.5]


def test_empty_table_with_a_probabilities_table():
    probs = pd.DataFrame({"image_id": ["a", "b", "c"], "abnormal": [0.01, 0.5, 0.99], "c0": [0.5, 0.5, 0.5]})
    empty = _boxes([("a", 0, 1, 1, 5, 5, 0.5)]).iloc[:0]
    out = PP.apply(empty, probs, _cfg(cls_fusion="multiply", score_thr=0.1), NF)
    assert list(zip(out["image_id"], out["class_id"], out["score"])) == [("a", 14, 1.0), ("b", 14, 0.5)]
    assert len(PP.apply(empty, probs, _cfg(cls_fusion="multiply"), None)) == 0


def test_two_class_filter_keeps_the_earlier_drops():
    # p(abnormal) in the band keeps boxes, but only those the size, threshold and top-k steps kept
    t = _boxes([("a", 0, 0, 0, 10, 10, 0.9), ("a", 0, 0, 0, 10, 10, 0.8), ("a", 1, 0, 0, 10, 10, 0.2),
                ("a", 2, 0, 0, 2, 2, 0.7), ("b", 0, 0, 0, 10, 10, 0.6)])
    probs = pd.DataFrame({"image_id": ["a", "b"], "abnormal": [0.5, 0.99]})
    out = PP.apply(t, probs, _cfg(score_thr=0.3, min_box_size=3.0, top_k_per_class=1), NF)
    assert list(zip(out["image_id"], out["class_id"], out["score"])) == [("a", 0, 0.9), ("a", 14, 0.5),
                                                                           ("b", 0, 0.6)]


def test_two_class_filter_passes_its_band_and_normal_class():
    t = _boxes([("a", 0, 1, 1, 9, 9, 0.9), ("b", 0, 1, 1, 9, 9, 0.9), ("c", 0, 1, 1, 9, 9, 0.9)])
    p = {"a": 0.15, "b": 0.5, "c": 0.7}          # all three in the default band (0.08, 0.95)
    out = PP.two_class_filter(t, p, low=0.2, high=0.6, normal_class=(5, "Healthy"))
    assert sorted(zip(out["image_id"], out["class_id"], out["class_name"], out["score"].round(6))) == [
        ("a", 5, "Healthy", 1.0), ("b", 0, "c0", 0.9), ("b", 5, "Healthy", 0.5), ("c", 0, "c0", 0.9)]
    out = PP.two_class_filter(t, p, low=0.2, high=0.6, normal_class=None)   # RSNA: no normal rows
    assert sorted(zip(out["image_id"], out["class_id"])) == [("b", 0), ("c", 0)]


def test_postprocess_clips_scaled_boxes_to_the_sizes():
    t = _boxes([("a", 0, 60, 300, 90, 350, 0.9)])
    sizes = pd.DataFrame({"height": [400.0], "width": [100.0]}, index=["a"])
    out = PP.postprocess([t], None, _cfg(box_scale=2.0), NF, sizes)
    np.testing.assert_allclose(out[COORDS].to_numpy(float), [[45, 275, 100, 375]])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_cut_exactly_at_k_with_per_class_thresholds(k):
    # three boxes per image; class_thr on c1 drops its 0.35 box first, the cut keeps exactly k of the rest
    t = _boxes([("a", 0, 0, 0, 9, 9, 0.5), ("a", 1, 0, 0, 9, 9, 0.35), ("a", 0, 0, 0, 8, 8, 0.3),
                ("a", 1, 0, 0, 7, 7, 0.45)])
    out = PP.apply(t, None, _cfg(top_k=k, class_thr={"c1": 0.4}), NF)
    assert out["score"].tolist() == [0.5, 0.45, 0.3][:k]
    out = PP.apply(t, None, _cfg(top_k=k, class_thr={"c1": 0.35}), NF)  # a box exactly at its class threshold stays
    assert out["score"].tolist() == [0.5, 0.45, 0.35, 0.3][:k]


@pytest.mark.filterwarnings("ignore:.*in box:UserWarning")
def test_ensemble_gives_wbf_each_images_boxes_in_table_order():
    """Equal scores: ensemble-boxes' clusters depend on the order of the boxes, so each image's boxes
    go to WBF in table order (images interleaved, 60 rows per table), as in a direct call."""
    r = np.random.default_rng(1)
    sizes = pd.DataFrame({"height": [100.0] * 3, "width": [100.0] * 3}, index=["a", "b", "c"])
    tables = []
    for _ in range(2):
        rows = []
        for j in range(60):
            x, y = r.uniform(0, 60, 2)
            rows.append(("abc"[j % 3], int(r.integers(0, 2)), x, y, x + r.uniform(10, 40), y + r.uniform(10, 40),
                         float(r.choice([0.3, 0.5]))))
        tables.append(_boxes(rows))
    got = PP.ensemble(tables, sizes)
    exp = _direct_wbf(tables, sizes, 0.55, 0.0001, "avg", None)
    assert got["image_id"].tolist() == exp["image_id"].tolist() and got["class_id"].tolist() == exp["class_id"].tolist()
    np.testing.assert_allclose(got[COORDS + ["score"]].to_numpy(float), exp[COORDS + ["score"]].to_numpy(float),
                               rtol=0, atol=1e-9)
