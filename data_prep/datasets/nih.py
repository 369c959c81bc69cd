"""NIH ChestX-ray14: ``BBox_List_2017.csv`` (+ ``Data_Entry_2017.csv``) -> (images, boxes).

``labels``: ``BBox_List_2017.csv``. Its real header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,``
-- unquoted, so a CSV reader sees nine header fields (``Bbox [x``, ``y``, ``w``, ``h]`` and
three empty ones) over six data fields. The six fields are therefore read by position:
image, label, x, y, w, h (pixels, top-left corner + size) -> xyxy.

``meta``: ``Data_Entry_2017.csv`` (image-level labels): ``Finding Labels`` (pipe-separated,
kept as the string in column ``labels``), ``Patient ID`` -> ``patient_id`` (zero-padded to 8
digits like the file names), ``Patient Age``/``Patient Gender``/``View Position``/``Follow-up #``
-> ``patient_age``/``patient_sex``/``view_position``/``follow_up``, and the original size from the
two columns ``OriginalImage[Width`` / ``Height]`` -> ``orig_width``/``orig_height``
(pixel spacing -> ``orig_spacing_x``/``orig_spacing_y``). With ``meta`` the image table has all
its images; without it, only the images of the box list.

Frame: NIH released every image as a 1024 x 1024 PNG and the box list is given on those PNGs,
not on the original scans. Since the PNGs are the images a user has (there are no NIH
DICOMs), the box table stays in that frame: ``height``/``width`` are 1024 for every image and
the original size is kept only as ``orig_height``/``orig_width`` for reference.

image_id is ``Image Index`` without ``.png``; ``path`` = ``images_dir/<image_id>.png``.
Classes (ids in sorted order): :data:`CLASSES`.

Bad-row policy (rows named by file line, header = line 1):

=====================================  ============================================
unexpected header / missing column     ``ValueError`` naming the file and columns
Finding Label not one of CLASSES       ``ValueError`` (unknown class) naming the row
empty x/y/w/h                          ``ValueError`` naming the row
w or h < 0 (inverted box)              ``ValueError`` naming the row
box partly outside the 1024 image      clipped, counted ``outside_clipped``
box entirely outside the image         ``ValueError`` naming the row
boxed image missing from meta          ``ValueError`` (``on_missing_meta="drop"``:
                                       dropped, counted ``no_meta_dropped``)
=====================================  ============================================

Repairs: ``boxes.attrs["repairs"]`` = ``{kind: count}``, logged with the first few rows.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from data_prep.core.boxes import as_image_table, make_boxes, validate_boxes, xywh_to_xyxy
from data_prep.datasets.common import LOCAL_SCHEME, N_SHOWN, Dataset, Repairs, Source, clip_to_images, numeric

log = logging.getLogger(__name__)

CLASSES = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"]
# the 14 image-level labels of Data_Entry_2017.csv (its spelling, CheXNet's order) and its normal label
IMAGE_LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
IMAGE_NORMAL = "No Finding"
SIZE = 1024
# Each finding as a coded concept (DICOM SR export), as in vinbigdata.CODES; "Effusion" is NIH's pleural
# effusion; Pneumonia's SNOMED CT code as UMLS maps it (C0032285); Atelectasis has no verified concept here.
CODES = (
    ("Atelectasis", LOCAL_SCHEME, "ATELECTASIS", "Atelectasis"),
    ("Cardiomegaly", "SCT", "8186001", "Cardiomegaly"),
    ("Effusion", "SCT", "60046008", "Pleural effusion"),        # CID 645, 8134
    ("Infiltrate", "DCM", "112121", "Infiltrate"),              # CID 6102
    ("Mass", "SCT", "4147007", "Mass"),                         # CID 6102
    ("Nodule", "SCT", "27925004", "Nodule"),                    # CID 6102
    ("Pneumonia", "SCT", "233604007", "Pneumonia"),
    ("Pneumothorax", "SCT", "36118008", "Pneumothorax"),        # CID 6102
)
NO_FINDING_LABEL = "No Finding"  # Data_Entry's image-level label of an image without findings
BOX_FIELDS = ["image", "label", "x", "y", "w", "h"]
XYWH = ["x", "y", "w", "h"]
ENTRY_RENAME = {"Image Index": "image_id", "Finding Labels": "labels", "Follow-up #": "follow_up",
                "Patient ID": "patient_id", "Patient Age": "patient_age", "Patient Gender": "patient_sex",
                "View Position": "view_position"}


def load(labels, meta=None, images_dir=None, on_missing_meta: str = "error"
         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the NIH box list (and Data_Entry as ``meta``) -> ``(images, boxes)``.

    ``images``: ``height``/``width`` 1024 (the released PNG frame), ``patient_id``, and with
    ``meta`` ``labels``, ``orig_height``, ``orig_width`` and the other Data_Entry fields.
    ``boxes``: absolute xyxy float64 on the 1024 PNGs, class ids per :data:`CLASSES`, rater ""."""
    src = _read_box_list(labels)
    df = src.df
    src.fail(df["image"].isna().to_numpy(), "image", "is empty", "an image file name")
    df["image_id"] = df["image"].astype(str).str.removesuffix(".png")
    df["label"] = df["label"].fillna("").astype(str)
    src.fail(~df["label"].isin(CLASSES).to_numpy(), "label", "is not a known class", f"one of {CLASSES}")
    numeric(src, XYWH)
    df = src.df
    xywh = df[XYWH].to_numpy(dtype="float64")
    nan = np.isnan(xywh).any(1)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        c = XYWH[int(np.flatnonzero(np.isnan(xywh[i]))[0])]
        raise ValueError(f"{src.row(i)}: {c} is empty; expected a number ({int(nan.sum())} such row(s))")
    for c in ("w", "h"):
        src.fail(df[c].to_numpy() < 0, c, "is negative (inverted box)", "a size >= 0")

    counts = {"outside_clipped": 0, "no_meta_dropped": 0}
    if meta is not None:
        images = read_entries(meta)
        missing = ~df["image_id"].isin(images["image_id"]).to_numpy()
        if missing.any():
            ids = pd.unique(df["image_id"][missing]).tolist()
            if on_missing_meta != "drop":
                raise ValueError(f"{src.name}: {len(ids)} boxed image(s) are not in the Data_Entry table, e.g. "
                                 f"{ids[:N_SHOWN]}; expected every boxed image there (or on_missing_meta='drop')")
            log.warning("%s: dropped %d image(s) missing from Data_Entry: %s", src.name, len(ids), ids[:N_SHOWN])
            counts["no_meta_dropped"] = len(ids)
    else:
        ids = pd.unique(df["image_id"])
        images = pd.DataFrame({"image_id": ids, "patient_id": [i.split("_")[0] for i in ids]})
        missing = np.zeros(len(df), bool)
    images["height"] = SIZE
    images["width"] = SIZE
    images["path"] = ([os.path.join(os.fspath(images_dir), f"{i}.png") for i in images["image_id"]]
                      if images_dir is not None else "")
    images = as_image_table(images)

    rows = np.flatnonzero(~missing)
    repairs = Repairs(src, ["outside_clipped"])
    hw = np.full((len(rows), 2), SIZE)
    xyxy = clip_to_images(xywh_to_xyxy(xywh[rows]), hw, src, rows, repairs)
    counts["outside_clipped"] = repairs.counts["outside_clipped"]
    lab = df["label"].to_numpy()[rows]
    cid = np.searchsorted(CLASSES, lab)
    boxes = make_boxes(df["image_id"].to_numpy()[rows], cid, lab, xyxy, 1.0, "")
    validate_boxes(boxes, images, source=src.name)
    boxes.attrs["repairs"] = counts
    log.info("%s: %d boxes on %d images (image table: %d images); repairs %s", src.name, len(boxes),
             boxes["image_id"].nunique(), len(images), counts)
    return images, boxes


def _read_box_list(labels) -> Source:
    """The box list by position (see the module docstring), header checked."""
    if isinstance(labels, pd.DataFrame):
        cols = [str(c) for c in labels.columns]
        src = Source(labels.iloc[:, :6].set_axis(BOX_FIELDS, axis=1), "labels", report_duplicates=True)
    else:
        cols = [str(c) for c in pd.read_csv(labels, nrows=0).columns]
        src = Source(labels, "labels", report_duplicates=True, header=None, skiprows=1, names=BOX_FIELDS,
                     usecols=range(6), dtype={"image": str, "label": str})
    ok = len(cols) >= 6 and cols[0] == "Image Index" and cols[1] == "Finding Label" and cols[2].startswith("Bbox")
    if not ok:
        raise ValueError(f"{src.name}: header {cols}; expected 'Image Index,Finding Label,Bbox [x,y,w,h],,,' "
                         "(image, label, then x, y, w, h by position)")
    return src


def read_entries(meta) -> pd.DataFrame:
    """Data_Entry_2017.csv -> image table columns (without height/width/path)."""
    src = Source(meta, "meta", dtype={"Image Index": str, "Finding Labels": str, "Patient ID": str})
    src.require(list(ENTRY_RENAME))
    cols = list(src.df.columns)
    wcol = next((c for c in cols if str(c).startswith("OriginalImage[Width")), None)
    if wcol is None or cols.index(wcol) + 1 >= len(cols):
        raise ValueError(f"{src.name}: no 'OriginalImage[Width,Height]' columns in {cols}; expected the "
                         "original width and height as two columns")
    i = cols.index(wcol)
    sizes = {wcol: "orig_width", cols[i + 1]: "orig_height"}
    scol = next((c for c in cols if str(c).startswith("OriginalImagePixelSpacing")), None)
    if scol is not None and cols.index(scol) + 1 < len(cols):
        j = cols.index(scol)
        sizes.update({scol: "orig_spacing_x", cols[j + 1]: "orig_spacing_y"})
    df = src.df[list(ENTRY_RENAME) + list(sizes)].rename(columns={**ENTRY_RENAME, **sizes})
    src.df = df
    numeric(src, ["orig_width", "orig_height"])
    df = src.df
    df["image_id"] = df["image_id"].astype(str).str.removesuffix(".png")
    src.fail(df["image_id"].duplicated().to_numpy(), "image_id", "is listed twice", "one row per image")
    # read as text: "1.5" is not patient 1 (a float parse would merge them), it is a bad row
    pid = df["patient_id"].fillna("").astype(str).str.strip()
    src.fail(~pid.str.fullmatch(r"\d+").to_numpy(), "patient_id", "is not an integer patient id",
             "the digits of an integer patient id")
    df["patient_id"] = [f"{int(p):08d}" for p in pid]
    df["labels"] = df["labels"].fillna("").astype(str)
    for c in ("orig_width", "orig_height"):
        df[c] = df[c].astype("Int64")
    return df


# ----------------------------------------------------------------------------- NIH as one more VinBigData rater
RATER = "NIH"
# NIH finding -> VinBigData class name (prep's `extra: [nih]`). Pneumonia has no VinBigData class
# (it is a clinical diagnosis, not a radiological finding with its own box) and is dropped.
TO_VINBIGDATA = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Effusion": "Pleural effusion",
    "Infiltrate": "Infiltration",
    "Mass": "Nodule/Mass",
    "Nodule": "Nodule/Mass",
    "Pneumothorax": "Pneumothorax",
}
DROPPED = ["Pneumonia"]


def as_vinbigdata_rater(images: pd.DataFrame, boxes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """NIH tables (:func:`load`) -> VinBigData-classed tables with NIH as one more rater.

    Boxes get VinBigData class ids/names by :data:`TO_VINBIGDATA` and rater :data:`RATER`;
    :data:`DROPPED` classes go, and an image left without a box goes too (it is not normal, its
    finding is just not a VinBigData class). Images keep their own sizes (1024 x 1024, the box
    list's frame) and get ``raters`` = NIH. Returns ``(images, boxes, info)`` with counts."""
    from data_prep.datasets import vinbigdata

    ids = {name: i for i, name in enumerate(vinbigdata.CLASSES)}
    keep = boxes["class_name"].isin(list(TO_VINBIGDATA)).to_numpy()
    b = boxes[keep].copy()
    b["class_name"] = b["class_name"].map(TO_VINBIGDATA)
    b["class_id"] = b["class_name"].map(ids).astype("int64")
    b["rater"] = RATER
    b.attrs = {}
    im = images[images["image_id"].isin(set(b["image_id"]))].copy()
    im["raters"] = RATER
    info = {"boxes": int(keep.sum()), "boxes_dropped": int((~keep).sum()),
            "dropped_classes": {c: int((boxes["class_name"] == c).sum()) for c in DROPPED},
            "images": len(im), "images_dropped": int(len(images) - len(im))}
    log.info("NIH as rater %s: %d boxes mapped to VinBigData classes, %d dropped (%s); %d images, %d left without "
             "a box dropped", RATER, info["boxes"], info["boxes_dropped"], ", ".join(DROPPED), len(im),
             info["images_dropped"])
    return im.reset_index(drop=True), b.reset_index(drop=True), info


DATASET = Dataset(
    name="nih", title="NIH ChestX-ray14", classes=tuple(CLASSES), normal=None, submission=None, metric="coco",
    id_column="Image Index", label_columns=("Image Index", "Finding Label"), boxed_only=True, size_meta=False,
    image_size=SIZE, codes=CODES, load=load)
