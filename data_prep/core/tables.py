"""The project's own tables: one reader and one writer each, one dtype contract each.

=================  ==========================================================  =======================
table              columns (dtypes)                                            written by
=================  ==========================================================  =======================
box table          :data:`data_prep.core.boxes.BOX_COLUMNS` (image_id/class_name/   prep (boxes.csv,
                   rater str, class_id int64, coordinates and score float64)   fused_boxes.csv), fuse
                   + extras kept (``n_raters`` int64, ``fold`` int64)
prediction table   a box table whose ``score`` is a confidence; OOF tables     predict, cv
                   carry ``fold`` (int64)
image table        :data:`data_prep.core.boxes.IMAGE_COLUMNS` (image_id/path/        prep (images.csv)
                   patient_id str, height/width int64) + extras (``raters``
                   str, ``png_height``/``png_width`` int64, ...)
folds              ``image_id`` (str), ``fold`` (int64) + per-label shares     prep (folds.csv)
meta               ``image_id`` (str), ``height``, ``width`` (int64) + extras; convert (meta.csv)
                   ``image_id,dim0,dim1`` accepted (dim0 = height)
probabilities      ``image_id`` (str, unique) + one float64 column per label   classify, cv
                   in [0, 1] + ``abnormal`` (p(abnormal))
=================  ==========================================================  =======================

Ids, paths and names are always read as strings (hex ids stay ids, "" stays ""). Every writer
goes through :mod:`data_prep.core.atomic` (write-then-rename). :func:`read_truth` reads a truth file
for a dataset: its source labels file (a raw per-radiologist file is fused first, as the
competitions' own truth was) or our box table.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core.atomic import write_csv
from data_prep.core.boxes import as_box_table, as_image_table
from data_prep.datasets.common import Dataset, read_meta
from data_prep.core.errors import InputError, reading

log = logging.getLogger(__name__)

STR_COLUMNS = {"image_id": str, "patient_id": str, "path": str, "rater": str, "class_name": str, "raters": str}
BOX_FILE_COLUMNS = ["image_id", "class_id", "x_min", "y_min", "x_max", "y_max"]
PRED_COLUMNS = BOX_FILE_COLUMNS + ["score"]
_CONF_NAMES = ("confidence", "conf", "prob", "probability", "p")  # what a confidence column may be called
FUSION_IOU = 0.4  # the competitions' truth: the radiologists' boxes fused by WBF at IoU 0.4


def columns(path, what: str = "CSV table") -> list[str]:
    """The header of a CSV file (an unreadable file is one :class:`data_prep.core.errors.InputError`)."""
    with reading(path, what):
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]


def read_table(path, what: str = "CSV table") -> pd.DataFrame:
    """Any of our CSVs with the id/path/name columns kept as strings ("" stays "", and ids such as
    "nan" or "NA" stay ids: only an empty field is missing)."""
    with reading(path, what):
        df = pd.read_csv(path, dtype=STR_COLUMNS, keep_default_na=False, na_values=[""])
    for c in STR_COLUMNS:
        if c in df:
            df[c] = df[c].fillna("").astype(str)
    return df


# ----------------------------------------------------------------------------- box / prediction tables
def read_boxes(path, classes=None) -> pd.DataFrame:
    """A box table CSV -> box table (``class_name`` = the id as text when the file lacks it;
    ``score`` 1.0 / ``rater`` "" when missing; ``n_raters``/``fold`` int64 when present, checked by
    line; ``classes``: the dataset's class names, the class ids allowed)."""
    df = read_table(path, "box table")
    missing = [c for c in BOX_FILE_COLUMNS if c not in df]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected a box table "
                         f"({','.join(BOX_FILE_COLUMNS)}[,class_name,score,rater])")
    df["class_id"] = integer_column(df["class_id"], path, "class_id")
    if classes is not None:
        check_class_ids(df, classes, path)
    return _box_table(df, path)


def _box_table(df: pd.DataFrame, path=None) -> pd.DataFrame:
    if "class_name" not in df:
        df["class_name"] = df["class_id"].astype(str)
    for c in ("n_raters", "fold"):
        if c in df:
            df[c] = integer_column(df[c], path or "box table", c, minimum=0)
    return as_box_table(df)


def integer_column(values: pd.Series, path, column: str, minimum: int | None = None) -> pd.Series:
    """``values`` as int64, every cell checked: a cell that is not an integer (``0.5``, ``x``, empty;
    ``3.0`` is 3) or below ``minimum`` is one :class:`InputError` naming the file, line, column and
    value (line = row + 2: the header is line 1)."""
    v = pd.to_numeric(values, errors="coerce").to_numpy("float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(v) | (v != np.round(v))
        if minimum is not None:
            bad |= v < minimum
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        want = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        raise InputError(f"{path} line {i + 2}", f"{column} {str(values.iloc[i])!r} is not {want}; expected {want} "
                                                 f"({int(bad.sum())} such row(s))")
    return pd.Series(v.astype("int64"), index=values.index)


def check_class_ids(df: pd.DataFrame, names, path, first_line: int = 2) -> None:
    """Every ``class_id`` a class of the dataset (``names``: its class names in id order, the normal
    class included): a negative id, or one >= the number of classes, is one :class:`InputError`
    naming the file, line and value (never dropped or scored as a class nobody has)."""
    n = len(names)
    ids = df["class_id"].to_numpy("int64")
    bad = (ids < 0) | (ids >= n)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path} line {i + first_line}", f"class_id {int(ids[i])} is not a class of the dataset "
                                                          f"({n} classes); expected a class id from 0 to {n - 1} "
                                                          f"({int(bad.sum())} such row(s))")


def read_predictions(path, class_names=None, classes=None) -> pd.DataFrame:
    """A prediction box table CSV -> box table, checked cell by cell: a missing column, a cell that
    is not a finite number or a ``class_id`` that is not an integer (``3.0`` is) is one
    :class:`~data_prep.core.errors.InputError` naming the file, line, column and value.
    ``class_names`` ({id: name} or a list in id order): the names when the file has no
    ``class_name`` (else the id as text); ``classes`` (the dataset's class names in id order): the
    class ids allowed (:func:`check_class_ids`).
    A ``fold`` column must hold integers (:func:`integer_column`)."""
    cols = columns(path, "prediction box table")
    missing = [c for c in PRED_COLUMNS if c not in cols]
    if missing:
        hint = ""
        if "score" in missing:
            conf = [c for c in cols if c.strip().lower() in _CONF_NAMES]
            hint = " (no column 'score' for the confidence" + (
                f"; is {conf[0]!r} the confidence? rename it to score)" if conf else ")")
        raise InputError(path, f"missing column(s) {missing}{hint}; expected a prediction box table with "
                               f"columns {PRED_COLUMNS} [+ class_name] (found {cols})")
    df = read_table(path, "prediction box table")
    for c in PRED_COLUMNS[1:]:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = ~np.isfinite(v.to_numpy("float64", na_value=np.nan))
        if c == "class_id":
            bad = bad | (v.fillna(0) != np.round(v.fillna(0))).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            want = "an integer class id" if c == "class_id" else "a finite number"
            raise InputError(f"{path} line {i + 2}", f"{c} {str(df[c].iloc[i])!r} is not {want}; expected {want} "
                                                     f"({int(bad.sum())} such row(s))")
        df[c] = v.astype("int64") if c == "class_id" else v.astype("float64")
    if classes is not None:
        check_class_ids(df, classes, path)
    if "class_name" not in df and class_names is not None:
        names = dict(class_names) if isinstance(class_names, dict) else dict(enumerate(class_names))
        df["class_name"] = [names.get(c, str(c)) for c in df["class_id"]]
    return _box_table(df, path)


def write_boxes(boxes: pd.DataFrame, path) -> Path:
    """Write a box (or prediction) table, canonical columns first."""
    return write_csv(as_box_table(boxes), path)


# ----------------------------------------------------------------------------- image table, meta, folds
def read_images(path) -> pd.DataFrame:
    """An image table CSV (prep's images.csv) -> image table."""
    df = read_table(path)
    for c in ("png_height", "png_width"):
        if c in df and df[c].notna().all():
            df[c] = df[c].astype("int64")
    return as_image_table(df)


def write_images(images: pd.DataFrame, path) -> Path:
    return write_csv(images, path)


def read_sizes(meta) -> pd.DataFrame:
    """Image sizes from an image table / DataFrame or a CSV path, as ``image_id, height, width``.

    Accepts ``image_id,dim0,dim1`` (the VinBigData meta files: dim0 = rows = height) or
    ``image_id,height,width`` (convert's meta.csv, the image table); ``patientId`` is taken as
    the image id. Validated by :func:`data_prep.datasets.common.read_meta` (int64 sizes, one row
    per image_id)."""
    name = "image table" if isinstance(meta, pd.DataFrame) else str(meta)
    if not isinstance(meta, pd.DataFrame):
        with reading(meta, "meta table (image_id,height,width or image_id,dim0,dim1)"):
            meta = pd.read_csv(meta, dtype={"image_id": str, "patientId": str})
    df = read_meta(meta.rename(columns={"patientId": "image_id"}), name)
    return df[["image_id", "height", "width"]].reset_index(drop=True)


def read_folds(path) -> pd.DataFrame:
    """folds.csv -> ``image_id`` (str), ``fold`` (int64) (+ the other columns), checked by
    :func:`check_folds`."""
    df = read_table(path, "folds table (image_id,fold)")
    return check_folds(df, path)


def check_folds(df: pd.DataFrame, path="folds table") -> pd.DataFrame:
    """The folds contract: columns ``image_id, fold``; every fold an integer >= 0 (``0.5`` is an
    error naming its line, not fold 0); one fold per image (an image listed in two folds is an
    error naming it and both lines; a row repeated as it is counts once)."""
    for c in ("image_id", "fold"):
        if c not in df:
            raise InputError(path, f"no column {c!r}; expected image_id,fold")
    df = df.copy()
    df["image_id"] = df["image_id"].astype(str)
    df["fold"] = integer_column(df["fold"], path, "fold", minimum=0)
    dup = df["image_id"].duplicated(keep=False).to_numpy()
    if dup.any():
        d = df[dup]
        folds_of = d.groupby("image_id")["fold"].nunique()
        two = folds_of.index[folds_of > 1]
        if len(two):
            iid = str(two[0])
            rows = np.flatnonzero((df["image_id"] == iid).to_numpy())
            raise InputError(f"{path} lines {rows[0] + 2} and {rows[1] + 2}", f"image {iid!r} is in fold "
                             f"{int(df['fold'].iloc[rows[0]])} and in fold {int(df['fold'].iloc[rows[1]])} "
                             f"({len(two)} such image(s)); expected one fold per image")
        log.warning("%s: %d image(s) listed more than once in the same fold; counted once", path,
                    int(d["image_id"].nunique()))
        df = df.drop_duplicates("image_id").reset_index(drop=True)
    return df


def write_folds(folds: pd.DataFrame, path) -> Path:
    return write_csv(folds, path)


def fold_rows(folds, fold=None) -> pd.DataFrame:
    """``image_id, fold`` rows of a folds table or folds.csv path, restricted to ``fold`` (an int
    or a list of ints) when given; a fold without images raises ``ValueError`` naming the folds
    present."""
    df = (check_folds(folds) if isinstance(folds, pd.DataFrame) else read_folds(folds))[["image_id", "fold"]]
    if fold is None:
        return df.reset_index(drop=True)
    want = [int(fold)] if np.isscalar(fold) else [int(f) for f in fold]
    present = sorted(df["fold"].unique().tolist())
    for f in want:
        if f not in present:
            raise ValueError(f"{folds if not isinstance(folds, pd.DataFrame) else 'folds'}: fold {f} has no image; "
                             f"folds present {present}")
    return df[df["fold"].isin(want)].reset_index(drop=True)


def fold_images(folds, fold) -> list[str]:
    """Image ids of fold ``fold`` (an int or a list) of a folds table or folds.csv path
    (``ValueError`` if a fold is empty)."""
    return fold_rows(folds, fold)["image_id"].astype(str).tolist()


# ----------------------------------------------------------------------------- tables applied to each other
def coverage(have, want, source, table: str, of: str, without: str) -> set[str]:
    """The contract of a table applied to a set of images, one for every stage: ``have`` = the
    image ids the table (``source``) holds, ``want`` = the images it is applied to (``of`` names
    them: "predicted images"). None covered: :class:`InputError` (another split's table answers no
    question); part: a warning with the counts and what happens to the others (``without``).
    Returns the covered ids."""
    want = [str(i) for i in pd.unique(pd.Series(list(want), dtype=object).astype(str))]
    have = set(map(str, have))
    covered = {i for i in want if i in have}
    if want and not covered:
        raise InputError(source, f"{table} for none of the {len(want)} {of} (e.g. {want[0]!r}; its own e.g. "
                                 f"{next(iter(sorted(have)), None)!r}); expected a table of the same images "
                                 "(another split's?)")
    if len(covered) < len(want):
        log.warning("%s: %s for %d of %d %s; %d without: %s", source, table, len(covered), len(want), of,
                    len(want) - len(covered), without)
    return covered


def probs_for(probs: pd.DataFrame, predicted, source="--cls-probs") -> pd.DataFrame:
    """A probabilities table applied to predictions: only the rows of the ``predicted`` images
    (:func:`coverage`: none is an error, part a warning). Images without a row are left
    unfiltered (boxes and scores as predicted, no "No finding" row); rows of images no prediction
    table names are dropped with a count, so the 2-class filter never invents a "No finding 1.0"
    for an image that was never predicted."""
    predicted = set(map(str, predicted))
    coverage(probs["image_id"], sorted(predicted), source, "probabilities", "predicted images",
             "left unfiltered (boxes and scores as predicted, no normal-class row)")
    keep = probs["image_id"].astype(str).isin(predicted)
    if (~keep).any():
        log.warning("%s: %d row(s) for images no prediction table names: ignored (no normal-class row is made "
                    "for an image that was not predicted)", source, int((~keep).sum()))
    return probs[keep].reset_index(drop=True)


# ----------------------------------------------------------------------------- probabilities
def read_probs(path, labels: list[str] | None = None) -> pd.DataFrame:
    """A probability table CSV -> ``image_id`` (str) + float64 columns, each in [0, 1].

    ``labels``: the columns that must be there (e.g. the dataset's class names + ``abnormal``).
    A ``fold`` column (``cxrdet cv``'s ``oof_probs.csv``: which fold's classifier gave the row) is
    bookkeeping, not a probability: it is dropped. Raises :class:`~data_prep.core.errors.InputError` naming the file, line and column of a duplicated
    id or a bad value."""
    with reading(path, "probability table (image_id + one column per label)"):
        df = pd.read_csv(path, dtype={"image_id": str}, keep_default_na=False, na_values=[""])
    if "image_id" not in df:
        raise InputError(path, "no column 'image_id'; expected image_id + one column per label (abnormal, ...)")
    missing = [c for c in labels or [] if c not in df]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; expected image_id,{','.join(labels)}")
    dup = df["image_id"].duplicated().to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise InputError(f"{path} line {i + 2}", f"image_id {df['image_id'].iloc[i]!r} is listed twice; "
                         "expected one row per image")
    df = df.drop(columns=[c for c in ("fold",) if c in df])  # cv's bookkeeping column, not a label
    for c in df.columns.drop("image_id"):
        v = pd.to_numeric(df[c], errors="coerce").to_numpy("float64")
        bad = ~((v >= 0) & (v <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{path} line {i + 2}", f"{c} {str(df[c].iloc[i])!r}; expected a probability in [0, 1]")
        df[c] = v
    df["image_id"] = df["image_id"].astype(str)
    df = df.reset_index(drop=True)
    df.attrs["source"] = str(path)   # what a coverage message names
    return df


def write_probs(probs: pd.DataFrame, path) -> Path:
    """Write a probability table (``image_id`` first)."""
    if "image_id" not in probs:
        raise ValueError("probability table: no column 'image_id'")
    cols = ["image_id"] + [c for c in probs.columns if c != "image_id"]
    return write_csv(probs[cols], path)


# ----------------------------------------------------------------------------- truth for a dataset
def read_truth(path, dataset: Dataset, meta=None, fusion_iou: float = FUSION_IOU
               ) -> tuple[pd.DataFrame, pd.DataFrame, Dataset]:
    """A truth file -> ``(images, boxes, dataset)`` for ``dataset`` (a :class:`Dataset`).

    * the dataset's source labels file (its ``label_columns``): read by its loader; a raw
      per-radiologist file (``has_raters``, no ``n_raters``) is fused by WBF at ``fusion_iou``
      first, which needs ``meta`` for the image sizes;
    * our box table CSV: the evaluated images are those of ``meta`` when given (normal images
      included), else the images with truth boxes (warned);
    * another registered dataset's source labels file: read as that dataset (warned; the
      returned description says which).
    """
    from data_prep.datasets import DATASETS

    cols = set(columns(path))
    use = dataset
    if not set(dataset.label_columns) <= cols and not set(BOX_FILE_COLUMNS) <= cols:
        use = next((d for d in DATASETS.values() if set(d.label_columns) <= cols), None)
        if use is None:
            raise ValueError(f"{path}: columns {sorted(cols)} are neither the {dataset.name} labels layout "
                             f"({','.join(dataset.label_columns)}) nor a box table ({','.join(BOX_FILE_COLUMNS)})")
        log.warning("%s is a %s labels file; read as %s, not as the configured %s", path, use.name, use.name,
                    dataset.name)
    if set(use.label_columns) <= cols:
        images, boxes = use.load(path, meta)
        if use.has_raters and "n_raters" not in cols:
            if meta is None:
                raise ValueError(f"{path}: a raw {use.title} labels file must be fused (WBF iou {fusion_iou}) "
                                 "before scoring, which needs the image sizes; pass --meta (train_meta.csv or meta.csv)")
            from data_prep.labels.fusion import fuse
            n = len(boxes)
            boxes = fuse(boxes, images, "wbf", iou_thr=fusion_iou)
            log.info("truth %s: raw per-radiologist labels fused by WBF (iou %.2f): %d boxes -> %d on %d images "
                     "(%d images in all, normals included)", path, fusion_iou, n, len(boxes),
                     boxes["image_id"].nunique(), len(images))
        return images, boxes, use
    boxes = read_boxes(path, classes=use.names)
    if meta is not None:
        images = read_meta(meta, str(meta))
    else:
        images = pd.DataFrame({"image_id": pd.unique(boxes["image_id"])})
        log.warning("truth %s is a box table: without --meta the evaluated images are the %d with truth "
                    "boxes (normal images unknown)", path, len(images))
    return images, boxes, use


def images_of_folds(ids, folds, fold=None, of: str = "truth images") -> pd.DataFrame:
    """The folds' contract with the images they are applied to, for every stage: ``image_id, fold``
    rows of ``folds`` (a folds table or folds.csv) for the images ``ids`` within ``fold`` (an int,
    a list, or None = every fold). A folds table that holds none of ``ids`` is an error, part of
    them a warning with the counts (the others are not evaluated); a fold that holds none of them
    is an error too (no number for an empty set); folds' images not in ``ids`` are counted."""
    name = str(folds) if not isinstance(folds, pd.DataFrame) else "the folds table"
    ids = [str(i) for i in ids]
    every = fold_rows(folds)
    coverage(every["image_id"], ids, name, "folds", of, "not evaluated")
    fdf = every if fold is None else fold_rows(folds, fold)
    missing = set(fdf["image_id"].astype(str)) - set(ids)
    if missing:
        log.warning("%d image(s) of %s are not in the %s; left out", len(missing), name, of)
    fdf = fdf[fdf["image_id"].astype(str).isin(set(ids))].reset_index(drop=True)
    if fdf.empty:
        raise InputError(name, f"fold(s) {fold} hold none of the {len(ids)} {of} (the other folds do); expected "
                               "a fold with images")
    return fdf


def select_images(images: pd.DataFrame, truth: pd.DataFrame, pred: pd.DataFrame, folds=None, fold=None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The evaluated images: every image of ``images`` (normals included), restricted to the images
    of ``folds`` (a folds table or folds.csv; to ``fold``, an int or a list, when given too), with
    their ``fold`` column (int64); ``truth``/``pred`` box tables limited to them."""
    if fold is not None and folds is None:
        raise ValueError("--fold needs --folds (folds.csv)")
    ids = images["image_id"].astype(str).tolist()
    fold_of = None
    if folds is not None:
        fdf = images_of_folds(ids, folds, fold, "truth images")
        fold_of = dict(zip(fdf["image_id"].astype(str), fdf["fold"]))
        ids = [i for i in ids if i in fold_of]
        log.info("fold(s) %s: %d images", sorted(set(fdf["fold"])), len(ids))
    keep = set(ids)
    images = images[images["image_id"].astype(str).isin(keep)].reset_index(drop=True)
    if fold_of is not None:
        images["fold"] = images["image_id"].astype(str).map(fold_of).astype("int64")
    n_out = int((~pred["image_id"].isin(keep)).sum())
    if n_out:
        log.info("%d predicted box(es) on images outside the evaluated set ignored", n_out)
    return images, truth[truth["image_id"].isin(keep)], pred[pred["image_id"].isin(keep)]
