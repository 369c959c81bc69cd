"""``cxrdet report``: a markdown report with PNG plots of an annotation file.

Built on the canonical tables only (``data_prep.core.boxes``): an image table (``image_id, height,
width, path, patient_id`` + optional ``raters`` "|"-joined, ``detailed_class`` (RSNA), ``labels``
"|"-joined image-level findings (NIH)) and a box table (absolute xyxy in original pixels, one row
per radiologist box, ``rater`` "" when unknown). :func:`make_report` writes ``out/report.md`` and
the PNGs it references; the CLI (:func:`run_report`) loads a dataset with
``data_prep.datasets.load`` first.

Radiologist agreement (:func:`rater_agreement`), per image and class, among the raters who read the
image (``raters`` column, or failing that the raters who drew a box on it):

* ordered pair IoU ``o(A, B)``: for each box of rater A, the best IoU with rater B's boxes of the
  same class, averaged over A's boxes (defined when both A and B drew that class);
* ``mean_iou`` of an image-class cell: the mean of ``o(A, B)`` over all ordered pairs of different
  raters who drew the class (NaN when fewer than two did);
* ``all_marked``: every reader of the image (at least two) drew the class;
* ``all_agree``: ``all_marked`` and, for every pair, ``(o(A, B) + o(B, A)) / 2 >= iou_thr``.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core.atomic import write_text
from data_prep.core.boxes import COORDS, iou
from data_prep.core.config import add_config_arguments, stage_config
from data_prep.datasets import DATASETS, describe
from data_prep.datasets.nih import NO_FINDING_LABEL
from data_prep.report.plots import (  # noqa: F401  (plot_* are part of this stage's API)
    plot_agreement, plot_annotations_per_rater, plot_box_size, plot_category_bars, plot_cooccurrence,
    plot_count_hist, plot_findings_per_class)

log = logging.getLogger(__name__)

AGREE_IOU = 0.4
# every PNG name this module may write (stale ones from an earlier run are removed)
PLOTS = ("findings_per_class", "annotations_per_rater", "normal_vs_abnormal", "boxes_per_image",
         "box_size_by_class", "rater_agreement", "detailed_classes", "boxes_per_patient",
         "label_cooccurrence", "rater_pairs", "rater_box_size")


# ----------------------------------------------------------------------------- numbers
def _raters_per_image(images: pd.DataFrame, boxes: pd.DataFrame) -> pd.DataFrame:
    """Long table ``image_id, rater`` of who read each image: the ``raters`` column ("|"-joined)
    united with the raters who drew a box there (empty rater names dropped)."""
    parts = [boxes.loc[boxes["rater"] != "", ["image_id", "rater"]]]
    if "raters" in images:
        r = images[["image_id", "raters"]].copy()
        r["rater"] = r["raters"].fillna("").astype(str).str.split("|")
        r = r.explode("rater")
        parts.append(r.loc[r["rater"].str.len() > 0, ["image_id", "rater"]])
    return pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True)


def ordered_pair_iou(boxes: pd.DataFrame) -> pd.DataFrame:
    """``o(A, B)`` for every image, class and ordered pair of different raters who both drew it.

    Returns columns ``image_id, class_id, rater_a, rater_b, iou`` (float64): the mean over A's
    boxes of each box's best IoU with B's boxes of that class. Boxes with rater "" are ignored.
    Vectorised: one self-join of the boxes on (image, class), one IoU over all box pairs."""
    b = boxes.loc[boxes["rater"] != "", ["image_id", "class_id", "rater"] + COORDS].reset_index(drop=True)
    cols = ["image_id", "class_id", "rater_a", "rater_b", "iou"]
    if b.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "iou" else object) for c in cols})
    cell = b.groupby(["image_id", "class_id"], sort=False).ngroup().to_numpy()
    rcode, rnames = pd.factorize(b["rater"])
    side = pd.DataFrame({"cell": cell, "r": rcode, "i": np.arange(len(b))})
    pairs = side.merge(side, on="cell", suffixes=("_a", "_b"))
    pairs = pairs[pairs["r_a"] != pairs["r_b"]]
    xyxy = b[COORDS].to_numpy(dtype="float64")
    pairs = pairs.assign(iou=iou(xyxy[pairs["i_a"].to_numpy()], xyxy[pairs["i_b"].to_numpy()]))
    best = pairs.groupby(["i_a", "r_b"], sort=False).agg(cell=("cell", "first"), r_a=("r_a", "first"),
                                                          iou=("iou", "max")).reset_index()
    o = best.groupby(["cell", "r_a", "r_b"], sort=False)["iou"].mean().reset_index()
    first = b.groupby(cell)[["image_id", "class_id"]].first()  # index: cell code 0..n-1
    c = o["cell"].to_numpy()
    rnames = np.asarray(rnames)
    out = pd.DataFrame({"image_id": first["image_id"].to_numpy()[c], "class_id": first["class_id"].to_numpy()[c],
                        "rater_a": rnames[o["r_a"].to_numpy()], "rater_b": rnames[o["r_b"].to_numpy()],
                        "iou": o["iou"].to_numpy(dtype="float64")})
    return out.sort_values(cols[:4], ignore_index=True)


def rater_agreement(boxes: pd.DataFrame, images: pd.DataFrame, iou_thr: float = AGREE_IOU
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Agreement of the radiologists per image-class cell and per class (see module docstring).

    Returns ``(cells, per_class)``. ``cells``: one row per image and class drawn by at least one
    rater, columns ``image_id, class_id, class_name, n_readers, n_marked, mean_iou, min_pair_iou,
    all_marked, all_agree``. ``per_class``: ``class_id, class_name, cells, multi (>= 2 raters),
    mean_iou, all_marked_pct, all_agree_pct, single_pct`` over cells on images read by >= 2 raters.
    """
    b = boxes.loc[boxes["rater"] != ""]
    readers = _raters_per_image(images, b).groupby("image_id")["rater"].nunique().rename("n_readers")
    cells = (b.groupby(["image_id", "class_id"]).agg(class_name=("class_name", "first"),
                                                     n_marked=("rater", "nunique")).reset_index())
    cells = cells.join(readers, on="image_id")
    o = ordered_pair_iou(b)
    mean = o.groupby(["image_id", "class_id"])["iou"].mean().rename("mean_iou")
    # symmetric value of each unordered pair, then the worst pair of a cell
    lo = np.where(o["rater_a"] < o["rater_b"], o["rater_a"], o["rater_b"])
    hi = np.where(o["rater_a"] < o["rater_b"], o["rater_b"], o["rater_a"])
    sym = o.assign(lo=lo, hi=hi).groupby(["image_id", "class_id", "lo", "hi"])["iou"].mean()
    worst = sym.groupby(level=["image_id", "class_id"]).min().rename("min_pair_iou")
    cells = cells.join(mean, on=["image_id", "class_id"]).join(worst, on=["image_id", "class_id"])
    cells["all_marked"] = (cells["n_readers"] >= 2) & (cells["n_marked"] == cells["n_readers"])
    cells["all_agree"] = cells["all_marked"] & (cells["min_pair_iou"] >= iou_thr)
    cells = cells[["image_id", "class_id", "class_name", "n_readers", "n_marked", "mean_iou",
                   "min_pair_iou", "all_marked", "all_agree"]]
    multi_read = cells[cells["n_readers"] >= 2]
    g = multi_read.groupby("class_id")
    per_class = pd.DataFrame({
        "class_name": g["class_name"].first(), "cells": g.size(),
        "multi": g["n_marked"].apply(lambda s: int((s >= 2).sum())), "mean_iou": g["mean_iou"].mean(),
        "all_marked_pct": 100 * g["all_marked"].mean(), "all_agree_pct": 100 * g["all_agree"].mean(),
        "single_pct": 100 * g["n_marked"].apply(lambda s: float((s == 1).mean()))}).reset_index()
    return cells.reset_index(drop=True), per_class


def class_counts(boxes: pd.DataFrame) -> pd.DataFrame:
    """``class_id, class_name, boxes, images`` (int64) per class present, ordered by class_id."""
    if boxes.empty:
        return pd.DataFrame({"class_id": [], "class_name": [], "boxes": [], "images": []})
    g = boxes.groupby("class_id")
    return pd.DataFrame({"class_name": g["class_name"].first(), "boxes": g.size(),
                         "images": g["image_id"].nunique()}).reset_index()


def box_area_fraction(boxes: pd.DataFrame, images: pd.DataFrame) -> pd.Series:
    """Box area / image area (float64 in [0, 1]) per box, indexed like ``boxes``; boxes whose
    image is not in the image table or has no size (height/width 0: no meta) are dropped."""
    hw = images.drop_duplicates("image_id").set_index("image_id")[["height", "width"]]
    hw = hw[(hw["height"] > 0) & (hw["width"] > 0)]
    known = boxes["image_id"].isin(hw.index)
    if not known.all():
        log.warning("box size: %d box(es) on images without a known size (not in the image table or "
                    "height/width 0), e.g. %r; left out", int((~known).sum()), boxes.loc[~known, "image_id"].iloc[0])
    b = boxes[known]
    size = hw.loc[b["image_id"]].to_numpy(dtype="float64")
    area = (b["x_max"] - b["x_min"]).to_numpy() * (b["y_max"] - b["y_min"]).to_numpy()
    return pd.Series(area / (size[:, 0] * size[:, 1]), index=b.index, name="area_frac")


def label_cooccurrence(labels: pd.Series, exclude: tuple[str, ...] = (NO_FINDING_LABEL, "")) -> pd.DataFrame:
    """Square int64 DataFrame: images carrying both labels (diagonal = images with the label),
    from "|"-joined image-level labels; labels ordered by frequency."""
    s = labels.fillna("").astype(str).str.split("|").explode()
    s = s[~s.isin(exclude)]
    rows = s.index.to_numpy()
    codes, names = pd.factorize(s.to_numpy())
    _, row_codes = np.unique(rows, return_inverse=True)
    x = np.zeros((row_codes.max() + 1 if len(rows) else 0, len(names)), dtype=np.int64)
    x[row_codes, codes] = 1
    c = x.T @ x
    order = np.argsort(-np.diag(c), kind="stable")
    return pd.DataFrame(c[np.ix_(order, order)], index=names[order], columns=names[order])


# ----------------------------------------------------------------------------- the report
def _md_table(df: pd.DataFrame) -> str:
    """A markdown table; ints with thousands separators, floats as ``:g`` (round them first)."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "–" if np.isnan(v) else f"{v:g}"
        return f"{int(v):,}" if isinstance(v, (int, np.integer)) else str(v)
    # numbers right-aligned, text (class names, radiologists) left-aligned
    align = ["---:" if pd.api.types.is_numeric_dtype(df[c]) else "---" for c in df.columns]
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)])


def natural_key(name) -> list:
    """Sort key putting ``R2`` before ``R10`` (digit runs compared as numbers, the rest as text)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", str(name)) if t]


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b else "–"


def _s(n: int, word: str, plural: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (plural or word + 's')}"


def make_report(images: pd.DataFrame, boxes: pd.DataFrame, dataset: str, out: str | os.PathLike,
                iou_thr: float = AGREE_IOU, source: str | None = None) -> Path:
    """Write ``out/report.md`` and its PNG plots from the canonical tables; returns the .md path.

    ``images``: image table (``raters``, ``detailed_class``, ``labels`` used when present);
    ``boxes``: box table, one row per (radiologist's) box; "No finding" rows, if any, are ignored.
    ``dataset`` (vinbigdata | rsna | nih) names the title; the sections follow the columns present:
    raters -> per-radiologist plot and agreement, ``detailed_class`` -> RSNA detailed classes and
    boxes per patient, ``labels`` -> label co-occurrence. Takes a few seconds on 36k boxes."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    boxes = describe(dataset).findings(boxes).copy()
    boxes["rater"] = boxes["rater"].fillna("").astype(str) if "rater" in boxes else ""
    boxes["image_id"] = boxes["image_id"].astype(str)
    images = images.assign(image_id=images["image_id"].astype(str)).drop_duplicates("image_id")
    if "patient_id" not in images:
        images["patient_id"] = images["image_id"]
    counts = class_counts(boxes)
    classes = counts["class_name"].tolist()
    n_img = len(images)
    per_img = boxes.groupby("image_id").size().reindex(images["image_id"], fill_value=0)
    n_abn = int((per_img > 0).sum())
    n_norm = n_img - n_abn
    raters = sorted(set(boxes["rater"]) - {""}, key=natural_key)
    readers = _raters_per_image(images, boxes)
    n_readers = readers["rater"].nunique()
    sections: list[tuple[str, str, str, str]] = []  # (heading, png name, caption, extra markdown)

    def add(name: str, heading: str, caption: str, extra: str = "") -> Path:
        sections.append((heading, f"{name}.png", caption, extra))
        return out / f"{name}.png"

    summary = [("dataset", dataset), ("images", f"{n_img:,}"),
               ("patients", f"{images['patient_id'].nunique():,}")]
    if "labels" in images:  # NIH: a box-less image is not a normal one; the labels say what is
        nf = int(images["labels"].fillna("").astype(str).isin([NO_FINDING_LABEL, ""]).sum())
        summary.append((f"normal (label '{NO_FINDING_LABEL}')", f"{nf:,} ({_pct(nf, n_img)})"))
    else:
        summary.append(("normal (no box)", f"{n_norm:,} ({_pct(n_norm, n_img)})"))
    summary += [("images with boxes", f"{n_abn:,} ({_pct(n_abn, n_img)})"), ("boxes", f"{len(boxes):,}"),
                ("boxes per image with boxes (mean / max)",
                 f"{len(boxes) / max(n_abn, 1):.2f} / {int(per_img.max()) if n_img else 0}"),
                ("classes with boxes", f"{len(classes)}"),
                ("raters", f"{n_readers} ({len(raters)} drew boxes)" if n_readers else "not recorded")]

    if len(counts):
        top, low = counts.loc[counts["boxes"].idxmax()], counts.loc[counts["boxes"].idxmin()]
        cap = (f"{_s(len(boxes), 'box', 'boxes')} in {_s(len(classes), 'class', 'classes')}; most: "
               f"{top['class_name']} ({_s(top['boxes'], 'box', 'boxes')} on {_s(top['images'], 'image')})")
        cap += f", fewest: {low['class_name']} ({_s(low['boxes'], 'box', 'boxes')})." if len(counts) > 1 else "."
        area = box_area_fraction(boxes, images)
        med = (100 * area).groupby(boxes.loc[area.index, "class_id"]).median()
        tab = counts.assign(area=counts["class_id"].map(med).round(2))
        tab.columns = ["class_id", "class", "boxes", "images", "median box area (% of image)"]
        plot_findings_per_class(counts, add("findings_per_class", "Findings per class", cap, _md_table(tab)))

    if raters:
        drew = boxes.loc[boxes["rater"] != "", ["image_id", "rater"]].drop_duplicates()
        r = readers.merge(drew, how="left", indicator=True)
        normal_reads = r.loc[r["_merge"] == "left_only", "rater"].value_counts()
        by = boxes.loc[boxes["rater"] != "", "rater"].value_counts()
        never = sorted(set(normal_reads.index) - set(by.index), key=natural_key)
        cap = (f"{', '.join(by.index[:3])} drew {_pct(by.iloc[:3].sum(), by.sum())} of the "
               f"{_s(int(by.sum()), 'box', 'boxes')}; {len(never)} of {n_readers} raters never drew a box"
               + (f" ({', '.join(never)})." if never else "."))
        plot_annotations_per_rater(boxes[boxes["rater"] != ""], normal_reads, classes,
                                   add("annotations_per_rater", "Annotations per radiologist", cap),
                                   describe(dataset).normal_name or "normal")

    cats = {"no box": n_norm, "at least one box": n_abn}
    cap = f"{n_norm:,} of {n_img:,} images ({_pct(n_norm, n_img)}) have no box."
    if "labels" in images:
        cats.update({f"label '{NO_FINDING_LABEL}'": nf, "any finding label": n_img - nf})
        cap += f" By image-level labels, {nf:,} ({_pct(nf, n_img)}) are '{NO_FINDING_LABEL}'."
    plot_category_bars(cats, "Normal vs abnormal images", "images",
                       add("normal_vs_abnormal", "Normal vs abnormal images", cap), totals=[n_img] * len(cats))

    if "detailed_class" in images or dataset == "rsna":
        pid = images.set_index("image_id")["patient_id"]
        pp = boxes.groupby(pid.reindex(boxes["image_id"]).to_numpy()).size()
        pp = pp.reindex(pid.unique(), fill_value=0)
        vc = pp.value_counts()
        cap = (f"{int((pp > 0).sum()):,} of {_s(len(pp), 'patient')} have a box; "
               + ", ".join(f"{_s(k, 'box', 'boxes')}: {vc.get(k, 0):,}" for k in range(1, int(pp.max()) + 1)) + ".")
        plot_count_hist(pp, "Boxes per patient", "boxes per patient", "patients",
                        add("boxes_per_patient", "Boxes per patient", cap), include_zero=True)
    elif n_abn:
        pos = per_img[per_img > 0]
        cap = (f"Images with boxes carry a median of {pos.median():g} (mean {pos.mean():.1f}, "
               f"max {int(pos.max())}); {n_norm:,} images have none.")
        plot_count_hist(pos, "Boxes per image (images with at least one box)", "boxes per image", "images",
                        add("boxes_per_image", "Boxes per image", cap))

    if len(area):
        med = (100 * area).groupby(boxes.loc[area.index, "class_name"]).median().reindex(classes)
        cap = (f"Median box area ranges from {med.min():.2g}% of the image ({med.idxmin()}) to "
               f"{med.max():.2g}% ({med.idxmax()})." if len(med) > 1 else
               f"Median box area: {med.iloc[0]:.2g}% of the image.")
        plot_box_size(area, boxes["class_name"], classes, add("box_size_by_class", "Box size by class", cap))

    if raters:
        cells, per_class = rater_agreement(boxes, images, iou_thr)
        multi = cells[cells["n_readers"] >= 2]
        if len(per_class):
            m, k = multi["mean_iou"].mean(), len(multi)
            cap = (f"Over {k:,} image-class findings, all readers marked the class in "
                   f"{_pct(multi['all_marked'].sum(), k)}, and with every pair at IoU >= {iou_thr:g} in "
                   f"{_pct(multi['all_agree'].sum(), k)}; only one reader marked it in "
                   f"{_pct((multi['n_marked'] == 1).sum(), k)}; mean pairwise IoU {m:.2f} where >= 2 did.")
            tab = per_class.round({"mean_iou": 2, "all_marked_pct": 1, "all_agree_pct": 1, "single_pct": 1})
            tab.columns = ["class_id", "class", "image-class findings", ">= 2 raters", "mean IoU",
                           "all marked %", f"all agree (IoU >= {iou_thr:g}) %", "one rater only %"]
            plot_agreement(per_class, iou_thr, add("rater_agreement", "Radiologist agreement", cap, _md_table(tab)))
            summary += [("all readers marked the same class", _pct(multi["all_marked"].sum(), k)),
                        ("mean pairwise IoU between radiologists", f"{m:.2f}")]

    if n_readers >= 2 and len(boxes):
        _pairwise_sections(images, boxes, dataset, iou_thr, add)

    if "detailed_class" in images:
        dc = images["detailed_class"].fillna("").astype(str).replace("", "(missing)").value_counts()
        cap = "; ".join(f"{k}: {v:,} ({_pct(v, n_img)})" for k, v in dc.items()) + "."
        plot_category_bars(dc.to_dict(), "RSNA detailed classes", "images (patients)",
                           add("detailed_classes", "Detailed classes", cap))
        summary.append(("detailed classes", ", ".join(f"{k} {v:,}" for k, v in dc.items())))

    if "labels" in images:
        co = label_cooccurrence(images["labels"])
        if len(co) >= 2:
            off = co.to_numpy().copy()
            np.fill_diagonal(off, 0)
            i, j = np.unravel_index(np.argmax(off), off.shape)
            cap = (f"{len(co)} image-level labels on {n_img:,} images; most frequent: {co.index[0]} "
                   f"({_s(int(co.iloc[0, 0]), 'image')}); most frequent pair: {co.index[i]} + {co.columns[j]} "
                   f"({_s(int(off[i, j]), 'image')}).")
            plot_cooccurrence(co, add("label_cooccurrence", "Label co-occurrence", cap))

    made = {s[1] for s in sections}
    for name in PLOTS:  # plots of an earlier report in this folder that this one did not make
        if f"{name}.png" not in made and (out / f"{name}.png").exists():
            (out / f"{name}.png").unlink()
    title = describe(dataset).title
    md = [f"# Dataset report: {title}", ""] + ([f"Source: `{source}`", ""] if source else [])
    md += ["## Summary", "", _md_table(pd.DataFrame(summary, columns=["", "value"])), ""]
    for heading, png_name, caption, extra in sections:
        md += [f"## {heading}", "", f"![{heading}]({png_name})", "", f"*{caption}*", ""] + ([extra, ""] if extra else [])
    md += [f"_Generated by `cxrdet report` in {time.perf_counter() - t0:.1f} s._", ""]
    path = write_text(out / "report.md", "\n".join(md))
    log.info("report: %s (%d plots) in %.1f s", path, len(sections), time.perf_counter() - t0)
    return path


def _pairwise_sections(images, boxes, dataset, iou_thr, add) -> None:
    """The pairwise agreement matrix and the box-size ratios (data_prep/labels/raters.py)."""
    from data_prep.labels import raters as R

    names = dict(zip(boxes["class_id"], boxes["class_name"]))
    pw = R.pairwise_agreement(images, boxes, iou_thr, R.dataset_normal(dataset), names)
    score, shared = pw["score"], pw["shared"]
    if score.notna().to_numpy().any():
        off = score.stack().dropna()
        hi, lo = off.idxmax(), off.idxmin()
        cap = (f"Each radiologist (row) scored against each other (column) on the images both read: his boxes "
               f"as predictions at confidence 1, the other's as truth, single-point mAP@{iou_thr:g} (P x R per "
               f"class{', the normal class included' if R.dataset_normal(dataset) else ''}). Highest "
               f"{hi[0]} vs {hi[1]} {off.max():.2f} ({int(shared.loc[hi])} images), lowest {lo[0]} vs {lo[1]} "
               f"{off.min():.2f} ({int(shared.loc[lo])} images).")
        tab = score.round(3)
        tab.insert(0, "scored / truth", list(score.index))
        R.plot_pairwise(score, shared, add("rater_pairs", "Radiologists scored against each other", cap,
                                           _md_table(tab)), iou_thr)
    ratio = R.box_size_ratios(images, boxes, class_names=names)
    if len(ratio) and ratio.notna().to_numpy().any():
        m = ratio.median(axis=0, skipna=True).dropna()
        cap = (f"Per class, each radiologist's median box area over all radiologists' median (cells with fewer "
               f"than {R.MIN_BOXES} boxes empty). Largest boxes: {m.idxmax()} (median ratio {m.max():.2f}); smallest: "
               f"{m.idxmin()} ({m.min():.2f}).")
        tab = ratio.round(2).reset_index()
        R.plot_size_ratios(ratio, add("rater_box_size", "Box size ratios between radiologists", cap, _md_table(tab)))


# ----------------------------------------------------------------------------- CLI
def add_arguments_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", required=True, help="annotation file (train.csv, stage_2_train_labels.csv, "
                        "BBox_List_2017.csv; .gz accepted)")
    parser.add_argument("--meta", default=None, help="image sizes / image-level labels (VinBigData meta csv, "
                        "NIH Data_Entry_2017.csv)")
    parser.add_argument("--detailed", default=None, help="RSNA stage_2_detailed_class_info.csv")
    parser.add_argument("--out", required=True, help="output folder for report.md and its PNGs")
    add_config_arguments(parser, ["dataset", "iou_thr"],
                         help={"dataset": f"source layout (picks the loader): {' | '.join(sorted(DATASETS))}",
                               "iou_thr": "IoU at which two radiologists' boxes agree"})


def run_report(args: argparse.Namespace) -> int:
    from data_prep import datasets

    cfg = stage_config(args)
    kw = {"detailed": args.detailed} if args.detailed else {}
    t0 = time.perf_counter()
    images, boxes = datasets.load(cfg["dataset"], args.labels, meta=args.meta, **kw)
    t1 = time.perf_counter()
    path = make_report(images, boxes, cfg["dataset"], args.out, iou_thr=cfg["iou_thr"], source=str(args.labels))
    t2 = time.perf_counter()
    print(f"{path}  ({len(images):,} images, {len(boxes):,} boxes; load {t1 - t0:.1f} s, report {t2 - t1:.1f} s)")
    return 0
