"""A folder of DICOMs -> ``DST/<image_id>.png`` + ``DST/meta.csv`` (+ ``DST/errors.csv``).

* Every DICOM under SRC (recursive: ``*.dcm``, ``*.dicom``, or no extension with the ``DICM``
  marker at byte 128) becomes ``DST/<image_id>.png``, ``image_id`` = the file stem, 8-bit gray,
  ``size x size`` (or longest side ``size`` with ``keep_ratio``), by
  :func:`data_prep.dicom.read.read_dicom`.
* ``DST/meta.csv``: one row per image, ``image_id,height,width,png_height,png_width`` (height,
  width = ORIGINAL Rows/Columns) + the header fields found (:data:`data_prep.dicom.read.HEADER_FIELDS`)
  + what the pixel chain applied: ``voi`` (window | lut | none), ``voi_window``
  (``center|width[|FUNCTION]``), ``voi_fallback`` (why the first choice was not used; empty when
  it was), ``n_padding`` (pixels that were pixel padding, PS3.3 C.7.5.1.1.2: left out of the
  range and drawn black, :mod:`data_prep.dicom.padding`; 0 when none or ``padding: false``) and
  ``voi_options`` (the config's ``voi``/``window_index``/``stretch``/``padding``, see
  :class:`data_prep.dicom.voi.VoiOptions`; a resume redoes images made with other options).
* Crash safety: a PNG is encoded in memory and written by :func:`data_prep.core.atomic.write_bytes` (:mod:`data_prep.dicom.convert_worker`)
  (a hidden temp beside it, then renamed); once it is in place its meta row is appended to
  ``DST/meta.partial.jsonl``; a run starts by removing the temps a killed one left
  (:func:`data_prep.core.atomic.clean_folder`). meta.csv is rewritten
  (temp + rename) at the end from the old meta.csv + the partial rows, then the partial file is
  removed. A killed run therefore leaves only whole PNGs, and the next run skips every image
  whose PNG exists with a meta row of the expected PNG size, converts the rest and ends with a
  complete meta.csv. ``overwrite`` converts everything again.
* Bad files (not DICOM, zero bytes, truncated, no pixel data, undecodable) do not stop the batch:
  they are listed in ``DST/errors.csv`` (``path,error``) and the CLI exits with status 1.
* Where it runs (``scheduler``, :mod:`data_prep.core.cluster`): null = a local process pool of
  ``workers`` processes; ``local`` = a Dask LocalCluster of ``workers`` processes; ``tcp://host:port``
  = an existing Dask cluster whose workers see SRC and DST under the same absolute paths. Each file
  is converted by :func:`convert_one` (on a cluster, a few files per task:
  :func:`data_prep.core.cluster.batch_size`): the worker reads the DICOM, writes the PNG itself and
  returns only the meta row or the error, so the outputs and the resume are the same on every
  scheduler.
  Workers run OpenCV single-threaded (one image per process is the parallelism). The pool's
  workers fork from a process that has imported no pandas (this module reads and writes its
  tables with the csv module; only :func:`header_meta` and the PNG mode of prep use pandas; the
  config check reads no dataset module unless a class_thr/alpha mapping names classes): a worker
  holds numpy, OpenCV, pydicom and :mod:`data_prep.dicom.convert_worker` (~100 MB) and, at its
  peak, one full-size image: the stored values are read from the file into the array that then
  becomes the 16-bit image (:func:`data_prep.dicom.read.to_uint8` ``overwrite``), and a JPEG 2000
  codestream is read by Pillow from the file (:func:`data_prep.dicom.j2k.single_fragment`).
  bench/convert.py measures the peaks of ``cxrdet convert``: ~110 MB per pool worker, ~140 MB
  for the 1-worker process (it converts in itself and holds all the command imported).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass, field
import multiprocessing
from pathlib import Path

import cv2
from tqdm import tqdm

from data_prep.core.atomic import clean_folder, folder_lock, symlink, write_csv, write_text
from data_prep.dicom.convert_worker import PNG_COMPRESSION, convert_one, worker_init, write_png  # noqa: F401 (re-exported)
from data_prep.dicom.read import APPLIED_FIELDS, HEADER_FIELDS, output_size
from data_prep.core.errors import InputError, check_output, reading
from data_prep.core.prepdir import META  # DST/meta.csv: the name prep's OUT/meta.csv shares
from data_prep.dicom.voi import VoiOptions

log = logging.getLogger(__name__)

PARTIAL = "meta.partial.jsonl"
ERRORS = "errors.csv"
META_COLUMNS = ["image_id", "height", "width", "png_height", "png_width"]
DICOM_SUFFIXES = (".dcm", ".dicom")
SIZE_RANGE = (32, 8192)  # PNG sides accepted; 100000 would allocate tens of GiB per image


def check_size(size, where: str = "--size") -> None:
    """Reject a PNG side outside :data:`SIZE_RANGE` before any file is read."""
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, int) or not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise InputError(where, f"{size!r} is not a PNG side in pixels; expected an integer from "
                         f"{SIZE_RANGE[0]} to {SIZE_RANGE[1]} (or none to keep the original size)")


@dataclass
class ConvertResult:
    """What one :func:`convert_folder` run did. ``errors``: ``(path, message)`` pairs."""
    n_converted: int = 0
    n_skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    dst: Path | None = None

    def summary(self) -> str:
        s = f"converted {self.n_converted}, skipped {self.n_skipped} (already done), errors {len(self.errors)}"
        if self.errors and self.dst is not None:
            s += f" (see {self.dst / ERRORS})"
        return s


# ----------------------------------------------------------------------------- discovery
def is_dicom_path(path: Path) -> bool:
    """``.dcm``/``.dicom`` (any case), or no extension and ``DICM`` at byte 128."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_paths(src: str | os.PathLike) -> list[Path]:
    """Every DICOM file under ``src`` (recursive, sorted; hidden files and folders skipped)."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"convert: source folder {src} does not exist")
    out = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            p = Path(root) / name
            if not name.startswith(".") and is_dicom_path(p):
                out.append(p)
    return out


def header_meta(src: str | os.PathLike, ids=None) -> "pd.DataFrame":  # noqa: F821 (pandas imported here)
    """``image_id,height,width`` (ORIGINAL Rows/Columns) of the DICOMs under ``src``, read from the
    headers alone (no pixel data decoded); ``ids``: only these image ids (file stems). A file whose
    header cannot be read is left out with one warning naming it (the caller then lacks its size)."""
    import pandas as pd
    import pydicom

    from data_prep.dicom.read import unvalidated

    want = None if ids is None else {str(i) for i in ids}
    rows, bad = [], []
    for p in dicom_paths(src):
        if want is not None and p.stem not in want:
            continue
        try:
            with unvalidated():
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            rows.append({"image_id": p.stem, "height": int(ds.Rows), "width": int(ds.Columns)})
        except Exception as e:  # a damaged header costs that image's size, never the table
            bad.append(f"{p} ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})")
    if bad:
        log.warning("%d DICOM header(s) without a readable Rows/Columns, e.g. %s", len(bad), bad[:3])
    return pd.DataFrame(rows, columns=["image_id", "height", "width"])


# ----------------------------------------------------------------------------- meta bookkeeping
def _read_meta(dst: Path) -> dict[str, dict]:
    """image_id -> row, from meta.csv then the partial rows of an interrupted run (later wins)."""
    rows: dict[str, dict] = {}
    if (dst / META).is_file():     # the csv module, not pandas: the pool forks after this
        with reading(dst / META, "meta table written by convert"), open(dst / META, newline="") as f:
            for r in csv.DictReader(f):
                if r.get("image_id") is None:
                    raise ValueError("no image_id column")
                rows[str(r["image_id"])] = {k: v for k, v in r.items() if v not in ("", None) and k is not None}
    if (dst / PARTIAL).is_file():
        with open(dst / PARTIAL) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:      # a line cut short by a kill
                    continue
                rows[str(r["image_id"])] = r
    return rows


def _csv_text(columns: list[str], rows: list) -> str:
    """CSV text (header, then one line per row: a dict by column, or a sequence), written by the
    csv module as pandas' ``to_csv(index=False)`` writes it (minimal quoting, "\\n", a missing
    value empty): convert never imports pandas, so a forked worker does not hold it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        values = [r.get(c) for c in columns] if isinstance(r, dict) else list(r)
        w.writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def _meta_text(rows: list[dict]) -> str:
    """meta.csv: :data:`META_COLUMNS`, then the header and applied fields some row has, sorted by
    image_id; the sizes as integers (rows read back from an old meta.csv are strings)."""
    cols = META_COLUMNS + [k for k in HEADER_FIELDS + APPLIED_FIELDS + ("voi_options",)
                           if any(k in r for r in rows)]
    out = []
    for r in sorted(rows, key=lambda r: str(r["image_id"])):
        r = dict(r)
        for c in ("height", "width", "png_height", "png_width"):
            r[c] = int(float(r[c]))
        out.append(r)
    return _csv_text(cols, out)


def _is_done(row: dict | None, png: Path, size: int | None, keep_ratio: bool,
             options: VoiOptions | None = None) -> bool:
    if row is None or not png.is_file():
        return False
    if row.get("voi_options", VoiOptions().tag()) != (options or VoiOptions()).tag():
        return False                     # made with other VOI options (no column: the defaults)
    try:
        want = output_size(int(row["height"]), int(row["width"]), size, keep_ratio)
        return (int(row["png_height"]), int(row["png_width"])) == want
    except (KeyError, ValueError, TypeError):
        return False


# ----------------------------------------------------------------------------- batch
def convert_folder(src: str | os.PathLike, dst: str | os.PathLike, size: int | None = 512,
                   keep_ratio: bool = False, workers: int = 2, overwrite: bool = False,
                   progress: bool = True, options: VoiOptions | None = None,
                   scheduler: str | None = None) -> ConvertResult:
    """Convert every DICOM under ``src`` into ``dst`` (see the module docstring for the files).

    Resumable: images already done (PNG present, meta row with the expected PNG size) are skipped
    unless ``overwrite``. ``scheduler`` None: ``workers`` > 1 uses a process pool (imap_unordered);
    ``local`` / ``tcp://host:port``: a Dask cluster (:mod:`data_prep.core.cluster`).
    ``options``: VOI and stretch (:class:`data_prep.dicom.voi.VoiOptions`; default: config defaults).
    Returns a :class:`ConvertResult`; bad files are in ``result.errors`` and ``dst/errors.csv``."""
    from data_prep.core.cluster import check_scheduler

    scheduler = check_scheduler(scheduler)
    src, dst = Path(src), Path(dst)
    options = options or VoiOptions()
    check_size(size)
    check_output(dst, folder=True, arg="convert DST")
    paths = dicom_paths(src)
    if not paths:
        raise ValueError(f"convert: no DICOM files (.dcm, .dicom, or DICM marker) under {src}")
    with folder_lock(dst, f"cxrdet convert {src}"):
        return _convert_locked(src, dst, paths, size, keep_ratio, workers, overwrite, progress, options, scheduler)


def _convert_locked(src: Path, dst: Path, paths: list[Path], size, keep_ratio, workers, overwrite,
                    progress, options: VoiOptions, scheduler: str | None = None) -> ConvertResult:
    clean_folder(dst)   # temps left by a killed run (PNGs, meta.csv, errors.csv)

    known = {} if overwrite else _read_meta(dst)
    result = ConvertResult(dst=dst)
    tasks, seen = [], {}
    for p in paths:
        image_id = p.stem
        if image_id in seen:
            result.errors.append((str(p), f"duplicate image_id {image_id!r}: also {seen[image_id]}; "
                                          "expected unique file names"))
            continue
        seen[image_id] = p
        png = dst / f"{image_id}.png"
        if not overwrite and _is_done(known.get(image_id), png, size, keep_ratio, options):
            result.n_skipped += 1
            continue
        known.pop(image_id, None)
        tasks.append((str(p), str(png), size, keep_ratio, options))

    if overwrite and (dst / PARTIAL).exists():
        (dst / PARTIAL).unlink()
    new_rows: list[dict] = []
    with open(dst / PARTIAL, "a") as partial, tqdm(total=len(tasks), desc="convert", unit="img",
                                                   disable=not progress or not tasks) as bar:
        for path, row, err in _run(tasks, workers, scheduler):
            if err is not None:
                result.errors.append((path, err))
            else:
                partial.write(json.dumps(row) + "\n")
                partial.flush()
                new_rows.append(row)
                result.n_converted += 1
            bar.update(1)

    rows = {**known, **{r["image_id"]: r for r in new_rows}}
    rows = [r for i, r in rows.items() if (dst / f"{i}.png").is_file()]
    if rows:
        write_text(dst / META, _meta_text(rows))
    (dst / PARTIAL).unlink(missing_ok=True)
    if result.errors:
        write_text(dst / ERRORS, _csv_text(["path", "error"], sorted(result.errors)))
        for path, err in result.errors[:5]:
            log.warning("%s", err if path in err else f"{path}: {err}")
    else:
        (dst / ERRORS).unlink(missing_ok=True)
    log.info("%s -> %s: %s", src, dst, result.summary())
    return result


def _run(tasks: list, workers: int, scheduler: str | None = None):
    if not tasks:
        return
    if scheduler is not None:
        yield from _run_dask(tasks, workers, scheduler)
        return
    if workers <= 1 or len(tasks) <= 1:
        yield from map(convert_one, tasks)
        return
    from data_prep.core.cluster import batch_size
    # Small chunks: an image costs ~50-150 ms, a pool hand-off ~0.1 ms; big chunks leave one worker
    # idle at the end (JPEG 2000 files cost ~2x an uncompressed one).
    chunk = batch_size(len(tasks), workers)
    # Forked (a spawned worker spends ~1 s importing numpy, OpenCV and pydicom: 20 images' time)
    # from this process, which holds no pandas (see the module docstring). One OpenCV thread in
    # every worker: it must be set HERE, before the fork: cv2.setNumThreads in a forked child waits
    # forever on the parent's thread pool (seen: pthread_cond_destroy).
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(tasks))) as pool:
            yield from pool.imap_unordered(convert_one, tasks, chunksize=chunk)
    finally:
        cv2.setNumThreads(threads)


def _convert_remote(tasks: list[tuple]) -> list[tuple[str, dict | None, str | None]]:
    """:func:`convert_one` on a Dask worker for a batch of files (one OpenCV thread, like the
    pool's workers); each file gets its own row or error."""
    worker_init()
    return [convert_one(t) for t in tasks]


def _run_dask(tasks: list, workers: int, scheduler: str):
    """Batches of files (:func:`data_prep.core.cluster.batch_size`) on a Dask cluster; paths travel
    absolute (the workers' working folder is not ours) and come back as given, so errors.csv
    names files as the local path does."""
    from data_prep.core.cluster import batch_size, batches, dask_client, n_threads, run_unordered

    given = {}
    remote = []
    for src, png, *rest in tasks:
        a = os.path.abspath(src)
        given[a] = src
        remote.append((a, os.path.abspath(png), *rest))
    with dask_client(scheduler, workers) as client:
        size = batch_size(len(remote), n_threads(client))
        for results in run_unordered(client, _convert_remote, batches(remote, size)):
            for path, row, err in results:
                orig = given.get(path, path)
                yield orig, row, (err.replace(path, orig) if err is not None else None)


# ----------------------------------------------------------------------------- PNG mode
def link_pngs(pngs: list[Path], images_dir: Path, meta_path: Path) -> dict:
    """PNG mode (prep of a PNG dataset, extra datasets): symlink each PNG into OUT/images and write meta.csv from the PNG headers
    (height/width = PNG size: the PNGs are the only size known here; config ``meta`` gives the
    originals to the loader when the PNGs are resized copies)."""
    from PIL import Image
    from tqdm import tqdm

    rows, errors = [], []
    for p in tqdm(pngs, desc="link PNGs", leave=False):
        try:
            with Image.open(p) as im:
                w, h = im.size
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch; reported below
            errors.append([str(p), f"{type(e).__name__}: {e}"])
            continue
        link = images_dir / p.name
        target = p.resolve()
        if link.is_symlink() and Path(os.readlink(link)) == target:
            pass
        else:
            symlink(target, link)
        rows.append((p.stem, h, w, h, w))
    if errors:
        log.warning("prep convert: %d unreadable PNG(s), e.g. %s", len(errors), errors[0])
    import pandas as pd

    meta = pd.DataFrame(rows, columns=["image_id", "height", "width", "png_height", "png_width"])
    write_csv(meta, meta_path)
    return {"mode": "png", "n_sources": len(pngs), "n_linked": len(rows), "n_errors": len(errors),
            "errors": errors[:20]}


# ----------------------------------------------------------------------------- CLI
def add_arguments_convert(parser) -> None:
    """``cxrdet convert SRC DST [--size N] [--keep-ratio] [--workers N] [--scheduler S] [--overwrite]``."""
    from data_prep.core.config import add_config_arguments

    parser.add_argument("src", help="folder of DICOMs (searched recursively)")
    parser.add_argument("dst", help="output folder for <image_id>.png, meta.csv, errors.csv")
    parser.add_argument("--overwrite", action="store_true", help="convert again images already done")
    add_config_arguments(parser, ["size", "keep_ratio", "workers", "scheduler"])


def run_convert(args) -> int:
    """Run :func:`convert_folder`; print a one-line summary; 0 if every file converted, else 1."""
    from data_prep.core.config import stage_config

    cfg = stage_config(args)
    res = convert_folder(args.src, args.dst, size=cfg["size"], keep_ratio=cfg["keep_ratio"], workers=cfg["workers"],
                         overwrite=args.overwrite, options=VoiOptions.from_config(cfg), scheduler=cfg["scheduler"])
    print(f"cxrdet convert: {res.summary()}")
    return 1 if res.errors else 0
