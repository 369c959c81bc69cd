"""Image-level label tables: ``cxrdet labels DATASET --labels FILE [--meta M] --out image_labels.csv``.

One row per image: ``image_id, patient_id, <one 0/1 column per label>, abnormal``, from each
dataset's own file (the labels a multi-label classifier learns and ``cxrdet evaluate-cls`` scores):

* **vinbigdata** ``train.csv`` (one row per radiologist finding): label columns are the 14
  findings. ``vote: any`` (default) = a finding if any radiologist marked it; ``vote: majority``
  = if more than half of the image's radiologists marked it. ``abnormal`` = any radiologist
  (``majority``: more than half of them) marked some finding. ``--meta`` (image sizes) is
  optional: with it, boxes are checked against the image. patient_id = image_id (none is given).
* **nih** ``Data_Entry_2017.csv`` (every one of its 112,120 images, not only the 880 with boxes):
  the 14 ChestX-ray14 labels from the pipe-separated ``Finding Labels``; image_id = file stem;
  ``abnormal`` = not "No Finding"; patient_id = ``Patient ID`` zero-padded to 8 digits.
* **rsna** ``stage_2_train_labels.csv`` (+ ``--meta stage_2_detailed_class_info.csv``):
  ``Lung Opacity`` (Target 1) and, with the detailed classes, ``No Lung Opacity / Not Normal``;
  ``abnormal`` = not "Normal" (without the detailed file: = Lung Opacity). A patient that the
  detailed file lacks (the public copy lacks 79) gets an EMPTY cell in the detailed column (and in
  ``abnormal`` unless it has an opacity): unknown, never guessed; training and evaluation skip
  empty cells per label.

Label columns are in the dataset's own order (the description in ``data_prep/datasets``).
:func:`read_label_table` reads a label table back (cells 0, 1 or empty) with row-named errors;
probabilities tables are read by :func:`data_prep.core.tables.read_probs`.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core.atomic import write_csv
from data_prep.datasets import nih, rsna, vinbigdata
from data_prep.datasets.common import Source

log = logging.getLogger(__name__)

ID_COLUMNS = ["image_id", "patient_id"]
ABNORMAL = "abnormal"
VOTES = ("any", "majority")
NON_LABEL = ("fold", "path")  # columns a label table may carry that are not labels


# ----------------------------------------------------------------------------- per dataset
def labels_from_boxes(images: pd.DataFrame, boxes: pd.DataFrame, names: list[str], vote: str = "any"
                      ) -> pd.DataFrame:
    """Label table from an image table + a raw (per-rater) box table: label ``c`` is 1 when any
    rater (``majority``: more than half of the image's raters, ``images.raters`` "|"-joined) drew
    a box of class ``c``; ``abnormal`` likewise for any box. Images without boxes are all 0."""
    if vote not in VOTES:
        raise ValueError(f"vote {vote!r}; expected one of {list(VOTES)}")
    ids = images["image_id"].astype(str).to_numpy()
    marked = boxes[["image_id", "class_name", "rater"]].astype({"image_id": str}).fillna({"rater": ""})
    marked = marked.drop_duplicates()
    unknown = sorted(set(marked["class_name"]) - set(names))
    if unknown:
        raise ValueError(f"boxes: class {unknown[0]!r} is not a label; expected one of {names}")
    counts = pd.crosstab(marked["image_id"], marked["class_name"]).reindex(index=ids, columns=names, fill_value=0)
    any_finding = marked[["image_id", "rater"]].drop_duplicates().groupby("image_id").size().reindex(ids, fill_value=0)
    if vote == "any":
        lab = (counts.to_numpy() > 0).astype("int64")
        abn = (any_finding.to_numpy() > 0).astype("int64")
    else:
        raters = images["raters"] if "raters" in images else pd.Series("", index=images.index)
        n_raters = raters.fillna("").map(lambda s: len([r for r in str(s).split("|") if r])).to_numpy()
        if (n_raters == 0).any():
            i = ids[n_raters == 0][0]
            raise ValueError(f"vote 'majority': image {i!r} has no rad_id in its rows; expected the raw train.csv "
                             "with one rad_id per radiologist (a fused table has none: use vote 'any')")
        lab = (counts.to_numpy() * 2 > n_raters[:, None]).astype("int64")
        abn = (any_finding.to_numpy() * 2 > n_raters).astype("int64")
    pid = images["patient_id"].astype(str).to_numpy() if "patient_id" in images else ids
    out = pd.DataFrame({"image_id": ids, "patient_id": pid})
    for j, c in enumerate(names):
        out[c] = lab[:, j]
    out[ABNORMAL] = abn
    return out


def vinbigdata_labels(labels, meta=None, vote: str = "any") -> pd.DataFrame:
    """VinBigData train.csv -> label table (see the module docstring)."""
    if vote not in VOTES:
        raise ValueError(f"vote {vote!r}; expected one of {list(VOTES)}")
    images, boxes = vinbigdata.load(labels, meta=meta)
    return labels_from_boxes(images, boxes, list(vinbigdata.CLASSES), vote)


def _entries_file(labels, meta):
    """Which of labels/meta is Data_Entry_2017.csv (the file with a ``Finding Labels`` column)."""
    for f in (labels, meta):
        if f is None:
            continue
        if isinstance(f, pd.DataFrame):
            if "Finding Labels" in f.columns:
                return f
            continue
        if "Finding Labels" in pd.read_csv(f, nrows=0).columns:
            return f
    raise ValueError(f"nih: {labels}: no 'Finding Labels' column; expected Data_Entry_2017.csv "
                     "(image-level labels; the box list has only 8 classes on 880 images)")


def nih_labels(labels, meta=None) -> pd.DataFrame:
    """NIH Data_Entry_2017.csv -> label table over all its images (see the module docstring)."""
    entries = _entries_file(labels, meta)
    df = nih.read_entries(entries)
    name = Path(os.fspath(entries)).name if not isinstance(entries, pd.DataFrame) else "labels"
    names = list(nih.IMAGE_LABELS)
    split = df["labels"].str.split("|")
    known = set(names) | {nih.IMAGE_NORMAL}
    toks = split.explode().str.strip()
    bad = ~toks.isin(known)
    if bad.any():
        i = int(np.flatnonzero(bad.groupby(level=0).any().to_numpy())[0])
        where = f"{name} line {i + 2}" if not isinstance(entries, pd.DataFrame) else f"{name} row {i}"
        raise ValueError(f"{where}: Finding Labels {df['labels'].iloc[i]!r} has an unknown label "
                         f"{toks[bad].iloc[0]!r}; expected '|'-joined labels out of {sorted(known)}")
    normal_and_more = split.map(lambda t: nih.IMAGE_NORMAL in t and len(t) > 1).to_numpy()
    if normal_and_more.any():
        i = int(np.flatnonzero(normal_and_more)[0])
        raise ValueError(f"{name} line {i + 2}: Finding Labels {df['labels'].iloc[i]!r} mixes "
                         f"{nih.IMAGE_NORMAL!r} with findings; expected one or the other")
    onehot = pd.crosstab(toks.index, toks).reindex(index=range(len(df)), columns=names, fill_value=0)
    out = pd.DataFrame({"image_id": df["image_id"].to_numpy(), "patient_id": df["patient_id"].to_numpy()})
    for c in names:
        out[c] = (onehot[c].to_numpy() > 0).astype("int64")
    out[ABNORMAL] = (df["labels"].str.strip() != nih.IMAGE_NORMAL).astype("int64").to_numpy()
    return out


def rsna_labels(labels, meta=None) -> pd.DataFrame:
    """RSNA stage-2 train labels (+ detailed classes as ``meta``) -> label table."""
    images, boxes = rsna.load(labels, detailed=meta)
    ids = images["image_id"].to_numpy()
    opacity = np.isin(ids, boxes["image_id"].unique()).astype("int64")
    out = pd.DataFrame({"image_id": ids, "patient_id": images["patient_id"].astype(str).to_numpy()})
    out[rsna.CLASSES[0]] = opacity
    if meta is None:
        out[ABNORMAL] = opacity
        return out
    det = images["detailed_class"].fillna("").astype(str).to_numpy()
    unknown = det == ""
    bad = ~unknown & ~np.isin(det, rsna.DETAILED_CLASSES)
    if bad.any():
        raise ValueError(f"detailed classes: patient {ids[bad][0]!r} has class {det[bad][0]!r}; "
                         f"expected one of {list(rsna.DETAILED_CLASSES)}")
    clash = ~unknown & ((det == rsna.CLASSES[0]) != (opacity == 1))
    if clash.any():
        raise ValueError(f"detailed classes: patient {ids[clash][0]!r} is {det[clash][0]!r} but has "
                         f"Target {opacity[clash][0]} in the labels; expected {rsna.CLASSES[0]!r} exactly for Target 1")
    for c in rsna.DETAILED_CLASSES:
        if c in (rsna.CLASSES[0], rsna.DETAILED_NORMAL):
            continue
        out[c] = pd.array(np.where(unknown, pd.NA, (det == c).astype("int64")), dtype="Int64")
    abn = np.where(unknown, np.where(opacity == 1, 1, pd.NA), (det != rsna.DETAILED_NORMAL).astype("int64"))
    out[ABNORMAL] = pd.array(abn, dtype="Int64")
    if unknown.any():
        log.warning("detailed classes: %d patient(s) missing; their detailed columns are left empty (unknown), "
                    "e.g. %s", int(unknown.sum()), list(ids[unknown][:3]))
    return out


BUILDERS = {"vinbigdata": vinbigdata_labels, "nih": nih_labels, "rsna": rsna_labels}


def image_labels(dataset: str, labels, meta=None, vote: str = "any") -> pd.DataFrame:
    """The label table of ``dataset`` from its own ``labels`` file (and ``meta``)."""
    if dataset not in BUILDERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(BUILDERS)}")
    if dataset == "vinbigdata":
        return vinbigdata_labels(labels, meta, vote)
    if vote != "any":
        raise ValueError(f"vote {vote!r}: only VinBigData has several radiologists per image")
    return BUILDERS[dataset](labels, meta)


def label_columns(table: pd.DataFrame) -> list[str]:
    """The label columns of a label or probabilities table: all but the id columns, ``abnormal`` last."""
    cols = [c for c in table.columns if c not in ID_COLUMNS and c not in NON_LABEL]
    return [c for c in cols if c != ABNORMAL] + ([ABNORMAL] if ABNORMAL in cols else [])


# ----------------------------------------------------------------------------- reading back
def _read(path, what: str, **kw) -> tuple[Source, list[str]]:
    src = Source(path, what, dtype={"image_id": str, "patient_id": str}, **kw)
    src.require(["image_id"])
    df = src.df
    src.fail(df["image_id"].isna().to_numpy(), "image_id", "is empty", "an image id")
    df["image_id"] = df["image_id"].astype(str)
    src.fail(df["image_id"].duplicated().to_numpy(), "image_id", "is listed twice", "one row per image")
    cols = label_columns(df)
    if not cols:
        raise ValueError(f"{src.name}: no label column; expected image_id + one column per label")
    return src, cols


def read_label_table(path) -> pd.DataFrame:
    """Read an ``image_labels.csv``: label cells must be 0, 1 or empty (unknown -> NaN, float64)."""
    src, cols = _read(path, "labels")
    for c in cols:
        v = pd.to_numeric(src.df[c], errors="coerce")
        src.fail((v.isna() & src.df[c].notna()) | ~(v.isna() | v.isin([0, 1])), c, "is not a label",
                 "0, 1 or empty (unknown)")
        src.df[c] = v.astype("float64")
    return src.df


# ----------------------------------------------------------------------------- CLI
def add_arguments_labels(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=sorted(BUILDERS), help="whose file --labels is")
    p.add_argument("--labels", required=True, help="vinbigdata train.csv | nih Data_Entry_2017.csv | "
                   "rsna stage_2_train_labels.csv")
    p.add_argument("--meta", default=None, help="vinbigdata: image sizes (optional, checks boxes); "
                   "rsna: stage_2_detailed_class_info.csv (adds the detailed classes)")
    p.add_argument("--out", required=True, help="image_labels.csv to write")
    from data_prep.core.config import add_config_arguments

    add_config_arguments(p, ["vote"], help={"vote": "vinbigdata: a finding if any / a majority of the radiologists "
                                                    "marked it (default: any)"})


def run_labels(args: argparse.Namespace) -> int:
    from data_prep.core.config import stage_config

    cfg = stage_config(args)
    table = image_labels(args.dataset, args.labels, args.meta, cfg["vote"])
    write_csv(table, args.out)
    cols = label_columns(table)
    pos = ", ".join(f"{c} {int(pd.to_numeric(table[c]).sum())}" for c in cols)
    print(f"{args.out}: {len(table)} images, {len(cols) - 1} labels + abnormal; positives: {pos}")
    return 0
