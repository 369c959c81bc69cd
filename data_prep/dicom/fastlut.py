"""Fast forms of two steps of :mod:`data_prep.dicom.read`'s value table: a table that is a clipped line
applied as one OpenCV pass (:func:`affine_table`, :func:`affine_cv`), and the gather of any other
table done a block of rows at a time (:func:`take_rows`)."""
from __future__ import annotations

import cv2
import numpy as np

CV_DEPTH = {np.dtype(np.uint8): cv2.CV_8U, np.dtype(np.uint16): cv2.CV_16U, np.dtype(np.int16): cv2.CV_16S}


def affine_cv(arr: np.ndarray, scale: float, offset: float, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``clip(rint(arr * scale + offset), dtype's range)`` in one OpenCV pass (uint8/uint16/int16
    in, uint8/uint16 out; float32 arithmetic inside): the same numbers as numpy's float64 path but
    for a value exactly halfway (rounded to even here, up there) and ~1e-5 of float32, at a tenth
    of the time and memory on a full-size radiograph. ``out``: the result is written there (same
    shape, ``dtype``; ``arr`` itself is allowed: the pass is elementwise)."""
    if out is not None:
        cv2.addWeighted(arr, scale, arr, 0.0, offset, dst=out, dtype=CV_DEPTH[np.dtype(dtype)])
        return out
    return cv2.addWeighted(arr, scale, arr, 0.0, offset, dtype=CV_DEPTH[np.dtype(dtype)])


def take_rows(table: np.ndarray, idx: np.ndarray, block: int = 1 << 18,
              out: np.ndarray | None = None) -> np.ndarray:
    """``table[idx]`` (``idx`` in range) a few rows at a time: numpy gathers through an index
    array converted to int64, 8 bytes per pixel (~55 MB for a 2800 x 2500 radiograph) that a
    block of ``block`` pixels bounds to 2 MB (1 << 20 pixels, 8 MB, was also ~25% slower: the
    block's indices no longer stay in the cache). ``out`` (shape of ``idx``, dtype of ``table``):
    written there; ``idx`` itself is allowed (each block's indices are converted before its
    values are written)."""
    out = np.empty(idx.shape, table.dtype) if out is None else out
    rows = max(1, block // max(1, idx[0].size)) if idx.ndim > 1 else idx.shape[0]
    for i in range(0, idx.shape[0], rows):
        np.take(table, idx[i:i + rows], out=out[i:i + rows], mode="clip")
    return out


def affine_table(x: np.ndarray, table: np.ndarray) -> tuple[float, float] | None:
    """``(scale, offset)`` when ``table`` (uint16, one entry per input ``x``, consecutive integers)
    is ``clip(rint(scale * x + offset), 0, 65535)`` within 1 for EVERY ``x`` (checked by running
    :func:`affine_cv` on all of them), else None. A LUT chain of rescale, a LINEAR or
    LINEAR_EXACT window (or none), MONOCHROME1 and the stretch is such a clipped line; a VOI LUT, a
    Modality LUT, SIGMOID or padding usually is not, and keeps the table."""
    inner = np.flatnonzero((table > 0) & (table < 65535))
    if len(inner) < 2 or x[inner[-1]] == x[inner[0]]:
        return None
    i, j = inner[0], inner[-1]
    scale = (float(table[j]) - float(table[i])) / (float(x[j]) - float(x[i]))
    if scale == 0:
        return None
    offset = float(table[i]) - scale * float(x[i])
    # the fit from two rounded entries can be off by up to one unit over the span: refit on all of
    # the inner entries (least squares, written out: np.polyfit goes through LAPACK, whose OpenBLAS
    # threads left a worker's peak memory 10 MB higher in one run of four; a BLAS dot product wakes
    # them too and they spin: +20 ms of CPU per image), then check every input
    if len(inner) > 2:
        xi, ti = x[inner].astype(np.float64), table[inner].astype(np.float64)
        dx = xi - xi.mean()
        scale = float(np.sum(dx * (ti - ti.mean())) / np.sum(dx * dx))     # no BLAS: ufuncs only
        offset = float(ti.mean() - scale * xi.mean())
    got = affine_cv(x.reshape(1, -1), float(scale), float(offset), np.uint16)[0]
    if np.abs(got.astype(np.int64) - table).max() > 1:
        return None
    return float(scale), float(offset)
