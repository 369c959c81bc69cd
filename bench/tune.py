"""Benchmark: ``cxrdet tune`` trials per second on a real-size out-of-fold table, and the nested estimate.

Data: 3,000 VinBigData train images (the real per-radiologist boxes of ../shared/data, fused by
WBF as the competition's truth was; normal images included; 5 patient-free folds by position)
and ~100,000 simulated OOF detections (every truth box jittered twice, uniform false positives,
scores on a 0.001 grid: bench/metric.py's generator), a simulated p(abnormal) (Beta(5, 2) on
images with findings, Beta(2, 5) on normal ones) and per-class probabilities. Without ../shared
a synthetic generator gives the same sizes. Target: >= 10 trials/s on the 2-core machine
(everything parsed once; each trial = postprocess steps on arrays + the metric from arrays).

    python bench/tune.py [--images 3000] [--dets 100000] [--trials 100] [--seed 0] [--synthetic]
                         [--models 3] [--m-images 15000] [--m-boxes 100] [--m-trials 30] [--m-nested]

Then, in the same run, the case of several models (issue 26): ``--models`` simulated OOF tables over
``--m-images`` synthetic images with ``--m-boxes`` boxes per image and model (the models are
correlated, as detectors trained on the same images are: each one's boxes are one shared set of
candidates, jittered by +-3 % of their size, scores scaled by 0.7-1.3 on a 0.001 grid), tuned with
the default space of several tables (the ensemble keys ens_iou, ens_skip, ens_conf_type, ens_weights
with the post-processing keys; every new ensemble key set is one WBF of every box, cached). It
prints its trials per second beside the plain case's; target >= 1 trial/s.
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
from data_prep.labels.fusion import fuse  # noqa: E402
from data_prep.core.prepdir import PrepDir  # noqa: E402
from detection.competition import postprocess as PP  # noqa: E402
from detection.competition import tune as T  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--dets", type=int, default=100_000)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic generator even if ../shared exists")
    ap.add_argument("--models", type=int, default=3, help="models of the ensemble case (0: skip it)")
    ap.add_argument("--m-images", type=int, default=15_000)
    ap.add_argument("--m-boxes", type=int, default=100, help="boxes per image and model")
    ap.add_argument("--m-trials", type=int, default=30)
    ap.add_argument("--m-nested", action="store_true", help="also the nested estimate in the ensemble case")
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
        images[["image_id", "height", "width"]].to_csv(PrepDir(d).meta, index=False)
        pd.DataFrame({"image_id": ids, "fold": np.arange(len(ids)) % a.folds}).to_csv(PrepDir(d).folds_csv, index=False)
        print(f"data: {src}: {len(images)} images ({int((~abn).sum())} without findings), {len(truth)} truth boxes, "
              f"{len(det)} detections, p(abnormal) + {len(names)} class probabilities")
        t0 = time.perf_counter()
        prob = T.load_problem(d / "truth.csv", [d / "oof.csv"], PrepDir(d).folds_csv, "vinbigdata", d / "probs.csv",
                              PrepDir(d).meta, PP.defaults())
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
    ok = min(rate_in, rate_all) >= 10
    if a.models > 1:
        m_rate = models_case(a)
        print(f"\nplain case {rate_all:.1f} trials/s | {a.models}-model ensemble case {m_rate:.2f} trials/s "
              f"(target >= 1: {m_rate:.2f}x)")
        ok = ok and m_rate >= 1
    return 0 if ok else 1


def model_tables(images: pd.DataFrame, truth: pd.DataFrame, n_models: int, per_image: int, rng) -> list:
    """``n_models`` correlated OOF tables of ``per_image`` boxes per image: one shared candidate
    set (bench/metric.py's jittered truth + uniform false positives), each model jittering the
    boxes by +-3 % of their size and scaling the scores by 0.7-1.3 (0.001 grid), rows shuffled."""
    from data_prep.core.boxes import COORDS

    base = detections(images, truth, per_image * len(images), rng)
    out = []
    for m in range(n_models):
        r = np.random.default_rng(int(rng.integers(1 << 31)))
        b = base[COORDS].to_numpy()
        wh = np.repeat(b[:, 2:] - b[:, :2], 2, 1)
        b = np.maximum(b + r.uniform(-0.03, 0.03, b.shape) * wh, 0.0)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)
        t = base.assign(**{c: b[:, j] for j, c in enumerate(COORDS)},
                        score=np.round(np.clip(base["score"] * r.uniform(0.7, 1.3, len(base)), 0.001, 1.0), 3))
        out.append(t.sample(frac=1.0, random_state=int(r.integers(1 << 31))).reset_index(drop=True))
    return out


def models_case(a) -> float:
    """The ensemble case (module docstring); returns its trials per second (wall, WBFs included)."""
    import warnings

    from data_prep.datasets import vinbigdata

    warnings.filterwarnings("ignore", module="ensemble_boxes")
    rng = np.random.default_rng(a.seed + 1)
    names = list(vinbigdata.CLASSES)
    t0 = time.perf_counter()
    images, truth = synthetic_truth(a.m_images, rng)
    truth["class_name"] = [names[c] for c in truth["class_id"]]
    tables = model_tables(images, truth, a.models, a.m_boxes, rng)
    for t in tables:
        t["class_name"] = [names[c] for c in t["class_id"]]
    ids = images["image_id"].astype(str).to_numpy()
    abn = np.isin(ids, truth["image_id"].unique())
    probs = pd.DataFrame({"image_id": ids, "abnormal": np.where(abn, rng.beta(5, 2, len(ids)), rng.beta(2, 5, len(ids)))})
    print(f"\n--- {a.models} models x {a.m_images} images x {a.m_boxes} boxes per image and model "
          f"({sum(map(len, tables)):,} boxes; synthetic truth {len(truth)} boxes; p(abnormal)); "
          f"made in {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        truth.to_csv(d / "truth.csv", index=False)
        for i, t in enumerate(tables):
            t.to_csv(d / f"oof_model{i}.csv", index=False)
        probs.to_csv(d / "probs.csv", index=False)
        images[["image_id", "height", "width"]].to_csv(PrepDir(d).meta, index=False)
        pd.DataFrame({"image_id": ids, "fold": np.arange(len(ids)) % a.folds}).to_csv(PrepDir(d).folds_csv, index=False)
        t0 = time.perf_counter()
        prob = T.load_problem(d / "truth.csv", [d / f"oof_model{i}.csv" for i in range(a.models)], PrepDir(d).folds_csv,
                              "vinbigdata", d / "probs.csv", PrepDir(d).meta, PP.defaults())
        print(f"parse once (truth, {a.models} OOF tables, probabilities, folds): {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    arr = prob.arrays(prob.base)
    t_wbf = time.perf_counter() - t0
    print(f"one WBF of every box at the config's ens_* keys (+ arrays): {t_wbf:.1f} s -> {len(arr.cls):,} fused boxes")
    t0 = time.perf_counter()
    one = prob.score(T._cfg_with(prob.base, {"box_scale": 0.95, "cls_low": 0.1, "cls_high": 0.9}))
    print(f"one trial's evaluation on the cached fusion: {time.perf_counter() - t0:.2f} s (mAP {one:.4f})")
    space = T.default_space("vinbigdata", a.models, True, False)
    print(f"space: {space}")
    c0 = time.process_time()
    res = T.tune(prob, space, trials=a.m_trials, seed=a.seed, nested=a.m_nested)
    cpu = time.process_time() - c0
    n_all = res["trials"] * (1 + (a.folds if a.m_nested else 0))
    rate = n_all / res["seconds"]
    print(T.summary(res))
    print(f"{n_all} trials in {res['seconds']:.1f} s wall = {rate:.2f} trials/s, {cpu:.1f} s of CPU = "
          f"{n_all / cpu:.2f} trials per CPU-second; {len(prob._cache)} ensemble key sets fused and kept "
          f"(one WBF of every box each; the keys change every {T.ENS_BLOCK} trials)")
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    return rate


if __name__ == "__main__":
    raise SystemExit(main())
