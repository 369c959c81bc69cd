"""Pixel padding, DICOM PS3.3 C.7.5.1.1.2: stored values that are not part of the image
(detector borders, the area outside a collimated or circular field).

* Pixel Padding Value (0028,0120) alone: pixels whose stored value equals it are padding.
* With Pixel Padding Range Limit (0028,0121): every stored value from the smaller of the two to
  the larger, inclusive, is padding.
* Both are stored values, compared before the Modality LUT, in the Pixel Representation's sign
  (US/SS: pydicom resolves the VR from Pixel Representation; a value read as unsigned 32768 or
  more on signed data is taken as its two's complement).

C.7.5.1.1.2 Note 2: padding must not count toward the dynamic range. cxrdet therefore leaves the
padding pixels out of every min-max (the 16-bit stretch, and the 8-bit one measured on the
resized image) and draws them as displayed black (0 in the 8-bit PNG, also for MONOCHROME1, whose
inversion comes before). The count is recorded in meta.csv (``n_padding``); config key
``padding: false`` (:class:`data_prep.dicom.voi.VoiOptions`) turns all this off. Only grayscale
integer pixel data: float data have their own padding attributes, not read here.
"""
from __future__ import annotations

import numpy as np


def padding_range(ds) -> tuple[int, int] | None:
    """``(low, high)`` of the padding stored values (inclusive), or None without Pixel Padding
    Value, for color images or for float pixel data. ``ValueError`` on a value that is not an
    integer."""
    if "PixelPaddingValue" not in ds or "PixelData" not in ds:
        return None
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    signed = int(ds.get("PixelRepresentation") or 0) == 1

    def stored(key: str) -> int | None:
        v = ds.get(key)
        if v is None or v == "":
            return None
        if isinstance(v, (bytes, bytearray)):           # an unresolved US/SS value (implicit VR)
            v = int.from_bytes(bytes(v[:2]), "little", signed=signed)
        v = int(v)
        return v - 65536 if signed and v >= 32768 else v

    value, limit = stored("PixelPaddingValue"), stored("PixelPaddingRangeLimit")
    if value is None:
        return None
    if limit is None:
        return value, value
    return min(value, limit), max(value, limit)


def padding_mask(arr: np.ndarray, pad: tuple[int, int] | None) -> np.ndarray | None:
    """Boolean ``(H, W)``: the pixels whose stored value is padding; None without padding."""
    if pad is None or arr.ndim != 2 or arr.dtype.kind not in "ui":
        return None
    lo, hi = pad
    return arr == lo if lo == hi else (arr >= lo) & (arr <= hi)
