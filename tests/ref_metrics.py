"""Independent references of the metrics tests: pycocotools' COCOeval driven directly, and the
vinbigdata / rsna rules and VOC AP written out in plain Python; plus the box-table builder and
seeded random cases (shared by test_metrics.py, test_metrics_edges.py, test_image_metrics.py)."""
from __future__ import annotations

import contextlib
import io

import numpy as np

from data_prep.core.boxes import COORDS, empty_boxes, make_boxes, xyxy_to_xywh
from detection.evaluation import metrics as M


def boxes(rows, score=None):
    """rows: (image_id, class_id, x0, y0, x1, y1[, score])."""
    if not rows:
        return empty_boxes()
    img = [r[0] for r in rows]
    cls = [r[1] for r in rows]
    xyxy = [r[2:6] for r in rows]
    sc = [r[6] if len(r) > 6 else 1.0 for r in rows]
    return make_boxes(img, cls, [f"c{c}" for c in cls], xyxy, sc)


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
