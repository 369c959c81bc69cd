"""What ``cxrdet evaluate`` prints and writes: the per-class table, the per-fold table, the
image-level table, the JSON of a result and the PR curves (:mod:`detection.evaluation.evaluate` scores; this
module only shows). A result is the dict of :func:`detection.evaluation.evaluate.evaluate`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from data_prep.core.atomic import atomic_path, write_text
from detection.evaluation.metrics import metric_named


def to_jsonable(res: dict) -> dict:
    """The JSON part of a result: drops PR arrays and DataFrames, NaN -> null."""
    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return None if not np.isfinite(v) else float(v)
        return v
    return clean({k: v for k, v in res.items() if k not in ("pr", "per_image")})


def format_table(res: dict) -> str:
    """The per-class table and the summary line, as printed by the CLI."""
    lines = [f"{'id':>3}  {'class':<22} {'truth':>7} {'pred':>8}  {'AP':>7}"]
    for r in res["table"]:
        ap = "   -   " if r["ap"] is None else f"{r['ap']:.4f}"
        lines.append(f"{r['class_id']:>3}  {r['class_name'][:22]:<22} {r['n_truth']:>7} {r['n_pred']:>8}  {ap:>7}")
    what = metric_named(res["metric"]).describe(res.get("iou_thr", 0.4))
    lines.append(f"{what} over {res['n_images']} images: {res['mAP']:.4f}")
    return "\n".join(lines)


def format_folds(res: dict) -> str:
    """The per-fold table (``res["folds"]``) and the pooled score below it."""
    lines = [f"{'fold':>6} {'images':>7} {'score':>8}"]
    for r in res["folds"]:
        lines.append(f"{r['fold']:>6} {r['n_images']:>7} {r['score']:>8.4f}")
    lines.append(f"{'pooled':>6} {res['n_images']:>7} {res['mAP']:>8.4f}")
    return "\n".join(lines)


def format_image_level(il: dict) -> str:
    f = lambda v: "   -  " if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"{'image-level':<24} {'n_pos':>6} {'AUC':>7} {'bestF1':>7} {'@thr':>7}"]
    for name, d in list(il["per_class"].items()) + [("abnormal vs normal", il["abnormal"])]:
        lines.append(f"{name[:24]:<24} {d['n_pos']:>6} {f(d['auc']):>7} {f(d['f1']):>7} {f(d['threshold']):>7}")
    return "\n".join(lines)


def write_json(res: dict, path) -> Path:
    path = Path(path)
    write_text(path, json.dumps(to_jsonable(res), indent=2) + "\n")
    return path


def plot_pr(res: dict, out_dir) -> list[Path]:
    """One PNG per class with a PR curve: ``pr_<id>_<name>.png`` (raw curve + precision envelope)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = {r["class_name"]: r["class_id"] for r in res["table"]}
    written = []
    for name, pr in res.get("pr", {}).items():
        fig, ax = plt.subplots(figsize=(4.5, 4), dpi=100)
        rec, prec = np.concatenate([[0], pr["recall"]]), np.concatenate([[1], pr["precision"]])
        env = np.maximum.accumulate(prec[::-1])[::-1]
        ax.plot(rec, prec, lw=1, alpha=0.6, label="precision")
        ax.step(rec, env, where="post", lw=1.5, label="envelope")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title=f"{name[:30]}  AP {res['per_class'].get(name) or 0:.3f}")
        ax.legend(loc="lower left", fontsize=8)
        slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
        p = out_dir / f"pr_{ids.get(name, 0):02d}_{slug}.png"
        fig.tight_layout()
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        written.append(p)
    return written
