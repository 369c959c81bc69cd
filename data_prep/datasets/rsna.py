"""RSNA Pneumonia Detection (stage 2): ``stage_2_train_labels.csv`` -> (images, boxes).

``labels``: ``patientId,x,y,width,height,Target`` (one row per box; a ``Target`` 0 row with an
empty box is a patient without opacity), boxes as x, y, width, height in pixels of the
1024 x 1024 images -> xyxy by :func:`data_prep.core.boxes.xywh_to_xyxy`. One class: id 0
"Lung Opacity". patientId is the image id and the patient id; ``rater`` is "".

Optional joins onto the image table: ``meta`` (image sizes, ``image_id,dim0,dim1`` or
``image_id,height,width,...``; without it every image is 1024 x 1024), ``detailed``
(``stage_2_detailed_class_info.csv``: ``patientId,class`` -> column ``detailed_class``;
patients it lacks get "" and are counted/logged -- the public copy lacks 79),
``headers`` (the DICOM header CSV, keyed by ``PatientID`` or ``patientId``: its columns, e.g.
``PatientSex, PatientAge, ViewPosition, PixelSpacing``, are joined; missing patients NaN,
counted), ``images_dir`` (``path`` = ``images_dir/<patientId>.png``).

Bad-row policy (rows named by file line, header = line 1):

=======================================  ==========================================
missing column                           ``ValueError`` naming the file and columns
empty patientId                          ``ValueError`` naming the row
Target not 0 or 1                        ``ValueError`` (unknown class) naming the row
Target 1 with an empty x/y/width/height  ``ValueError`` naming the row
width or height < 0 (inverted box)       ``ValueError`` naming the row
box partly outside the image             clipped, counted ``outside_clipped``
box entirely outside the image           ``ValueError`` naming the row
Target 0 with a box                      box ignored, counted ``negative_box_ignored``
patient with Target 0 and 1 rows         ``ValueError`` naming the row
detailed class conflicting per patient   ``ValueError`` naming the row
=======================================  ==========================================

Repairs: ``boxes.attrs["repairs"]`` = ``{kind: count}`` (also ``no_detailed_class``,
``no_header``, ``no_meta_dropped``), logged with the first few rows.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from data_prep.core.boxes import as_image_table, make_boxes, validate_boxes, xywh_to_xyxy
from data_prep.datasets.common import Dataset, Repairs, Source, SubmissionFormat, attach_sizes, clip_to_images, numeric

log = logging.getLogger(__name__)

CLASSES = ["Lung Opacity"]
# stage_2_detailed_class_info.csv's classes: the opacity class, then the two kinds of negative
DETAILED_CLASSES = (CLASSES[0], "Normal", "No Lung Opacity / Not Normal")
DETAILED_NORMAL = "Normal"  # the normal one of DETAILED_CLASSES
SIZE = 1024
CODES = (("Lung Opacity", "DCM", "112001", "Opacity"),)   # DICOM SR export; PS3.16 CID 6102 (chest CAD findings)
LABEL_COLUMNS = ["patientId", "x", "y", "width", "height", "Target"]
XYWH = ["x", "y", "width", "height"]


def load(labels, meta=None, detailed=None, headers=None, images_dir=None,
         on_missing_meta: str = "error") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read RSNA stage-2 labels -> ``(images, boxes)``.

    ``images``: one row per patient (first-appearance order), ``height``/``width`` 1024 (or
    from ``meta``), plus ``detailed_class`` / header columns when given. ``boxes``: one row per
    Target-1 box, class 0 "Lung Opacity", absolute xyxy float64, score 1.0, rater ""."""
    src = Source(labels, "labels", report_duplicates=True, dtype={"patientId": str})
    src.require(LABEL_COLUMNS)
    df = src.df
    src.fail(df["patientId"].isna().to_numpy(), "patientId", "is empty", "a patient id")
    df["patientId"] = df["patientId"].astype(str)
    target = pd.to_numeric(df["Target"], errors="coerce").to_numpy(dtype="float64")
    src.fail(~np.isin(target, [0, 1]), "Target", "is not a known class", "0 (no opacity) or 1 (Lung Opacity)")
    numeric(src, XYWH)
    df = src.df
    xywh = df[XYWH].to_numpy(dtype="float64")
    pos = target == 1
    mixed = df.groupby("patientId", sort=False)["Target"].transform("nunique").to_numpy() > 1
    src.fail(mixed, "Target", "differs between rows of one patient", "all rows of a patient alike")

    repairs = Repairs(src, ["outside_clipped", "negative_box_ignored"])
    repairs.add("negative_box_ignored", ~pos & ~np.isnan(xywh).all(1), "with Target 0 and a box, box ignored")
    nan = pos & np.isnan(xywh).any(1)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        c = XYWH[int(np.flatnonzero(np.isnan(xywh[i]))[0])]
        raise ValueError(f"{src.row(i)}: {c} is empty with Target 1; expected a number "
                         f"({int(nan.sum())} such row(s) in {src.name})")
    for c in ("width", "height"):
        src.fail(pos & (df[c].to_numpy() < 0), c, "is negative (inverted box)", "a size >= 0")

    ids = pd.unique(df["patientId"])
    images = pd.DataFrame({"image_id": ids, "height": SIZE, "width": SIZE, "patient_id": ids})
    images["path"] = ([os.path.join(os.fspath(images_dir), f"{i}.png") for i in ids]
                      if images_dir is not None else "")
    counts = dict(repairs.counts)
    if meta is not None:
        images = attach_sizes(images.drop(columns=["height", "width"]), meta, on_missing_meta, counts, src.name)
    if detailed is not None:
        images = _join_detailed(images, detailed, counts)
    if headers is not None:
        images = _join_headers(images, headers, counts)
    images = as_image_table(images)

    rows = np.flatnonzero(pos & df["patientId"].isin(images["image_id"]).to_numpy())
    hw = images.set_index("image_id").loc[df["patientId"].to_numpy()[rows], ["height", "width"]].to_numpy()
    xyxy = clip_to_images(xywh_to_xyxy(xywh[rows]), hw, src, rows, repairs)
    counts["outside_clipped"] = repairs.counts["outside_clipped"]
    boxes = make_boxes(df["patientId"].to_numpy()[rows], 0, CLASSES[0], xyxy, 1.0, "")
    validate_boxes(boxes, images, source=src.name)
    boxes.attrs["repairs"] = counts
    log.info("%s: %d patients (%d positive), %d boxes; repairs %s", src.name, len(images),
             boxes["image_id"].nunique(), len(boxes), counts)
    return images, boxes


def _join_detailed(images: pd.DataFrame, detailed, counts: dict) -> pd.DataFrame:
    d = Source(detailed, "detailed", dtype={"patientId": str, "class": str})
    d.require(["patientId", "class"])
    conflict = d.df.groupby("patientId", sort=False)["class"].transform("nunique").to_numpy() > 1
    d.fail(conflict, "class", "differs between rows of one patient", "one class per patient")
    cls = d.df.drop_duplicates("patientId").set_index("patientId")["class"]
    images["detailed_class"] = cls.reindex(images["image_id"]).fillna("").astype(str).to_numpy()
    missing = int((~images["image_id"].isin(cls.index)).sum())
    counts["no_detailed_class"] = missing
    if missing:
        log.warning("%s: %d patient(s) have no detailed class (set to \"\"), e.g. %s", d.name, missing,
                    images.loc[~images["image_id"].isin(cls.index), "image_id"].head(3).tolist())
    return images


def _join_headers(images: pd.DataFrame, headers, counts: dict) -> pd.DataFrame:
    h = Source(headers, "headers", dtype={"PatientID": str, "patientId": str})
    key = "PatientID" if "PatientID" in h.df.columns else "patientId"
    h.require([key])
    hdr = h.df.drop(columns=[c for c in h.df.columns if c.startswith("Unnamed")] +
                    [c for c in ("patientId", "PatientID") if c in h.df.columns and c != key])
    d = hdr[key].duplicated().to_numpy()
    h.fail(d, key, "is listed twice", "one header row per patient")
    hdr = hdr.rename(columns={key: "image_id"})
    clash = [c for c in hdr.columns if c in images.columns and c != "image_id"]
    hdr = hdr.drop(columns=clash)
    out = images.merge(hdr, on="image_id", how="left")
    missing = int((~images["image_id"].isin(hdr["image_id"])).sum())
    counts["no_header"] = missing
    if missing:
        log.warning("%s: %d patient(s) have no header row (header columns NaN)", h.name, missing)
    return out


DATASET = Dataset(
    name="rsna", title="RSNA Pneumonia", classes=tuple(CLASSES), normal=None,
    submission=SubmissionFormat("patientId", with_class=False, xywh=True, normal_row=False),
    metric="rsna",
    id_column="patientId", label_columns=tuple(LABEL_COLUMNS), image_size=SIZE,
    extra_files=(("detailed", ("stage_2_detailed_class_info.csv",)),), codes=CODES, load=load)
