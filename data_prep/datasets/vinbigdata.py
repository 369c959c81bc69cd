"""VinBigData Chest X-ray Abnormalities Detection: ``train.csv`` (or a fused.csv) -> (images, boxes).

Input ``labels``: the competition's ``train.csv`` (``image_id,class_name,class_id,rad_id,x_min,
y_min,x_max,y_max``, one row per radiologist finding, boxes in ORIGINAL DICOM pixels; a
"No finding" row (class 14) with an empty box says that radiologist saw nothing), or a
``fused.csv`` written by :func:`data_prep.labels.fusion.write_competition_csv` (same columns with
``rad_id`` empty, plus ``n_raters``, kept as a box-table column), or a DataFrame of either.

``meta`` (image sizes): ``image_id,dim0,dim1`` (dim0 = height/rows, dim1 = width/columns, as in
the public ``train_meta.csv``) or convert's ``meta.csv`` (``image_id,height,width,png_height,
png_width,...``; every extra column is kept in the image table). ``meta=None``: the sizes are
unknown and ``height``/``width`` are **0** in the image table; boxes are then not checked
against the image and any stage that needs sizes (fusion, export) raises on them.

Returns ``(images, boxes)`` per :mod:`data_prep.core.boxes`: the image table gets ``raters``
("|"-joined sorted rad ids who wrote any row for the image, "" for a fused.csv), ``path``
(``images_dir/<image_id>.png``, "" without ``images_dir``) and ``patient_id = image_id``
(VinBigData has no patient ids). Normal images are image-table rows without boxes.

Bad-row policy (row names are file lines, header = line 1; DataFrame rows by index label):

=====================================  ============================================
missing column                         ``ValueError`` naming the file and columns
empty image_id                         ``ValueError`` naming the row
class_id not an integer in 0..14       ``ValueError`` (unknown class) naming the row
class_name != CLASSES[class_id]        ``ValueError`` (name/id mismatch) naming the row
finding with a NaN/empty coordinate    ``ValueError`` naming the row
x_max < x_min or y_max < y_min         ``ValueError`` naming the row
box partly outside its image (meta)    clipped to the image, counted ``outside_clipped``
box entirely outside its image         ``ValueError`` naming the row
"No finding" row with a box            box ignored, counted ``no_finding_box_ignored``
labelled image missing from meta       ``ValueError`` (``on_missing_meta="drop"``: dropped,
                                       counted ``no_meta_dropped``)
=====================================  ============================================

Counted repairs are logged (with the first few row names) and returned as
``boxes.attrs["repairs"]`` = ``{kind: count}``.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from data_prep.core.boxes import as_image_table, make_boxes, validate_boxes
from data_prep.datasets.common import (LOCAL_SCHEME, Dataset, Repairs, Source, SubmissionFormat, attach_sizes,
                                       clip_to_images, numeric)

log = logging.getLogger(__name__)

CLASSES = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD",
    "Infiltration", "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion",
    "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
]
NORMAL_ID = 14
NORMAL_NAME = "No finding"
LABEL_COLUMNS = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
COORDS = ["x_min", "y_min", "x_max", "y_max"]
REPAIR_KINDS = ["outside_clipped", "no_finding_box_ignored", "no_meta_dropped"]
# Each finding as a coded concept (DICOM SR export): (class name, scheme, value, meaning). SCT/DCM codes are
# PS3.16's (CID in the comment); Cardiomegaly's SNOMED CT code as in FHIR value sets (PS3.16's CID 12248 row
# is inconsistent: the same code is also named "Enlarged septal foramen of heart" there); the classes with
# no verified concept (or a concept narrower/wider than the class) use the local scheme 99CXRDET.
CODES = (
    ("Aortic enlargement", LOCAL_SCHEME, "AORTIC_ENLARGE", "Aortic enlargement"),
    ("Atelectasis", LOCAL_SCHEME, "ATELECTASIS", "Atelectasis"),
    ("Calcification", "DCM", "112063", "Abnormal calcifications"),          # CID 6101
    ("Cardiomegaly", "SCT", "8186001", "Cardiomegaly"),
    ("Consolidation", LOCAL_SCHEME, "CONSOLIDATION", "Consolidation"),
    ("ILD", "DCM", "112004", "Abnormal interstitial pattern"),               # CID 6102
    ("Infiltration", "DCM", "112121", "Infiltrate"),                         # CID 6102
    ("Lung Opacity", "DCM", "112001", "Opacity"),                            # CID 6102
    ("Nodule/Mass", LOCAL_SCHEME, "NODULE_MASS", "Nodule/Mass"),             # SCT has nodule OR mass, not both
    ("Other lesion", "SCT", "52988006", "Lesion"),                           # CID 7151
    ("Pleural effusion", "SCT", "60046008", "Pleural effusion"),            # CID 645, 8134
    ("Pleural thickening", LOCAL_SCHEME, "PLEURAL_THICKEN", "Pleural thickening"),
    ("Pneumothorax", "SCT", "36118008", "Pneumothorax"),                     # CID 6102
    ("Pulmonary fibrosis", "SCT", "112674009", "Fibrosis"),                  # CID 6335
)


def load(labels, meta=None, images_dir=None, on_missing_meta: str = "error"
         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read VinBigData labels (train.csv / fused.csv / DataFrame) -> ``(images, boxes)``.

    ``images``: one row per image in ``labels`` (first-appearance order), ``height``/``width``
    from ``meta`` (0 when ``meta`` is None). ``boxes``: one row per finding (class 0-13),
    absolute xyxy float64 original pixels, ``score`` 1.0, ``rater`` = rad_id ("" if empty),
    plus ``n_raters`` (int64) when the labels have that column. See the module docstring for
    the bad-row policy; repairs in ``boxes.attrs["repairs"]``."""
    src = Source(labels, "labels", report_duplicates=True, dtype={"image_id": str, "class_name": str, "rad_id": str})
    src.require(LABEL_COLUMNS)
    df = src.df
    src.fail(df["image_id"].isna().to_numpy(), "image_id", "is empty", "an image id")
    df["image_id"] = df["image_id"].astype(str)
    df["rad_id"] = df["rad_id"].fillna("").astype(str)
    df["class_name"] = df["class_name"].fillna("").astype(str)

    cid = pd.to_numeric(df["class_id"], errors="coerce").to_numpy(dtype="float64")
    names = CLASSES + [NORMAL_NAME]
    src.fail(~np.isin(cid, np.arange(NORMAL_ID + 1)), "class_id", "is not a known class",
             f"an integer 0..{NORMAL_ID}")
    cid = cid.astype("int64")
    expected = np.asarray(names, dtype=object)[cid]
    bad = df["class_name"].to_numpy(dtype=object) != expected
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{src.row(i)}: class_name {df['class_name'].iloc[i]!r} does not match class_id "
                         f"{cid[i]}; expected {expected[i]!r} ({int(bad.sum())} such row(s) in {src.name})")
    numeric(src, COORDS)
    df = src.df
    xyxy = df[COORDS].to_numpy(dtype="float64")

    repairs = Repairs(src, REPAIR_KINDS)
    normal = cid == NORMAL_ID
    repairs.add("no_finding_box_ignored", normal & ~np.isnan(xyxy).all(1),
                f"'{NORMAL_NAME}' with a box, box ignored")
    finding = ~normal
    nan = np.zeros(len(df), bool)
    nan[finding] = np.isnan(xyxy[finding]).any(1)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        c = COORDS[int(np.flatnonzero(np.isnan(xyxy[i]))[0])]
        raise ValueError(f"{src.row(i)}: {c} is empty on a {df['class_name'].iloc[i]!r} finding; expected a "
                         f"number ({int(nan.sum())} such row(s) in {src.name})")
    for lo, hi in ((0, 2), (1, 3)):
        inv = finding & (xyxy[:, hi] < xyxy[:, lo])
        if inv.any():
            i = int(np.flatnonzero(inv)[0])
            raise ValueError(f"{src.row(i)}: {COORDS[hi]} {xyxy[i, hi]} < {COORDS[lo]} {xyxy[i, lo]}; "
                             f"expected {COORDS[hi]} >= {COORDS[lo]} ({int(inv.sum())} such row(s) in {src.name})")

    images = _image_table(df, images_dir)
    repair_counts = dict(repairs.counts)
    if meta is not None:
        images = attach_sizes(images, meta, on_missing_meta, repair_counts, src.name)
    else:
        images["height"] = 0
        images["width"] = 0
    images = as_image_table(images)

    rows = np.flatnonzero(finding & df["image_id"].isin(images["image_id"]).to_numpy())
    hw = images.set_index("image_id").loc[df["image_id"].to_numpy()[rows], ["height", "width"]].to_numpy()
    fx = clip_to_images(xyxy[rows], hw, src, rows, repairs)
    repair_counts["outside_clipped"] = repairs.counts["outside_clipped"]
    extra = {}
    if "n_raters" in df.columns:
        nr = pd.to_numeric(df["n_raters"], errors="coerce").to_numpy()[rows]
        src.fail(np.isin(np.arange(len(df)), rows[np.isnan(nr)]), "n_raters", "is empty on a finding",
                 "a count of radiologists")
        extra["n_raters"] = nr.astype("int64")
    boxes = make_boxes(df["image_id"].to_numpy()[rows], cid[rows], expected[rows], fx, 1.0,
                       df["rad_id"].to_numpy()[rows], **extra)
    validate_boxes(boxes, images if meta is not None else None, source=src.name)
    boxes.attrs["repairs"] = repair_counts
    log.info("%s: %d images (%d normal), %d boxes; repairs %s", src.name, len(images),
             int((~images["image_id"].isin(boxes["image_id"])).sum()), len(boxes), repair_counts)
    return images, boxes


def _image_table(df: pd.DataFrame, images_dir) -> pd.DataFrame:
    """One row per image (first-appearance order) with ``raters`` and ``path``."""
    ids = pd.unique(df["image_id"])
    r = df.loc[df["rad_id"] != "", ["image_id", "rad_id"]].drop_duplicates().sort_values("rad_id", kind="stable")
    raters = r.groupby("image_id", sort=False)["rad_id"].agg("|".join)
    images = pd.DataFrame({"image_id": ids})
    images["raters"] = raters.reindex(ids).fillna("").to_numpy()
    images["path"] = ([os.path.join(os.fspath(images_dir), f"{i}.png") for i in ids]
                      if images_dir is not None else "")
    images["patient_id"] = images["image_id"]
    return images


DATASET = Dataset(
    name="vinbigdata", title="VinBigData", classes=tuple(CLASSES), normal=(NORMAL_ID, NORMAL_NAME),
    submission=SubmissionFormat("image_id", with_class=True, xywh=False, normal_row=True),
    metric="vinbigdata", id_column="image_id", label_columns=tuple(LABEL_COLUMNS),
    has_raters=True, competition_csv=True, codes=CODES, load=load)
