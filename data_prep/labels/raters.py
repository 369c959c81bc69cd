"""Radiologists against each other: a pairwise agreement matrix and per-class box-size ratios.

Shown by ``cxrdet report`` (data_prep/report/dataset_report.py) and the HTML evaluation report
(detection/pictures/report_eval.py) for labels with one row per radiologist (VinBigData's train.csv).

**Pairwise agreement** (:func:`pairwise_agreement`): radiologist A scored against radiologist B
on the images both read, A's boxes as predictions, B's as truth, every box at confidence 1. With
one confidence there is one operating point, so the score is the order-free all-point AP of that
point, P x R per class (the ``mAP_point`` of ``cxrdet evaluate --rater-baseline``), averaged
over the classes B marked on those images. The dataset's normal class (VinBigData's "No
finding") counts as a class: an image a radiologist left empty is his normal box ``0 0 1 1``.
Matching is one-to-one, per image and class, at IoU >= ``iou_thr``, pairs taken by decreasing
IoU (no confidence to order them by), so TP(A, B) = TP(B, A) per class and
``P x R = TP^2 / (n_A n_B)``; the matrix differs from its transpose only through which classes
B marked. Written by hand: the metric's matching (detection/evaluation/metrics.py) ranks by confidence,
which raters do not have, and data_prep does not import detection.

**Box-size ratios** (:func:`box_size_ratios`): per class and radiologist, the median area of his
boxes (fraction of the image) over the median of every radiologist's boxes of that class;
> 1: he draws larger boxes. Cells with fewer than ``min_boxes`` boxes are left empty.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from data_prep.core.boxes import COORDS

log = logging.getLogger(__name__)

NORMAL_BOX = (0.0, 0.0, 1.0, 1.0)
MIN_BOXES = 5   # box-size ratio cells with fewer boxes are left empty


def rater_order(names) -> list[str]:
    """Radiologist ids in natural order (R2 before R10)."""
    return sorted({str(n) for n in names}, key=lambda x: (len(x), x))


def dataset_classes(dataset: str) -> tuple[tuple[int, str] | None, list[str]]:
    """``(normal, names)`` of ``dataset`` from its description: the normal class ``(class_id,
    name)`` or None, and every class name by class_id (the normal one included)."""
    from data_prep.datasets import describe

    d = describe(dataset)
    return d.normal, list(d.names)


def dataset_normal(dataset: str | None) -> tuple[int, str] | None:
    """``(class_id, name)`` of ``dataset``'s normal class from its description, or None."""
    return None if dataset is None else dataset_classes(dataset)[0]


def readers(images: pd.DataFrame, boxes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table ``image_id, rater`` of who read each image: the image table's ``raters``
    ("|"-joined) united with the raters who drew a box there."""
    parts = []
    if "raters" in images.columns:
        r = images[["image_id"]].assign(rater=images["raters"].fillna("").astype(str).str.split("|")).explode("rater")
        parts.append(r[["image_id", "rater"]])
    if boxes is not None and len(boxes):
        parts.append(boxes[["image_id", "rater"]])
    if not parts:
        return pd.DataFrame({"image_id": pd.Series(dtype=str), "rater": pd.Series(dtype=str)})
    out = pd.concat(parts, ignore_index=True).astype(str)
    return out[out["rater"] != ""].drop_duplicates(ignore_index=True)


def _with_normal(images: pd.DataFrame, boxes: pd.DataFrame, normal) -> pd.DataFrame:
    """``boxes`` (rater != "") + a normal box for every (image, reader) without a box."""
    b = boxes.loc[boxes["rater"].astype(str) != "", ["image_id", "class_id", "rater"] + COORDS].copy()
    b["rater"] = b["rater"].astype(str)
    if normal is None:
        return b.reset_index(drop=True)
    rd = readers(images, b)
    drew = pd.MultiIndex.from_frame(b[["image_id", "rater"]].drop_duplicates())
    empty = rd[~pd.MultiIndex.from_frame(rd).isin(drew)]
    n = pd.DataFrame({"image_id": empty["image_id"].to_numpy(), "class_id": int(normal[0]),
                      "rater": empty["rater"].to_numpy()})
    n[COORDS] = np.tile(NORMAL_BOX, (len(n), 1))
    return pd.concat([b, n], ignore_index=True)


def _matched_counts(b: pd.DataFrame, iou_thr: float) -> pd.DataFrame:
    """TP per (rater_a, rater_b, class_id) for every unordered pair of raters (a < b): one-to-one
    matching per image and class by decreasing IoU, IoU >= ``iou_thr``."""
    b = b.reset_index(drop=True)
    side = pd.DataFrame({"image_id": b["image_id"], "class_id": b["class_id"], "rater": b["rater"], "i": b.index})
    p = side.merge(side, on=["image_id", "class_id"], suffixes=("_a", "_b"))
    p = p[p["rater_a"] < p["rater_b"]]
    cols = ["rater_a", "rater_b", "class_id", "tp"]
    if p.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("class_id", "tp") else str) for c in cols})
    xy = b[COORDS].to_numpy(dtype="float64")
    a, c = xy[p["i_a"].to_numpy()], xy[p["i_b"].to_numpy()]
    iw = np.clip(np.minimum(a[:, 2], c[:, 2]) - np.maximum(a[:, 0], c[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], c[:, 3]) - np.maximum(a[:, 1], c[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    p = p.assign(iou=iou)[iou >= iou_thr].sort_values("iou", ascending=False, kind="stable")
    # greedy by IoU: a box is matched at most once per pair of raters
    used, tp = set(), {}
    for ra, rb, cl, ia, ib in zip(p["rater_a"], p["rater_b"], p["class_id"], p["i_a"], p["i_b"]):
        ka, kb = (ra, rb, ia), (ra, rb, ib)
        if ka in used or kb in used:
            continue
        used.add(ka)
        used.add(kb)
        tp[(ra, rb, cl)] = tp.get((ra, rb, cl), 0) + 1
    return pd.DataFrame([(*k, v) for k, v in tp.items()], columns=cols)


def pairwise_agreement(images: pd.DataFrame, boxes: pd.DataFrame, iou_thr: float = 0.4, normal=None,
                       class_names: dict | None = None) -> dict:
    """Every radiologist scored against every other on the images both read (module docstring).

    ``images``: image table with ``raters``; ``boxes``: per-radiologist box table; ``normal``:
    ``(class_id, name)`` of the dataset's normal class or None (:func:`dataset_normal`).
    Returns ``{"score": DataFrame (rows: scored radiologist A, columns: reference B; NaN on the
    diagonal and where they share no image), "shared": DataFrame int (images both read),
    "per_class": long DataFrame rater_a, rater_b, class_id, class_name, n_a, n_b, tp, score}``."""
    b = _with_normal(images, boxes, normal)
    rd = readers(images, b)
    names = rater_order(rd["rater"])
    # images both read
    pairs = rd.merge(rd, on="image_id", suffixes=("_a", "_b"))
    shared = pd.crosstab(pairs["rater_a"], pairs["rater_b"]).reindex(index=names, columns=names, fill_value=0)
    # boxes per (image, rater, class) on shared images: counts per ordered pair and class
    cnt = b.groupby(["image_id", "rater", "class_id"]).size().rename("n").reset_index()
    both = pairs[pairs["rater_a"] != pairs["rater_b"]][["image_id", "rater_a", "rater_b"]]
    na = both.merge(cnt.rename(columns={"rater": "rater_a", "n": "n_a"}), on=["image_id", "rater_a"])
    na = na.groupby(["rater_a", "rater_b", "class_id"])["n_a"].sum()
    nb = both.merge(cnt.rename(columns={"rater": "rater_b", "n": "n_b"}), on=["image_id", "rater_b"])
    nb = nb.groupby(["rater_a", "rater_b", "class_id"])["n_b"].sum()
    pc = pd.concat([na, nb], axis=1).fillna(0).astype("int64").reset_index()
    tp = _matched_counts(b, iou_thr)
    tp = pd.concat([tp, tp.rename(columns={"rater_a": "rater_b", "rater_b": "rater_a"})], ignore_index=True)
    pc = pc.merge(tp, on=["rater_a", "rater_b", "class_id"], how="left")
    pc["tp"] = pc["tp"].fillna(0).astype("int64")
    pc = pc[pc["n_b"] > 0].copy()                     # classes the reference marked
    pc["score"] = np.where(pc["n_a"] > 0, pc["tp"] ** 2 / (pc["n_a"].clip(lower=1) * pc["n_b"]), 0.0)
    names_of = dict(class_names or {})
    if normal is not None:
        names_of.setdefault(int(normal[0]), str(normal[1]))
    pc["class_name"] = pc["class_id"].map(lambda c: names_of.get(int(c), str(c)))
    pc = pc[["rater_a", "rater_b", "class_id", "class_name", "n_a", "n_b", "tp", "score"]]
    key = lambda s: s.map(lambda x: (len(x), x)) if s.dtype == object or s.dtype == "string" else s  # noqa: E731
    pc = pc.sort_values(["rater_a", "rater_b", "class_id"], key=key, ignore_index=True)
    score = pc.groupby(["rater_a", "rater_b"])["score"].mean().unstack().reindex(index=names, columns=names)
    for r in names:
        score.loc[r, r] = np.nan
    return {"score": score.astype("float64"), "shared": shared.astype("int64"), "per_class": pc}


def box_size_ratios(images: pd.DataFrame, boxes: pd.DataFrame, min_boxes: int | None = None,
                    class_names: dict | None = None) -> pd.DataFrame:
    """Per class (rows, by class_id) and radiologist (columns): median box area / image area of
    his boxes over the median of all radiologists' boxes of that class (NaN under ``min_boxes``,
    default :data:`MIN_BOXES`)."""
    min_boxes = MIN_BOXES if min_boxes is None else min_boxes
    b = boxes[boxes["rater"].astype(str) != ""]
    hw = images.drop_duplicates("image_id").set_index("image_id")[["height", "width"]]
    b = b[b["image_id"].isin(hw.index[(hw["height"] > 0) & (hw["width"] > 0)])]
    if b.empty:
        return pd.DataFrame()
    size = hw.loc[b["image_id"]].to_numpy(dtype="float64")
    frac = (b["x_max"] - b["x_min"]).to_numpy() * (b["y_max"] - b["y_min"]).to_numpy() / (size[:, 0] * size[:, 1])
    d = pd.DataFrame({"class_id": b["class_id"].to_numpy(), "rater": b["rater"].astype(str).to_numpy(), "a": frac})
    overall = d.groupby("class_id")["a"].median()
    g = d.groupby(["class_id", "rater"])["a"]
    med = g.median().where(g.size() >= min_boxes)
    ratio = (med / overall.reindex(med.index.get_level_values(0)).to_numpy()).unstack()
    ratio = ratio.reindex(columns=rater_order(d["rater"]))
    names = dict(class_names or {}) or dict(zip(b["class_id"], b["class_name"]))
    ratio.index = [names.get(int(c), str(c)) for c in ratio.index]
    ratio.index.name = "class"
    return ratio


def plot_pairwise(score: pd.DataFrame, shared: pd.DataFrame, path, iou_thr: float = 0.4):
    """Heatmap PNG of :func:`pairwise_agreement`'s score, each cell with its value and the number
    of images both radiologists read. Returns the path (written atomically)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from data_prep.core.atomic import atomic_path

    n = len(score)
    fig = Figure(figsize=(max(6.0, 1.2 + 0.62 * n), max(4.5, 1.0 + 0.55 * n)), dpi=100)
    ax = fig.subplots()
    im = ax.imshow(score.to_numpy(dtype="float64"), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), score.columns, rotation=90, fontsize=8)
    ax.set_yticks(range(n), score.index, fontsize=8)
    ax.set_xlabel("reference radiologist (truth)")
    ax.set_ylabel("scored radiologist")
    for i in range(n):
        for j in range(n):
            k = int(shared.iat[i, j])
            v = score.iat[i, j]
            if i != j and k:
                txt = f"{v:.2f}\n{k}" if np.isfinite(v) else f"-\n{k}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=5.5,
                        color="white" if not np.isfinite(v) or v < 0.6 else "black")
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"single-point mAP@{iou_thr:g}")
    ax.set_title("radiologists scored against each other\n(cell: score, images both read)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_size_ratios(ratio: pd.DataFrame, path):
    """Heatmap PNG of :func:`box_size_ratios` (log colour scale around 1). Returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    from data_prep.core.atomic import atomic_path

    fig = Figure(figsize=(max(6.0, 1.8 + 0.55 * ratio.shape[1]), max(3.5, 1.0 + 0.38 * len(ratio))), dpi=100)
    ax = fig.subplots()
    v = ratio.to_numpy(dtype="float64")
    im = ax.imshow(np.where(np.isfinite(v), v, np.nan), cmap="coolwarm", norm=LogNorm(vmin=0.25, vmax=4))
    ax.set_xticks(range(ratio.shape[1]), ratio.columns, rotation=90, fontsize=8)
    ax.set_yticks(range(len(ratio)), [str(i)[:24] for i in ratio.index], fontsize=8)
    for i in range(len(ratio)):
        for j in range(ratio.shape[1]):
            if np.isfinite(v[i, j]):
                ax.text(j, i, f"{v[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8, label="median box area / all radiologists' median")
    ax.set_title("box size by radiologist and class", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
