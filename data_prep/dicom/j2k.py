"""JPEG 2000 at a reduced resolution: the fast path of :func:`data_prep.dicom.read.read_dicom` (see
its module docstring: when the output is at least 2x smaller than the image, frame 0 is decoded
by Pillow at wavelet level ``r``, the largest whose image is still at least the output size)."""
from __future__ import annotations

import io
import math
import os
import struct

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


class FileWindow(io.RawIOBase):  # pragma: no mutate block, J2K fast path
    """Bytes ``start .. start + length`` of an open binary file, seen as a file of their own (no
    ``fileno``, so Pillow reads the codestream through it, a chunk at a time)."""

    def __init__(self, f, start: int, length: int) -> None:
        super().__init__()
        self._f, self._start, self._len, self._pos = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = max(0, (0, self._pos, self._len)[whence] + pos)
        return self._pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self._len - self._pos))
        if not n:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(memoryview(b)[:n]) or 0
        self._pos += got
        return got


def single_fragment(ds) -> tuple[str, int, int] | None:  # pragma: no mutate block, J2K fast path
    """``(file, offset, length)`` of the one fragment holding frame 0 when the dataset's Pixel
    Data is a deferred element not read yet (:func:`data_prep.dicom.read.open_dicom`) with one
    frame in exactly one fragment, else None. Pillow then reads the codestream from the file: the
    Pixel Data bytes and a frame copy of them (each the size of the file) are never held."""
    raw = ds.get_item("PixelData", keep_deferred=True)
    name = getattr(ds, "filename", None)
    if (raw is None or raw.value is not None or getattr(raw, "value_tell", None) is None
            or not isinstance(name, (str, os.PathLike)) or int(ds.get("NumberOfFrames", 1) or 1) != 1):
        return None
    with open(name, "rb") as f:
        f.seek(raw.value_tell)
        items = []
        for _ in range(3):                          # Basic Offset Table, the fragment, the delimiter
            head = f.read(8)
            if len(head) < 8:
                return None
            group, elem, length = struct.unpack("<HHI", head)
            items.append((group, elem, f.tell(), length))
            if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
                break
            f.seek(length, os.SEEK_CUR)
    if len(items) != 3 or [i[:2] for i in items] != [(0xFFFE, 0xE000)] * 2 + [(0xFFFE, 0xE0DD)] or not items[1][3]:
        return None
    return str(name), items[1][2], items[1][3]


def pillow_j2k_reduced(frame, r: int) -> np.ndarray:  # pragma: no mutate block, J2K fast path
    """A J2K codestream (bytes, or a binary file such as :class:`FileWindow`) decoded by Pillow at
    resolution level ``r``: ``(ceil(h / 2**r), ceil(w / 2**r))``, uint8 (precision <= 8) or
    uint16 scaled up to 16 bits by Pillow."""
    from PIL import Image, ImageFile

    im = Image.open(io.BytesIO(frame) if isinstance(frame, (bytes, bytearray, memoryview)) else frame)
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
    loc = single_fragment(ds)
    if loc is None:
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        return _decode_reduced(ds, out_hw, next(generate_frames(ds.PixelData, number_of_frames=nframes)))
    name, start, length = loc
    with open(name, "rb") as f:
        f.seek(start)
        head = f.read(min(length, 1 << 16))      # the main header (SIZ, COD), for the checks
        if _j2k_levels(head) is None and len(head) < length:
            head += f.read(length - len(head))
        return _decode_reduced(ds, out_hw, head, FileWindow(f, start, length))


def _decode_reduced(ds, out_hw: tuple[int, int], head: bytes, source=None) -> np.ndarray | None:  # pragma: no mutate block, J2K fast path
    """:func:`decode_j2k_reduced` given the codestream (``head``) or its main header and the file
    (``source``) that Pillow reads it from."""
    params = get_j2k_parameters(head)
    precision = params.get("precision")
    if params.get("is_signed") or precision is None or precision != int(ds.BitsStored) or precision > 16:
        return None
    levels = _j2k_levels(head)
    rows, cols = int(ds.Rows), int(ds.Columns)
    r = j2k_reduce_level(rows, cols, out_hw, levels if levels is not None else 0)
    if r == 0:
        return None
    arr = pillow_j2k_reduced(head if source is None else source, r)
    if arr.shape != (math.ceil(rows / 2 ** r), math.ceil(cols / 2 ** r)):
        return None
    if arr.dtype == np.uint16 and precision < 16:      # Pillow scales I;16 up to 16 bits
        arr = arr >> (16 - precision)
    return arr
