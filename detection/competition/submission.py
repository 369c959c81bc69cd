"""Kaggle submission strings: write, parse, validate.

Two competition formats, one row per test image, in the sample submission's order:

* ``vinbigdata``: header ``image_id,PredictionString``; the string is groups of six tokens
  ``class conf x_min y_min x_max y_max`` (xyxy in ORIGINAL image pixels), boxes sorted by
  confidence, highest first. The dataset's normal class N ("No finding") is written
  ``N p 0 0 1 1``; an image with no prediction at all gets ``N 1 0 0 1 1``.
* ``rsna``: header ``patientId,PredictionString``; groups of five tokens
  ``conf x y width height`` (xywh, 1024 x 1024 images); an image without boxes has an empty string.

A format is named after its dataset and described there (:class:`data_prep.datasets.SubmissionFormat`:
id column, a class token or not, xyxy or xywh, the normal row): nothing here names a dataset.
Class ids, names, the normal class and a fixed image size come from the same description.

Numbers written (see :func:`write_submission`): coordinates on a grid of ``10**-decimals`` px
(default 1 decimal) with mins floored and maxes ceiled, so a written box always contains the
predicted one (by less than one grid step per side) and keeps a positive size; then clipped
to ``[0, width] x [0, height]`` when image sizes are known (RSNA: 1024 x 1024 by default).
Confidences with 6 decimals (trailing zeros dropped, never exponent notation).

The box table is the one of :mod:`data_prep.core.boxes`; parsing returns it with the file's ids,
in file order, in ``df.attrs["image_ids"]`` (also :func:`submission_ids`).
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core.atomic import atomic_path, check_not_input, move, write_csv
from data_prep.core.errors import CSV_FIELD_LIMIT, InputError, check_output, reading
from data_prep.core.boxes import BOX_COLUMNS, as_box_table, make_boxes, empty_boxes, validate_boxes, xywh_to_xyxy, xyxy_to_xywh
from data_prep.datasets import DATASETS, Dataset, SubmissionFormat, describe, normal_ids
from data_prep.core.tables import columns, read_predictions as read_box_predictions, read_sizes
from detection.competition.submission_numbers import STR, fixed, join, snap_outward

log = logging.getLogger(__name__)

# format name (= its dataset's) -> layout, from the dataset descriptions
FORMATS: dict[str, SubmissionFormat] = {name: d.submission for name, d in DATASETS.items() if d.submission}
MAX_PRINTED = 20


# ----------------------------------------------------------------------------- helpers
def _format(fmt: str) -> tuple[Dataset, SubmissionFormat]:  # pragma: no mutate block, config check
    """The dataset and layout of the submission format ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"submission format {fmt!r} unknown; expected one of {sorted(FORMATS)}")
    return describe(fmt), FORMATS[fmt]


def normal_string(ds: Dataset) -> str:
    """What an image without any prediction gets in a format with a normal row: ``N 1 0 0 1 1``."""
    return f"{ds.normal_id} 1 0 0 1 1"


def read_predictions(path, dataset: Dataset | str) -> pd.DataFrame:  # pragma: no mutate block, input reading
    """Predictions file -> box table: a submission CSV (``<id column>,PredictionString``, in the
    format of ``dataset``, or of the dataset whose id column the header names) or a prediction
    box table CSV (:func:`data_prep.core.tables.read_predictions`)."""
    cols = columns(path, "prediction table")
    if "PredictionString" in cols:
        ds = describe(dataset)
        fmt = ds.name if ds.submission else None
        if fmt is None or FORMATS[fmt].id_column != cols[0]:
            fmt = next((n for n, f in FORMATS.items() if f.id_column == cols[0]), fmt)
        if fmt is None:
            raise ValueError(f"{path}: a submission, but dataset {ds.name!r} has no submission format")
        pred = parse_submission(path, fmt)
    else:
        pred = read_box_predictions(path, classes=describe(dataset).names)  # ids outside the dataset: an error
    s = pred["score"].to_numpy("float64")
    bad = ~((s >= 0) & (s <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(path, f"score {s[i]:g} of image {pred['image_id'].iloc[i]!r} is outside [0, 1] "
                               f"({int(bad.sum())} such box(es)); expected confidences in [0, 1]")
    return pred


def _sample_ids(sample) -> list[str]:  # pragma: no mutate block, input reading
    """The image ids of a sample submission (path or DataFrame): its first column, in order."""
    if isinstance(sample, pd.DataFrame):
        df = sample
    else:
        with reading(sample, "sample submission CSV"):
            df = pd.read_csv(sample, dtype=str, keep_default_na=False)
    if df.shape[1] < 1:
        raise ValueError(f"sample submission {sample}: no columns")
    return df.iloc[:, 0].astype(str).tolist()


# ----------------------------------------------------------------------------- write
def write_submission(pred_boxes: pd.DataFrame, sample_csv, format: str, out, images=None,
                     decimals: int = 1, conf_decimals: int = 6, announce: bool = True) -> Path:
    """Write a Kaggle submission CSV for every id of ``sample_csv``, once each, in its order.

    ``pred_boxes``: a box table of predictions in ORIGINAL pixels (``score`` = confidence in
    [0, 1]); VinBigData rows of class 14 are written ``14 score 0 0 1 1`` whatever their box;
    RSNA keeps class 0 only (class 14 rows, a "normal" verdict, write nothing).
    ``images``: image table / meta (DataFrame or CSV path, see :func:`read_sizes`) to clip boxes to
    the image; RSNA defaults to 1024 x 1024. ``decimals``: coordinate decimals (0 = integers).
    Raises ``ValueError`` for predictions of ids not in the sample, NaN or inverted boxes,
    confidences outside [0, 1] or classes the format does not know. Returns ``out``.
    """
    ds, f = _format(format)
    id_col = f.id_column
    out = Path(out)
    ids = _sample_ids(sample_csv)
    if len(pred_boxes) and "score" not in pred_boxes:
        raise ValueError(f"prediction box table: no 'score' column (columns {list(pred_boxes.columns)}); "
                         "expected each box's confidence in a column named score")
    pred = as_box_table(pred_boxes) if len(pred_boxes) else empty_boxes()
    validate_boxes(pred, source="prediction box table")

    unknown = sorted(set(pred["image_id"]) - set(ids))
    if unknown:
        raise ValueError(f"prediction box table: {len(unknown)} image_id(s) not in the sample submission "
                         f"{sample_csv}, e.g. {unknown[:5]}")
    score = pred["score"].to_numpy()
    bad = ~((score >= 0) & (score <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"prediction box table row {i}: score {score[i]} outside [0, 1] "
                         f"(image_id {pred['image_id'].iloc[i]!r}); expected a confidence")
    cls = pred["class_id"].to_numpy()
    verdict = sorted(normal_ids() - set(ds.class_ids)) if ds.normal is None else []
    bad = ~np.isin(cls, ds.class_ids + verdict)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        want = (f"0..{len(ds.names) - 1}" if ds.normal is not None else
                " or ".join([f"{c} ({n})" for c, n in ds.class_names().items()] + [f"{v} (normal)" for v in verdict]))
        raise ValueError(f"prediction box table row {i}: class_id {cls[i]} (image_id "
                         f"{pred['image_id'].iloc[i]!r}) not allowed in a {format} submission; expected {want}")
    if verdict:
        n_normal = int(np.isin(cls, verdict).sum())
        if n_normal:
            log.info("%s submission: %d 'normal' row(s) (class %s) write no box", format, n_normal, verdict)
        pred = pred[~np.isin(cls, verdict)]   # every use below is by position (to_numpy)

    sizes = read_sizes(images) if images is not None else None
    if sizes is None and ds.image_size:
        sizes = pd.DataFrame({"image_id": ids, "height": ds.image_size, "width": ds.image_size})
    hw = None
    if sizes is not None and len(pred):
        hw = sizes.set_index("image_id").reindex(pred["image_id"])[["height", "width"]].to_numpy()
        n_unknown = int(np.isnan(hw[:, 0]).sum())
        if n_unknown:
            log.warning("%d predicted box(es) on images of unknown size: clipped at 0 only", n_unknown)

    xyxy = snap_outward(pred[["x_min", "y_min", "x_max", "y_max"]].to_numpy("float64"), hw, decimals)
    conf = fixed(pred["score"].to_numpy(), conf_decimals)
    if f.normal_row:   # the normal class is written N conf 0 0 1 1 whatever its box
        xyxy[pred["class_id"].to_numpy() == ds.normal_id] = [0.0, 0.0, 1.0, 1.0]
    coords = xyxy_to_xywh(xyxy) if f.xywh else xyxy
    lead = (pred["class_id"].to_numpy().astype(STR), conf) if f.with_class else (conf,)
    parts = join(*lead, *(fixed(coords[:, k], decimals) for k in range(4)))
    empty = normal_string(ds) if f.normal_row else ""
    strings: dict[str, str] = {}
    if len(pred):
        # per image, highest confidence first; stable so equal confidences keep the table's order
        img = pred["image_id"].to_numpy()
        codes, uniq = pd.factorize(img)
        order = np.lexsort((-pred["score"].to_numpy(), codes))
        codes, parts = codes[order], parts[order].tolist()
        cuts = np.flatnonzero(np.diff(codes)) + 1
        for c, lo, hi in zip(codes[np.r_[0, cuts]], np.r_[0, cuts], np.r_[cuts, len(codes)]):
            strings[uniq[c]] = " ".join(parts[lo:hi])
    pstr = [strings.get(i, empty) for i in ids]
    sub = pd.DataFrame({id_col: ids, "PredictionString": pstr})
    write_csv(sub, out, lineterminator="\n")
    if announce:  # off where ``out`` is a staging name the caller renames (``cxrdet submit``)
        log.info("wrote %s: %d images, %d boxes, %d without prediction", out, len(ids), len(pred),
                 sum(i not in strings for i in ids))
    return out


# ----------------------------------------------------------------------------- read
def _read_rows(path) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:  # pragma: no mutate block, input reading
    """(header fields or None, [(1-based line number, fields)]) of a CSV file; blank lines kept.

    A PredictionString may be longer than the csv module's default 131,072-character field
    limit (5,000 boxes on one image): the limit is raised to :data:`CSV_FIELD_LIMIT`."""
    csv.field_size_limit(CSV_FIELD_LIMIT)
    with reading(path, "submission CSV"), open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = []
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            rows.append((start, fields))
    return header, rows


def _rows_from(path_or_df) -> tuple[list[str] | None, list[tuple[int, list[str]]], str]:  # pragma: no mutate block, input reading
    if isinstance(path_or_df, pd.DataFrame):
        df = path_or_df
        rows = [(i + 2, ["" if pd.isna(v) else str(v) for v in r]) for i, r in enumerate(df.itertuples(index=False))]
        return [str(c) for c in df.columns], rows, "submission"
    return (*_read_rows(path_or_df), str(path_or_df))


def submission_ids(path_or_df) -> list[str]:  # pragma: no mutate block, input reading
    """Every image id of a submission (path or DataFrame), in file order, incl. empty predictions."""
    _, rows, _ = _rows_from(path_or_df)
    return [f[0] for _, f in rows if f]


def parse_submission(path_or_df, format: str) -> pd.DataFrame:
    """A submission CSV (either id column name) -> box table in original pixels.

    ``score`` = the confidence, ``rater`` = ""; class names from the format's dataset description
    (the VinBigData normal class kept as a row with its box 0 0 1 1); RSNA: class 0, xywh
    converted to xyxy. Images with an empty string give no rows.
    ``df.attrs["image_ids"]`` lists every id of the file, in order.
    Raises ``ValueError`` naming the line for a token count that is not a multiple of the
    format's group size or a token that is not a number."""
    ds, f = _format(format)
    per_box = f.tokens
    header, rows, src = _rows_from(path_or_df)
    ids, img, vals = [], [], []
    for line, fields in rows:
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{src} line {line}: {len(fields)} fields {fields!r}; expected id,PredictionString")
        iid, toks = fields[0], fields[1].split()
        ids.append(iid)
        if len(toks) % per_box:
            raise ValueError(f"{src} line {line}: {len(toks)} tokens in PredictionString; "
                             f"expected a multiple of {per_box} for {format}")
        try:
            v = [float(t) for t in toks]
        except ValueError:
            bad = next(t for t in toks if not _is_float(t))
            raise ValueError(f"{src} line {line}: token {bad!r} is not a number") from None
        img += [iid] * (len(toks) // per_box)
        vals += v
    a = np.asarray(vals).reshape(-1, per_box)   # Python floats: float64 (also when empty)
    k = int(f.with_class)               # the confidence's column; the box follows it to the group's end
    xyxy = xywh_to_xyxy(a[:, k + 1:]) if f.xywh else a[:, k + 1:]
    if f.with_class:
        names = ds.names
        last = len(names) - 1
        bad = (a[:, 0] != np.round(a[:, 0])) | (a[:, 0] < 0) | (a[:, 0] > last)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{src}: image {img[i]!r} has class {a[i, 0]:g}; expected an integer in 0..{last}")
        cls = a[:, 0].astype("int64")
        df = make_boxes(img, cls, [names[c] for c in cls], xyxy, score=a[:, k])
    else:
        df = make_boxes(img, 0, ds.classes[0], xyxy, score=a[:, k])
    df = df[BOX_COLUMNS]
    df.attrs["image_ids"] = ids
    return df


def _is_float(t: str) -> bool:  # pragma: no mutate block, message
    try:
        float(t)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- validate
def validate_submission(path, sample, format: str, images=None) -> list[str]:
    """Every problem of a submission file against its sample submission; ``[]`` = valid.

    Each problem names the 1-based line (header = line 1) and the fault: header, blank lines,
    field count, missing / duplicate / unknown ids, order differing from the sample, token count
    not a multiple of 6 (vinbigdata) / 5 (rsna), non-numeric or non-finite tokens, class not an
    integer in 0..14, class 14 box not ``0 0 1 1``, an empty vinbigdata string, confidence
    outside [0, 1], x_max <= x_min / y_max <= y_min (vinbigdata), width / height <= 0 (rsna),
    coordinates outside the image when its size is known (``images``: image table or meta CSV;
    RSNA defaults to 1024 x 1024)."""
    ds, f = _format(format)
    id_col = f.id_column
    problems: list[str] = []
    sample_ids = _sample_ids(sample)
    header, rows, _ = _rows_from(path)
    expected = [id_col, "PredictionString"]
    if header is None:
        return [f"line 1: empty file; expected header {','.join(expected)}"]
    if header != expected:
        problems.append(f"line 1: header {','.join(header)!r}; expected {','.join(expected)!r}")

    sizes: dict[str, tuple[float, float]] = {}
    if images is not None:
        s = read_sizes(images)
        sizes = dict(zip(s["image_id"], zip(s["height"], s["width"])))
    size = ds.image_size
    default_hw = (float(size), float(size)) if size else None

    known = set(sample_ids)
    first_line: dict[str, int] = {}
    for line, fields in rows:
        if not fields or fields == [""]:
            problems.append(f"line {line}: blank line")
            continue
        if len(fields) != 2:
            problems.append(f"line {line}: {len(fields)} fields; expected 2 ({id_col},PredictionString)")
        iid, pstring = fields[0], (fields[1] if len(fields) > 1 else "")
        where = f"line {line} ({id_col} {iid!r})"
        if iid in first_line:
            problems.append(f"{where}: duplicate id, first on line {first_line[iid]}")
        else:
            first_line[iid] = line
        if iid not in known:
            problems.append(f"{where}: unknown id, not in the sample submission")
        hw = sizes.get(iid, default_hw)
        problems += _check_string(pstring, format, hw, where)

    for k, iid in enumerate(sample_ids):
        if iid not in first_line:
            problems.append(f"sample line {k + 2}: id {iid!r} missing from the submission")
    # order: the file's known ids (first occurrences) must follow the sample's order
    present = set(first_line)
    want = [i for i in sample_ids if i in present]
    got = [(first_line[i], i) for i in first_line if i in known]
    for (line, i), w in zip(got, want):
        if i != w:
            problems.append(f"line {line}: id {i!r} out of the sample's order; expected {w!r} here")
            break
    return problems


def _check_string(s: str, format: str, hw, where: str) -> list[str]:
    """Problems of one PredictionString; ``hw`` = (height, width) or None when unknown."""
    ds, f = _format(format)
    per_box = f.tokens
    toks = s.split()
    if not toks:
        return [f"{where}: empty PredictionString; expected at least '{normal_string(ds)}'"] if f.normal_row else []
    if len(toks) % per_box:
        return [f"{where}: {len(toks)} tokens; expected a multiple of {per_box} for {format}"]
    out = []
    vals = []
    for k, t in enumerate(toks):
        try:
            v = float(t)
        except ValueError:
            out.append(f"{where}: token {k + 1} {t!r} is not a number")
            continue
        if not math.isfinite(v):
            out.append(f"{where}: token {k + 1} {t!r} is not a finite number")
            continue
        vals.append(v)
    if out:
        return out
    for b in range(len(vals) // per_box):
        g = vals[b * per_box:(b + 1) * per_box]
        at = f"{where}, box {b + 1}"
        if f.with_class:
            c, g = g[0], g[1:]
            last = len(ds.names) - 1
            if c != int(c) or not 0 <= c <= last:
                out.append(f"{at}: class {toks[b * per_box]!r}; expected an integer in 0..{last}")
        p, a0, a1, a2, a3 = g
        if f.xywh:
            x0, y0, w, h = a0, a1, a2, a3
            x1, y1 = x0 + w, y0 + h
        else:
            x0, y0, x1, y1 = a0, a1, a2, a3
        if f.normal_row and f.with_class and c == ds.normal_id and (x0, y0, x1, y1) != (0, 0, 1, 1):
            out.append(f"{at}: class {ds.normal_id} ({ds.normal_name}) box {x0:g} {y0:g} {x1:g} {y1:g}; expected 0 0 1 1")
            x0 = y0 = 0
            x1 = y1 = 1
        if not 0 <= p <= 1:
            out.append(f"{at}: confidence {p:g} outside [0, 1]")
        if not f.xywh:
            if x1 <= x0:
                out.append(f"{at}: x_max {x1:g} <= x_min {x0:g}")
            if y1 <= y0:
                out.append(f"{at}: y_max {y1:g} <= y_min {y0:g}")
        else:
            if w <= 0:
                out.append(f"{at}: width {w:g} <= 0")
            if h <= 0:
                out.append(f"{at}: height {h:g} <= 0")
        eps = 1e-6
        if x0 < -eps or y0 < -eps:
            out.append(f"{at}: box {x0:g} {y0:g} {x1:g} {y1:g} starts outside the image (negative coordinate)")
        elif hw is not None and (x1 > hw[1] + eps or y1 > hw[0] + eps):
            out.append(f"{at}: box {x0:g} {y0:g} {x1:g} {y1:g} (xyxy) ends outside the image of "
                       f"height x width {hw[0]:g} x {hw[1]:g}")
    return out


# ----------------------------------------------------------------------------- CLI
def _format_of(args) -> tuple[str, dict]:  # pragma: no mutate block, CLI
    """(submission format, merged config): ``--format``, else the config dataset's format."""
    from data_prep.core.config import stage_config

    cfg = stage_config(args)
    ds = describe(cfg)
    fmt = args.format or (ds.name if ds.submission else None)
    if fmt is None:
        raise ValueError(f"dataset {cfg['dataset']!r} has no Kaggle submission format; pass --format "
                         f"({' | '.join(sorted(FORMATS))})")
    return fmt, cfg


def add_arguments_validate_submission(parser) -> None:  # pragma: no mutate block, CLI
    from data_prep.core.config import add_config_arguments

    parser.add_argument("file", help="submission CSV to check")
    parser.add_argument("--format", default=None, choices=sorted(FORMATS),
                        help="competition format (default: the config dataset's)")
    parser.add_argument("--sample", required=True, help="the competition's sample submission CSV")
    parser.add_argument("--meta", default=None,
                        help="image sizes: image_id,dim0,dim1 or meta.csv (image_id,height,width); "
                             "rsna defaults to 1024 x 1024")
    add_config_arguments(parser, ["dataset"])


def run_validate_submission(args) -> int:  # pragma: no mutate block, CLI
    args.format, _ = _format_of(args)
    ids = submission_ids(args.file)
    if args.meta is not None:  # sizes for none of the images would check nothing and still say "valid"
        known = [i for i in ids if i in set(_sample_ids(args.sample))]   # unknown ids are problems of their own
        n = len(set(known) & set(read_sizes(args.meta)["image_id"].astype(str)))
        if known and n == 0:
            raise InputError(f"--meta {args.meta}", f"holds none of the {len(known)} image(s) of {args.file} (e.g. "
                             f"{known[0]!r}); expected the sizes of these images (the test set's meta.csv)")
        if n < len(known):
            print(f"{args.file}: note: box bounds checked on {n} of {len(known)} images; the other "
                  f"{len(known) - n} have no size in {args.meta}")
    problems = validate_submission(args.file, args.sample, args.format, images=args.meta)
    if args.meta is None and describe(args.format).image_size is None:   # a fixed size is checked without meta
        print(f"{args.file}: note: no --meta, so box bounds were not checked against the image sizes "
              "(give the meta table to check them)")
    if not problems:
        print(f"{args.file}: valid {args.format} submission ({len(ids)} images)")
        return 0
    for p in problems[:MAX_PRINTED]:
        print(f"{args.file}: {p}")
    if len(problems) > MAX_PRINTED:
        print(f"{args.file}: ... and {len(problems) - MAX_PRINTED} more problem(s)")
    print(f"{args.file}: INVALID, {len(problems)} problem(s)")
    return 1


def submit(pred_boxes: pd.DataFrame, sample_csv, format: str, out, images=None, decimals: int = 1) -> Path:
    """:func:`write_submission` to a staged name beside ``out`` (:func:`data_prep.core.atomic.atomic_path`),
    :func:`validate_submission`, then rename to ``out``.

    An invalid file is kept as ``<out>.invalid`` and ``ValueError`` names its first problems;
    ``out`` itself is only ever a validated submission, and the staged file never stays behind."""
    out = Path(out)
    with atomic_path(out) as staged:
        write_submission(pred_boxes, sample_csv, format, staged, images=images, decimals=decimals,
                         announce=False)
        problems = validate_submission(staged, sample_csv, format, images=images)
        if problems:
            bad = move(staged, out.with_name(out.name + ".invalid"))
            raise ValueError(f"the written submission is invalid ({len(problems)} problem(s), kept as {bad}): "
                             + "; ".join(problems[:5]))
    log.info("wrote %s: %d images, %d boxes", out, len(submission_ids(out)), len(pred_boxes))
    return out


def add_arguments_submit(parser) -> None:  # pragma: no mutate block, CLI
    from data_prep.core.config import add_config_arguments

    parser.add_argument("--format", default=None, choices=sorted(FORMATS),
                        help="competition format (default: the config dataset's)")
    parser.add_argument("--pred", required=True, help="prediction box table CSV (original pixels)")
    parser.add_argument("--sample", required=True, help="the competition's sample submission CSV")
    parser.add_argument("--meta", default=None,
                        help="image sizes to clip boxes to: image_id,dim0,dim1 or meta.csv; rsna: 1024 x 1024")
    parser.add_argument("--out", required=True, help="submission CSV to write")
    add_config_arguments(parser, ["dataset", "decimals"])


def run_submit(args) -> int:  # pragma: no mutate block, CLI
    args.format, cfg = _format_of(args)
    out = check_output(args.out, arg="--out")
    check_not_input(out, [args.pred, args.sample, args.meta])
    pred = read_box_predictions(args.pred, describe(args.format).class_names())
    submit(pred, args.sample, args.format, out, images=args.meta, decimals=int(cfg["decimals"]))
    print(f"{out}: {len(submission_ids(out))} images, {len(pred)} predicted rows, valid {args.format} submission")
    return 0
