"""Benchmark: the detector families side by side on phantoms, one run (issue 26 item 5).

    .venv/bin/python bench/families.py [--n 40] [--px 256] [--epochs 3] [--folds 2] [--batch 8]
        [--families yolo11n,rtdetr-l,frcnn-mnv3] [--trials 40] [--n-infer 10] [--out DIR]

One phantom data set (``cxrdet synth vinbigdata``: ``--n`` images, longest side ``--px``, seed 0)
through ``cxrdet prep`` (``--px`` PNGs, ``--folds`` folds), then for each family ``cxrdet cv`` of
that family's model from scratch (``--epochs`` epochs at ``--px``, batch ``--batch``, CPU,
``seed`` 0), the same folds for all. Reported per family:

* ``train CPU s/ep``: CPU seconds (user + system, every thread of this process and its children)
  of each fold's ``train_detector`` call (model build, the epochs, the per-epoch competition score
  on the held-out fold) divided by the epochs trained, averaged over the folds; ``wall s/ep``
  beside it (2 cores shared with other jobs: CPU seconds are the steadier figure);
* ``torch ms/img`` and ``onnx ms/img``: median ms per image of fold 0's ``best.pt`` and of its ONNX
  export (``cxrdet export`` at ``--px``) predicting ``--n-infer`` held-out PNGs one at a time through
  :func:`detection.models.open_model` (preprocess + network + NMS where the family has one; conf
  0.001), interleaved image by image after 3 warm-up calls each, threads as shipped (what
  ``cxrdet predict`` gets); ``speed-up`` = torch / ONNX;
* ``OOF``: cv.json's out-of-fold competition score (mAP@0.4, VinBigData metric) with the config's
  post-processing; ``tuned`` / ``nested``: :func:`detection.competition.tune.tune` of ``box_scale`` on that
  family's ``oof_raw.csv`` (in-sample best, and the leave-one-fold-out estimate).

Then the cross-family ensemble: :func:`detection.competition.tune.tune` of the ensemble keys (``ens_weights``
over every family's weight in {1, 2}, ``ens_iou``, ``ens_skip``, ``ens_conf_type``) with
``box_scale`` on all families' ``oof_raw.csv`` (every image has every family's prediction from its
own fold's model); ``OOF`` = their WBF at the default ensemble keys, equal weights. The last line
is the tuned ensemble's score beside the best single family's tuned score (in-sample and nested).

Phantom figures: a few CPU epochs on tens of images prove the plumbing and measure speed; their
scores say little about what a family reaches on VinBigData (see the README for GPU settings).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

import detection.models.runtime  # noqa: E402,F401  (offline before ultralytics)
from data_prep.core.prepdir import PrepDir  # noqa: E402

FAMILIES = {
    "yolo11n": "yolo11n.yaml",                                   # ultralytics YOLO, 2.6 M parameters
    "rtdetr-l": "rtdetr-l.yaml",                                 # ultralytics RT-DETR, the smallest shipped YAML (32 M)
    "frcnn-mnv3": "tv:fasterrcnn_mobilenet_v3_large_fpn",        # torchvision Faster R-CNN, MobileNetV3 FPN (19 M)
    "retinanet": "tv:retinanet_resnet50_fpn_v2",                 # torchvision RetinaNet, ResNet-50 FPN (38 M)
    "fcos": "tv:fcos_resnet50_fpn",                              # torchvision FCOS, ResNet-50 FPN (32 M)
}
DEFAULT = "yolo11n,rtdetr-l,frcnn-mnv3"
TRAIN_CPU: list[tuple[float, float, int]] = []   # (cpu s, wall s, epochs) of each train_detector call


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its finished children."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _timed_train():
    """Wrap detection.engine.train.train_detector (what cv's train_model calls) to record its CPU seconds."""
    import detection.engine.train as T

    inner = T.train_detector

    def train_detector(cfg, prep, fold=None, callbacks=None):
        c0, t0 = cpu_seconds(), time.perf_counter()
        out = inner(cfg, prep, fold, callbacks=callbacks)
        TRAIN_CPU.append((cpu_seconds() - c0, time.perf_counter() - t0, int(cfg["epochs"])))
        return out

    T.train_detector = train_detector


def make_data(root: Path, n: int, px: int, folds: int) -> tuple[Path, dict]:
    from data_prep.core.config import load_config
    from data_prep.prep import prep
    from data_prep.phantoms.synth import synth_vinbigdata

    cfg = load_config("vinbigdata", {"size": px, "folds": folds, "seed": 0, "workers": 1})
    if not (root / "data" / "train.csv").is_file():
        synth_vinbigdata(root / "data", n=n, n_test=2, size=px, seed=0)
    prep(cfg, root / "data", root / "prep")
    return root / "prep", cfg


def run_cv(name: str, model: str, prep: Path, root: Path, a) -> dict:
    from data_prep.core.config import load_config
    from detection.competition.cv import cross_validate

    ov = {"model": model, "name": name, "epochs": a.epochs, "imgsz": a.px, "batch": a.batch, "device": "cpu",
          "workers": 0, "seed": 0, "folds": a.folds, "project": str(root / "runs"), "patience": 100,
          "yolo_args": {"plots": False, "mosaic": 0.0}}
    cfg = load_config("vinbigdata", ov)
    start = len(TRAIN_CPU)
    with contextlib.redirect_stdout(io.StringIO()):
        res = cross_validate(cfg, prep, None, out=root / "cv" / name)
    done = TRAIN_CPU[start:]
    if not done:
        raise SystemExit(f"{name}: cv reused earlier trainings in {root}: run with a fresh --out to time them")
    cpu = statistics.mean(c / e for c, _, e in done)
    wall = statistics.mean(w / e for _, w, e in done)
    out = root / "cv" / name
    return {"name": name, "model": model, "cfg": cfg, "cpu_ep": cpu, "wall_ep": wall, "oof": res["oof"]["score"],
            "oof_raw": out / "oof_raw.csv", "best0": Path(res["folds"][0]["weights"])}


def infer_speed(best: Path, pngs: list[Path], px: int, root: Path, name: str) -> tuple[float, float | None]:
    """Median ms per image of ``best`` and of its ONNX export (None where the export fails)."""
    import cv2

    from detection.engine.export import export_onnx
    from detection.models import open_model

    imgs = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in pngs]
    pt = open_model(best)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            onnx = open_model(export_onnx(best, imgsz=px, out=root / f"{name}.onnx"))
    except Exception as e:  # a family that does not export: said in the table
        logging.getLogger(__name__).warning("%s: ONNX export failed: %s", name, e)
        onnx = None
    models = [pt] + ([onnx] if onnx is not None else [])
    kw = dict(imgsz=px, conf=0.001, iou=0.7, max_det=300, device="cpu", verbose=False)
    for m in models:
        for im in imgs[:3]:
            m.predict([im], **kw)
    times: list[list[float]] = [[] for _ in models]
    for i, im in enumerate(imgs):
        order = list(range(len(models)))
        if i % 2:
            order.reverse()
        for j in order:
            t = time.perf_counter()
            models[j].predict([im], **kw)
            times[j].append((time.perf_counter() - t) * 1000)
    med = [statistics.median(t) for t in times]
    return med[0], (med[1] if onnx is not None else None)


def tune_tables(tables: list[Path], prep: Path, cfg: dict, space: dict, trials: int) -> dict:
    from detection.competition.tune import check_space, load_problem, tune

    prob = load_problem(PrepDir(prep).fused_boxes_csv, [str(t) for t in tables], PrepDir(prep).folds_csv, "vinbigdata",
                        meta=PrepDir(prep).images_csv, cfg=cfg)
    return tune(prob, check_space(space, "bench space", cfg), trials=trials, seed=0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--px", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--folds", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--families", default=DEFAULT, help=f"comma-separated names of {list(FAMILIES)}")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--n-infer", type=int, default=10)
    p.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    a = p.parse_args(argv)
    names = [s.strip() for s in a.families.split(",") if s.strip()]
    bad = [s for s in names if s not in FAMILIES]
    if bad or len(names) < 2:
        p.error(f"--families {a.families}: expected two or more of {list(FAMILIES)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("ultralytics", "detection", "data_prep"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    _timed_train()
    t_all = time.perf_counter()
    with (contextlib.nullcontext(a.out) if a.out else tempfile.TemporaryDirectory(prefix="cxrdet-families-")) as d:
        root = Path(d)
        root.mkdir(parents=True, exist_ok=True)
        prep, _ = make_data(root, a.n, a.px, a.folds)
        import pandas as pd

        folds = pd.read_csv(PrepDir(prep).folds_csv, dtype={"image_id": str})
        held0 = sorted(folds.loc[folds["fold"] == 0, "image_id"])[: a.n_infer]
        pngs = [prep / "images" / f"{i}.png" for i in held0]
        rows = []
        for name in names:
            t0 = time.perf_counter()
            r = run_cv(name, FAMILIES[name], prep, root, a)
            r["torch_ms"], r["onnx_ms"] = infer_speed(r["best0"], pngs, a.px, root, name)
            single = tune_tables([r["oof_raw"]], prep, r["cfg"], {"box_scale": {"low": 0.85, "high": 1.15}}, a.trials)
            r["tuned"], r["nested"] = single["after"], single["nested"]["mean"]
            rows.append(r)
            print(f"  {name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        space = {"ens_weights": [list(w) for w in itertools.product([1.0, 2.0], repeat=len(rows))],
                 "ens_iou": [0.3, 0.4, 0.5, 0.6], "ens_skip": [0.0, 0.001], "ens_conf_type": ["avg", "max", "box_and_model_avg"],
                 "box_scale": {"low": 0.85, "high": 1.15}}
        ens = tune_tables([r["oof_raw"] for r in rows], prep, rows[0]["cfg"], space, a.trials)

    print(f"\ndetector families on phantoms: {a.n} images at {a.px} px, {a.folds} folds, {a.epochs} epochs "
          f"from scratch, batch {a.batch}, CPU ({os.cpu_count()} cores), metric vinbigdata mAP@0.4")
    hdr = f"{'family':<11} {'model':<38} {'train CPU s/ep':>14} {'wall s/ep':>9} {'torch ms/img':>12} " \
          f"{'onnx ms/img':>11} {'speed-up':>8} {'OOF':>7} {'tuned':>7} {'nested':>7}"
    print(hdr)
    print("-" * len(hdr))
    f = lambda v, w=7, d=4: f"{v:>{w}.{d}f}" if v is not None else f"{'-':>{w}}"  # noqa: E731
    for r in rows:
        sp = r["torch_ms"] / r["onnx_ms"] if r["onnx_ms"] else None
        print(f"{r['name']:<11} {r['model']:<38} {r['cpu_ep']:>14.1f} {r['wall_ep']:>9.1f} {r['torch_ms']:>12.1f} "
              f"{f(r['onnx_ms'], 11, 1)} {f(sp, 7, 2)}x {f(r['oof'])} {f(r['tuned'])} {f(r['nested'])}")
    print(f"{'ensemble':<11} {'WBF of the ' + str(len(rows)) + ' (tuned ens_* + box_scale)':<38} {'':>14} {'':>9} "
          f"{'':>12} {'':>11} {'':>9} {f(ens['before'])} {f(ens['after'])} {f(ens['nested']['mean'])}")
    best = max(rows, key=lambda r: r["tuned"])
    print(f"tuned ensemble {ens['after']:.4f} (nested {f(ens['nested']['mean']).strip()}) vs best single family "
          f"{best['name']} {best['tuned']:.4f} (nested {f(best['nested']).strip()}): ratio "
          f"{ens['after'] / best['tuned']:.2f}" if best["tuned"] > 0 else "best single family scores 0")
    print(f"ensemble keys: {ens['params']}; {ens['trials']} trials; whole bench {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
