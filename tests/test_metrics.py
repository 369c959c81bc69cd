"""detection.metrics: hand-computed cases per metric, cross-checks against pycocotools and a
plain-Python reference of the vinbigdata / rsna rules on seeded random cases."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from data_prep.boxes import COORDS, empty_boxes, make_boxes, xyxy_to_xywh
from detection import image_metrics as IM
from detection import metrics as M


def boxes(rows, score=None):
    """rows: (image_id, class_id, x0, y0, x1, y1[, score])."""
    if not rows:
        return empty_boxes()
    img = [r[0] for r in rows]
    cls = [r[1] for r in rows]
    xyxy = [r[2:6] for r in rows]
    sc = [r[6] if len(r) > 6 else 1.0 for r in rows]
    return make_boxes(img, cls, [f"c{c}" for c in cls], xyxy, sc)


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
    r = M.vinbigdata_map(TRUTH, boxes(PRED_ROWS), IMAGES)
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
    r = M.vinbigdata_map(TRUTH, boxes(rows), IMAGES)
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
    r = M.vinbigdata_map(TRUTH, empty_boxes(), IMAGES)
    assert r["per_class"] == {"c0": 0.0, "c1": 0.0, "No finding": 0.0}
    assert r["mAP"] == 0.0
    r = M.vinbigdata_map(empty_boxes(), boxes([("A", 0, 0, 0, 1, 1, 0.5)]), ["A"], normal_class=None)
    assert np.isnan(r["mAP"]) and r["per_class"] == {"c0": None}


def test_normal_truth_rows_are_replaced():
    t = pd.concat([TRUTH, boxes([("C", 14, 0, 0, 0, 0)])], ignore_index=True)  # a class-14 truth row
    r = M.vinbigdata_map(t, boxes(PRED_ROWS), IMAGES)
    assert r["mAP"] == pytest.approx(19 / 54, abs=1e-12)


def test_bad_prediction_rows_raise():
    p = boxes([("A", 0, 5, 0, 1, 10, 0.9)])
    with pytest.raises(ValueError, match="x_max"):
        M.vinbigdata_map(TRUTH, p, IMAGES)
    p = boxes([("A", 0, 0, 0, 1, 10, np.nan)])
    with pytest.raises(ValueError, match="score"):
        M.vinbigdata_map(TRUTH, p, IMAGES)


# ----------------------------------------------------------------------------- coco
def test_coco_hand_computed_101_point():
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 20, 20, 30, 30), ("B", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("B", 0, 50, 50, 60, 60, 0.8), ("B", 0, 0, 0, 10, 10, 0.7)])
    # TP FP TP, npos 3: precision 1 for recall <= 0.33 (34 points), 2/3 up to 0.66 (33 points), then 0
    r = M.coco_map(t, p, ["A", "B"])
    assert r["mAP"] == pytest.approx(56 / 101, abs=1e-12)
    assert r["pr"]["c0"]["q"].shape == (101,)


def _pycocotools(t, p, images, classes, iou_thr=0.4):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    iid = {im: i + 1 for i, im in enumerate(images)}
    tb, pb = xyxy_to_xywh(t[COORDS].to_numpy()), xyxy_to_xywh(p[COORDS].to_numpy())
    gt = {"images": [{"id": i} for i in iid.values()], "categories": [{"id": c + 1} for c in classes],
          "annotations": [{"id": j + 1, "image_id": iid[im], "category_id": int(c) + 1, "bbox": b.tolist(),
                           "area": float(b[2] * b[3]), "iscrowd": 0}
                          for j, (im, c, b) in enumerate(zip(t["image_id"], t["class_id"], tb))]}
    dts = [{"image_id": iid[im], "category_id": int(c) + 1, "bbox": b.tolist(), "score": float(s)}
           for im, c, b, s in zip(p["image_id"], p["class_id"], pb, p["score"]) if im in iid]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dts), "bbox")
        ev.params.iouThrs = np.array([iou_thr])
        ev.params.maxDets = [100]
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
        ev.accumulate()
    pr = ev.eval["precision"][0, :, :, 0, 0]  # (101, K)
    per = [float(pr[:, k].mean()) if (pr[:, k] > -1).all() else None for k in range(len(classes))]
    return float(np.mean(pr[pr > -1])), per


def random_case(rng, n_img=12, n_cls=4, n_t=30, n_p=150, grid=True):
    """Random truth on all but the last 3 images (normal), jittered copies + random boxes as
    predictions, scores on a 0.1 grid (many ties), classes n_cls-1 without truth."""
    imgs = [f"im{i:02d}" for i in range(n_img)]

    def rand_boxes(n):
        xy = rng.integers(0, 60, (n, 2)).astype(float) if grid else rng.uniform(0, 60, (n, 2))
        wh = rng.integers(4, 30, (n, 2)).astype(float) if grid else rng.uniform(1, 30, (n, 2))
        return [tuple(b) for b in np.concatenate([xy, xy + wh], 1)]
    t = boxes([(im, int(c), *b) for im, c, b in zip(rng.choice(imgs[:-3], n_t), rng.integers(0, n_cls - 1, n_t),
                                                     rand_boxes(n_t))])
    k = n_p // 2
    src = t.iloc[rng.integers(0, len(t), k)]
    jb = src[COORDS].to_numpy() + rng.integers(-3, 4, (k, 4))
    jb[:, 2:] = np.maximum(jb[:, 2:], jb[:, :2] + 1)
    rows = [(im, int(c), *b) for im, c, b in zip(src["image_id"], src["class_id"], jb)]
    rows += [(im, int(c), *b) for im, c, b in zip(rng.choice(imgs + ["other"], n_p - k), rng.integers(0, n_cls, n_p - k),
                                                  rand_boxes(n_p - k))]
    sc = np.round(rng.random(len(rows)), 1)
    p = boxes([(*r, s) for r, s in zip(rows, sc)])
    return t, p.sample(frac=1, random_state=int(rng.integers(1 << 30))).reset_index(drop=True), imgs


@pytest.mark.parametrize("seed", range(6))
def test_coco_equals_pycocotools(seed):
    rng = np.random.default_rng(seed)
    for i in range(6):
        few_images = i == 5  # > 100 detections per image and class: pycocotools' maxDets cut
        t, p, imgs = random_case(rng, n_img=4 if few_images else 12, n_p=900 if few_images else int(rng.integers(0, 300)),
                                 grid=i % 2 == 0)
        ref, ref_per = _pycocotools(t, p, imgs, list(range(4)))
        r = M.coco_map(t, p, imgs, class_names=[f"c{k}" for k in range(4)])
        assert abs(r["mAP"] - ref) <= 1e-9, (seed, i, r["mAP"], ref)
        ours = [r["per_class"][f"c{k}"] for k in range(4)]
        assert [v is None for v in ours] == [v is None for v in ref_per]
        assert np.allclose([v or 0 for v in ours], [v or 0 for v in ref_per], atol=1e-9, rtol=0)


# ----------------------------------------------------------------------------- plain-Python references
def _iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    i = w * h
    return i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)


def _ref_match(tr, pr, thr, strict):
    """tr: list of boxes, pr: list of boxes in processing order -> list of TP flags."""
    taken, out = [False] * len(tr), []
    for b in pr:
        best, j = -1.0, -1
        for k, g in enumerate(tr):
            if not taken[k] and _iou(b, g) > best:
                best, j = _iou(b, g), k
        ok = j >= 0 and (best > thr if strict else best >= thr)
        if ok:
            taken[j] = True
        out.append(ok)
    return out


def _ref_vinbigdata(t, p, imgs):
    aps = []
    for c in sorted(set(t["class_id"])):
        tc, pc = t[t["class_id"] == c], p[(p["class_id"] == c) & p["image_id"].isin(imgs)]
        pc = pc.iloc[np.argsort(-pc["score"].to_numpy(), kind="stable")]
        flags = [None] * len(pc)
        for im in set(pc["image_id"]):
            sel = np.flatnonzero((pc["image_id"] == im).to_numpy())
            tb = [tuple(b) for b in tc.loc[tc["image_id"] == im, COORDS].to_numpy()]
            for s, f in zip(sel, _ref_match(tb, [tuple(b) for b in pc[COORDS].to_numpy()[sel]], 0.4, False)):
                flags[s] = f
        tp = np.cumsum(np.array(flags, bool))
        rec, prec = tp / len(tc), tp / np.arange(1, len(pc) + 1)
        aps.append(_ref_voc_ap(rec, prec) if len(pc) else 0.0)
    return float(np.mean(aps))


def _ref_voc_ap(rec, prec):
    """PASCAL VOC 2010+ all-point AP written out loop by loop (the devkit's VOCap), independent of
    metrics.voc_ap: pad, make precision monotone from the right, sum the rectangles where recall steps."""
    mrec = [0.0] + [float(r) for r in rec] + [1.0]
    mpre = [0.0] + [float(q) for q in prec] + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])


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


def _ref_rsna(t, p, imgs):
    scores = []
    for im in imgs:
        tb = [tuple(b) for b in t.loc[t["image_id"] == im, COORDS].to_numpy()]
        pi = p[p["image_id"] == im]
        pi = pi.iloc[np.argsort(-pi["score"].to_numpy(), kind="stable")]
        pb = [tuple(b) for b in pi[COORDS].to_numpy()]
        if not tb and not pb:
            continue
        per_t = []
        for thr in M.RSNA_THRESHOLDS:
            tp = sum(_ref_match(tb, pb, thr, True))
            per_t.append(tp / (len(tb) + len(pb) - tp))
        scores.append(np.mean(per_t))
    return float(np.mean(scores))


def test_rsna_equals_reference():
    rng = np.random.default_rng(7)
    for i in range(6):
        t, p, imgs = random_case(rng, n_cls=2, n_p=int(rng.integers(1, 80)), grid=i % 2 == 0)
        t, p = t.assign(class_id=0), p.assign(class_id=0)
        assert M.rsna_score(t, p, imgs)["mAP"] == pytest.approx(_ref_rsna(t, p, imgs), abs=1e-12)


# ----------------------------------------------------------------------------- image level, costs
def test_image_level_auc_f1():
    t = boxes([("A", 0, 0, 0, 10, 10), ("B", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 5, 5, 0.9), ("B", 0, 0, 0, 5, 5, 0.3), ("C", 0, 0, 0, 5, 5, 0.5),
               ("B", 14, 0, 0, 1, 1, 0.2), ("C", 14, 0, 0, 1, 1, 0.9)])
    r = IM.image_level(t, p, ["A", "B", "C", "D"])
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
    t = boxes([("A", 0, 0, 0, 10, 10), ("A", 0, 20, 20, 30, 30), ("B", 1, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("A", 0, 50, 50, 60, 60, 0.8), ("A", 0, 60, 60, 70, 70, 0.1),
               ("B", 1, 0, 0, 10, 10, 0.95), ("C", 2, 0, 0, 5, 5, 0.4), ("C", 14, 0, 0, 1, 1, 0.9)])
    df = IM.image_costs(t, p, ["A", "B", "C"], conf_thr=0.25)
    assert list(df.columns) == ["image_id", "n_tp", "n_fp", "n_fn", "cost"]
    assert df["image_id"].tolist() == ["A", "C", "B"]
    a = df.set_index("image_id")
    assert a.loc["A", ["n_tp", "n_fp", "n_fn"]].tolist() == [1, 1, 1] and a.loc["A", "cost"] == pytest.approx(1.8)
    assert a.loc["C", "cost"] == pytest.approx(0.4) and a.loc["B", "cost"] == 0


def test_normal_class_truth_named_by_its_dataset_or_normal():
    # the normal class' truth boxes (one per image without findings) carry the registered dataset's
    # name for that class ("No finding" for VinBigData's 14), else "normal"
    t = boxes([("A", 0, 0, 0, 10, 10)])
    for cls, name in ((14, "No finding"), (99, "normal")):
        enc = M.encode(t, boxes([]), ["A", "B"], normal_class=cls)
        assert enc.names == {0: "c0", cls: name}
        assert enc.t_cls.tolist() == [0, cls] and enc.t_img.tolist() == [0, 1]
        np.testing.assert_array_equal(enc.t_box[1], [0, 0, 1, 1])


def _ref_rsna_by_class(t, p, imgs, thresholds):
    """The rsna rule with several classes, written out: per image and threshold, predictions (by
    descending score, stable) match truths of their own class only; TP / (truths + predictions - TP)
    over all classes; images with neither are skipped. Returns (mean, {threshold: mean over images})."""
    per_img = []
    for im in imgs:
        ti, pi = t[t["image_id"] == im], p[p["image_id"] == im]
        if not len(ti) and not len(pi):
            continue
        row = []
        for thr in thresholds:
            tp = 0
            for c in set(ti["class_id"]) | set(pi["class_id"]):
                tc, pc = ti[ti["class_id"] == c], pi[pi["class_id"] == c]
                pc = pc.iloc[np.argsort(-pc["score"].to_numpy(), kind="stable")]
                tp += sum(_ref_match([tuple(b) for b in tc[COORDS].to_numpy()], [tuple(b) for b in pc[COORDS].to_numpy()],
                                     thr, True))
            row.append(tp / (len(ti) + len(pi) - tp))
        per_img.append(row)
    a = np.array(per_img)
    return float(a.mean()), dict(zip(thresholds, a.mean(0)))


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
