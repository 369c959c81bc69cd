"""Benchmark: ``cxrdet tune`` trials per second on a real-size out-of-fold table, and the nested estimate.

Data: 3,000 VinBigData train images (the real per-radiologist boxes of ../shared/data, fused by
WBF as the competition's truth was; normal images included; 5 patient-free folds by position)
and ~100,000 simulated OOF detections (every truth box jittered twice, uniform false positives,
scores on a 0.001 grid: bench/metric.py's generator), a simulated p(abnormal) (Beta(5, 2) on
images with findings, Beta(2, 5) on normal ones) and per-class probabilities. Without ../shared
a synthetic generator gives the same sizes. Target: >= 10 trials/s on the 2-core machine
(everything parsed once; each trial = postprocess steps on arrays + the metric from arrays).

    python bench/tune.py [--images 3000] [--dets 100000] [--trials 100] [--seed 0] [--synthetic]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.metric import SHARED, detections, real_truth, synthetic_truth  # noqa: E402
from data_prep.fusion import fuse  # noqa: E402
from detection import postprocess as PP  # noqa: E402
from detection import tune as T  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--dets", type=int, default=100_000)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic generator even if ../shared exists")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    from data_prep.datasets import vinbigdata

    names = list(vinbigdata.CLASSES)
    if (SHARED / "train.csv.gz").is_file() and not a.synthetic:
        images, raw = real_truth(a.images, rng)
        truth = fuse(raw, images, "wbf", iou_thr=0.4)
        src = f"real VinBigData boxes (../shared), {len(raw)} radiologist boxes fused by WBF"
    else:
        images, truth = synthetic_truth(a.images, rng)
        src = "synthetic boxes (../shared absent)"
    truth["class_name"] = [names[c] for c in truth["class_id"]]
    det = detections(images, truth, a.dets, rng)
    det["class_name"] = [names[c] for c in det["class_id"]]
    ids = images["image_id"].astype(str).to_numpy()
    abn = np.isin(ids, truth["image_id"].unique())
    p_abn = np.where(abn, rng.beta(5, 2, len(ids)), rng.beta(2, 5, len(ids)))
    probs = pd.DataFrame({"image_id": ids, "abnormal": p_abn})
    has = {c: np.isin(ids, truth.loc[truth["class_id"] == c, "image_id"].unique()) for c in range(len(names))}
    for c, nm in enumerate(names):
        probs[nm] = 1 / (1 + np.exp(-(rng.normal(-1.5, 1.0, len(ids)) + 3.0 * has[c])))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        truth.to_csv(d / "truth.csv", index=False)
        det.to_csv(d / "oof.csv", index=False)
        probs.to_csv(d / "probs.csv", index=False)
        images[["image_id", "height", "width"]].to_csv(d / "meta.csv", index=False)
        pd.DataFrame({"image_id": ids, "fold": np.arange(len(ids)) % a.folds}).to_csv(d / "folds.csv", index=False)
        print(f"data: {src}: {len(images)} images ({int((~abn).sum())} without findings), {len(truth)} truth boxes, "
              f"{len(det)} detections, p(abnormal) + {len(names)} class probabilities")
        t0 = time.perf_counter()
        prob = T.load_problem(d / "truth.csv", [d / "oof.csv"], d / "folds.csv", "vinbigdata", d / "probs.csv",
                              d / "meta.csv", PP.defaults())
        prob.arrays(prob.base)
        t_load = time.perf_counter() - t0
    space = T.default_space("vinbigdata", 1, True, True)
    print(f"parse once (truth, OOF, probabilities, folds -> arrays): {t_load:.2f} s")
    print(f"space (vinbigdata default): {space}")
    t0 = time.perf_counter()
    one = prob.score(T._cfg_with(prob.base, {"box_scale": 0.9, "cls_low": 0.1, "cls_high": 0.9, "alpha": 0.5}))
    t_one = time.perf_counter() - t0
    print(f"one trial's evaluation (steps on arrays + vinbigdata mAP@0.4): {t_one * 1000:.0f} ms (mAP {one:.4f})")
    load0 = os.getloadavg()
    c0 = time.process_time()
    res = T.tune(prob, space, trials=a.trials, seed=a.seed, nested=True)
    cpu = time.process_time() - c0
    load = os.getloadavg()
    n_all = res["trials"] * (1 + a.folds)
    rate_in = res["trials_per_s"]
    rate_all = n_all / res["seconds"]
    print(T.summary(res))
    print(f"in-sample search: {res['trials']} trials at {rate_in:.1f} trials/s (wall); with the nested estimate "
          f"{n_all} trials in {res['seconds']:.1f} s wall = {rate_all:.1f} trials/s, {cpu:.1f} s of CPU = "
          f"{n_all / cpu:.1f} trials per CPU-second")
    print(f"load average before / after the run (1/5/15 min): {' '.join(f'{v:.2f}' for v in load0)} / "
          f"{' '.join(f'{v:.2f}' for v in load)} on {os.cpu_count()} cores (wall rates shrink with the load; "
          "the CPU-second rate is what one free core gives)")
    print(f"target >= 10 trials/s: wall {rate_all / 10:.2f}x, per CPU-second {n_all / cpu / 10:.2f}x the target")
    return 0 if min(rate_in, rate_all) >= 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
