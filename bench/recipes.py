"""Benchmark: the winning training recipes as switches, each one's out-of-fold score beside the plain recipe's.

PHANTOM FIGURES: synthetic VinBigData-layout chest phantoms (data_prep.phantoms.synth: lesions drawn per
class, 17 radiologists, R8/R9/R10 reading most abnormal images), a tiny detector trained from
scratch for a few epochs. They show that each switch runs end to end through prep / train / cv /
tune and what it did HERE; they are not the competition's numbers (the README cites the
write-ups' reported leaderboard gains separately). One run, every recipe on the same phantoms,
folds and seed:

* plain          prep (fused WBF labels) -> cv: OOF score of each fold's best epoch (``oof``)
* ckpt ensemble  the same cv with keep_epochs K / ckpt_ensemble K: each fold's K best epochs fused by
                 WBF (cv.json ``ckpt_ensemble``), beside the best epoch's
* squarify 2     prep squarify=2 (training boxes above 2:1 widened) -> cv
* fine-tune      from each plain fold model (init={fold}), ``--ft-epochs`` more epochs on the fused
                 labels (the control) and on the radiologist variants (train_labels=variants)
* class gating   a multi-label classifier per fold (its OOF probabilities), then ``tune`` of
                 cls_fusion multiply on the plain OOF: alpha shared and per class; the nested
                 (leave-one-fold-out) mean beside the plain per-fold mean

    python bench/recipes.py [--n 240] [--size 160] [--imgsz 128] [--epochs 15] [--ft-epochs 4] [--batch 8]
        [--folds 3] [--keep 3] [--cls-epochs 6] [--trials 30] [--device auto] [--seed 0] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("YOLO_OFFLINE", "1")

from data_prep.core.config import load_config  # noqa: E402
from data_prep.core.prepdir import PrepDir  # noqa: E402


def _cfg(a, root: Path, name: str, **kw) -> dict:
    ov = {"epochs": a.epochs, "imgsz": a.imgsz, "batch": a.batch, "device": a.device, "workers": 0,
          "project": str(root / "runs"), "name": name, "folds": a.folds, "seed": a.seed, "size": a.prep_size,
          "test_dir": None, "yolo_args": {"plots": False}, "patience": 100, **kw}
    return load_config("vinbigdata", ov)


def _cv(a, root: Path, prep: Path, name: str, **kw) -> tuple[dict, float]:
    from detection.competition.cv import cross_validate

    t = time.perf_counter()
    res = cross_validate(_cfg(a, root, name, **kw), prep, out=root / "cv" / name)
    return json.loads((root / "cv" / name / "cv.json").read_text()) | {"_res": res}, time.perf_counter() - t


def _oof_probs(a, root: Path, prep: Path, plain: dict) -> Path:
    """A multi-label classifier per fold (trained on the other folds) -> its held-out images'
    probabilities (image_id, abnormal, one column per class)."""
    from data_prep.core.atomic import write_csv, write_text
    from data_prep.prep import read_table
    from detection.engine.classifier import train_multilabel
    from detection.engine.predict import infer

    folds, images = read_table(PrepDir(prep).folds_csv), read_table(PrepDir(prep).images_csv)
    parts = []
    for f in plain["folds"]:
        k = int(f["fold"])
        cfg = _cfg(a, root, f"mlcls_fold{k}", cls_task="multilabel", cls_arch="resnet10t", cls_epochs=a.cls_epochs,
                   cls_imgsz=a.imgsz, fold=k)
        clf = train_multilabel(cfg, prep, k)
        held = images[images["image_id"].isin(set(folds.loc[folds["fold"] == k, "image_id"]))]
        listing = root / "cv" / f"mlcls_fold{k}.txt"
        write_text(listing, "".join(f"{p}\n" for p in held["path"]))
        parts.append(infer(f["weights"], listing, PrepDir(prep).images_csv, cfg, classifier=clf).probs)
    return write_csv(pd.concat(parts, ignore_index=True), root / "cv" / "oof_probs_multilabel.csv")


def _gating(a, root: Path, prep: Path, plain: dict, probs: Path) -> dict:
    from detection.competition import tune as T

    cfg = {**_cfg(a, root, "plain"), "cls_low": 0.0, "cls_high": 0.0}   # gating alone, no 2-class filter
    oof_raw = root / "cv" / "plain" / "oof_raw.csv"
    if not oof_raw.is_file():
        oof_raw = root / "cv" / "plain" / "oof.csv"
    prob = T.load_problem(PrepDir(prep).fused_boxes_csv, [oof_raw], PrepDir(prep).folds_csv, "vinbigdata", probs,
                          PrepDir(prep).images_csv, cfg)
    out = {}
    for label, spec in (("shared alpha", {"low": 0.0, "high": 2.0}),
                        ("per-class alpha", {"low": 0.0, "high": 2.0, "per_class": True})):
        res = T.tune(prob, {"alpha": spec}, a.trials, a.seed, nested=True)
        out[label] = res
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=240, help="phantom training images")
    ap.add_argument("--size", type=int, default=160, help="phantom originals' longest side (px)")
    ap.add_argument("--prep-size", type=int, default=128, help="PNG side prep writes")
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--ft-epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--keep", type=int, default=3, help="keep_epochs / ckpt_ensemble K")
    ap.add_argument("--cls-epochs", type=int, default=6)
    ap.add_argument("--trials", type=int, default=30, help="tune trials per search (class gating)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one, removed); a re-run "
                    "with the same folder and settings reuses the phantoms, prep steps and trained folds")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from data_prep.prep import prep
    from data_prep.phantoms.synth import synth_vinbigdata

    tmp = None if a.out else tempfile.TemporaryDirectory(prefix="cxrdet_recipes_")
    root = Path(a.out or tmp.name).resolve()
    t0 = time.perf_counter()
    if not (root / "data" / "train.csv").is_file():   # a re-run in the same --out reuses it (and prep, cv theirs)
        synth_vinbigdata(root / "data", n=a.n, n_test=0, size=a.size, seed=a.seed)
    base = ["folds=%d" % a.folds, "size=%d" % a.prep_size, "workers=2", "seed=%d" % a.seed, "test_dir=null"]
    plain_prep = prep(load_config("vinbigdata", base + ["train_labels=both"]), root / "data", root / "prep")["out"]
    square_prep = prep(load_config("vinbigdata", base + ["squarify=2"]), root / "data", root / "prep_square")["out"]

    rows, times = [], {}
    plain, times["plain + ckpt ensemble"] = _cv(a, root, plain_prep, "plain", keep_epochs=a.keep, ckpt_ensemble=a.keep)
    p = plain["oof"]["score"]
    rows.append(("plain (fused labels, best epoch)", p, f"{a.epochs} epochs"))
    rows.append((f"checkpoint ensemble ({a.keep} best epochs, WBF)", plain["ckpt_ensemble"]["score"],
                 "same runs as plain"))
    sq, times["squarify 2"] = _cv(a, root, square_prep, "square")
    rows.append(("squarify 2 (training boxes)", sq["oof"]["score"], f"{a.epochs} epochs"))
    init = str(root / "runs" / "plain_fold{fold}" / "weights" / "best.pt")
    ftf, times["fine-tune fused"] = _cv(a, root, plain_prep, "ft_fused", init=init, epochs=a.ft_epochs)
    ftv, times["fine-tune variants"] = _cv(a, root, plain_prep, "ft_variants", init=init, epochs=a.ft_epochs,
                                           train_labels="variants")
    rows.append((f"plain + {a.ft_epochs} epochs on fused labels (control)", ftf["oof"]["score"], "init = plain"))
    rows.append((f"plain + {a.ft_epochs} epochs on radiologist variants", ftv["oof"]["score"], "init = plain"))
    tg = time.perf_counter()
    probs = _oof_probs(a, root, plain_prep, plain)
    gate = _gating(a, root, plain_prep, plain, probs)
    times["class gating (classifiers + tune)"] = time.perf_counter() - tg
    per_fold = [f["score"] for f in plain["folds"]]

    print(f"\nRECIPES ON PHANTOMS (synthetic VinBigData-layout phantoms, {a.n} images, {a.folds} folds, "
          f"imgsz {a.imgsz}, yolo11n from scratch, seed {a.seed}): PHANTOM FIGURES, not the competition's")
    print(f"metric: vinbigdata mAP@0.4 on the out-of-fold predictions (every image scored by the model "
          f"that did not train on it)\n")
    print(f"{'recipe':<52} {'OOF score':>10} {'vs plain':>10}  note")
    for name, s, note in rows:
        print(f"{name:<52} {s:>10.4f} {s / p if p > 0 else float('nan'):>9.3f}x  {note}")
    pm = float(np.mean(per_fold))
    print(f"\nclass gating (score x p_class ** alpha, multi-label classifier per fold, tune {a.trials} trials; "
          f"nested = tuned on the other folds):")
    print(f"{'plain, mean of per-fold scores':<52} {pm:>10.4f} {1.0:>9.3f}x")
    for label, res in gate.items():
        m = res["nested"]["mean"]
        print(f"{label + ' (nested mean)':<52} {m:>10.4f} {m / pm if pm > 0 else float('nan'):>9.3f}x  "
              f"in-sample {res['after']:.4f} vs {res['before']:.4f}; params {json.dumps(res['params'])}")
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items())
          + f"; total {time.perf_counter() - t0:.0f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
