"""Read one DICOM into an 8-bit grayscale image plus a few header fields.

The pixel chain is a list of small pure steps, in this order (DICOM PS3.3 C.11, then C.7.6.3.1.2
for MONOCHROME1)::

    decode (frame 0)      pydicom.pixels.pixel_array            stored values, int/uint (H, W), or float
                          (data_prep.dicom.attributes: HighBit, NumberOfFrames, float pixel data)
    padding               C.7.5.1.1.2 (data_prep.dicom.padding)       which pixels are padding (left out, drawn black)
    to_gray               RGB/YBR/PALETTE -> gray               only for color images
    modality_lut          C.11.1 (data_prep.dicom.voi.modality)       Modality LUT, or rescale slope/intercept
    voi_lut               C.11.2 (data_prep.dicom.voi.choose_voi)     VOI LUT or window, as the options choose
    invert_monochrome1    top - y, AFTER the VOI                MONOCHROME1 only
    stretch to 16 bits    -> [0, 65535] (in to_uint16)          uint16 (H, W): keeps 16-bit precision
    resize                cv2.resize (INTER_AREA to shrink)     uint16 (size, size) or keep-ratio
    minmax_uint8          -> [0, 255]                           uint8, the output

The two stretches use the image's own [min, max] (``stretch: minmax``, the default: the Kaggle
convention) or the VOI output range, a window's ends or a LUT's ``0 .. 2**bits - 1``
(``stretch: window``: what a DICOM viewer shows). The modality and VOI transforms are our own
(:mod:`data_prep.dicom.voi`, which says which pydicom behaviours they replace and why).

The min-max to 8 bits is taken at the OUTPUT resolution (after the resize), not on the full image,
and, when the image was shrunk at least 2x, over the output averaged in 4 x 4 cells (the few
noisy pixels beyond that range clip to 0 or 255). Reason: without a VOI window, the extremes of a
radiograph are single noisy pixels, so a plain min-max depends on the noise realisation and on
the decoder: a reduced JPEG 2000 decode (5/3 wavelet low band, about twice the noise of an area
average) gave PNGs 2-6 gray levels off the full decode on 1% noise phantoms, with min-max at full
resolution and also at output resolution. With the range measured on 4 x 4 cells they agree within
1 level. Every PNG still spans 0-255. (The 16-bit stretch before the resize loses nothing that 8
bits could show.)

The LUT steps (modality, VOI, MONOCHROME1, 16-bit stretch) are pointwise functions of the stored
value, so for integer images :func:`to_uint16` applies them once to the range of stored values
(``arange(min, max + 1)``, at most 65,536 entries for 16-bit data) and then maps the image through
that uint16 table (or, when the table is a clipped line, through one OpenCV ``addWeighted`` pass
checked against the table: :func:`data_prep.dicom.fastlut.affine_table`): the result equals applying them pixel by pixel
in float64 within 1 of 65535 (tested, and both against the standard's formulas written
independently in tests/ref_dicom.py) at a fraction of the cost.

JPEG 2000 fast path: when the output is at least 2x smaller than the image in both dimensions,
the frame is decoded at a reduced wavelet resolution with Pillow (``im.reduce = r``), ``r`` the
largest level whose image is still at least the output size; the same chain then runs on the
reduced array (window and rescale values are in stored-value units, so they still apply).
``fast_j2k=False`` turns it off. It is used only for unsigned single-sample codestreams whose
precision equals BitsStored; anything else (or any failure) falls back to the full decode.
Pillow (13.0) sizes a reduced image by rounding ``d / 2**r`` half up while OpenJPEG uses the
ceiling; where the two differ (``r >= 2``) Pillow's own ``load`` fails with "broken data stream",
so :func:`pillow_j2k_reduced` then gives the decoder OpenJPEG's size itself.

Header fields are returned as plain ``str``/``int``; ``PixelSpacing`` (two numbers, row then
column spacing in mm) is written ``"0.139|0.139"`` so that it survives a CSV round trip.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut

from data_prep.dicom.attributes import (PIXEL_DATA, PixelAttributeError, check_number_of_frames, decode_frame0,
                                   high_bit_shift, pixel_data_keyword, unvalidated)
from data_prep.dicom.fastlut import CV_DEPTH, affine_cv, affine_table, take_rows
from data_prep.dicom.j2k import J2K_UIDS, decode_j2k_reduced, j2k_reduce_level, pillow_j2k_reduced  # noqa: F401 (re-exported)
from data_prep.dicom.padding import padding_mask, padding_range
from data_prep.core.sizes import keep_ratio_size
from data_prep.dicom.voi import Voi, VoiOptions, choose_voi, flat_cause, modality

log = logging.getLogger(__name__)

HEADER_FIELDS = ("PhotometricInterpretation", "BitsStored", "Modality", "PatientSex", "PatientAge",
                 "ViewPosition", "PixelSpacing")
APPLIED_FIELDS = ("voi", "voi_window", "voi_fallback", "n_padding")   # what read_dicom applied (see read_dicom)
_MAX_LUT = 1 << 20          # stored-value ranges wider than this are processed pixel by pixel
DEFER_SIZE = 1 << 18        # open_dicom leaves values this long (256 KiB) in the file until read: the pixel data


class DicomReadError(ValueError):
    """A DICOM file that cannot be turned into an image; the message names the file and, for a
    decoding failure, the transfer syntax (UID and name)."""


# ----------------------------------------------------------------------------- header
def transfer_syntax(ds) -> str:  # pragma: no mutate block, message
    """``"1.2.840.10008.1.2.4.51 (JPEG Extended (Process 2 and 4))"`` or ``"unknown"``."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return f"{_one_line(uid)[:64]} ({uid.name})" if uid else "unknown (no TransferSyntaxUID in the file meta)"


def header_fields(ds, where: str | os.PathLike | None = None) -> dict:  # pragma: no mutate block, meta.csv strings
    """``height``, ``width`` (ORIGINAL Rows/Columns, int) + the :data:`HEADER_FIELDS` present.

    ``BitsStored`` is an int, ``PixelSpacing`` a ``"row|col"`` string, the rest strings. An
    informational field that cannot be read (unknown VR, garbage value) is left out with a
    warning naming ``where``: it never costs the image."""
    out = {"height": int(ds.Rows), "width": int(ds.Columns)}
    for key in HEADER_FIELDS:
        try:
            value = _get_unvalidated(ds, key)
            if value is None or value == "":
                continue
            if key == "BitsStored":
                value = int(value)
            elif key == "PixelSpacing":
                values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
                value = "|".join(f"{float(v):g}" for v in values)
            else:
                value = str(value)
        except Exception as e:  # pydicom raises NotImplementedError, ValueError, ... on garbage
            log.warning("%s: header field %s unreadable (%s: %s); left out of meta",
                        where or "DICOM", key, type(e).__name__, _one_line(e)[:120])
            continue
        out[key] = value
    return out


def _get_unvalidated(ds, key: str):  # pragma: no mutate block, pydicom setting
    with unvalidated():
        return ds.get(key)


# ----------------------------------------------------------------------------- pixel steps
def decode(ds, where=None, shift: int = 0) -> np.ndarray:  # pragma: no mutate block, one call
    """Frame 0 of the pixel data as stored values: int/uint ``(Rows, Columns)``, float for Float
    Pixel Data, or ``(Rows, Columns, 3)`` uint for color (YBR converted to RGB by pydicom); the
    stored bits shifted down by ``shift`` (HighBit above BitsStored - 1:
    :func:`data_prep.dicom.attributes.decode_frame0`)."""
    return decode_frame0(ds, where or "DICOM", shift)


def to_gray(arr: np.ndarray, ds) -> np.ndarray:
    """Color -> gray: PALETTE COLOR through its color LUT, then RGB -> luma (float32 ``(H, W)``).
    Monochrome arrays are returned unchanged."""
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:
        rgb = arr.astype(np.float32)
        return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return arr


def modality_lut(arr: np.ndarray, ds) -> np.ndarray:
    """C.11.1 (:func:`data_prep.dicom.voi.modality`): Modality LUT Sequence, else Rescale
    Slope/Intercept, else unchanged; float64 out."""
    return modality(arr, ds)


def voi_lut(arr: np.ndarray, ds, voi: Voi | None = None) -> np.ndarray:
    """C.11.2 with the chosen view (:func:`data_prep.dicom.voi.choose_voi`, default options when
    ``voi`` is None): a window gives ``[0, 1]``, a VOI LUT ``0 .. 2**bits - 1``, none leaves the
    values; float64 out."""
    return (voi or choose_voi(ds)).apply(arr)


def invert_monochrome1(arr: np.ndarray, ds, voi: Voi | None = None) -> np.ndarray:
    """MONOCHROME1 (low values bright), AFTER the VOI (C.11.2: the VOI output is inverted by the
    presentation): ``top - arr`` with ``top`` the VOI output's top (1 for a window, 2**bits - 1
    for a LUT), ``-arr`` without a VOI (the min-max stretch follows). Float64 out; other
    interpretations unchanged."""
    if ds.get("PhotometricInterpretation") != "MONOCHROME1":
        return arr
    top = (voi or choose_voi(ds)).top
    a = np.asarray(arr, dtype=np.float64)
    return (top if top is not None else 0.0) - a


def minmax_uint8(arr: np.ndarray, ds=None, block: int = 1, exclude: np.ndarray | None = None) -> np.ndarray:
    """Linear stretch of ``[min, max]`` to ``[0, 255]``, rounded: uint8, same shape. A constant
    image gives zeros. With ``block`` > 1, min and max are those of the image averaged over
    ``block x block`` cells (cv2 INTER_AREA), and the few noisy pixels beyond them are clipped.
    ``exclude`` (float32, same shape; > 0 where a pixel holds any padding) leaves those pixels (or
    cells) out of min and max; they still go through the stretch."""
    rng = None
    if block > 1 and min(arr.shape[:2]) >= 2 * block:
        h, w = arr.shape[:2]
        cells = (max(1, w // block), max(1, h // block))
        coarse = cv2.resize(arr, cells, interpolation=cv2.INTER_AREA)
        if exclude is not None:
            coarse = coarse[cv2.resize(exclude, cells, interpolation=cv2.INTER_AREA) <= 0]
        if coarse.size:
            rng = float(coarse.min()), float(coarse.max())
    elif exclude is not None:
        kept = arr[exclude <= 0]
        if kept.size:
            rng = float(kept.min()), float(kept.max())
    return _stretch(arr, 255, np.uint8, rng)


def _stretch(arr: np.ndarray, top: int, dtype, rng: tuple[float, float] | None = None) -> np.ndarray:
    if arr.dtype in CV_DEPTH and arr.ndim == 2 and arr.size:
        lo, hi = rng if rng is not None else (float(arr.min()), float(arr.max()))
        if hi <= lo:
            return np.zeros(arr.shape, dtype)
        return affine_cv(arr, top / (hi - lo), -lo * top / (hi - lo), dtype)
    a = arr if arr.dtype == np.float32 else np.asarray(arr, dtype=np.float64)
    lo, hi = rng if rng is not None else (float(a.min()), float(a.max()))
    if hi <= lo:
        return np.zeros(a.shape, dtype)
    return np.clip((a - lo) * (top / (hi - lo)) + 0.5, 0, top).astype(dtype)


def output_size(height: int, width: int, size: int | None, keep_ratio: bool = False) -> tuple[int, int]:
    """(height, width) of the output image: ``(size, size)``, or longest side ``size`` with
    ``keep_ratio`` (:func:`data_prep.core.sizes.keep_ratio_size`), or unchanged when size is None."""
    if not size:
        return int(height), int(width)
    return keep_ratio_size(height, width, size) if keep_ratio else (int(size), int(size))


def resize(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` uint8/uint16/float32 -> same dtype ``hw``: cv2 INTER_AREA when shrinking,
    INTER_LINEAR when growing."""
    h, w = hw
    if arr.shape[:2] == (h, w):
        return arr
    shrink = h <= arr.shape[0] and w <= arr.shape[1]
    return cv2.resize(arr, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def lut_chain(values: np.ndarray, ds, voi: Voi) -> np.ndarray:
    """The pointwise steps, in order: :func:`modality_lut`, :func:`voi_lut`,
    :func:`invert_monochrome1` (float64 out)."""
    return invert_monochrome1(voi_lut(modality_lut(values, ds), ds, voi), ds, voi)


def fixed_range(voi: Voi, stretch: str) -> tuple[float, float] | None:
    """``(0, top)`` of the VOI output when ``stretch == "window"`` and a VOI was applied (the
    window's ends, or the LUT's 0..2**n-1, map to black and white); None means min-max."""
    return (0.0, voi.top) if stretch == "window" and voi.top is not None else None


def to_uint16(arr: np.ndarray, ds, via_table: bool = True, voi: Voi | None = None,
              stretch: str = "minmax", pad: tuple[int, int] | None = None,
              mask: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values ``(H, W)`` (or color) -> uint16 ``(H, W)``: to_gray, :func:`lut_chain`, then
    a linear map to ``[0, 65535]``: of the values present (``stretch="minmax"``), or of the VOI
    output range (``"window"``, :func:`fixed_range`). ``voi`` defaults to
    ``choose_voi(ds)`` (default options).

    With ``via_table`` (and an integer image whose value range is at most 2**20 wide) the chain
    runs once on ``arange(min, max + 1)`` and the image is mapped through the resulting uint16
    table; the stretch uses the min and max over the values present, so the output equals the
    pixelwise chain. When that table is a clipped line (:func:`data_prep.dicom.fastlut.affine_table`: rescale, a LINEAR
    window or none, MONOCHROME1) the image goes through one OpenCV pass instead of the gather
    (within 1 of 65535 of the table, checked on every stored value of the range). ``pad``: the padding stored values (:func:`data_prep.dicom.padding.padding_range`;
    ``mask`` their pixels, computed when None): left out of the range and set to 0 (displayed
    black). ``out`` (uint16 ``(H, W)``, ``arr`` itself allowed): where the table or OpenCV pass
    writes the result (one full-size image less at the peak); other paths return a new array."""
    arr = to_gray(arr, ds)
    voi = voi or choose_voi(ds)
    fixed = fixed_range(voi, stretch)
    if via_table and arr.dtype.kind in "ui" and arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if arr.dtype.kind == "u" and hi < _MAX_LUT:
            base, idx = 0, arr                                  # index the table directly
        elif arr.dtype == np.int16:                             # arr - lo in uint16 (wraps right): 2 bytes a pixel
            base, idx = lo, arr.view(np.uint16) - np.uint16(lo & 0xFFFF)
        elif hi - lo < _MAX_LUT:
            base, idx = lo, arr.astype(np.int64) - lo
        else:
            base, idx = None, None
        if idx is not None:
            inputs = np.arange(base, hi + 1, dtype=np.int64)
            v = lut_chain(inputs, ds, voi)
            padded = None if pad is None else (inputs >= pad[0]) & (inputs <= pad[1])
            if padded is not None and not padded.any():
                padded = None
            d = np.diff(v[lo - base:])
            if fixed is not None:
                vmin, vmax = fixed
            elif padded is None and ((d >= 0).all() or (d <= 0).all()):   # monotone: extremes at lo and hi
                ends = v[[lo - base, hi - base]]
                vmin, vmax = float(ends.min()), float(ends.max())
            else:                                            # extremes over the values present
                present = np.bincount(idx.ravel(), minlength=len(v)) > 0
                if padded is not None:
                    present &= ~padded
                if not present.any():                        # padding only
                    return np.zeros(arr.shape, np.uint16)
                vmin, vmax = float(v[present].min()), float(v[present].max())
            if vmax <= vmin:
                return np.zeros(arr.shape, np.uint16)
            table = np.clip((v - vmin) * (65535 / (vmax - vmin)) + 0.5, 0, 65535).astype(np.uint16)
            if padded is not None:
                table[padded] = 0
            elif arr.dtype in CV_DEPTH and arr.ndim == 2:
                fit = affine_table(inputs[lo - base:].astype(arr.dtype), table[lo - base:])
                if fit is not None:                          # one OpenCV pass instead of a gather
                    return affine_cv(arr, *fit, np.uint16, out=out)
            return take_rows(table, idx, out=out)
    if pad is not None:
        mask = padding_mask(arr, pad) if mask is None else mask
        if mask is not None and mask.any():
            y = lut_chain(arr, ds, voi)
            kept = y[~mask]
            rng = fixed or ((float(kept.min()), float(kept.max())) if kept.size else None)
            out = _stretch(y, 65535, np.uint16, rng) if kept.size else np.zeros(arr.shape, np.uint16)
            out[mask] = 0
            return out
    return _stretch(lut_chain(arr, ds, voi), 65535, np.uint16, fixed)


RANGE_BLOCK = 4      # output pixels per side averaged when a downscaled image's range is measured


def writable_uint16(arr: np.ndarray) -> bool:
    """A uint16 ``(H, W)`` array that may be written in place (its own contiguous memory): the
    image :func:`to_uint8` may overwrite with its 16-bit form (``overwrite``)."""
    return arr.dtype == np.uint16 and arr.ndim == 2 and arr.flags.writeable and arr.flags.c_contiguous


def to_uint8(arr: np.ndarray, ds, hw: tuple[int, int] | None = None, via_table: bool = True,
             full_hw: tuple[int, int] | None = None, voi: Voi | None = None,
             stretch: str = "minmax", pad: tuple[int, int] | None = None,
             mask: np.ndarray | None = None, overwrite: bool = False) -> np.ndarray:
    """Stored values -> the output uint8 image ``hw`` (default: same size): :func:`to_uint16`,
    :func:`resize`, then 16 -> 8 bits: :func:`minmax_uint8` (``stretch="minmax"``; when the
    ORIGINAL image ``full_hw`` (default: the shape of ``arr``) is at least 2x the output on a
    side, the range is measured with ``block=RANGE_BLOCK``, see the module docstring), or a fixed
    ``round(x * 255 / 65535)`` when the VOI output range was used (``"window"``). ``pad`` /
    ``mask``: pixel padding (:mod:`data_prep.dicom.padding`), out of both ranges, drawn black.
    ``overwrite``: ``arr`` may be overwritten by its 16-bit form when it is a writable uint16
    image (:func:`writable_uint16`; the caller no longer needs the stored values)."""
    voi = voi or choose_voi(ds)
    if pad is not None and mask is None:
        mask = padding_mask(arr, pad)
    if mask is not None and not mask.any():
        pad = mask = None
    out = arr if overwrite and writable_uint16(arr) else None
    img = to_uint16(arr, ds, via_table=via_table, voi=voi, stretch=stretch, pad=pad, mask=mask, out=out)
    hw = tuple(hw or img.shape[:2])
    full_hw = full_hw or arr.shape[:2]
    small = resize(img, hw)
    if fixed_range(voi, stretch) is not None:
        return affine_cv(small, 255 / 65535, 0.0, np.uint8)    # = (x * 255 + 32767) // 65535: no ties
    shrunk = full_hw[0] >= 2 * hw[0] or full_hw[1] >= 2 * hw[1]
    exclude = None if mask is None else resize(mask.astype(np.float32), hw)
    return minmax_uint8(small, block=RANGE_BLOCK if shrunk else 1, exclude=exclude)


# ----------------------------------------------------------------------------- read
def open_dicom(path: str | os.PathLike):  # pragma: no mutate block, input check
    """``pydicom.dcmread`` with every failure turned into a :class:`DicomReadError` naming the
    file: missing, zero bytes, not DICOM, unreadable header, no pixel data."""
    path = Path(path)
    if not path.is_file():
        raise DicomReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DicomReadError(f"{path}: empty file (0 bytes); expected a DICOM file")
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_SIZE)
    except InvalidDicomError as e:
        raise DicomReadError(f"{path}: not a DICOM file (no 'DICM' marker at byte 128 and no "
                             "File Meta Information header)") from e
    except Exception as e:  # pydicom raises many kinds on a damaged header
        raise DicomReadError(f"{path}: unreadable DICOM header ({type(e).__name__}: {_one_line(e)}); "
                             "the file may be truncated") from e
    if pixel_data_keyword(ds) is None:
        try:
            sop = _one_line(str(ds.get("SOPClassUID", "unknown")))[:80]
        except Exception:  # a damaged UID element
            sop = "unreadable"
        raise DicomReadError(f"{path}: no pixel data ({', '.join(t[-11:] for t in PIXEL_DATA.values())}): "
                             f"not an image (SOP class "
                             f"{sop!r}) or a truncated file "
                             f"({path.stat().st_size} bytes); expected an image")
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomReadError(f"{path}: Rows/Columns missing; expected an image")
    return ds


def read_dicom(path: str | os.PathLike, size: int | None = None, keep_ratio: bool = False,
               fast_j2k: bool = True, options: VoiOptions | None = None) -> tuple[np.ndarray, dict]:
    """One DICOM -> (uint8 ``(h, w)`` image, header dict).

    ``size`` None keeps the original ``(Rows, Columns)``; otherwise ``(size, size)``, or the
    longest side ``size`` with ``keep_ratio``. ``options`` (:class:`data_prep.dicom.voi.VoiOptions`,
    default: config defaults) chooses the VOI and the 8-bit stretch. The header has
    ``height``/``width`` = ORIGINAL Rows/Columns, the :data:`HEADER_FIELDS` present, and what
    was applied (:data:`APPLIED_FIELDS`): ``voi`` (window | lut | none), ``voi_window``
    (``center|width[|FUNCTION]`` or ""), ``voi_fallback`` (why the first choice was not used,
    or ""), ``n_padding`` (pixels of the stored image that were pixel padding, C.7.5.1.1.2, left
    out of the range and drawn black: :mod:`data_prep.dicom.padding`; 0 with ``options.padding`` off); an invalid VOI in the file (Window Width 0, ...) is also logged as a warning naming
    the file. Multi-frame files give frame 0.
    Raises :class:`DicomReadError` naming the file (and the transfer syntax on a decode failure).
    """
    options = options or VoiOptions()
    ds = open_dicom(path)
    try:
        header = header_fields(ds, path)
    except Exception as e:  # Rows/Columns unreadable
        raise DicomReadError(f"{path}: unreadable Rows/Columns ({type(e).__name__}: {_one_line(e)}); "
                             "expected an image header") from e
    try:
        with unvalidated():
            voi = choose_voi(ds, options)
    except Exception as e:  # garbage VOI attributes
        raise DicomReadError(f"{path}: unreadable VOI attributes ({type(e).__name__}: {_one_line(e)}); "
                             "expected a valid window or VOI LUT") from e
    if voi.invalid:
        log.warning("%s: %s; using %s", path, voi.fallback, voi.describe())
    header.update(voi=voi.kind, voi_window=voi.label(), voi_fallback=voi.fallback)
    out_hw = output_size(header["height"], header["width"], size, keep_ratio)
    try:
        check_number_of_frames(ds, path)
        shift = high_bit_shift(ds, path)
    except PixelAttributeError as e:
        raise DicomReadError(f"{path}: {e}") from e
    try:
        pad = padding_range(ds) if options.padding else None
    except (TypeError, ValueError) as e:
        raise DicomReadError(f"{path}: Pixel Padding Value (0028,0120) / Range Limit (0028,0121) unreadable "
                             f"({_one_line(e)}); expected integers (stored values)") from e
    arr = None
    if fast_j2k and size and not shift and pad is None:   # padding is exact stored values: full decode
        try:
            arr = decode_j2k_reduced(ds, out_hw)
        except Exception as e:  # any trouble: the full decode below decides
            log.debug("%s: reduced JPEG 2000 decode failed (%s); full decode", path, e)
            arr = None
    if arr is None:
        try:
            with _quiet_pydicom():
                arr = decode(ds, path, shift)
        except PixelAttributeError as e:
            raise DicomReadError(f"{path}: {e}") from e
        except Exception as e:
            raise DicomReadError(f"{path}: cannot decode pixel data with transfer syntax "
                                 f"{transfer_syntax(ds)}: {type(e).__name__}: {_one_line(e)}") from e
    _drop_encoded(ds, arr)
    mask = padding_mask(arr, pad)
    header["n_padding"] = int(np.count_nonzero(mask)) if mask is not None else 0
    try:
        img = to_uint8(arr, ds, out_hw, full_hw=(header["height"], header["width"]), voi=voi,
                       stretch=options.stretch, pad=pad, mask=mask, overwrite=True)
    except Exception as e:
        raise DicomReadError(f"{path}: cannot apply modality/VOI LUT "
                             f"({_one_line(header.get('PhotometricInterpretation', '?'))[:40]!r}): "
                             f"{_one_line(e)}") from e
    if img.size and img.min() == img.max():
        stored = _stored_again(path, shift) if writable_uint16(arr) else arr   # arr may hold the 16-bit image
        cause = flat_cause(to_gray(stored, ds), ds, voi) if stored is not None else ""
        if cause:
            log.warning("%s: constant image although its stored values differ: %s; written as one flat "
                        "gray level", path, cause)
        else:
            log.warning("%s: constant image (every pixel the same value): written as one flat gray level", path)
    return img, header


def _stored_again(path, shift: int) -> np.ndarray | None:  # pragma: no mutate block, message only
    """Frame 0's stored values read again (None when that fails): the cause of a flat image is
    told from them after :func:`to_uint8` overwrote the decoded image."""
    try:
        with _quiet_pydicom():
            return decode(open_dicom(path), path, shift)
    except Exception:  # noqa: BLE001 - the image is written already; only its message is at stake
        return None


def _drop_encoded(ds, arr: np.ndarray) -> None:  # pragma: no mutate block, memory only
    """Free the pixel data bytes once decoded (unless ``arr`` is a view of them): a full-size
    radiograph's 10-15 MB less at the peak of a convert worker."""
    key = pixel_data_keyword(ds)
    with contextlib.suppress(Exception):
        value = ds.get_item(key, keep_deferred=True).value if key else None
        if value is not None and not np.shares_memory(arr, np.frombuffer(value, np.uint8)):
            del ds[key]


@contextlib.contextmanager
def _quiet_pydicom():  # pragma: no mutate block, logging
    """pydicom logs a traceback per failed decoder plugin; our error already names them all."""
    logger = logging.getLogger("pydicom")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def _one_line(e: Exception) -> str:  # pragma: no mutate block, message
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return " ".join(lines)[:400]
