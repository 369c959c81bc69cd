"""Helpers shared by the dataset loaders: reading a table, naming a row, the repair log.

Row names: a row read from a file is named by its **file line** (1-based, the header is line 1,
so data row ``i`` (0-based) is line ``i + 2``), e.g. ``train.csv line 1042``; a row of a
DataFrame passed in memory is named by its index label, e.g. ``labels row 1040``.

Repairs (data problems a loader fixes instead of raising) are counted in a :class:`Repairs`
object, logged once per kind with the first few row names, and returned to the caller as
``boxes.attrs["repairs"]`` (a plain ``{kind: count}`` dict; kinds with 0 are listed too).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

N_SHOWN = 5  # row names quoted per repair kind in the log line

# Coded findings (DICOM SR export). Codes are taken from DICOM PS3.16 (the context groups of chest CAD
# findings, CID 6101-6106, and others; pydicom ships them in pydicom.sr._concepts_dict, which a test
# checks every SCT/DCM code against) or from a terminology source named beside the code. A class with
# no verified SNOMED CT / DICOM concept gets a code of the local scheme below (PS3.16 8.2: private coding
# scheme designators start with "99"); its values are the ``LOCAL_SCHEME`` rows of each dataset's ``codes``.
LOCAL_SCHEME = "99CXRDET"
LOCAL_SCHEME_NAME = "cxrdet local finding codes"
NO_ABNORMALITY = ("DCM", "111286", "No abnormality")   # PS3.16 CID 6030/6031: the normal verdict of an image


@dataclass(frozen=True)
class SubmissionFormat:
    """A Kaggle submission's layout (``detection/competition/submission.py`` writes, parses and checks it from
    this alone): header ``<id_column>,PredictionString``, one row per test image, the string made
    of groups of tokens per box, highest confidence first.

    ``with_class``: each group starts with the class id (``class conf ...``), else it is one class
    (the dataset's first). ``xywh``: the box as ``x y width height``, else ``x_min y_min x_max y_max``
    (original pixels either way). ``normal_row``: the dataset's normal class is written as
    ``N conf 0 0 1 1`` and an image without any prediction gets ``N 1 0 0 1 1`` (an empty string
    is invalid); otherwise an image without boxes has an empty string."""
    id_column: str
    with_class: bool
    xywh: bool
    normal_row: bool

    @property
    def tokens(self) -> int:
        """Tokens per box: (class,) conf and four coordinates."""
        return 5 + int(self.with_class)


@dataclass(frozen=True)
class Dataset:
    """What the stages need to know about one dataset, in one place (its module, beside its loader).

    ``classes``: finding class names, index = class_id. ``normal``: ``(class_id, name)`` of the
    dataset's "no finding" class (a box ``0 0 1 1`` on images without findings, as VinBigData
    scores them) or None when a normal image simply has no box. ``submission``: the Kaggle
    submission's layout (:class:`SubmissionFormat`), or None. ``metric``: the default metric.
    ``id_column``: the image id column of the source labels file; ``label_columns``: the columns
    that file must have (how :func:`data_prep.core.tables.read_truth` tells the source layout from our
    own box table). ``has_raters``: one row per radiologist (rater columns, rater baseline).
    ``boxed_only``: unboxed images are NOT normal (NIH: only a subset was boxed). ``size_meta``:
    the loader's ``meta`` is an image-size table (NIH's is Data_Entry, not sizes).
    ``image_size``: every original image is this square size (None: read from meta/DICOM).
    ``competition_csv``: prep writes ``fused.csv`` in the competition's train.csv layout.
    ``extra_files``: loader keyword -> file names prep looks for inside ``--data``.
    ``codes``: the coded concept of each finding class, ``(class name, scheme, code value, code meaning)``
    (SNOMED CT ``SCT`` or DICOM ``DCM`` where PS3.16 or a terminology source has one, else the local
    scheme :data:`LOCAL_SCHEME`; see :meth:`code`), used where findings leave the project as DICOM SR.
    ``load``: the loader, ``load(labels, meta=None, ...) -> (images, boxes)``."""
    name: str
    title: str
    classes: tuple[str, ...]
    normal: tuple[int, str] | None
    submission: SubmissionFormat | None
    metric: str
    id_column: str
    label_columns: tuple[str, ...]
    has_raters: bool = False
    boxed_only: bool = False
    size_meta: bool = True
    image_size: int | None = None
    competition_csv: bool = False
    extra_files: tuple[tuple[str, tuple[str, ...]], ...] = ()
    codes: tuple[tuple[str, str, str, str], ...] = ()
    load: Callable = field(default=None, repr=False, compare=False)

    @property
    def normal_id(self) -> int | None:
        return None if self.normal is None else int(self.normal[0])

    @property
    def normal_name(self) -> str | None:
        return None if self.normal is None else str(self.normal[1])

    @property
    def names(self) -> list[str]:
        """Every class name by class_id, the normal class included (index = class_id)."""
        out = list(self.classes)
        if self.normal is not None:
            out += [f"class_{i}" for i in range(len(out), self.normal_id)] + [self.normal_name]
        return out

    @property
    def class_ids(self) -> list[int]:
        """Every valid class_id (findings, then the normal class if any)."""
        return list(range(len(self.names)))

    def class_names(self) -> dict[int, str]:
        """``{class_id: name}``, the normal class included."""
        return dict(enumerate(self.names))

    def code(self, class_id: int) -> tuple[str, str, str]:
        """``(scheme, code value, code meaning)`` of a class: the normal class is :data:`NO_ABNORMALITY`;
        a finding its entry in ``codes`` (matched by class NAME, so a config's replaced class list never
        borrows another class's code), else a :data:`LOCAL_SCHEME` code ``<DATASET>_<id>`` named by the class."""
        class_id = int(class_id)
        if self.normal is not None and class_id == self.normal_id:
            return NO_ABNORMALITY
        name = self.names[class_id]
        for n, scheme, value, meaning in self.codes:
            if n == name:
                return scheme, value, meaning
        return LOCAL_SCHEME, f"{self.name.upper()[:10]}_{class_id}", name

    def is_finding(self, class_id) -> "np.ndarray":
        """Boolean mask: which of ``class_id`` (array-like) are findings, i.e. not the normal class."""
        c = np.asarray(class_id)
        return np.ones(c.shape, bool) if self.normal is None else c != self.normal_id

    def findings(self, boxes: pd.DataFrame) -> pd.DataFrame:
        """``boxes`` without the normal-class rows."""
        if self.normal is None or not len(boxes):
            return boxes
        return boxes[self.is_finding(boxes["class_id"].to_numpy())]


class Source:
    """A labels/meta table plus how to name its rows in messages."""

    def __init__(self, data, name: str, report_duplicates: bool = False, **read_kw):
        if isinstance(data, pd.DataFrame):
            self.df = data.reset_index(drop=True).copy()
            self.index = data.index.to_numpy()
            self.name = name
            self.from_file = False
        else:
            path = Path(os.fspath(data))
            if not path.is_file():
                raise FileNotFoundError(f"{name}: no such file {path}")
            from data_prep.core.errors import reading

            with reading(path, f"{name} table"):
                self.df = pd.read_csv(path, **read_kw)
            self.index = None
            self.name = path.name
            self.from_file = True
        self.n_duplicates = self._report_duplicates() if report_duplicates else 0

    def _report_duplicates(self) -> int:
        """Count the rows identical to an earlier row (every column) and log them once."""
        try:
            dup = self.df.duplicated().to_numpy()
        except TypeError:  # unhashable cells: nothing a CSV holds
            return 0
        n = int(dup.sum())
        if n:
            rows = ", ".join(self.row(i) for i in np.flatnonzero(dup)[:N_SHOWN])
            more = f" and {n - N_SHOWN} more" if n > N_SHOWN else ""
            log.warning("%s: %d duplicate row(s), identical to an earlier row in every column: %s%s",
                        self.name, n, rows, more)
        return n

    def row(self, i: int) -> str:
        """Name of data row ``i`` (0-based position)."""
        if self.from_file:
            return f"{self.name} line {int(i) + 2}"
        return f"{self.name} row {self.index[int(i)]}"

    def require(self, columns: list[str]) -> None:
        missing = [c for c in columns if c not in self.df.columns]
        if missing:
            raise ValueError(f"{self.name}: missing column(s) {missing}; expected columns {columns} "
                             f"(found {list(self.df.columns)})")

    def fail(self, mask, field: str, what: str, expected: str) -> None:
        """Raise ``ValueError`` naming the first row where ``mask`` is true (no-op if none)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            i = int(np.flatnonzero(mask)[0])
            value = self.df[field].iloc[i] if field in self.df.columns else None
            value = value.item() if isinstance(value, np.generic) else value
            raise ValueError(f"{self.row(i)}: {field} {value!r} {what}; expected {expected} "
                             f"({int(mask.sum())} such row(s) in {self.name})")


class Repairs:
    """Counts of repaired rows per kind, logged with the first few row names."""

    def __init__(self, source: Source, kinds: list[str]):
        self.source = source
        self.counts = {k: 0 for k in kinds}

    def add(self, kind: str, mask, what: str) -> None:
        mask = np.asarray(mask, dtype=bool)
        n = int(mask.sum())
        self.counts[kind] = self.counts.get(kind, 0) + n
        if n:
            rows = ", ".join(self.source.row(i) for i in np.flatnonzero(mask)[:N_SHOWN])
            more = f" and {n - N_SHOWN} more" if n > N_SHOWN else ""
            log.warning("%s: %d row(s) %s: %s%s", self.source.name, n, what, rows, more)


def numeric(src: Source, columns: list[str]) -> None:
    """Coerce ``columns`` to float64 in place; a non-numeric value raises naming its row."""
    for c in columns:
        col = pd.to_numeric(src.df[c], errors="coerce")
        src.fail(col.isna() & src.df[c].notna() & (src.df[c].astype(str).str.strip() != ""),
                 c, "is not a number", "a number or empty")
        src.df[c] = col.astype("float64")


def read_meta(meta, name: str = "meta") -> pd.DataFrame:
    """Image sizes from ``image_id,dim0,dim1`` (dim0 = height/rows, dim1 = width/columns) or
    convert's ``meta.csv`` (``image_id,height,width,...``; extra columns kept).

    Returns a DataFrame with ``image_id`` (str), ``height``, ``width`` (int64) and the extras.
    Raises ``ValueError`` on a missing/duplicated image_id or a non-positive/NaN size."""
    src = Source(meta, name, dtype={"image_id": str})
    df = src.df
    if {"dim0", "dim1"} <= set(df.columns) and not {"height", "width"} <= set(df.columns):
        df = df.rename(columns={"dim0": "height", "dim1": "width"})
        src.df = df
    src.require(["image_id", "height", "width"])
    numeric(src, ["height", "width"])
    df = src.df
    src.fail(df["image_id"].isna(), "image_id", "is empty", "an image id")
    for c in ("height", "width"):
        src.fail(~(df[c] > 0), c, "is not a positive size", "a positive number of pixels")
    df["image_id"] = df["image_id"].astype(str)
    src.fail(df["image_id"].duplicated().to_numpy(), "image_id", "is listed twice", "one row per image")
    df["height"] = df["height"].astype("int64")
    df["width"] = df["width"].astype("int64")
    return df


def attach_sizes(images: pd.DataFrame, meta, on_missing: str, repairs: dict, name: str) -> pd.DataFrame:
    """Left-join ``meta`` sizes onto ``images`` (one row per image_id).

    ``on_missing``: "error" raises ``ValueError`` naming the first images the meta lacks;
    "drop" removes them, counted as ``repairs["no_meta_dropped"]`` and logged."""
    if on_missing not in ("error", "drop"):
        raise ValueError(f"on_missing_meta {on_missing!r}; expected 'error' or 'drop'")
    m = read_meta(meta, "meta")
    extra = [c for c in m.columns if c in images.columns and c != "image_id"]
    out = images.drop(columns=extra).merge(m, on="image_id", how="left")
    missing = out["height"].isna().to_numpy()
    repairs["no_meta_dropped"] = 0
    if missing.any():
        ids = out.loc[missing, "image_id"].tolist()
        if on_missing == "error":
            raise ValueError(f"{name}: {len(ids)} image(s) have no size in the meta table, e.g. "
                             f"{ids[:N_SHOWN]}; expected every labelled image in it "
                             "(or pass on_missing_meta='drop')")
        log.warning("%s: dropped %d image(s) missing from the meta table, e.g. %s",
                    name, len(ids), ids[:N_SHOWN])
        repairs["no_meta_dropped"] = len(ids)
        out = out[~missing]
    unused = int((~m["image_id"].isin(images["image_id"])).sum())
    if unused:
        log.info("meta: %d image(s) without labels ignored", unused)
    out["height"] = out["height"].astype("int64")
    out["width"] = out["width"].astype("int64")
    return out


def clip_to_images(xyxy: np.ndarray, hw: np.ndarray, src: Source, rows: np.ndarray,
                   repairs: Repairs) -> np.ndarray:
    """Clip ``(N, 4)`` xyxy to ``[0, w] x [0, h]`` (``hw`` ``(N, 2)`` height, width, 0 = unknown,
    not clipped). A box with no area left inside its image raises ``ValueError``; a partly
    outside box is clipped and counted as ``outside_clipped``. ``rows``: positions in ``src``."""
    known = (hw > 0).all(1)
    h, w = hw[:, 0].astype("float64"), hw[:, 1].astype("float64")
    lim = np.stack([w, h, w, h], 1)
    outside = known & ((xyxy < 0).any(1) | (xyxy > lim).any(1))
    if not outside.any():
        return xyxy
    clipped = xyxy.copy()
    clipped[outside] = np.clip(xyxy[outside], 0.0, lim[outside])
    gone = outside & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    if gone.any():
        i = int(np.flatnonzero(gone)[0])
        raise ValueError(f"{src.row(rows[i])}: box {xyxy[i].tolist()} lies outside its image of "
                         f"height x width {int(h[i])} x {int(w[i])}; expected a box inside the image")
    repairs.add("outside_clipped", np.isin(np.arange(len(src.df)), rows[outside]),
                "with a box partly outside the image, clipped to it")
    return clipped
