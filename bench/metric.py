"""Benchmark: our COCO-style AP@0.4 (detection.evaluation.metrics.coco_map) against pycocotools COCOeval.

Data: 3,000 VinBigData train images (the real per-radiologist boxes of ../shared/data as truth,
normal images included) and ~100,000 detections: every truth box jittered twice plus uniform
random false positives, scores uniform on a 0.001 grid (so there are ties). Without ../shared a
synthetic generator gives the same sizes. pycocotools runs with iouThrs=[0.4], maxDets=[100],
areaRng all only; its time is evaluate() + accumulate() only (COCO index building and loadRes are
excluded); ours is the whole coco_map() call from the two box tables. The APs must be equal.

    python bench/metric.py [--images 3000] [--dets 100000] [--seed 0] [--synthetic]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data" / "vinbigdata"

from data_prep.core.boxes import COORDS, make_boxes, xyxy_to_xywh  # noqa: E402
from data_prep.datasets import describe  # noqa: E402
from detection.evaluation.metrics import coco_map  # noqa: E402

N_CLS = len(describe("vinbigdata").classes)  # VinBigData's finding classes


def real_truth(n_images: int, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    from data_prep.datasets import vinbigdata
    images, boxes = vinbigdata.load(SHARED / "train.csv.gz", SHARED / "train_meta.csv.gz")
    images = images.iloc[np.sort(rng.choice(len(images), n_images, replace=False))].reset_index(drop=True)
    return images, boxes[boxes["image_id"].isin(set(images["image_id"]))].reset_index(drop=True)


def synthetic_truth(n_images: int, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    h = rng.integers(2000, 3100, n_images)
    w = rng.integers(2000, 3100, n_images)
    images = pd.DataFrame({"image_id": [f"synth{i:05d}" for i in range(n_images)], "height": h, "width": w})
    n_box = np.where(rng.random(n_images) < 0.3, rng.poisson(8, n_images), 0)  # 70% normal, like VinBigData
    img = np.repeat(np.arange(n_images), n_box)
    x0, y0 = rng.random(len(img)) * w[img] * 0.8, rng.random(len(img)) * h[img] * 0.8
    bw, bh = rng.uniform(0.02, 0.2, len(img)) * w[img], rng.uniform(0.02, 0.2, len(img)) * h[img]
    boxes = make_boxes(images["image_id"].to_numpy()[img], rng.integers(0, N_CLS, len(img)), "",
                       np.stack([x0, y0, x0 + bw, y0 + bh], 1))
    boxes["class_name"] = boxes["class_id"].astype(str)
    return images, boxes


def detections(images, truth, n_dets: int, rng) -> pd.DataFrame:
    """Each truth box jittered twice (+-10% of its size) + uniform random boxes up to n_dets."""
    tb = np.repeat(truth[COORDS].to_numpy(), 2, 0)
    wh = np.repeat((tb[:, 2:] - tb[:, :2]), 2, 1)
    jit = tb + rng.uniform(-0.1, 0.1, tb.shape) * wh
    jit[:, 2:] = np.maximum(jit[:, 2:], jit[:, :2] + 1)
    t_img = np.repeat(truth["image_id"].to_numpy(), 2)
    t_cls = np.repeat(truth["class_id"].to_numpy(), 2)
    n_fp = max(n_dets - len(jit), 0)
    k = rng.integers(0, len(images), n_fp)
    h, w = images["height"].to_numpy()[k], images["width"].to_numpy()[k]
    x0, y0 = rng.random(n_fp) * w * 0.8, rng.random(n_fp) * h * 0.8
    fp = np.stack([x0, y0, x0 + rng.uniform(0.02, 0.2, n_fp) * w, y0 + rng.uniform(0.02, 0.2, n_fp) * h], 1)
    det = make_boxes(np.concatenate([t_img, images["image_id"].to_numpy()[k]]),
                     np.concatenate([t_cls, rng.integers(0, N_CLS, n_fp)]), "", np.concatenate([jit, fp]),
                     score=np.round(rng.random(len(jit) + n_fp), 3))
    det["class_name"] = det["class_id"].astype(str)
    return det.sample(frac=1.0, random_state=int(rng.integers(1 << 31))).reset_index(drop=True)


def pycocotools_ap(images, truth, det, iou_thr=0.4) -> tuple[float, float]:
    """(AP, seconds of evaluate()+accumulate()) with image ids = position + 1 in ``images``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    iid = {im: i + 1 for i, im in enumerate(images["image_id"])}
    tb, db = xyxy_to_xywh(truth[COORDS].to_numpy()), xyxy_to_xywh(det[COORDS].to_numpy())
    gt = {"images": [{"id": i, "height": 1, "width": 1} for i in iid.values()],
          "categories": [{"id": c + 1, "name": str(c)} for c in range(N_CLS)],
          "annotations": [{"id": j + 1, "image_id": iid[im], "category_id": int(c) + 1, "bbox": b.tolist(),
                           "area": float(b[2] * b[3]), "iscrowd": 0}
                          for j, (im, c, b) in enumerate(zip(truth["image_id"], truth["class_id"], tb))]}
    dts = [{"image_id": iid[im], "category_id": int(c) + 1, "bbox": b.tolist(), "score": float(s)}
           for im, c, b, s in zip(det["image_id"], det["class_id"], db, det["score"])]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        res = coco.loadRes(dts)
        ev = COCOeval(coco, res, "bbox")
        ev.params.iouThrs = np.array([iou_thr])
        ev.params.maxDets = [100]
        ev.params.areaRng, ev.params.areaRngLbl = [[0 ** 2, 1e5 ** 2]], ["all"]
        t0 = time.perf_counter()
        ev.evaluate()
        ev.accumulate()
        dt = time.perf_counter() - t0
    p = ev.eval["precision"]
    return float(np.mean(p[p > -1])), dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--dets", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="our timing: best of this many runs")
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic generator even if ../shared exists")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    if (SHARED / "train.csv.gz").is_file() and not a.synthetic:
        images, truth = real_truth(a.images, rng)
        src = "real VinBigData boxes (../shared)"
    else:
        images, truth = synthetic_truth(a.images, rng)
        src = "synthetic boxes (../shared absent)"
    det = detections(images, truth, a.dets, rng)
    print(f"data: {src}: {len(images)} images ({len(images) - truth['image_id'].nunique()} without truth), "
          f"{len(truth)} truth boxes, {len(det)} detections")
    ref, t_ref = pycocotools_ap(images, truth, det)
    ours, t_ours = None, float("inf")
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        res = coco_map(truth, det, images["image_id"], 0.4)
        t_ours = min(t_ours, time.perf_counter() - t0)
        ours = res["mAP"]
    print(f"pycocotools COCOeval evaluate+accumulate (iouThrs=[0.4], loadRes excluded): {t_ref:8.3f} s  AP {ref:.12f}")
    print(f"cxrdet coco_map (whole call from box tables, best of {a.repeat}):           {t_ours:8.3f} s  AP {ours:.12f}")
    print(f"speed-up: {t_ref / t_ours:.1f}x")
    assert abs(ref - ours) <= 1e-9, f"AP differs: pycocotools {ref!r} vs ours {ours!r}"
    if t_ref / t_ours < 10:
        print("WARNING: speed-up below the 10x target")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
