"""DICOM round three (issue 29): the VOI LUT's first value mapped read by what the Modality LUT
stage can output (PS3.3 C.11.2.1.1), pixel padding (C.7.5.1.1.2), HighBit != BitsStored - 1,
float pixel data, a malformed NumberOfFrames. Every case is a hand-built file checked against the
formula written here or in tests/ref_dicom.py (which shares no code with data_prep)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from data_prep.dicom import read_dicom
from data_prep.voi import VoiOptions, choose_voi, modality_output_signed
from ref_dicom import build, ref_lut, ref_stored  # noqa: F401 (build: fixture)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def minmax(y: np.ndarray) -> np.ndarray:
    """The 8-bit min-max of a float image (the default ``stretch: minmax``)."""
    y = y.astype(np.float64)
    return (y - y.min()) / (y.max() - y.min()) * 255


def voi_lut_item(first_as_us: int, entries, bits: int) -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", [len(entries), first_as_us, bits])
    item.add_new(0x00283006, "US", list(entries))
    return item


# ----------------------------------------------------------------------------- item 1: C.11.2.1.1
VOI16 = [int(v) for v in np.linspace(0, 4095, 4096) ** 1.0]        # 4096 entries, 12 bits, identity-like


@pytest.mark.parametrize("case", ["modality_lut_on_signed_pixels", "slope_-1_intercept_65535",
                                  "slope_-1_intercept_40000"])
def test_voi_lut_first_value_follows_the_modality_output(case, tmp_path, build, save, caplog):
    """The VOI LUT's first value mapped is 40000 as written (US). C.11.2.1.1: it is unsigned when the
    Modality LUT stage cannot output a negative value (a Modality LUT Sequence, C.11.1.1.1, even on
    signed pixels; slope -1 intercept 65535 over 16-bit unsigned values: 0..65535) and signed,
    40000 - 65536 = -25536, when it can (slope -1 intercept 40000: -25535..40000). Reading it the
    wrong way clamps every pixel to one end of the LUT: a flat image."""
    if case == "modality_lut_on_signed_pixels":
        stored = np.arange(-2048, 2048, 3).reshape(2, -1)                     # 12-bit signed ramp
        raw = stored.astype("<i2")
        mlut = [32768 + 4 * i for i in range(4096)]                           # -2048..2047 -> 32768..49148
        ds = build(raw, 12, signed=True, mlut=(63488, mlut, 16))              # first -2048 written as US
        first = 40000
        modality_out = ref_lut(stored, -2048, mlut)
        assert not modality_output_signed(ds)
    else:
        intercept = 65535 if case == "slope_-1_intercept_65535" else 40000
        stored = np.arange(0, 65536, 37).reshape(1, -1)
        ds = build(stored.astype("<u2"), 16, slope=-1, intercept=intercept)
        first = 40000 if intercept == 65535 else 40000 - 65536
        modality_out = -1.0 * stored + intercept
        assert modality_output_signed(ds) == (intercept == 40000)
    ds.VOILUTSequence = Sequence([voi_lut_item(40000, VOI16, 12)])
    assert choose_voi(ds).lut.first == first
    want = minmax(ref_lut(modality_out, first, VOI16))                        # C.11.2.1.1 by hand
    with caplog.at_level(logging.WARNING):
        img, header = read_dicom(save(ds, tmp_path / f"{case}.dcm"))
    assert header["voi"] == "lut"
    assert np.abs(img - want).max() <= 1 and img.max() == 255 and img.min() == 0
    assert "constant" not in caplog.text


def test_modality_output_sign_rules():
    """No rescale: Pixel Representation; a rescale: the sign over the stored range BitsStored allows;
    a Modality LUT Sequence: unsigned."""
    def ds_of(**kw):
        ds = Dataset()
        ds.BitsStored, ds.PixelRepresentation = kw.pop("bits", 12), kw.pop("pr", 0)
        for k, v in kw.items():
            setattr(ds, k, v)
        return ds

    assert not modality_output_signed(ds_of())
    assert modality_output_signed(ds_of(pr=1))
    assert not modality_output_signed(ds_of(pr=1, RescaleSlope=1, RescaleIntercept=2048))     # -2048..2047 + 2048
    assert modality_output_signed(ds_of(pr=1, RescaleSlope=1, RescaleIntercept=2047))
    assert not modality_output_signed(ds_of(RescaleSlope=-1, RescaleIntercept=4095))           # 12 bits: 0..4095
    assert modality_output_signed(ds_of(RescaleSlope=-1, RescaleIntercept=4094))
    assert modality_output_signed(ds_of(bits=16, RescaleSlope=-1, RescaleIntercept=65534))
    assert not modality_output_signed(ds_of(bits=16, RescaleSlope=-1, RescaleIntercept=65535))
    seq = ds_of(pr=1, RescaleSlope=1, RescaleIntercept=-1024)
    seq.ModalityLUTSequence = Sequence([voi_lut_item(0, [0, 1], 16)])
    assert not modality_output_signed(seq)


@pytest.mark.parametrize("case, step", [
    ("voi_lut_beyond_the_data", "VOI LUT 0 (first value mapped 10000, read as unsigned"),
    ("window_beyond_the_data", "window 0 (100000|10)"),
    ("rescale_slope_0", "the rescale (slope 0"),
])
def test_a_flat_image_from_varied_stored_values_names_the_step(case, step, tmp_path, build, save, caplog):
    """Stored 0..4095 that come out as one gray level: the warning names the step that did it."""
    raw = np.arange(0, 4096, 5).reshape(1, -1)
    if case == "voi_lut_beyond_the_data":
        ds = build(raw, 12)
        ds.VOILUTSequence = Sequence([voi_lut_item(10000, VOI16, 12)])
    elif case == "window_beyond_the_data":
        ds = build(raw, 12, windows=[(100000, 10)])
    else:
        ds = build(raw, 12, slope=0, intercept=7)
    path = save(ds, tmp_path / f"{case}.dcm")
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom"):
        img, _ = read_dicom(path)
    assert img.min() == img.max()
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and msgs[0].startswith(f"{path}: constant image although its stored values differ")
    assert step in msgs[0], msgs[0]


# ----------------------------------------------------------------------------- item 3: attributes DCMTK accepts
def _dcmtk_minmax(path, tmp_path) -> np.ndarray | None:
    """DCMTK's ``dcm2pnm +Wm +op`` (min-max window, 8-bit PGM), or None without DCMTK."""
    import shutil
    import subprocess

    import cv2

    if shutil.which("dcm2pnm") is None:
        return None
    out = tmp_path / "dcmtk.pgm"
    subprocess.run(["dcm2pnm", "+Wm", "+op", str(path), str(out)], check=True, capture_output=True, timeout=60)
    return cv2.imread(str(out), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("signed", [False, True])
def test_high_bit_15_with_12_bits_stored_shifts_the_stored_bits_down(signed, tmp_path, make_ds, save, caplog):
    """HighBit 15, BitsStored 12: the stored value is bits 4..15 of each word (two's complement when
    signed); bits 0..3 hold garbage. Expected: min-max of ``word >> 4`` (sign-extended), and DCMTK's
    dcm2pnm +Wm gives the same picture."""
    rng = np.random.default_rng(1)
    stored = (np.arange(-2048, 2048, 8) if signed else np.arange(0, 4096, 8)).reshape(16, 32)
    words = (((stored.astype(np.int64) & 0xFFF) << 4) | rng.integers(0, 16, stored.shape)).astype("<u2")
    ds = make_ds(words, bits=12, PixelRepresentation=int(signed), HighBit=15)
    path = save(ds, tmp_path / "hb15.dcm")
    by_hand = (words.astype(np.int64) >> 4)
    if signed:
        by_hand = np.where(by_hand >= 2048, by_hand - 4096, by_hand)
    assert np.array_equal(by_hand, stored)
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom"):
        img, _ = read_dicom(path)
    assert np.abs(img - minmax(by_hand)).max() <= 0.5
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and msgs[0].startswith(f"{path}: High Bit (0028,0102) 15 with Bits Stored 12")
    assert "shifted down 4 bits" in msgs[0]
    dcmtk = _dcmtk_minmax(path, tmp_path)
    if dcmtk is not None:
        assert np.abs(img.astype(int) - dcmtk).max() <= 1


def test_high_bit_13_with_a_window_and_high_bit_outside_refused(tmp_path, make_ds, save):
    """HighBit 13, BitsStored 12: bits 2..13, then the window 2048/1000 of C.11.2.1.2.1. HighBit 7
    (below BitsStored - 1) or 16 (outside 16 allocated bits): refused, naming High Bit (DCMTK
    refuses both too)."""
    from data_prep.dicom import DicomReadError
    from ref_dicom import ref_window

    stored = np.arange(0, 4096, 8).reshape(16, 32)
    words = ((stored << 2) | 3).astype("<u2")
    ds = make_ds(words, bits=12, HighBit=13, WindowCenter=2048, WindowWidth=1000)
    img, header = read_dicom(save(ds, tmp_path / "hb13.dcm"))
    assert header["voi"] == "window"
    assert np.abs(img - minmax(ref_window(stored, 2048, 1000))).max() <= 1
    for high in (7, 16):
        ds.HighBit = high
        path = save(ds, tmp_path / f"hb{high}.dcm")
        with pytest.raises(DicomReadError, match=rf"{path}: High Bit \(0028,0102\) {high} with Bits Stored 12 "
                                                 r"and Bits Allocated 16: expected 11"):
            read_dicom(path)


def _float_ds(make_ds, values: np.ndarray, double: bool, **elems):
    """A Float (32-bit) or Double Float (64-bit) Pixel Data dataset (no Bits Stored, High Bit,
    Pixel Representation: the Float Pixel Data's own attributes)."""
    ds = make_ds(np.zeros(values.shape, np.uint16), **elems)
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 64 if double else 32
    data = values.astype("<f8" if double else "<f4").tobytes()
    if double:
        ds.DoubleFloatPixelData = data
    else:
        ds.FloatPixelData = data
    return ds


@pytest.mark.parametrize("double", [False, True])
def test_float_pixel_data_through_the_voi_chain(double, tmp_path, make_ds, save, caplog):
    """Float Pixel Data (7FE0,0008) / Double Float Pixel Data (7FE0,0009): decoded and windowed by
    C.11.2.1.2.1 like integer data (window 10/30 over -51.2..51.1), or min-max without a window;
    non-finite values become the lowest finite value, with a warning counting them."""
    from ref_dicom import ref_window

    values = (np.arange(1024).reshape(32, 32) - 512) / 10.0
    ds = _float_ds(make_ds, values, double, WindowCenter=10, WindowWidth=30)
    img, header = read_dicom(save(ds, tmp_path / "win.dcm"))
    assert header["voi"] == "window" and "BitsStored" not in header
    assert np.abs(img - minmax(ref_window(values, 10, 30))).max() <= 1
    del ds.WindowCenter, ds.WindowWidth
    img, header = read_dicom(save(ds, tmp_path / "plain.dcm"))
    assert header["voi"] == "none" and np.abs(img - minmax(values)).max() <= 1
    holes = values.copy()
    holes[0, :3] = [np.nan, np.inf, -np.inf]
    path = save(_float_ds(make_ds, holes, double), tmp_path / "nan.dcm")
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom"):
        img, _ = read_dicom(path)
    mended = np.where(np.isfinite(holes), holes, values[0, 3])
    assert np.abs(img - minmax(mended)).max() <= 1
    name = "Double Float Pixel Data (7FE0,0009)" if double else "Float Pixel Data (7FE0,0008)"
    assert f"{path}: {name} holds 3 non-finite values" in caplog.text


def _patch_number_of_frames(path, value: bytes) -> None:
    """Write NumberOfFrames' two bytes as ``value`` in the file (pydicom will not write a bad IS)."""
    from pathlib import Path

    b = Path(path).read_bytes()
    tag = b"\x28\x00\x08\x00IS\x02\x00" + b"1 "
    assert b.count(tag) == 1
    Path(path).write_bytes(b.replace(tag, tag[:-2] + value))


def test_malformed_number_of_frames_read_from_the_pixel_data(tmp_path, make_ds, save, caplog):
    """NumberOfFrames "1A" (not an IS) on a single-frame file: one frame, with a warning (DCMTK renders
    it too); "2A" on pixel data of two frames: frame 0, the warning says 2 frames."""
    stored = np.arange(0, 4096, 8).reshape(16, 32).astype("<u2")
    ds = make_ds(stored, bits=12, NumberOfFrames=1)
    path = save(ds, tmp_path / "nf.dcm")
    _patch_number_of_frames(path, b"1A")
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom"):
        img, _ = read_dicom(path)
    assert np.abs(img - minmax(stored)).max() <= 0.5
    assert (f"{path}: Number of Frames (0028,0008) '1A' is not a positive integer (IS); the pixel data hold "
            "1 frame(s): read as 1") in caplog.text
    dcmtk = _dcmtk_minmax(path, tmp_path)
    if dcmtk is not None:
        assert np.abs(img.astype(int) - dcmtk).max() <= 1
    ds.PixelData = stored.tobytes() + (4095 - stored).tobytes()
    path = save(ds, tmp_path / "nf2.dcm")
    _patch_number_of_frames(path, b"2A")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom"):
        img, _ = read_dicom(path)
    assert np.abs(img - minmax(stored)).max() <= 0.5
    assert "'2A' is not a positive integer (IS); the pixel data hold 2 frame(s)" in caplog.text
