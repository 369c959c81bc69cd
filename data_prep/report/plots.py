"""Plots of ``cxrdet report`` (data_prep/report/dataset_report.py): one function per chart, each writing a PNG
atomically (temp name, then rename) and returning its path. matplotlib's object API (``Figure``),
no pyplot state, so the report can run in worker threads.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from data_prep.core.atomic import atomic_path

DPI = 100
NO_FINDING_COLOR = "#c8c8c8"   # lighter than the palette's grey: "No finding" reads, not boxes
_MPL = tuple(int(x) for x in re.findall(r"\d+", matplotlib.__version__)[:2])


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG to a temp name beside ``path``, then rename it into place."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _class_colors(boxes: pd.DataFrame, names: list[str]) -> dict[str, str]:
    """Class name -> the class id's colour in the project's one palette (data_prep/dicom/palette.py),
    the same as in the box overlays and the explorer; names without an id take free colours."""
    from data_prep.dicom.palette import PALETTE, class_color

    ids = dict(zip(boxes["class_name"].astype(str), boxes["class_id"].astype(int))) if len(boxes) else {}
    out = {n: class_color(ids[n]) for n in names if n in ids}
    free = [c for c in PALETTE if c not in out.values()] or list(PALETTE)
    for k, n in enumerate(n for n in names if n not in out):
        out[n] = free[k % len(free)]
    return out


def _barh_labels(ax, bars, values, fmt="{:,}"):
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + fmt.format(v),
                va="center", ha="left", fontsize=8)


def plot_findings_per_class(counts: pd.DataFrame, path: Path) -> Path:
    """Two horizontal bar panels sharing the class axis: boxes and images per class."""
    n = len(counts)
    fig = Figure(figsize=(12, 1.5 + 0.4 * n))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)
    for ax, col, color in zip(axes, ("boxes", "images"), ("#4c72b0", "#dd8452")):
        bars = ax.barh(y, counts[col], color=color)
        _barh_labels(ax, bars, counts[col].astype(int))
        ax.set(xlabel=f"number of {col}", title=f"{col.capitalize()} per class",
               xlim=(0, counts[col].max() * 1.2 if n else 1))
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, counts["class_name"])
    axes[0].set(ylabel="class", ylim=(n - 0.5, -0.5))
    fig.suptitle("Findings per class")
    return _save(fig, path)


def plot_annotations_per_rater(boxes: pd.DataFrame, normal_reads: pd.Series, classes: list[str],
                               path: Path, normal_name: str = "normal") -> Path:
    """Stacked horizontal bars: per rater, boxes drawn split by class, plus the images each read
    as normal (``normal_name``: the dataset's normal class name)."""
    normal_col = f"{normal_name} (images)"
    tab = pd.crosstab(boxes["rater"], boxes["class_name"]).reindex(columns=classes, fill_value=0)
    tab = tab.reindex(tab.index.union(normal_reads.index), fill_value=0)
    tab[normal_col] = normal_reads.reindex(tab.index, fill_value=0)
    tab = tab.loc[tab.sum(axis=1).sort_values(ascending=False).index]
    colors = _class_colors(boxes, classes)
    colors[normal_col] = NO_FINDING_COLOR
    fig = Figure(figsize=(13, 2 + 0.45 * len(tab)))
    ax = fig.subplots()
    left = np.zeros(len(tab))
    y = np.arange(len(tab))
    for col in tab.columns:
        v = tab[col].to_numpy()
        if v.sum():
            ax.barh(y, v, left=left, color=colors[col], label=col, edgecolor="white", linewidth=0.3)
            left += v
    for yi, total in zip(y, left):
        ax.text(total, yi, f" {int(total):,}", va="center", fontsize=8)
    ax.set_yticks(y, tab.index)
    ax.set(xlim=(0, left.max() * 1.12 if len(left) else 1), ylim=(len(tab) - 0.5, -0.5), ylabel="radiologist",
           xlabel=f"annotations (boxes drawn; grey: images read as '{normal_name}')",
           title="Annotations per radiologist, by class")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_category_bars(counts: dict[str, int], title: str, xlabel: str, path: Path,
                       totals: list[int] | None = None) -> Path:
    """Horizontal bars of a few named counts, each labelled with its count and its percent of
    ``totals`` (one denominator per bar; default the sum of all counts)."""
    names, vals = list(counts), np.array(list(counts.values()), dtype=float)
    totals = np.full(len(vals), vals.sum()) if totals is None else np.asarray(totals, dtype=float)
    fig = Figure(figsize=(9, 1.2 + 0.55 * len(names)))
    ax = fig.subplots()
    y = np.arange(len(names))
    bars = ax.barh(y, vals, color=(["#55a868", "#c44e52", "#8172b2", "#ccb974"] * 3)[: len(names)])
    for bar, v, t in zip(bars, vals, totals):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f" {int(v):,} ({100 * v / max(t, 1):.1f}%)", va="center", fontsize=9)
    ax.set_yticks(y, names)
    ax.set(xlim=(0, vals.max() * 1.3 if len(vals) else 1), ylim=(len(names) - 0.5, -0.5), xlabel=xlabel, title=title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_count_hist(counts: pd.Series, title: str, xlabel: str, ylabel: str, path: Path,
                    include_zero: bool = False) -> Path:
    """Bar histogram of integer counts (one bar per value), log y when the range is wide."""
    vc = counts.value_counts().sort_index()
    lo = 0 if include_zero else 1
    hi = int(vc.index.max()) if len(vc) else lo
    vc = vc.reindex(range(lo, hi + 1), fill_value=0)
    fig = Figure(figsize=(max(7, min(14, 0.22 * len(vc) + 4)), 4.5))
    ax = fig.subplots()
    ax.bar(vc.index, vc.to_numpy(), color="#4c72b0", width=0.85)
    if len(vc) and vc.max() > 50 * max(vc[vc > 0].min(), 1):
        ax.set_yscale("log")
    if len(vc) <= 12:
        for x, v in vc.items():
            ax.text(x, v, f"{v:,}", ha="center", va="bottom", fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_box_size(area: pd.Series, class_name: pd.Series, classes: list[str], path: Path) -> Path:
    """Horizontal box plot per class of box area as % of image area, log x axis."""
    pct = 100 * area
    data = [pct[class_name.loc[pct.index] == c].to_numpy() for c in classes]
    fig = Figure(figsize=(11, 1.5 + 0.42 * len(classes)))
    ax = fig.subplots()
    labels = [f"{c} (n={len(d):,})" for c, d in zip(classes, data)]
    kw = ({"orientation": "horizontal", "tick_labels": labels} if _MPL >= (3, 10)  # vert/labels deprecated
          else {"vert": False, "labels": labels})
    ax.boxplot([d[d > 0] if (d > 0).any() else np.array([np.nan]) for d in data], whis=(5, 95),
               flierprops={"markersize": 2, "alpha": 0.2}, widths=0.6, **kw)
    ax.invert_yaxis()
    ax.set(xscale="log", title="Box size by class",
           xlabel="box area, % of image area (log scale; box: quartiles, whiskers: 5th-95th percentile)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_agreement(per_class: pd.DataFrame, iou_thr: float, path: Path) -> Path:
    """Two panels per class: mean pairwise IoU, and % of cells all raters marked / agreed."""
    n = len(per_class)
    fig = Figure(figsize=(13, 1.8 + 0.45 * n))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)
    bars = ax1.barh(y, per_class["mean_iou"].fillna(0), color="#4c72b0")
    _barh_labels(ax1, bars, per_class["mean_iou"].fillna(0), "{:.2f}")
    ax1.set(xlim=(0, 1.1), xlabel="mean IoU between radiologists' boxes",
            title="Mean pairwise IoU (images where >= 2 marked the class)")
    h = 0.4
    b1 = ax2.barh(y - h / 2, per_class["all_marked_pct"], h, color="#55a868", label="all raters marked it")
    b2 = ax2.barh(y + h / 2, per_class["all_agree_pct"], h, color="#c44e52",
                  label=f"all marked it, every pair IoU >= {iou_thr:g}")
    _barh_labels(ax2, b1, per_class["all_marked_pct"], "{:.0f}%")
    _barh_labels(ax2, b2, per_class["all_agree_pct"], "{:.0f}%")
    ax2.set(xlim=(0, 110), xlabel="% of image-class findings", title="How often all radiologists agree")
    ax2.legend(loc="lower right", fontsize=8)
    ax1.set_yticks(y, per_class["class_name"])
    ax1.set_ylim(n - 0.5, -0.5)
    for ax in (ax1, ax2):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Radiologist agreement per class")
    return _save(fig, path)


def plot_cooccurrence(co: pd.DataFrame, path: Path) -> Path:
    """Annotated heatmap (log colour scale) of the image-level label co-occurrence counts."""
    n = len(co)
    fig = Figure(figsize=(3 + 0.6 * n, 2 + 0.55 * n))
    ax = fig.subplots()
    v = co.to_numpy().astype(float)
    im = ax.imshow(np.where(v > 0, v, np.nan), cmap="viridis", norm=LogNorm(vmin=1, vmax=max(v.max(), 2)))
    for i in range(n):
        for j in range(n):
            if v[i, j] > 0:
                txt = f"{v[i, j] / 1000:.1f}k" if v[i, j] >= 10000 else f"{int(v[i, j])}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=7,
                        color="white" if v[i, j] < np.sqrt(max(v.max(), 1)) else "black")
    ax.set_xticks(range(n), co.columns, rotation=45, ha="right")
    ax.set_yticks(range(n), co.index)
    ax.set_title("Image-level label co-occurrence (images with both labels)")
    fig.colorbar(im, ax=ax, label="images (log scale)", shrink=0.8)
    return _save(fig, path)
