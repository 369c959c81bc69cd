"""The images a prediction runs on and how one is read: :func:`list_source` (a PNG or DICOM
folder, or a ``.txt`` list of PNG paths -> rows with original sizes from ``meta.csv``) and
:func:`load_image` (one row -> uint8 image in the PNG frame, its :class:`Frame`, original size).
Shared by predict, classify and the per-epoch score; imports data_prep only."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from data_prep.core.boxes import Frame, frame_between
from data_prep.core.prepdir import META
from data_prep.datasets.common import read_meta as common_read_meta

log = logging.getLogger("detection.engine.predict")   # the stage's logger: its lines read as predict's

PNG_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_meta(path: str | os.PathLike) -> pd.DataFrame:
    """``image_id``-indexed ``height, width`` (+ ``png_height, png_width`` when present) from either
    meta form, validated by :func:`data_prep.datasets.common.read_meta`."""
    df = common_read_meta(path, str(path))
    keep = [c for c in ("image_id", "height", "width", "png_height", "png_width") if c in df]
    return df[keep].set_index("image_id")


def list_source(source: str | os.PathLike, meta: str | os.PathLike | None = None) -> pd.DataFrame:
    """The images to predict: columns ``image_id, path, kind`` (png | dicom), ``height, width``
    (original pixels, NaN when only the PNG knows), ``png_height, png_width`` (NaN if unknown)."""
    from data_prep.dicom.convert import dicom_paths

    src = Path(source)
    if src.is_file() and src.suffix == ".txt":  # a list of PNG paths, one a line (like ultralytics' val.txt)
        pngs = _listed_pngs(src)
        src = src.parent
    elif not src.is_dir():
        raise FileNotFoundError(f"predict: source folder {src} does not exist")
    else:
        pngs = sorted(p for p in src.iterdir() if p.suffix.lower() in PNG_SUFFIXES and not p.name.startswith("."))
    if pngs:
        rows = pd.DataFrame({"image_id": [p.stem for p in pngs], "path": [str(p) for p in pngs], "kind": "png"})
        if meta is None:
            meta = next((m for m in (src / META, src.parent / META) if m.is_file()), None)
            if meta is not None:
                log.info("original sizes from %s", meta)
            else:
                log.warning("%s: no meta.csv and no --meta: the PNGs are taken as the original images", src)
        if meta is not None:
            m = read_meta(meta)
            rows = rows.join(m, on="image_id")
            unknown = rows["height"].isna()
            if unknown.any():
                raise ValueError(f"{meta}: no height/width for {int(unknown.sum())} image(s) of {src}, "
                                 f"first {rows.loc[unknown, 'image_id'].iloc[0]!r}")
    else:
        dcm = dicom_paths(src)
        if not dcm:
            raise FileNotFoundError(f"predict: no PNG or DICOM files in {src}")
        rows = pd.DataFrame({"image_id": [p.stem for p in dcm], "path": [str(p) for p in dcm], "kind": "dicom"})
    for c in ("height", "width", "png_height", "png_width"):
        if c not in rows:
            rows[c] = np.nan
    dup = rows["image_id"].duplicated()
    if dup.any():
        raise ValueError(f"{src}: image_id {rows.loc[dup, 'image_id'].iloc[0]!r} appears twice")
    return rows.reset_index(drop=True)


def _listed_pngs(path: Path) -> list[Path]:
    """The image paths of a ``.txt`` list (blank lines skipped; relative paths from the list's folder)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        p = Path(line.strip())
        p = p if p.is_absolute() else path.parent / p
        if p.suffix.lower() not in PNG_SUFFIXES:
            raise ValueError(f"{path} line {n}: {line.strip()!r} is not a PNG/JPEG path; expected one image path a line")
        out.append(p)
    if not out:
        raise ValueError(f"{path}: no image path listed")
    return out


def load_image(row, size: int = 512, keep_ratio: bool = False,
               voi=None) -> tuple[np.ndarray, Frame, tuple[int, int]]:
    """One source row -> (uint8 image (H, W) or (H, W, 3) in the PNG frame, its :class:`Frame`,
    original ``(height, width)``). DICOMs are converted in memory like ``cxrdet convert`` does
    (``voi``: :class:`data_prep.dicom.voi.VoiOptions`, as ``PredictSettings.voi``; None: config defaults)."""
    if row.kind == "dicom":
        from data_prep.dicom.read import read_dicom

        img, hdr = read_dicom(row.path, size=size, keep_ratio=keep_ratio, options=voi)
        h, w = int(hdr["height"]), int(hdr["width"])
    else:
        img = cv2.imread(str(row.path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{row.path}: cannot read the image (not a PNG/JPEG or truncated)")
        if img.dtype != np.uint8:
            img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        ph, pw = img.shape[:2]
        if not pd.isna(row.png_height) and (int(row.png_height), int(row.png_width)) != (ph, pw):
            raise ValueError(f"{row.path}: PNG is {ph}x{pw} but meta says png_height x png_width = "
                             f"{int(row.png_height)}x{int(row.png_width)}")
        h, w = (ph, pw) if pd.isna(row.height) else (int(row.height), int(row.width))
    ph, pw = img.shape[:2]
    return img, frame_between(h, w, ph, pw), (h, w)
