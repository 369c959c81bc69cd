"""The per-file work of ``cxrdet convert``: all that a worker process imports.

A worker of the process pool is a fork of the convert process and starts with every module that
process holds, and its resident memory with them: so this module, and :mod:`data_prep.dicom.convert`
until its pool has run, import only what one file needs: numpy, OpenCV and pydicom (through
:mod:`data_prep.dicom.read`), and :mod:`data_prep.core.atomic` for the write; never pandas
(bench/convert.py measures a worker's peak memory).
"""
from __future__ import annotations

from pathlib import Path

import cv2

from data_prep.core.atomic import write_bytes
from data_prep.dicom.read import APPLIED_FIELDS, HEADER_FIELDS, read_dicom
from data_prep.dicom.voi import VoiOptions

PNG_COMPRESSION = 1      # cv2 IMWRITE_PNG_COMPRESSION: 1 is ~4x faster than the default 3, files ~10% larger


def write_png(img, path: Path) -> None:
    """``img`` (uint8) encoded as PNG in memory, then written atomically (temp + rename)."""
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes(path, buf.tobytes(), clean=False)   # the folder's stale temps went at the start


def worker_init() -> None:
    """In a Dask worker process: one OpenCV thread (processes are
    the parallelism; OpenCV's own pool of one thread per core in every worker oversubscribes the
    cores). Never in a forked child of a process that used OpenCV's threads: it waits forever on
    the parent's thread pool (seen: pthread_cond_destroy)."""
    global _THREADS_SET
    if not _THREADS_SET:
        cv2.setNumThreads(1)
        _THREADS_SET = True


_THREADS_SET = False


def convert_one(task: tuple) -> tuple[str, dict | None, str | None]:
    """``(dicom path, png path, size, keep_ratio[, VoiOptions])`` -> ``(dicom path, meta row,
    None)`` or ``(dicom path, None, error message)``; never raises (run in worker processes)."""
    src, png, size, keep_ratio = task[:4]
    options = task[4] if len(task) > 4 else VoiOptions()
    try:
        img, header = read_dicom(src, size=size, keep_ratio=keep_ratio, options=options)
        write_png(img, Path(png))
        row = {"image_id": Path(png).stem, "height": header["height"], "width": header["width"],
               "png_height": int(img.shape[0]), "png_width": int(img.shape[1])}
        row.update({k: header[k] for k in HEADER_FIELDS + APPLIED_FIELDS if k in header})
        row["voi_options"] = options.tag()
        return src, row, None
    except Exception as e:  # one bad file must not stop the batch; it is reported in errors.csv
        msg = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        return src, None, msg
