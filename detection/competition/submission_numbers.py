"""How a submission writes its numbers (:func:`detection.competition.submission.write_submission`), vectorised.

* :func:`fixed`: floats -> fixed-point strings, trailing zeros dropped, never exponent notation;
* :func:`join`: element-wise ``" ".join`` of string arrays (the groups of a PredictionString);
* :func:`snap_outward`: boxes onto the ``10**-decimals`` grid, mins floored and maxes ceiled so the
  written box contains the predicted one, at least one grid step of size, clipped to the image.

numpy's ``np.strings`` functions on variable-width strings (:data:`STR`) format a whole column at
once, with no Python loop per number.
"""
from __future__ import annotations

import numpy as np

STR = np.dtypes.StringDType()  # variable-width numpy strings: fast vectorised formatting


def fixed(values: np.ndarray, decimals: int) -> np.ndarray:
    """``(N,)`` floats -> ``(N,)`` fixed-point strings rounded to ``decimals``, trailing zeros and a
    bare '.' dropped (12.30 -> '12.3', 5.0 -> '5'), never exponent notation. Vectorised (np.strings)."""
    q = 10 ** decimals
    values = np.asarray(values, dtype="float64")
    if values.size == 0:
        return np.array([], dtype=STR)
    k = np.rint(values * q).astype("int64")
    sign = np.where(k < 0, "-", "")
    k = np.abs(k)
    ip = np.strings.add(sign.astype(STR), (k // q).astype(STR))
    if decimals == 0:
        return ip
    fp = np.strings.rstrip(np.strings.zfill((k % q).astype(STR), decimals), "0")
    return np.where(fp == "", ip, np.strings.add(np.strings.add(ip, "."), fp))


def join(*cols: np.ndarray) -> np.ndarray:
    """Element-wise ``" ".join`` of equal-length string arrays."""
    out = cols[0]
    for c in cols[1:]:
        out = np.strings.add(np.strings.add(out, " "), c)
    return out


def snap_outward(xyxy: np.ndarray, hw: np.ndarray | None, decimals: int) -> np.ndarray:
    """Floor mins / ceil maxes onto the ``10**-decimals`` grid, keep at least one grid step of
    size, clip to the image ``(N, 2)`` height/width when given (NaN = unknown). ``(N, 4)`` float64."""
    q = 10.0 ** decimals
    eps = 1e-6
    b = np.empty_like(xyxy)
    b[:, :2] = np.floor(xyxy[:, :2] * q + eps) / q
    b[:, 2:] = np.ceil(xyxy[:, 2:] * q - eps) / q
    step = 1.0 / q
    hi = np.full((len(b), 2), np.inf)
    if hw is not None:
        hi = np.where(np.isnan(hw[:, ::-1]), np.inf, np.floor(hw[:, ::-1] * q + eps) / q)  # (w, h)
    for k, j in ((0, 2), (1, 3)):  # x (clipped to the width), then y (to the height)
        # mins at 0, maxes at the image's end; a min past the end or a max before 0 leaves mx <= mn
        mn, mx = np.maximum(b[:, k], 0.0), np.minimum(b[:, j], hi[:, k])
        # every value here is an integer / q, so a zero-size (or clipped flat) box has mx <= mn
        # exactly (a tolerance in pixels, 1e-6, was a whole step from decimals=6 on): widen it to
        # one grid step inside the image
        thin = mx <= mn
        mx = np.where(thin, np.minimum(mn + step, hi[:, k]), mx)
        mn = np.where(thin, np.maximum(mx - step, 0.0), mn)
        b[:, k], b[:, j] = mn, mx
    return np.round(b, decimals)   # no -0.0: mn >= +0 and a max of 0 is widened to one step
