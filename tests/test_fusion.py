"""data_prep.labels.fusion: hand-computed WBF cases, equality with direct ensemble-boxes calls,
competition CSV round trip, rater subsets and weights, CLI (edges: test_fusion_edges.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ref_fusion import _boxes, _images, assert_same, reference

from data_prep.datasets import vinbigdata
from data_prep.labels.fusion import COMPETITION_COLUMNS, fuse, write_competition_csv


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
               "--meta", str(tmp_path / "meta.csv"), "--method", "wbf", "--fusion-iou", "0.4", "--skip", "0",
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
    from data_prep.labels.fusion import select_raters

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
    from data_prep.labels.fusion import select_raters

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
    from data_prep.labels.fusion import select_raters

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
