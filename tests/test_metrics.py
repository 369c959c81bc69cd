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


def _pycocotools(t, p, images, classes, iou_thr=0.4, max_dets=100, precision=False):
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
        ev.params.maxDets = [max_dets]
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.evaluate()
        ev.accumulate()
    pr = ev.eval["precision"][0, :, :, 0, 0]  # (101, K)
    per = [float(pr[:, k].mean()) if (pr[:, k] > -1).all() else None for k in range(len(classes))]
    if precision:
        return float(np.mean(pr[pr > -1])), per, pr
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
        # bit-equal: the same float operations in the same order (mean over every (recall, class)
        # entry, not the mean of the per-class means; precision tp / (tp + fp + eps))
        assert r["mAP"] == ref, (seed, i, r["mAP"], ref)
        ours = [r["per_class"][f"c{k}"] for k in range(4)]
        assert [v is None for v in ours] == [v is None for v in ref_per]
        assert [v or 0 for v in ours] == [v or 0 for v in ref_per]


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


def _ref_vinbigdata(t, p, imgs, thr=0.4):
    aps = []
    for c in sorted(set(t["class_id"])):
        tc, pc = t[t["class_id"] == c], p[(p["class_id"] == c) & p["image_id"].isin(imgs)]
        pc = pc.iloc[np.argsort(-pc["score"].to_numpy(), kind="stable")]
        flags = [None] * len(pc)
        for im in set(pc["image_id"]):
            sel = np.flatnonzero((pc["image_id"] == im).to_numpy())
            tb = [tuple(b) for b in tc.loc[tc["image_id"] == im, COORDS].to_numpy()]
            for s, f in zip(sel, _ref_match(tb, [tuple(b) for b in pc[COORDS].to_numpy()[sel]], thr, False)):
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


# ----------------------------------------------------------------------------- edges (issue 20)
def test_bad_rows_name_the_table_they_are_in():
    bad = boxes([("A", 0, 5, 0, 1, 10, 0.9)])
    with pytest.raises(ValueError, match="^truth row 0: x_max"):
        M.vinbigdata_map(bad, boxes([("A", 0, 0, 0, 1, 1, 0.5)]), ["A"])
    with pytest.raises(ValueError, match="^predictions row 0: x_max"):
        M.coco_map(boxes([("A", 0, 0, 0, 1, 1)]), bad, ["A"])


def test_boxes_outside_the_evaluated_images_are_counted_in_the_log(caplog):
    t = boxes([("A", 0, 0, 0, 10, 10), ("Z", 0, 0, 0, 10, 10)])
    p = boxes([("A", 0, 0, 0, 10, 10, 0.9), ("Y", 0, 0, 0, 10, 10, 0.8), ("Y", 0, 1, 1, 9, 9, 0.7),
               ("X", 0, 0, 0, 5, 5, 0.6)])
    with caplog.at_level("INFO", logger="detection.metrics"):
        assert M.vinbigdata_map(t, p, ["A"], normal_class=None)["mAP"] == 1.0
    msgs = [r.getMessage() for r in caplog.records if "outside the evaluated set" in r.getMessage()]
    assert msgs == ["truth: 1 box(es) on 1 image(s) outside the evaluated set ignored",
                    "predictions: 3 box(es) on 2 image(s) outside the evaluated set ignored"]
    caplog.clear()
    with caplog.at_level("INFO", logger="detection.metrics"):   # everything evaluated: nothing said
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
