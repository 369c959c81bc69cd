"""JPEG 2000 at a reduced resolution: the fast path of :func:`data_prep.dicom.read.read_dicom` (see
its module docstring: when the output is at least 2x smaller than the image, frame 0 is decoded
by Pillow at wavelet level ``r``, the largest whose image is still at least the output size)."""
from __future__ import annotations

import io
import math

import numpy as np
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import get_j2k_parameters

J2K_UIDS = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")


def _is_mono(ds) -> bool:  # pragma: no mutate block, J2K fast path (its only caller)
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")) in ("MONOCHROME1", "MONOCHROME2")


def _j2k_levels(frame: bytes) -> int | None:  # pragma: no mutate block, J2K fast path
    """Number of wavelet decomposition levels in a J2K codestream's COD marker (None if absent)."""
    start = frame.find(b"\xff\x4f\xff\x51")         # SOC + SIZ (a JP2 wrapper may precede it)
    if start < 0:
        return None
    i = start + 2
    while i + 4 <= len(frame):
        marker, length = frame[i:i + 2], int.from_bytes(frame[i + 2:i + 4], "big")
        if marker == b"\xff\x52":                      # COD: Lcod, Scod, SGcod(4), levels
            return frame[i + 9] if i + 9 < len(frame) else None
        if marker == b"\xff\x90" or length < 2:        # SOT: main header over
            return None
        i += 2 + length
    return None


def j2k_reduce_level(height: int, width: int, out_hw: tuple[int, int], levels: int) -> int:
    """Largest r <= levels with ceil(height / 2**r) >= out_h and ceil(width / 2**r) >= out_w."""
    r = 0
    while (r < levels and math.ceil(height / 2 ** (r + 1)) >= out_hw[0]
           and math.ceil(width / 2 ** (r + 1)) >= out_hw[1]):
        r += 1
    return r


def pillow_j2k_reduced(frame: bytes, r: int) -> np.ndarray:  # pragma: no mutate block, J2K fast path
    """A J2K codestream decoded by Pillow at resolution level ``r``: ``(ceil(h / 2**r),
    ceil(w / 2**r))``, uint8 (precision <= 8) or uint16 scaled up to 16 bits by Pillow."""
    from PIL import Image, ImageFile

    im = Image.open(io.BytesIO(frame))
    w, h = im.size
    want = (math.ceil(w / 2 ** r), math.ceil(h / 2 ** r))
    im.reduce = r
    if all(int((d + (2 ** r >> 1)) / 2 ** r) == math.ceil(d / 2 ** r) for d in (w, h)):
        im.load()                                   # the public API
    else:
        # Pillow sizes the reduced image as d / 2**r rounded half up, OpenJPEG as the ceiling;
        # where they differ Pillow's decoder stops with "broken data stream". Do what
        # Jpeg2KImageFile.load does, with OpenJPEG's size (checked by the caller's shape test).
        t = im.tile[0]
        im._size = want
        im.tile = [ImageFile._Tile(t[0], (0, 0, *want), t[2], (t[3][0], r, *t[3][2:]))]
        ImageFile.ImageFile.load(im)
    return np.asarray(im)


def decode_j2k_reduced(ds, out_hw: tuple[int, int]) -> np.ndarray | None:  # pragma: no mutate block, J2K fast path
    """Frame 0 of a JPEG 2000 dataset decoded at a reduced resolution still >= ``out_hw``:
    stored values (uint8/uint16) ``(ceil(Rows / 2**r), ceil(Columns / 2**r))``. None when the
    fast path does not apply (r = 0, signed or multi-sample data, precision != BitsStored)."""
    if (ds.file_meta.get("TransferSyntaxUID") not in J2K_UIDS or int(ds.get("SamplesPerPixel", 1)) != 1
            or int(ds.get("PixelRepresentation", 0)) != 0 or not _is_mono(ds)):
        return None
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    frame = next(generate_frames(ds.PixelData, number_of_frames=nframes))
    params = get_j2k_parameters(frame)
    precision = params.get("precision")
    if params.get("is_signed") or precision is None or precision != int(ds.BitsStored) or precision > 16:
        return None
    levels = _j2k_levels(frame)
    rows, cols = int(ds.Rows), int(ds.Columns)
    r = j2k_reduce_level(rows, cols, out_hw, levels if levels is not None else 0)
    if r == 0:
        return None
    arr = pillow_j2k_reduced(frame, r)
    if arr.shape != (math.ceil(rows / 2 ** r), math.ceil(cols / 2 ** r)):
        return None
    if arr.dtype == np.uint16 and precision < 16:      # Pillow scales I;16 up to 16 bits
        arr = arr >> (16 - precision)
    return arr
