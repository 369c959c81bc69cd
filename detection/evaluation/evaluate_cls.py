"""``cxrdet evaluate-cls --labels image_labels.csv --probs probs.csv [--folds F --fold K] [--json J]
[--plots DIR]``: per-label ROC AUC of a probabilities table against a label table.

For each label column the two tables share (``abnormal`` included), over the images in both
(restricted to fold K of ``--folds`` when given) whose label cell is known (0/1):

* ``auc``: ROC AUC by scikit-learn's ``roc_auc_score`` (null where one class is absent);
* ``auc_ci``: 95 % percentile bootstrap interval (``n_boot`` resamples of the images, seeded;
  resamples with one class only are skipped);
* ``f1`` / ``threshold``: the best F1 over the thresholds of the precision-recall curve
  (scikit-learn's ``precision_recall_curve``; predicted positive when p >= threshold);
* ``prevalence`` = n_pos / n, ``n_pos``.

``macro_auc`` = mean of the per-label AUCs (``abnormal`` excluded, labels without an AUC
skipped); ``micro_auc`` = ROC AUC of all (label, image) cells of those labels pooled. JSON:
``{"per_label": {label: {"auc", "auc_ci", "f1", "threshold", "prevalence", "n_pos"}}, "macro_auc",
"micro_auc"}`` (plus ``n_images``). ``--plots DIR`` writes ``DIR/roc_curves.png``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core.atomic import atomic_path, write_text
from data_prep.labels.image_level import ABNORMAL, label_columns, read_label_table
from data_prep.core.tables import read_probs

log = logging.getLogger(__name__)


def bootstrap_auc_ci(y: np.ndarray, p: np.ndarray, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the ROC AUC (None when it cannot be computed).

    Each resample's AUC is the Mann-Whitney form on average ranks, ``(sum of the positives'
    ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, equal to scikit-learn's ``roc_auc_score``
    ties included (tested); written out because sklearn has no bootstrap and calling it 1,000 times
    per label costs seconds. Resamples with one class only are skipped."""
    from scipy.stats import rankdata

    y = np.asarray(y, dtype="float64")
    p = np.asarray(p, dtype="float64")
    n = len(y)
    if n == 0 or len(np.unique(y)) < 2 or n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    vals = []
    chunk = max(1, 4_000_000 // n)
    for s in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - s), n))
        yy, pp = y[idx], p[idx]
        npos = yy.sum(1)
        ok = (npos > 0) & (npos < n)
        r = rankdata(pp[ok], axis=1)
        npo = npos[ok]
        vals.append(((r * yy[ok]).sum(1) - npo * (npo + 1) / 2) / (npo * (n - npo)))
    v = np.concatenate(vals)
    if not len(v):
        return None
    a = (1 - level) / 2
    return [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))]


def best_f1(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """(best F1, its threshold): positive when ``p >= threshold``."""
    from sklearn.metrics import precision_recall_curve

    if y.sum() == 0:
        return float("nan"), float("nan")
    prec, rec, thr = precision_recall_curve(y, p)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-300), 0.0)[:-1]
    i = int(np.argmax(f1))
    return float(f1[i]), float(thr[i])


def evaluate_cls(labels: pd.DataFrame, probs: pd.DataFrame, image_ids=None, n_boot: int = 1000,
                 seed: int = 0) -> dict:
    """The metrics dict described in the module docstring."""
    from sklearn.metrics import roc_auc_score

    common = [c for c in label_columns(probs) if c in label_columns(labels)]
    if not common:
        raise ValueError(f"probabilities columns {label_columns(probs)} share no label with the label table "
                         f"{label_columns(labels)}")
    missing = [c for c in label_columns(labels) if c not in common]
    if missing:
        log.info("labels without a probability column (not scored): %s", missing)
    m = labels.merge(probs, on="image_id", how="inner", suffixes=("", "__p"))
    if image_ids is not None:
        m = m[m["image_id"].isin(set(map(str, image_ids)))]
    n_unmatched = len(probs) - int(probs["image_id"].isin(labels["image_id"]).sum())
    if n_unmatched:
        log.warning("%d image(s) of the probabilities table are not in the label table (not scored)", n_unmatched)
    if m.empty:
        raise ValueError("no image is in both the label table and the probabilities table (and the fold)")
    per, ys, ps = {}, [], []
    for c in common:
        y_all, p_all = m[c].to_numpy("float64"), m[f"{c}__p"].to_numpy("float64")
        k = ~np.isnan(y_all)
        y, p = y_all[k].astype("int64"), p_all[k]
        n_pos = int(y.sum())
        auc = float(roc_auc_score(y, p)) if 0 < n_pos < len(y) else None
        f1, thr = best_f1(y, p)
        per[c] = {"auc": auc, "auc_ci": bootstrap_auc_ci(y, p, n_boot, seed) if auc is not None else None,
                  "f1": None if math.isnan(f1) else f1, "threshold": None if math.isnan(thr) else thr,
                  "prevalence": n_pos / len(y) if len(y) else None, "n_pos": n_pos}
        if c != ABNORMAL:
            ys.append(y)
            ps.append(p)
    aucs = [v["auc"] for c, v in per.items() if c != ABNORMAL and v["auc"] is not None]
    yy, pp = (np.concatenate(ys), np.concatenate(ps)) if ys else (np.zeros(0), np.zeros(0))
    micro = float(roc_auc_score(yy, pp)) if len(np.unique(yy)) == 2 else None
    return {"per_label": per, "macro_auc": float(np.mean(aucs)) if aucs else None, "micro_auc": micro,
            "n_images": int(len(m))}


def format_table(res: dict) -> str:
    """Plain-text table: one line per label."""
    f = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"
    lines = [f"{'label':<28} {'n_pos':>6} {'prev':>6} {'AUC':>6} {'95% CI':>13} {'F1':>6} {'thr':>6}"]
    for c, v in res["per_label"].items():
        ci = "-" if v["auc_ci"] is None else f"{v['auc_ci'][0]:.3f}-{v['auc_ci'][1]:.3f}"
        lines.append(f"{c[:28]:<28} {v['n_pos']:>6} {f(v['prevalence'], 2):>6} {f(v['auc']):>6} {ci:>13} "
                     f"{f(v['f1']):>6} {f(v['threshold'], 2):>6}")
    lines.append(f"macro AUC {f(res['macro_auc'])} | micro AUC {f(res['micro_auc'])} | {res['n_images']} images")
    return "\n".join(lines)


def plot_roc(labels: pd.DataFrame, probs: pd.DataFrame, res: dict, out_dir, image_ids=None) -> Path:
    """``out_dir/roc_curves.png``: one ROC curve per label with an AUC (legend: label and AUC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    m = labels.merge(probs, on="image_id", how="inner", suffixes=("", "__p"))
    if image_ids is not None:
        m = m[m["image_id"].isin(set(map(str, image_ids)))]
    fig, ax = plt.subplots(figsize=(7, 7))
    for c, v in res["per_label"].items():
        if v["auc"] is None:
            continue
        y, p = m[c].to_numpy("float64"), m[f"{c}__p"].to_numpy("float64")
        k = ~np.isnan(y)
        fpr, tpr, _ = roc_curve(y[k], p[k])
        ax.plot(fpr, tpr, lw=2.5 if c == ABNORMAL else 1.2, label=f"{c} ({v['auc']:.3f}, n+={v['n_pos']})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title=f"ROC per label: macro AUC {res['macro_auc'] or float('nan'):.3f}")
    ax.legend(fontsize=7, loc="lower right")
    dst = Path(out_dir) / "roc_curves.png"
    with atomic_path(dst) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return dst


def fold_ids(folds, fold) -> list[str]:
    """Image ids of ``fold`` (an int, a list or None = every fold) of folds.csv, read and checked as
    every stage reads it (:func:`data_prep.core.tables.read_folds`: integer folds, one per image)."""
    from data_prep.core.tables import fold_rows

    return fold_rows(folds, fold)["image_id"].astype(str).tolist()


def add_arguments_evaluate_cls(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", required=True, help="image_labels.csv (cxrdet labels)")
    p.add_argument("--probs", required=True, help="probabilities CSV (cxrdet classify)")
    p.add_argument("--folds", default=None, help="folds.csv (image_id,fold) to score one fold")
    p.add_argument("--fold", type=int, default=None, help="the fold to score (with --folds)")
    p.add_argument("--json", default=None, help="write the metrics as JSON here")
    p.add_argument("--plots", default=None, help="folder for roc_curves.png")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% interval")
    p.add_argument("--seed", type=int, default=0)
    from data_prep.core.config import add_config_arguments

    add_config_arguments(p)


def run_evaluate_cls(args: argparse.Namespace) -> int:
    from data_prep.core.config import stage_config

    from data_prep.core.config import from_command_line, held_out_fold
    from data_prep.core.tables import coverage, images_of_folds

    cfg = stage_config(args)  # --config / key=value are checked like every stage's
    fold = args.fold          # --fold K and fold=K mean the same, as in evaluate
    if fold is None and from_command_line(cfg, "fold"):
        fold = held_out_fold(cfg, args.folds)
    if fold is not None and args.folds is None:
        raise ValueError("--folds and --fold go together")
    labels, probs = read_label_table(args.labels), read_probs(args.probs)
    ids = None
    if args.folds:   # --folds alone: every fold's images; with --fold: that fold's
        ids = images_of_folds(labels["image_id"], args.folds, fold, "labelled images")["image_id"].tolist()
    want = labels["image_id"].astype(str).tolist() if ids is None else ids
    coverage(probs["image_id"], want, args.probs, "probabilities",
             "labelled images" + ("" if fold is None else f" of fold {fold}"), "not scored")
    res = evaluate_cls(labels, probs, ids, args.n_boot, args.seed)
    print(format_table(res))
    if args.json:
        write_text(args.json, json.dumps(res, indent=2))
    if args.plots:
        print(plot_roc(labels, probs, res, args.plots, ids))
    return 0
