"""THE box table and every box-format conversion.

Two tables flow through every stage of cxrdet:

* the **box table**: one row per box, absolute ``xyxy`` pixels in the ORIGINAL image
  (the DICOM's rows/columns), columns :data:`BOX_COLUMNS`::

      image_id (str) | class_id (int64) | class_name (str) |
      x_min, y_min, x_max, y_max (float64, pixels) | score (float64, 1.0 for truth) |
      rater (str, "" when unknown or fused)

  Extra columns (``n_raters`` after fusion, ``fold``...) are allowed and kept.
  Ground-truth normal images have NO rows here: they are rows of the image table with no
  boxes. The VinBigData "No finding" class (14, box ``0 0 1 1``) only appears in
  *predictions* (the 2-class filter) and at the submission/metric edges.

* the **image table**: one row per image, columns :data:`IMAGE_COLUMNS`::

      image_id (str) | height, width (int64, ORIGINAL pixels) | path (str, "" if unknown) |
      patient_id (str)

  plus whatever a source knows (``raters``, ``png_height``, ``png_width``, header fields).

Every other format is a small pure conversion at an edge, vectorised over ``(N, 4)`` arrays.
``(height, width)`` order everywhere; image sizes broadcast per row.

=============  =====================================  ========================================
name           layout                                 used by
=============  =====================================  ========================================
xyxy           x_min, y_min, x_max, y_max (abs px)    the pivot; VinBigData train.csv
xywh           x_min, y_min, width, height (abs px)   COCO ``bbox``, RSNA labels/submissions
yolo           cx, cy, w, h normalised to [0, 1]      ultralytics label txt files
norm_xyxy      xyxy divided by (w, h, w, h)           ensemble-boxes (WBF/NMS) input
frame          xyxy in a resized PNG frame            512 px PNGs (square or keep-ratio)
=============  =====================================  ========================================
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_prep.core.sizes import keep_ratio_size  # noqa: F401 (re-exported: one formula, imported by the pandas-free worker too)

BOX_COLUMNS = ["image_id", "class_id", "class_name", "x_min", "y_min", "x_max", "y_max", "score", "rater"]
COORDS = ["x_min", "y_min", "x_max", "y_max"]
IMAGE_COLUMNS = ["image_id", "height", "width", "path", "patient_id"]

_BOX_DTYPES = {
    "image_id": str, "class_id": "int64", "class_name": str,
    "x_min": "float64", "y_min": "float64", "x_max": "float64", "y_max": "float64",
    "score": "float64", "rater": str,
}


# ----------------------------------------------------------------------------- tables
def empty_boxes(extra: list[str] | None = None) -> pd.DataFrame:  # pragma: no mutate block, table plumbing
    """An empty box table with the canonical dtypes (and optional extra float columns)."""
    df = pd.DataFrame({c: pd.Series(dtype=object if t is str else t) for c, t in _BOX_DTYPES.items()})
    for c in extra or []:
        df[c] = pd.Series(dtype="float64")
    return df


def make_boxes(
    image_id, class_id, class_name, xyxy, score=1.0, rater="", **extra
) -> pd.DataFrame:  # pragma: no mutate block, table plumbing
    """Build a box table from columns/arrays; ``xyxy`` is ``(N, 4)`` absolute original pixels."""
    xyxy = np.asarray(xyxy, dtype="float64").reshape(-1, 4)
    n = len(xyxy)
    df = pd.DataFrame({
        "image_id": _col(image_id, n, str),
        "class_id": _col(class_id, n, "int64"),
        "class_name": _col(class_name, n, str),
        "x_min": xyxy[:, 0], "y_min": xyxy[:, 1], "x_max": xyxy[:, 2], "y_max": xyxy[:, 3],
        "score": _col(score, n, "float64"),
        "rater": _col(rater, n, str),
    })
    for k, v in extra.items():
        df[k] = _col(v, n, None)
    return df


def _col(v, n, dtype):  # pragma: no mutate block, table plumbing
    if np.ndim(v) == 0:
        v = [v] * n
    s = pd.Series(list(v) if not isinstance(v, (pd.Series, np.ndarray)) else v)
    s = s.reset_index(drop=True)
    if dtype is str:
        return s.astype(str).to_numpy(dtype=object)
    return s.to_numpy() if dtype is None else s.astype(dtype).to_numpy()


def as_box_table(df: pd.DataFrame) -> pd.DataFrame:  # pragma: no mutate block, table plumbing
    """Coerce dtypes of an existing box table (missing ``score``/``rater`` get 1.0 / "")."""
    df = df.copy()
    if "score" not in df:
        df["score"] = 1.0
    if "rater" not in df:
        df["rater"] = ""
    missing = [c for c in BOX_COLUMNS if c not in df]
    if missing:
        raise ValueError(f"box table: missing column(s) {missing}; expected {BOX_COLUMNS}")
    df["image_id"] = df["image_id"].astype(str)
    df["class_name"] = df["class_name"].astype(str)
    df["rater"] = df["rater"].fillna("").astype(str)
    for c in ["class_id"] + COORDS + ["score"]:
        try:
            df[c] = df[c].astype("int64" if c == "class_id" else "float64")
        except (ValueError, TypeError):  # name the first cell that is not a number
            v = pd.to_numeric(df[c], errors="coerce")
            bad = v.isna() & df[c].notna() if c != "class_id" else v.isna() | (v != v.round())
            i = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else 0
            want = "an integer" if c == "class_id" else "a number"
            raise ValueError(f"box table row {df.index[i]}: {c} {str(df[c].iloc[i])!r} is not {want}; "
                             f"expected {want} ({int(bad.sum())} such row(s))") from None
    extra = [c for c in df.columns if c not in BOX_COLUMNS]
    return df[BOX_COLUMNS + extra].reset_index(drop=True)


def as_image_table(df: pd.DataFrame) -> pd.DataFrame:  # pragma: no mutate block, table plumbing
    """Coerce dtypes of an image table; ``path``/``patient_id`` default to "" / image_id."""
    df = df.copy()
    for c in ("image_id", "height", "width"):
        if c not in df:
            raise ValueError(f"image table: missing column {c!r}; expected at least image_id, height, width")
    if "path" not in df:
        df["path"] = ""
    if "patient_id" not in df:
        df["patient_id"] = df["image_id"]
    df["image_id"] = df["image_id"].astype(str)
    df["path"] = df["path"].fillna("").astype(str)
    df["patient_id"] = df["patient_id"].fillna("").astype(str)
    for c in ("height", "width"):
        df[c] = df[c].astype("int64")
    extra = [c for c in df.columns if c not in IMAGE_COLUMNS]
    return df[IMAGE_COLUMNS + extra].reset_index(drop=True)


def validate_boxes(
    boxes: pd.DataFrame, images: pd.DataFrame | None = None, source: str = "box table",
    tol: float = 0.5,
) -> None:  # pragma: no mutate block, input check
    """Raise ``ValueError`` naming the first bad row: NaN or inverted coordinates, or (with
    ``images``) a box outside its image by more than ``tol`` px or an unknown image_id."""
    xyxy = boxes[COORDS].to_numpy(dtype="float64")
    bad = np.isnan(xyxy).any(1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{source} row {boxes.index[i]}: NaN coordinate in {xyxy[i].tolist()}; expected numbers")
    for lo, hi in ((0, 2), (1, 3)):
        bad = xyxy[:, hi] < xyxy[:, lo]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{source} row {boxes.index[i]}: {COORDS[hi]} {xyxy[i, hi]} < {COORDS[lo]} {xyxy[i, lo]}")
    if images is not None:
        sizes = images.set_index("image_id")[["height", "width"]]
        known = boxes["image_id"].isin(sizes.index).to_numpy()
        if not known.all():
            i = int(np.flatnonzero(~known)[0])
            raise ValueError(f"{source} row {boxes.index[i]}: image_id {boxes['image_id'].iloc[i]!r} "
                             "is not in the image table")
        hw = sizes.loc[boxes["image_id"]].to_numpy(dtype="float64")
        out = ((xyxy[:, :2] < -tol).any(1) | (xyxy[:, 2] > hw[:, 1] + tol) | (xyxy[:, 3] > hw[:, 0] + tol))
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise ValueError(
                f"{source} row {boxes.index[i]}: box {xyxy[i].tolist()} outside image "
                f"{boxes['image_id'].iloc[i]!r} of height x width {int(hw[i, 0])} x {int(hw[i, 1])}")


# ----------------------------------------------------------------------------- conversions
def _hw(height, width):
    # not mutated: dtype=None gives the same numbers (integer sizes, and the boxes are float64 already)
    return np.asarray(height, dtype="float64"), np.asarray(width, dtype="float64")  # pragma: no mutate


def _n4(a) -> np.ndarray:
    """An array-like of boxes -> ``(N, 4)`` float64."""
    b = np.asarray(a, dtype="float64")
    return b.reshape(-1, 4)  # pragma: no mutate (reshape(-2, 4) is the same call: numpy infers any negative size)


def _whwh(height, width) -> np.ndarray:
    """Image sizes (scalars or per row) -> ``(1 or N, 4)`` float64 ``w, h, w, h``."""
    h, w = _hw(height, width)
    return _n4(np.stack([w, h, w, h], -1))


def xyxy_to_xywh(xyxy) -> np.ndarray:
    """Absolute xyxy -> absolute x_min, y_min, width, height (COCO ``bbox``, RSNA)."""
    b = _n4(xyxy)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)


def xywh_to_xyxy(xywh) -> np.ndarray:
    """Absolute x_min, y_min, width, height -> absolute xyxy."""
    b = _n4(xywh)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], 1)


def xyxy_to_yolo(xyxy, height, width) -> np.ndarray:
    """Absolute xyxy in an image of ``(height, width)`` -> normalised cx, cy, w, h."""
    b = _n4(xyxy)
    h, w = _hw(height, width)
    return np.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                     (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], 1)


def yolo_to_xyxy(cxcywh, height, width) -> np.ndarray:
    """Normalised cx, cy, w, h -> absolute xyxy in an image of ``(height, width)``."""
    b = _n4(cxcywh)
    h, w = _hw(height, width)
    return np.stack([(b[:, 0] - b[:, 2] / 2) * w, (b[:, 1] - b[:, 3] / 2) * h,
                     (b[:, 0] + b[:, 2] / 2) * w, (b[:, 1] + b[:, 3] / 2) * h], 1)


def normalize_xyxy(xyxy, height, width, clip: bool = True) -> np.ndarray:
    """Absolute xyxy -> xyxy divided by (w, h, w, h) (ensemble-boxes input), clipped to [0, 1]."""
    b = _n4(xyxy)
    out = b / _whwh(height, width)
    return np.clip(out, 0.0, 1.0) if clip else out


def denormalize_xyxy(nxyxy, height, width) -> np.ndarray:
    """Normalised xyxy -> absolute xyxy in an image of ``(height, width)``."""
    b = _n4(nxyxy)
    return b * _whwh(height, width)


@dataclass(frozen=True)
class Frame:
    """How an original image of (height, width) maps into a resized PNG / network input.

    ``png = orig * (sy, sx) + (pad_top, pad_left)``; the PNG is ``(frame_h, frame_w)``.
    Square resize (the Kaggle 512 px sets): sy = size/height, sx = size/width, no padding.
    Keep-ratio: one scale ``size / max(height, width)``; letterbox adds symmetric padding.
    """
    sy: float
    sx: float
    pad_top: float = 0.0
    pad_left: float = 0.0
    frame_h: int = 0
    frame_w: int = 0


def frame_between(height: int, width: int, shown_height: int, shown_width: int) -> Frame:
    """The :class:`Frame` of a ``(height, width)`` original resized (no padding) to
    ``(shown_height, shown_width)``: a PNG on disk, a DICOM decoded for display."""
    return Frame(shown_height / height, shown_width / width, 0.0, 0.0, shown_height, shown_width)


def frame_for(height: int, width: int, size: int, keep_ratio: bool = False, letterbox: bool = False) -> Frame:
    """The :class:`Frame` of a ``size`` px PNG made from a ``(height, width)`` original.

    ``keep_ratio`` sizes follow :func:`keep_ratio_size`; ``letterbox`` pads that to
    ``size`` x ``size`` (centred, as ultralytics' LetterBox does at inference)."""
    if not keep_ratio:
        return frame_between(height, width, size, size)
    fh, fw = keep_ratio_size(height, width, size)
    if not letterbox:
        return frame_between(height, width, fh, fw)
    return Frame(fh / height, fw / width, (size - fh) / 2, (size - fw) / 2, size, size)


def to_frame(xyxy, frame: Frame) -> np.ndarray:
    """Absolute original-pixel xyxy -> xyxy in the resized (and padded) frame."""
    b = _n4(xyxy)
    s = np.array([frame.sx, frame.sy, frame.sx, frame.sy])
    p = np.array([frame.pad_left, frame.pad_top, frame.pad_left, frame.pad_top])
    return b * s + p


def from_frame(xyxy, frame: Frame, clip_hw: tuple[int, int] | None = None) -> np.ndarray:
    """xyxy in the resized frame -> absolute original pixels (optionally clipped to ``(h, w)``)."""
    b = _n4(xyxy)
    s = np.array([frame.sx, frame.sy, frame.sx, frame.sy])
    p = np.array([frame.pad_left, frame.pad_top, frame.pad_left, frame.pad_top])
    out = (b - p) / s
    if clip_hw is not None:
        h, w = clip_hw
        out = np.clip(out, 0, [w, h, w, h])
    return out


# ----------------------------------------------------------------------------- IoU
def iou(a, b) -> np.ndarray:
    """Continuous IoU (no +1) of broadcastable ``(..., 4)`` xyxy arrays -> ``(...)``; 0 where the
    union is 0. The float operations of ensemble-boxes' ``bb_intersection_over_union`` (overlaps
    clipped at 0, union = area_a + area_b - intersection), so WBF through it stays bit-equal to
    ensemble-boxes; the metrics, the rater agreement and the phantoms use it too."""
    a = np.asarray(a)
    b = np.asarray(b)
    inter = (np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
             * np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0))
    union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0 * inter)


# ----------------------------------------------------------------------------- training-box shapes
def squarify(xyxy, ratio: float | None, height=None, width=None) -> np.ndarray:
    """Boxes whose longer side exceeds ``ratio`` times the shorter, grown about the centre until
    longer / shorter = ``ratio`` (the shorter side becomes ``longer / ratio``), then clipped to
    the image (``height``, ``width`` per row or one for all; None = not clipped). Other boxes are
    returned as they are (clipping included only for the grown ones). ``ratio`` None = off.

    The 2nd place of VinBigData widened training boxes with an aspect ratio above 2; prediction
    and truth are never squarified (only training labels: :mod:`data_prep.labels.export`).
    ``(N, 4)`` float64 xyxy in, ``(N, 4)`` float64 out."""
    b = _n4(xyxy).astype("float64", copy=True)
    if ratio is None:
        return b
    r = float(ratio)
    if not r >= 1.0:
        raise ValueError(f"squarify ratio {ratio!r}; expected a number >= 1 (or null = off)")
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    long_, short = np.maximum(w, h), np.minimum(w, h)
    grow = long_ > r * short
    if not grow.any():
        return b
    new_short = long_ / r
    wide = grow & (w >= h)        # wide: grow the height; tall: grow the width
    tall = grow & (w < h)
    cy = (b[:, 1] + b[:, 3]) / 2
    cx = (b[:, 0] + b[:, 2]) / 2
    b[wide, 1], b[wide, 3] = cy[wide] - new_short[wide] / 2, cy[wide] + new_short[wide] / 2
    b[tall, 0], b[tall, 2] = cx[tall] - new_short[tall] / 2, cx[tall] + new_short[tall] / 2
    if height is not None and width is not None:
        hw = np.broadcast_to(np.asarray(height, "float64"), (len(b),)), np.broadcast_to(np.asarray(width, "float64"), (len(b),))
        lim = np.stack([hw[1], hw[0], hw[1], hw[0]], 1)
        b[grow] = np.clip(b[grow], 0.0, lim[grow])
    return b
