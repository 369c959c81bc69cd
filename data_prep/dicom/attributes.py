"""Pixel-data attributes that real files get wrong, read the way DCMTK reads them (or refused with
the attribute named), and float pixel data.

* **High Bit** (0028,0102) other than Bits Stored - 1 (PS3.5 8.1.1 allows only that; files with
  HighBit 15 and BitsStored 12 are seen in the wild): when ``BitsStored - 1 < HighBit <
  BitsAllocated`` the stored value is bits ``HighBit - BitsStored + 1 .. HighBit`` of each word,
  shifted down to bit 0 (two's complement when Pixel Representation is 1), as DCMTK's
  ``dcm2pnm`` does; a warning names the file. Any other High Bit is refused (DCMTK too: "invalid
  combination of values for 'BitsAllocated', 'BitsStored' and 'HighBit'"). Only for native
  (uncompressed) pixel data: a compressed codestream carries its own precision, so there High
  Bit is ignored, with the same warning.
* **Number of Frames** (0028,0008) that is not a positive integer ("1A", a bad IS value): read as
  the number of frames the pixel data hold (native: their length over one frame's; encapsulated:
  the Basic Offset Table's entries, or one fragment = one frame), with a warning; as DCMTK, which
  renders such files (pydicom's own badVR.dcm: "1A" on 15 frames). Refused, naming the attribute,
  when that number cannot be told.
* **Float Pixel Data** (7FE0,0008) and **Double Float Pixel Data** (7FE0,0009): decoded by
  pydicom (float32 / float64) and passed through the same modality / VOI / stretch chain as
  integer data (pixel by pixel: no value table). Non-finite values (NaN, inf) are left out of the
  range and drawn as the lowest finite value, with a warning counting them.
"""
from __future__ import annotations

import contextlib
import logging
import os

import numpy as np
from pydicom import config as pydicom_config

log = logging.getLogger("data_prep.dicom.read")      # one logger for everything read_dicom warns about


@contextlib.contextmanager
def unvalidated():  # pragma: no mutate block, pydicom setting
    """pydicom's value validation off (reading and writing) inside the block: real files hold
    non-conformant values (RSNA's PatientAge is a bare "51", not the AS form "051Y") and the header
    fields cxrdet reads are informational, so they are kept as written instead of logging a
    warning per file."""
    s = pydicom_config.settings
    modes = s.reading_validation_mode, s.writing_validation_mode
    s.reading_validation_mode = s.writing_validation_mode = pydicom_config.IGNORE
    try:
        yield
    finally:
        s.reading_validation_mode, s.writing_validation_mode = modes


PIXEL_DATA = {"PixelData": "Pixel Data (7FE0,0010)",
              "FloatPixelData": "Float Pixel Data (7FE0,0008)",
              "DoubleFloatPixelData": "Double Float Pixel Data (7FE0,0009)"}


class PixelAttributeError(ValueError):
    """An attribute of the pixel data that cannot be read as it stands (the message names it)."""


def pixel_data_keyword(ds) -> str | None:
    """The pixel data element the dataset holds (integer, float or double float), or None."""
    return next((k for k in PIXEL_DATA if k in ds), None)


def _encapsulated(ds) -> bool:
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return bool(tsyntax is not None and tsyntax.is_transfer_syntax and tsyntax.is_encapsulated)


def _int(ds, key: str) -> int | None:
    try:
        v = ds.get(key)
        return None if v is None or v == "" else int(v)
    except (TypeError, ValueError):
        return None


def check_number_of_frames(ds, where) -> None:
    """A Number of Frames that is not a positive integer: set in ``ds`` to the number of frames
    the pixel data hold (native: their length over one frame's; encapsulated: the Basic Offset
    Table's entries, or 1 for a single fragment), with a warning naming ``where`` (cxrdet reads
    frame 0 of any file). :class:`PixelAttributeError` (naming the attribute) when that number
    cannot be told."""
    if "NumberOfFrames" not in ds:
        return
    with unvalidated():
        value = ds["NumberOfFrames"].value
    try:
        if int(value) >= 1:
            return
    except (TypeError, ValueError):
        pass
    key = pixel_data_keyword(ds)
    data = ds[key].value if key else b""
    frames = None
    if key == "PixelData" and _encapsulated(ds):
        from pydicom.encaps import generate_fragments, parse_basic_offsets

        with contextlib.suppress(Exception):
            offsets = parse_basic_offsets(data)
            frames = len(offsets) if offsets else (1 if sum(1 for _ in generate_fragments(data)) == 1 else None)
        how = "an encapsulated frame count (Basic Offset Table empty, several fragments)"
    else:
        rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
        spp, bits = _int(ds, "SamplesPerPixel") or 1, _int(ds, "BitsAllocated")
        if rows and cols and bits:
            frames = len(data) // ((rows * cols * spp * bits + 7) // 8) or None
        how = f"one frame of {rows} x {cols} x {bits} bits in {len(data)} bytes"
    if frames is None:
        raise PixelAttributeError(f"Number of Frames (0028,0008) {str(value)!r} is not a positive integer (IS) "
                                  f"and the pixel data do not tell it ({how}); expected an integer")
    with unvalidated():
        del ds["NumberOfFrames"]
        ds.NumberOfFrames = frames
    log.warning("%s: Number of Frames (0028,0008) %r is not a positive integer (IS); the pixel data hold "
                "%d frame(s): read as %d (frame 0 used)", where, str(value), frames, frames)


def high_bit_shift(ds, where) -> int:
    """Bits to shift the stored values down: ``HighBit + 1 - BitsStored`` for native pixel data
    whose High Bit lies above Bits Stored - 1 (with a warning naming ``where``), else 0.
    :class:`PixelAttributeError` naming High Bit when it is below Bits Stored - 1 or not inside Bits Allocated."""
    if pixel_data_keyword(ds) != "PixelData":
        return 0
    stored, high, allocated = _int(ds, "BitsStored"), _int(ds, "HighBit"), _int(ds, "BitsAllocated")
    if stored is None or high is None or allocated is None or high == stored - 1:
        return 0
    if not stored - 1 < high < allocated:
        raise PixelAttributeError(f"High Bit (0028,0102) {high} with Bits Stored {stored} and Bits Allocated "
                         f"{allocated}: expected {stored - 1} (Bits Stored - 1, PS3.5 8.1.1), or at most "
                         f"{allocated - 1}")
    if _encapsulated(ds):
        log.warning("%s: High Bit (0028,0102) %d with Bits Stored %d (expected %d, PS3.5 8.1.1): ignored "
                    "for compressed pixel data (the codestream's precision applies)", where, high, stored,
                    stored - 1)
        return 0
    shift = high + 1 - stored
    log.warning("%s: High Bit (0028,0102) %d with Bits Stored %d (expected %d, PS3.5 8.1.1): stored "
                "values read from bits %d..%d, shifted down %d bits (as DCMTK does)", where, high, stored,
                stored - 1, shift, high, shift)
    return shift


@contextlib.contextmanager
def _bits_stored(ds, bits: int):
    """Bits Stored set to ``bits`` inside the block (pydicom then keeps bits 0..bits-1)."""
    old = ds.BitsStored
    ds.BitsStored = bits
    try:
        yield
    finally:
        ds.BitsStored = old


NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")     # Implicit / Explicit VR Little Endian


def native_frame0(ds) -> np.ndarray | None:
    """Frame 0 of uncompressed little-endian 16-bit grayscale pixel data, read in place: a
    read-only view of the Pixel Data bytes (no copy), or, when the dataset was read with the Pixel
    Data deferred (:func:`data_prep.dicom.read.open_dicom`), a writable array read straight from
    the file (:func:`_deferred_frame0`: the bytes are never held); unsigned with no bit set above
    Bits Stored (else masked, as pydicom does) or signed with all 16 bits stored. None for
    anything else (pydicom's ``pixel_array`` decides): it saves the copy and the mask pass that
    pydicom makes of every image (~9 ms and one image's memory on a 2800 x 2500 radiograph)."""
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax not in NATIVE_LE or "PixelData" not in ds:
        return None
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    allocated, stored, high = _int(ds, "BitsAllocated"), _int(ds, "BitsStored"), _int(ds, "HighBit")
    signed = _int(ds, "PixelRepresentation") == 1
    if (allocated != 16 or not rows or not cols or stored is None or not 1 <= stored <= 16
            or high != stored - 1 or (_int(ds, "SamplesPerPixel") or 1) != 1 or (signed and stored != 16)
            or str(ds.get("PhotometricInterpretation", "")) not in ("MONOCHROME1", "MONOCHROME2")):
        return None
    dtype = "<i2" if signed else "<u2"
    arr = _deferred_frame0(ds, dtype, rows, cols)
    if arr is None:
        data = ds.PixelData
        if not isinstance(data, (bytes, bytearray)) or len(data) < 2 * rows * cols:
            return None
        arr = np.frombuffer(data, dtype, count=rows * cols).reshape(rows, cols)
    if not signed and stored < 16 and int(arr.max()) >> stored:     # garbage above Bits Stored
        mask = np.uint16((1 << stored) - 1)
        arr = np.bitwise_and(arr, mask, out=arr) if arr.flags.writeable else arr & mask
    return arr


def _deferred_frame0(ds, dtype: str, rows: int, cols: int) -> np.ndarray | None:
    """Frame 0 read from the file into a new (writable) array when the dataset's Pixel Data is a
    deferred element not read yet (``dcmread(defer_size=...)``: its offset and length known, its
    bytes not held), else None. One image's memory at the peak instead of the bytes plus the
    image that the caller makes from them (bench/convert.py: peak memory per convert worker)."""
    raw = ds.get_item("PixelData", keep_deferred=True)
    name = getattr(ds, "filename", None)
    if (getattr(raw, "value", b"") is not None or not isinstance(name, (str, os.PathLike))
            or getattr(raw, "value_tell", None) is None or not 2 * rows * cols <= raw.length < 0xFFFFFFFF):
        return None
    with open(name, "rb") as f:
        f.seek(raw.value_tell)
        arr = np.fromfile(f, dtype, count=rows * cols)
    return arr.reshape(rows, cols) if arr.size == rows * cols else None


def decode_frame0(ds, where, shift: int = 0) -> np.ndarray:
    """Frame 0 as stored values: pydicom's ``pixel_array``, bits ``shift .. shift + BitsStored - 1``
    shifted down when ``shift`` (:func:`high_bit_shift`) is not 0; float data with non-finite
    values mended (see the module docstring; all non-finite: :class:`PixelAttributeError`)."""
    from pydicom.pixels import pixel_array

    if shift:
        with _bits_stored(ds, int(ds.HighBit) + 1):
            arr = pixel_array(ds, index=0)
        return arr >> shift                     # arithmetic for signed: two's complement kept
    arr = native_frame0(ds)
    if arr is not None:
        return arr
    arr = pixel_array(ds, index=0)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            name = PIXEL_DATA[pixel_data_keyword(ds) or "PixelData"]
            if bad.all():
                raise PixelAttributeError(f"{name}: every value is NaN or infinite; expected finite numbers")
            log.warning("%s: %s holds %d non-finite values (NaN/inf) of %d: drawn as the lowest finite "
                        "value", where, name, int(bad.sum()), bad.size)
            arr = np.where(bad, arr[~bad].min(), arr)
    return arr
