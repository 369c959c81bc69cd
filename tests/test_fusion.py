"""data_prep.fusion: hand-computed WBF cases, equality with direct ensemble-boxes calls,
competition CSV round trip, CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ensemble_boxes import nms, non_maximum_weighted, soft_nms, weighted_boxes_fusion

from data_prep.boxes import as_image_table, denormalize_xyxy, make_boxes, normalize_xyxy
from data_prep.datasets import vinbigdata
from data_prep.fusion import COMPETITION_COLUMNS, fuse, write_competition_csv

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


# ----------------------------------------------------------------------------- hand-computed
def test_two_raters_overlapping_are_averaged():
    images = _images([("a", 100, 200, "R1|R2")])
    boxes = _boxes([("a", 3, "R1", 10, 10, 50, 50), ("a", 3, "R2", 14, 14, 54, 54)])  # IoU 1296/1904
    out = fuse(boxes, images)
    assert len(out) == 1
    r = out.iloc[0]
    np.testing.assert_allclose(r[["x_min", "y_min", "x_max", "y_max"]].astype(float), [12, 12, 52, 52], atol=1e-4)
    assert r["score"] == 1.0 and r["n_raters"] == 2 and r["rater"] == "" and r["class_name"] == "c3"


def test_non_overlapping_stay_separate_with_score_one_over_models():
    images = _images([("a", 100, 100, "R1|R2|R3")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 30, 30), ("a", 0, "R2", 60, 60, 90, 90)])
    out = fuse(boxes, images).sort_values("x_min")
    np.testing.assert_array_equal(out[["x_min", "y_min", "x_max", "y_max"]].to_numpy(),
                                  [[10, 10, 30, 30], [60, 60, 90, 90]])
    assert out["n_raters"].tolist() == [1, 1]
    assert out["score"].tolist() == [1 / 3, 1 / 3]  # 3 readers (R3 wrote "No finding")


def test_three_raters():
    images = _images([("a", 100, 100, "R1|R2|R3")])
    boxes = _boxes([("a", 1, "R1", 10, 10, 50, 50), ("a", 1, "R2", 12, 12, 52, 52),
                    ("a", 1, "R3", 11, 11, 51, 51), ("a", 2, "R3", 80, 80, 95, 95),
                    ("a", 2, "R1", 60, 60, 70, 70)])
    out = fuse(boxes, images)
    c1 = out[out.class_id == 1].iloc[0]
    np.testing.assert_allclose(c1[["x_min", "y_min", "x_max", "y_max"]].astype(float), [11, 11, 51, 51], atol=1e-4)
    assert (c1["score"], c1["n_raters"]) == (1.0, 3)
    c2 = out[out.class_id == 2].sort_values("x_min")
    assert c2["n_raters"].tolist() == [1, 1] and c2["score"].tolist() == [1 / 3, 1 / 3]
    # two raters agree, the third elsewhere: 2/3 and 1/3
    boxes2 = _boxes([("a", 1, "R1", 10, 10, 50, 50), ("a", 1, "R2", 12, 12, 52, 52), ("a", 1, "R3", 70, 70, 90, 90)])
    out2 = fuse(boxes2, images).sort_values("x_min")
    assert out2["n_raters"].tolist() == [2, 1]
    np.testing.assert_allclose(out2["score"], [2 / 3, 1 / 3], rtol=1e-7)
    np.testing.assert_allclose(out2.iloc[0][["x_min", "x_max"]].astype(float), [11, 51], atol=1e-4)


def test_same_rater_twice_counts_once():
    images = _images([("a", 100, 100, "R1|R2|R3")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50), ("a", 0, "R1", 11, 11, 51, 51)])
    out = fuse(boxes, images)
    assert len(out) == 1 and out["n_raters"].iloc[0] == 1
    assert out["score"].iloc[0] == pytest.approx(2 / 3)  # WBF counts boxes, not raters, in its score


def test_none_is_identity_and_nms_keeps_one():
    images = _images([("a", 100, 100, "R1|R2")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50), ("a", 0, "R2", 12, 12, 52, 52)])
    raw = fuse(boxes, images, method="none")
    np.testing.assert_array_equal(raw[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), boxes[["x_min", "y_min", "x_max", "y_max"]].to_numpy())
    assert raw["n_raters"].tolist() == [1, 1] and (raw["rater"] == "").all()
    kept = fuse(boxes, images, method="nms")
    assert len(kept) == 1 and kept["n_raters"].iloc[0] == 2 and kept["score"].iloc[0] == 1.0


def test_skip_and_zero_area_are_counted():
    images = _images([("a", 100, 100, "R1|R2")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50, 0.05), ("a", 0, "R2", 20, 20, 20, 60),
                    ("a", 0, "R2", 60, 60, 80, 80)])
    out = fuse(boxes, images, skip_box_thr=0.1)
    assert out.attrs["dropped"] == {"below_skip_box_thr": 1, "zero_area": 1}
    assert len(out) == 1 and out["x_min"].iloc[0] == 60


def test_errors():
    images = _images([("a", 100, 100, "R1")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50)])
    with pytest.raises(ValueError, match="method 'bogus'"):
        fuse(boxes, images, method="bogus")
    with pytest.raises(ValueError, match="conf_type"):
        fuse(boxes, images, conf_type="mean")
    with pytest.raises(ValueError, match="'b' is not in the image table"):
        fuse(_boxes([("b", 0, "R1", 1, 1, 5, 5)]), images)
    with pytest.raises(ValueError, match="height x width 0 x 0"):
        fuse(boxes, _images([("a", 0, 0, "R1")]))
    assert len(fuse(boxes.iloc[:0], images)) == 0


# ----------------------------------------------------------------------------- equality with ensemble-boxes
@pytest.fixture(scope="module")
def real(test_data):
    return vinbigdata.load(test_data / "loaders_vinbig_train.csv", test_data / "loaders_vinbig_meta.csv")


@pytest.mark.parametrize("conf_type, iou_thr", [
    ("avg", 0.4), ("avg", 0.55), ("avg", 0.1), ("max", 0.4), ("box_and_model_avg", 0.4),
    ("absent_model_aware_avg", 0.4)])
def test_wbf_equals_ensemble_boxes_on_real_rows(real, conf_type, iou_thr):
    images, boxes = real
    assert_same(fuse(boxes, images, "wbf", iou_thr, conf_type=conf_type),
                reference(boxes, images, "wbf", iou_thr, conf_type=conf_type))


@pytest.mark.parametrize("method", ["nms", "soft_nms", "nmw"])
def test_other_methods_equal_ensemble_boxes_on_real_rows(real, method):
    images, boxes = real
    ours = fuse(boxes, images, method, 0.4)
    assert_same(ours, reference(boxes, images, method, 0.4))
    assert (ours["n_raters"] >= 1).all() and (ours["n_raters"] <= 3).all()


def test_wbf_n_raters_consistent_with_score(real):
    """avg score = min(M, boxes in cluster) / M, so n_raters <= score * M (3 readers each)."""
    images, boxes = real
    out = fuse(boxes, images)
    n_boxes = np.rint(out["score"].to_numpy() * 3).astype(int)
    assert (out["n_raters"] <= n_boxes).all() and (out["n_raters"] >= 1).all()
    assert set(out["n_raters"]) == {1, 2, 3}


def _random_case(rng, n_images=25):
    rows, ims = [], []
    for k in range(n_images):
        h, w = int(rng.integers(500, 3000)), int(rng.integers(500, 3000))
        raters = [f"R{r}" for r in rng.choice(12, size=int(rng.integers(1, 5)), replace=False)]
        ims.append((f"img{k}", h, w, "|".join(sorted(raters))))
        centres = rng.random((int(rng.integers(1, 4)), 2)) * 0.7 + 0.15
        for _ in range(int(rng.integers(0, 25))):
            cx, cy = centres[rng.integers(len(centres))] + rng.normal(0, 0.03, 2)
            bw, bh = rng.uniform(0.05, 0.3, 2)
            box = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
            box = np.clip(np.round(box, int(rng.integers(0, 3))), 0, [w, h, w, h])
            score = 1.0 if rng.random() < 0.5 else float(np.round(rng.random(), 1))
            rows.append((f"img{k}", int(rng.integers(0, 3)), str(rng.choice(raters)), *box, score))
    return _boxes(rows), _images(ims)


@pytest.mark.parametrize("seed, conf_type, iou_thr, skip", [
    (0, "avg", 0.4, 0.0), (1, "avg", 0.2, 0.3), (2, "max", 0.7, 0.0), (3, "box_and_model_avg", 0.4, 0.0),
    (4, "absent_model_aware_avg", 0.3, 0.2), (5, "avg", 0.55, 0.0)])
def test_wbf_equals_ensemble_boxes_on_random_cases(seed, conf_type, iou_thr, skip):
    """Random clustered boxes: 1-4 raters, 3 classes, rounded coordinates, tied and random scores."""
    boxes, images = _random_case(np.random.default_rng(seed))
    assert_same(fuse(boxes, images, "wbf", iou_thr, skip, conf_type),
                reference(boxes, images, "wbf", iou_thr, skip, conf_type))


# ----------------------------------------------------------------------------- competition CSV
def test_competition_csv_round_trip(real, tmp_path):
    images, boxes = real
    fused = fuse(boxes, images)
    path = write_competition_csv(fused, images, tmp_path / "out" / "fused.csv")
    raw = pd.read_csv(path, dtype={"image_id": str, "rad_id": str})
    assert list(raw.columns) == COMPETITION_COLUMNS
    assert raw["rad_id"].isna().all()
    normal = raw[raw.class_id == vinbigdata.NORMAL_ID]
    n_normal = int((~images.image_id.isin(fused.image_id)).sum())
    assert len(normal) == n_normal == normal.image_id.nunique() == 25
    assert normal[["x_min", "y_min", "x_max", "y_max"]].isna().all().all()
    assert (normal["class_name"] == vinbigdata.NORMAL_NAME).all() and (normal["n_raters"] == 3).all()
    assert not list(tmp_path.glob("out/*.tmp"))

    im2, bx2 = vinbigdata.load(path)
    assert set(im2.image_id) == set(images.image_id) and (im2["raters"] == "").all()
    cols = ["image_id", "class_id", "class_name", "x_min", "y_min", "x_max", "y_max", "n_raters"]
    a = fused[cols].sort_values(cols[:7]).reset_index(drop=True)
    b = bx2[cols].sort_values(cols[:7]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def test_cli_fuse(tmp_path):
    from detection.cli import main

    (tmp_path / "train.csv").write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "a,Cardiomegaly,3,R1,10,10,50,50\n"
        "a,Cardiomegaly,3,R2,14,14,54,54\n"
        "b,No finding,14,R1,,,,\n")
    (tmp_path / "meta.csv").write_text("image_id,dim0,dim1\na,100,200\nb,300,300\n")
    out = tmp_path / "fused.csv"
    rc = main(["fuse", "--dataset", "vinbigdata", "--labels", str(tmp_path / "train.csv"),
               "--meta", str(tmp_path / "meta.csv"), "--method", "wbf", "--iou", "0.4", "--skip", "0",
               "--out", str(out)])
    assert rc == 0
    df = pd.read_csv(out)
    assert df["class_id"].tolist() == [3, 14] and df["n_raters"].tolist() == [2, 1]
    np.testing.assert_allclose(df.loc[0, ["x_min", "y_min", "x_max", "y_max"]].astype(float), [12, 12, 52, 52], atol=1e-4)


def test_full_real_file_matches_reference_sample(shared_data):
    d = shared_data / "vinbigdata"
    images, boxes = vinbigdata.load(d / "train.csv.gz", d / "train_meta.csv.gz")
    fused = fuse(boxes, images)
    assert fused["image_id"].nunique() == 4394
    ids = pd.Series(boxes["image_id"].unique()).sample(60, random_state=0)
    sub = boxes[boxes.image_id.isin(ids)]
    assert_same(fused[fused.image_id.isin(ids)], reference(sub, images))


def test_all_boxes_skipped_gives_empty_table():
    images = _images([("a", 100, 100, "R1")])
    out = fuse(_boxes([("a", 0, "R1", 10, 10, 50, 50, 0.01)]), images, skip_box_thr=0.5)
    assert len(out) == 0 and "n_raters" in out and out.attrs["dropped"]["below_skip_box_thr"] == 1


@pytest.mark.parametrize("method", ["wbf", "nms", "nmw"])
def test_exact_iou_tie_is_not_a_match_as_in_ensemble_boxes(method):
    """IoU exactly equal to iou_thr (0.5, exact in binary floats): ensemble-boxes matches only on
    IoU > thr, so the two boxes stay apart. Guards the strict comparison in every method."""
    images = _images([("a", 100, 100, "R1|R2")])
    boxes = _boxes([("a", 0, "R1", 0, 0, 50, 50), ("a", 0, "R2", 0, 0, 25, 50)])   # inter 1250 / union 2500
    ours = fuse(boxes, images, method, iou_thr=0.5)
    assert len(ours) == 2
    assert_same(ours, reference(boxes, images, method, iou_thr=0.5))
    assert len(fuse(boxes, images, method, iou_thr=0.4999)) == 1                   # just below: fused


# ----------------------------------------------------------------------------- rater subsets and weights
def test_weighted_two_raters_by_hand():
    """R1 weight 3, R2 weight 1, scores 1: coordinates are the 3:1 weighted mean, the confidence
    (3 + 1) / 2 * min(2, 2) / (3 + 1) = 1 (ensemble-boxes' avg with weights); R1's box alone
    would score 3 * min(2, 1) / 4 = 0.75, R2's alone 1 / 4."""
    images = _images([("a", 100, 100, "R1|R2")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50), ("a", 0, "R2", 14, 14, 54, 54)])
    out = fuse(boxes, images, weights={"R1": 3})
    np.testing.assert_allclose(out[["x_min", "y_min", "x_max", "y_max"]].to_numpy()[0], [11, 11, 51, 51], atol=1e-4)
    assert out["score"].iloc[0] == 1.0 and out["n_raters"].iloc[0] == 2
    assert_same(out, reference(boxes, images, weights={"R1": 3}))
    apart = _boxes([("a", 0, "R1", 10, 10, 30, 30), ("a", 0, "R2", 60, 60, 90, 90)])
    assert sorted(fuse(apart, images, weights={"R1": 3})["score"]) == [0.25, 0.75]
    # the unweighted fusion is the midpoint: the weight moved the box
    np.testing.assert_allclose(fuse(boxes, images)[["x_min"]].to_numpy()[0], [12], atol=1e-4)


WEIGHTS = [{"R0": 2}, {"R1": 0.5, "R3": 3, "R7": 1.5}, {"R2": 2, "R5": 2, "R9": 4, "R11": 0.25}]


@pytest.mark.parametrize("seed, conf_type, iou_thr, skip, w", [
    (10, "avg", 0.4, 0.0, 0), (11, "avg", 0.2, 0.3, 1), (12, "max", 0.5, 0.0, 2), (13, "box_and_model_avg", 0.4, 0.0, 1),
    (14, "absent_model_aware_avg", 0.3, 0.2, 2), (15, "box_and_model_avg", 0.55, 0.0, 2), (16, "max", 0.4, 0.0, 1)])
def test_weighted_wbf_equals_ensemble_boxes_on_random_cases(seed, conf_type, iou_thr, skip, w):
    boxes, images = _random_case(np.random.default_rng(seed))
    ours = fuse(boxes, images, "wbf", iou_thr, skip, conf_type, weights=WEIGHTS[w])
    assert_same(ours, reference(boxes, images, "wbf", iou_thr, skip, conf_type, weights=WEIGHTS[w]))
    # and the weights did change something
    plain = fuse(boxes, images, "wbf", iou_thr, skip, conf_type)
    assert not np.array_equal(plain["score"].to_numpy(), ours["score"].to_numpy())


@pytest.mark.parametrize("method", ["nms", "soft_nms", "nmw"])
def test_weighted_other_methods_equal_ensemble_boxes(method):
    boxes, images = _random_case(np.random.default_rng(21))
    assert_same(fuse(boxes, images, method, 0.4, weights=WEIGHTS[1]),
                reference(boxes, images, method, 0.4, weights=WEIGHTS[1]))


def test_weighted_wbf_on_real_rows(real):
    images, boxes = real
    w = {"R8": 2, "R9": 0.5}
    assert_same(fuse(boxes, images, weights=w), reference(boxes, images, weights=w))


def test_rater_subset_equals_ensemble_boxes_on_their_boxes(real):
    from data_prep.fusion import select_raters

    images, boxes = real
    sub_im, sub_bx, info = select_raters(images, boxes, ["R8", "R10"])
    readers = images["raters"].str.split("|")
    read = readers.map(lambda rs: bool({"R8", "R10"} & set(rs)))
    assert info["images_kept"] == read.sum() == len(sub_im) and info["images_left_out"] == (~read).sum() > 0
    assert set(sub_bx["rater"]) <= {"R8", "R10"} and set(sub_im["raters"].str.split("|").explode()) <= {"R8", "R10"}
    # the image table's readers shrink to the chosen ones (ensemble-boxes' model list)
    mine = boxes[boxes["rater"].isin(["R8", "R10"])]
    ref_im = images[read].copy()
    ref_im["raters"] = readers[read].map(lambda rs: "|".join(r for r in rs if r in ("R8", "R10")))
    ours = fuse(sub_bx, sub_im, weights={"R8": 2})
    assert_same(ours, reference(mine, ref_im, weights={"R8": 2}))
    # subset fusion differs from the all-radiologist one on the kept images
    assert len(ours) < len(fuse(boxes, images)[lambda d: d.image_id.isin(sub_im.image_id)])


def test_rater_subset_normal_and_left_out_by_hand():
    from data_prep.fusion import select_raters

    images = _images([("a", 100, 100, "R1|R2"), ("b", 100, 100, "R2|R3"), ("c", 100, 100, "R3")])
    boxes = _boxes([("a", 0, "R2", 10, 10, 50, 50), ("b", 0, "R2", 10, 10, 50, 50), ("b", 0, "R3", 12, 12, 50, 50),
                    ("c", 1, "R3", 1, 1, 9, 9)])
    im, bx, info = select_raters(images, boxes, ["R1", "R2"])
    assert im["image_id"].tolist() == ["a", "b"] and im["raters"].tolist() == ["R1|R2", "R2"]
    assert info["images_left_out"] == 1 and info["boxes_left_out"] == 2
    fused = fuse(bx, im)
    # a: R1 wrote nothing (normal), R2 one box: one of two models -> 0.5; b: R2 alone -> 1.0
    assert fused.set_index("image_id")["score"].to_dict() == {"a": 0.5, "b": 1.0}
    im, bx, _ = select_raters(images, boxes, ["R1"])
    assert im["image_id"].tolist() == ["a"] and len(bx) == 0          # R1's "No finding": a is normal
    with pytest.raises(ValueError, match=r"raters \['R99'\] read no image.*'R1', 'R2', 'R3'"):
        select_raters(images, boxes, ["R99"])
    with pytest.raises(ValueError, match="R1 = -1"):
        fuse(boxes, images, weights={"R1": -1})


def test_cli_fuse_raters_and_weights(tmp_path):
    from detection.cli import main

    (tmp_path / "train.csv").write_text(
        "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
        "a,Cardiomegaly,3,R8,10,10,50,50\n"
        "a,Cardiomegaly,3,R10,14,14,54,54\n"
        "a,Cardiomegaly,3,R9,40,40,90,90\n"
        "b,No finding,14,R9,,,,\n")
    (tmp_path / "meta.csv").write_text("image_id,dim0,dim1\na,100,100\nb,300,300\n")
    out = tmp_path / "fused.csv"
    rc = main(["fuse", "--dataset", "vinbigdata", "--labels", str(tmp_path / "train.csv"), "--meta",
               str(tmp_path / "meta.csv"), "--raters", "R8,R10", "--out", str(out), "rater_weights={R8: 3}"])
    assert rc == 0
    df = pd.read_csv(out)
    assert df["image_id"].tolist() == ["a"] and df["n_raters"].tolist() == [2]   # b (R9 only) left out
    np.testing.assert_allclose(df.loc[0, ["x_min", "y_min", "x_max", "y_max"]].astype(float), [11, 11, 51, 51], atol=1e-4)


def test_competition_csv_text_by_hand(tmp_path):
    """The train.csv-form file as text: finding rows in the fused table's order with n_raters as
    integers, then one "No finding" row per image without boxes (n_raters = its listed readers,
    empty when unknown); a box table without n_raters counts 1 rater per box."""
    images = _images([("a", 100, 100, "R1|R2"), ("n", 50, 50, "R1|R2|R3"), ("m", 50, 50, "")])
    fused = _boxes([("a", 3, "", 10, 10.5, 50, 60.25, 0.75)]).assign(n_raters=2)
    path = write_competition_csv(fused, images, tmp_path / "f.csv")
    assert path.read_text().splitlines() == [
        ",".join(COMPETITION_COLUMNS),
        "a,c3,3,,10.0,10.5,50.0,60.25,2",
        "n,No finding,14,,,,,,3",
        "m,No finding,14,,,,,,",
    ]
    unread = _images([("u", 50, 50, "R1")]).assign(raters=[None])           # readers unknown: n_raters empty
    assert write_competition_csv(fused.iloc[:0], unread, tmp_path / "u.csv").read_text().splitlines()[1:] == [
        "u,No finding,14,,,,,,"]
    two = pd.concat([fused, _boxes([("a", 5, "", 1, 2, 3, 4, 0.5)])], ignore_index=True).drop(columns="n_raters")
    write_competition_csv(two, images.iloc[:1], tmp_path / "g.csv")
    assert (tmp_path / "g.csv").read_text().splitlines()[1:] == ["a,c3,3,,10.0,10.5,50.0,60.25,1",
                                                                 "a,c5,5,,1.0,2.0,3.0,4.0,1"]


def test_select_raters_natural_order_weights_check_and_tables_without_raters():
    from data_prep.fusion import select_raters

    images = _images([("a", 100, 100, "R2|R10"), ("b", 100, 100, "R9"), ("c", 100, 100, None)])
    boxes = _boxes([("a", 0, "R10", 10, 10, 50, 50), ("a", 0, "R2", 12, 12, 50, 50), ("b", 1, "R9", 1, 1, 9, 9)])
    im, bx, info = select_raters(images, boxes, ["R10", "R2"])
    assert info == {"raters": ["R2", "R10"], "images_kept": 1, "images_left_out": 2, "boxes_kept": 2,
                    "boxes_left_out": 1}
    assert list(im.columns) == list(images.columns) and list(im.index) == [0] and list(bx.index) == [0, 1]
    assert list(bx.columns) == list(boxes.columns)
    # radiologists listed in natural order; an image with no readers adds none
    with pytest.raises(ValueError, match=r"among \['R2', 'R9', 'R10'\]"):
        select_raters(images, boxes, ["R1"])
    with pytest.raises(ValueError, match=r"\['R99'\] read no image"):
        select_raters(images, boxes, None, weights={"R99": 2})
    # no raters column: nothing to choose from, the tables come back as they are
    plain = images.drop(columns="raters")
    same_im, same_bx, info = select_raters(plain, boxes, None)
    assert same_im is plain and same_bx is boxes and info == {}


# ----------------------------------------------------------------------------- edges: empty tables, thresholds 0 and 1
@pytest.mark.parametrize("method", ["wbf", "nms", "soft_nms", "nmw", "none"])
def test_empty_box_table_gives_an_empty_box_table_every_method(method, tmp_path):
    """No boxes in: a box table with the canonical columns + n_raters (int64), nothing dropped,
    and it writes a train.csv whose every image is one "No finding" row."""
    from data_prep.boxes import BOX_COLUMNS
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
    from data_prep import wbf
    images = _images([("a", 100, 100, "R1")])
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50)])
    monkeypatch.setattr(wbf, "TESTED_ENSEMBLE_BOXES", "0.0.1")
    monkeypatch.setattr(wbf, "_version_checked", False)
    with caplog.at_level(logging.WARNING, logger="data_prep.fusion"):
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
