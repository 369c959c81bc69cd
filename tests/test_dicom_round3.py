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

from data_prep.dicom.read import read_dicom
from data_prep.dicom.voi import VoiOptions, choose_voi, modality_output_signed
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
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom.read"):
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
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom.read"):
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
    from data_prep.dicom.read import DicomReadError
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
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom.read"):
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
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom.read"):
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
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom.read"):
        img, _ = read_dicom(path)
    assert np.abs(img - minmax(stored)).max() <= 0.5
    assert "'2A' is not a positive integer (IS); the pixel data hold 2 frame(s)" in caplog.text


# ----------------------------------------------------------------------------- item 2: pixel padding (C.7.5.1.1.2)
def _framed(inner: np.ndarray, border: int, fill) -> np.ndarray:
    """``inner`` inside a ``border``-pixel frame of ``fill`` (a value, or an array of the framed shape)."""
    h, w = inner.shape
    out = np.empty((h + 2 * border, w + 2 * border), np.int64)
    out[:] = fill
    out[border:border + h, border:border + w] = inner
    return out


INNER = np.arange(200, 3000, 7)[:384].reshape(16, 24)                # 200..2881


def _padded_reference(stored: np.ndarray, is_pad: np.ndarray, y: np.ndarray) -> np.ndarray:
    """C.7.5.1.1.2 Note 2 by hand: min-max of the displayed values ``y`` over the pixels that are
    not padding; padding pixels are displayed black (0)."""
    lo, hi = y[~is_pad].min(), y[~is_pad].max()
    return np.where(is_pad, 0.0, (y - lo) / (hi - lo) * 255)


@pytest.mark.parametrize("case", ["value", "range", "range_reversed_mono1", "signed_window"])
def test_pixel_padding_left_out_of_the_range_and_drawn_black(case, tmp_path, make_ds, save):
    """value: Pixel Padding Value 4095 on a 12-bit frame; range: values 0..60 with Range Limit 60
    (random in the frame); range_reversed_mono1: the limit below the value, MONOCHROME1 (displayed
    value = -stored, padding still black); signed_window: 16-bit signed, padding -32768, window
    0/3000. Padding pixels never widen the range: the image spans 0..255 and equals the formula."""
    from ref_dicom import ref_window

    rng = np.random.default_rng(3)
    elems, mono1 = {}, False
    if case == "value":
        stored = _framed(INNER, 3, 4095)
        elems = dict(PixelPaddingValue=4095)
        is_pad = stored == 4095
    elif case.startswith("range"):
        stored = _framed(INNER, 3, rng.integers(0, 61, (22, 30)))
        mono1 = case.endswith("mono1")
        elems = dict(PixelPaddingValue=60, PixelPaddingRangeLimit=0) if mono1 else \
            dict(PixelPaddingValue=0, PixelPaddingRangeLimit=60)
        is_pad = stored <= 60
    else:
        stored = _framed(INNER - 1500, 3, -32768)
        elems = dict(PixelPaddingValue=-32768, WindowCenter=0, WindowWidth=3000)
        is_pad = stored == -32768
    signed = case == "signed_window"
    ds = make_ds(stored.astype("<i2" if signed else "<u2"), "MONOCHROME1" if mono1 else "MONOCHROME2",
                 16 if signed else 12, PixelRepresentation=int(signed), **elems)
    path = save(ds, tmp_path / f"{case}.dcm")
    y = ref_window(stored, 0, 3000) if signed else (-stored if mono1 else stored).astype(np.float64)
    want = _padded_reference(stored, is_pad, y)
    img, header = read_dicom(path)
    assert np.abs(img - want).max() <= 1
    assert (img[is_pad] == 0).all() and img[~is_pad].max() == 255 and img[~is_pad].min() == 0
    assert header["n_padding"] == int(is_pad.sum()) > 0
    if signed:                          # stretch: window maps the window's ends to 0 and 255; padding black
        shown, _ = read_dicom(path, options=VoiOptions(stretch="window"))
        assert np.abs(shown - np.where(is_pad, 0.0, ref_window(stored, 0, 3000))).max() <= 1
    off, header = read_dicom(path, options=VoiOptions(padding=False))       # the option: padding is image
    all_y = y if not signed else ref_window(stored, 0, 3000)
    assert np.abs(off - (all_y - all_y.min()) / (all_y.max() - all_y.min()) * 255).max() <= 1
    assert header["n_padding"] == 0


def test_padding_left_out_of_the_range_after_a_resize(tmp_path, make_ds, save):
    """A 256 x 256 phantom (smooth 1000..3000) inside a 32-pixel frame of padding 0, to 64 px: output
    pixels wholly padding are 0 and the image's own range still reaches 0 and 255 inside; read
    with padding off, 0 is part of the range and the inside spans only about 2/3 of it."""
    yy, xx = np.mgrid[0:192, 0:192]
    inner = (1000 + 2000 * (xx + yy) / (2 * 191)).round().astype(np.int64)
    stored = _framed(inner, 32, 0)
    ds = make_ds(stored.astype("<u2"), bits=12, PixelPaddingValue=0)
    path = save(ds, tmp_path / "frame.dcm")
    img, header = read_dicom(path, size=64)
    assert header["n_padding"] == 256 * 256 - 192 * 192
    assert (img[:8] == 0).all() and (img[:, :8] == 0).all() and (img[-8:] == 0).all()
    core = img[9:-9, 9:-9]
    assert core.max() == 255 and core.min() <= 2
    off, _ = read_dicom(path, size=64, options=VoiOptions(padding=False))
    assert off[9:-9, 9:-9].min() > 80                  # 1000 of 0..3000: a third of the range lost
    assert int(off[9:-9, 9:-9].max()) - int(off[9:-9, 9:-9].min()) < 175 < int(core.max()) - int(core.min())


def test_convert_records_n_padding_and_the_option_redoes(tmp_path, make_ds, save):
    import pandas as pd

    from data_prep.core.config import load_config
    from data_prep.dicom.convert import convert_folder
    from detection.cli import main

    src = tmp_path / "src"
    src.mkdir()
    save(make_ds(_framed(INNER, 2, 4095).astype("<u2"), bits=12, PixelPaddingValue=4095), src / "pad.dcm")
    save(make_ds(INNER.astype("<u2"), bits=12), src / "plain.dcm")
    dst = tmp_path / "out"
    assert not convert_folder(src, dst, size=None, workers=1, progress=False).errors
    meta = pd.read_csv(dst / "meta.csv").set_index("image_id")
    assert meta.loc["pad", "n_padding"] == 20 * 28 - 16 * 24 and meta.loc["plain", "n_padding"] == 0
    assert set(meta["voi_options"]) == {"voi=auto;window_index=0;stretch=minmax;padding=true"}
    assert main(["convert", str(src), str(dst), "padding=false"]) == 0
    meta = pd.read_csv(dst / "meta.csv").set_index("image_id")
    assert meta.loc["pad", "n_padding"] == 0
    assert set(meta["voi_options"]) == {"voi=auto;window_index=0;stretch=minmax;padding=false"}
    assert VoiOptions.from_config(load_config(None, ["padding=false"])).padding is False
    with pytest.raises(ValueError, match="padding"):
        VoiOptions.from_config(load_config(None, ["padding=maybe"]))


# ----------------------------------------------------------------------------- item 4: speed-ups keep the pixels
def _reference_path(path, size, options: VoiOptions) -> np.ndarray:
    """The same file through the chain pixel by pixel in float64 (``via_table=False``: no value
    table, no OpenCV affine pass) and with no reduced JPEG 2000 decode: the path the fast one must
    equal within 1 gray level."""
    import pydicom

    from data_prep.dicom import read as dcm
    from data_prep.dicom.attributes import check_number_of_frames, decode_frame0, high_bit_shift
    from data_prep.dicom.padding import padding_mask, padding_range

    ds = pydicom.dcmread(path)
    check_number_of_frames(ds, path)
    arr = decode_frame0(ds, path, high_bit_shift(ds, path))
    voi = choose_voi(ds, options)
    hw = dcm.output_size(int(ds.Rows), int(ds.Columns), size, True)
    pad = padding_range(ds) if options.padding else None
    return dcm.to_uint8(arr, ds, hw, via_table=False, voi=voi, stretch=options.stretch, pad=pad,
                        mask=padding_mask(arr, pad))


def _conformance_files(tmp_path, build) -> list[tuple[str, VoiOptions]]:
    from pydicom.data import get_testdata_file

    from ref_dicom import CASES, UNDECODABLE, bundled_grayscale

    out = []
    for name, (raw, kwargs, _, opts, _, _) in sorted(CASES.items()):
        path = tmp_path / f"{name}.dcm"
        build(raw, **kwargs).save_as(path, enforce_file_format=True)
        out.append((str(path), VoiOptions(**opts)))
    for path in bundled_grayscale():
        if path.rsplit("/", 1)[-1] not in UNDECODABLE:
            out += [(path, VoiOptions()), (path, VoiOptions(stretch="window"))]
    assert get_testdata_file("CT_small.dcm", download=False) in [p for p, _ in out]
    return out


def test_fast_path_within_one_gray_level_of_the_reference_path(tmp_path, build, make_ds, save):
    """Every conformance file (the hand-built CASES and pydicom's decodable grayscale files, both
    stretches), at native size and (128 rows or more) shrunk to a quarter, plus a 1200 x 1000 chest-like phantom with a
    window (MONOCHROME1 too) to 512 and 256 px: read_dicom (value table or OpenCV affine pass,
    reduced JPEG 2000 decode) equals the float64 pixel-by-pixel chain within 1 gray level."""
    files = _conformance_files(tmp_path, build)
    yy, xx = np.mgrid[0:1200, 0:1000]
    rng = np.random.default_rng(5)
    chest = (2000 + 1500 * np.sin(xx / 90.0) * np.cos(yy / 130.0) + rng.normal(0, 40, xx.shape)).clip(0, 4095)
    for mono1 in (False, True):
        ds = make_ds(chest.astype("<u2"), "MONOCHROME1" if mono1 else "MONOCHROME2", 12,
                     WindowCenter=2100, WindowWidth=2600)
        files.append((save(ds, tmp_path / f"chest{int(mono1)}.dcm"), VoiOptions()))
    checked = 0
    for path, options in files:
        rows = int(__import__("pydicom").dcmread(path, stop_before_pixels=True).Rows)
        # (a quarter of a tiny file such as the CASES' 2-row ramps is a line that min-max blows up)
        sizes = (512, 256) if rows >= 1000 else (None, rows // 4) if rows >= 128 else (None,)
        for size in sizes:
            fast, _ = read_dicom(path, size=size, keep_ratio=True, options=options)
            ref = _reference_path(path, size, options)
            assert fast.shape == ref.shape
            diff = np.abs(fast.astype(int) - ref).max()
            assert diff <= 1, f"{path} size {size} {options}: {diff} gray levels off the reference path"
            checked += 1
    assert checked >= len(files) + 2


def test_a_convert_run_imports_no_pandas(tmp_path, make_ds, save):
    """The convert process (its pool's workers fork from it) reads and writes its tables with the csv
    module: a whole run, meta.csv and errors.csv included, imports no pandas, torch or ultralytics
    (bench/convert.py measures what that saves: ~40 MB per worker). meta.csv reads back as written."""
    import subprocess
    import sys

    import pandas as pd

    src = tmp_path / "src"
    src.mkdir()
    save(make_ds(INNER.astype("<u2"), bits=12, PixelSpacing=[0.1, 0.1]), src / "a.dcm")
    save(make_ds(_framed(INNER, 2, 4095).astype("<u2"), bits=12, PixelPaddingValue=4095), src / "b.dcm")
    (src / "bad.dcm").write_bytes(b"not a dicom, \"quoted\", with commas")
    code = ("import sys; from data_prep.dicom.convert import convert_folder; "
            f"r = convert_folder({str(src)!r}, {str(tmp_path / 'out')!r}, size=64, workers=2, progress=False); "
            "print(len(r.errors), [m for m in ('pandas', 'torch', 'ultralytics') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert out.stdout.split("\n")[0] == "1 []", out.stdout + out.stderr
    meta = pd.read_csv(tmp_path / "out" / "meta.csv", keep_default_na=False)
    assert meta["image_id"].tolist() == ["a", "b"] and meta["png_height"].tolist() == [64, 64]
    assert meta["n_padding"].tolist() == [0, 20 * 28 - 16 * 24] and meta["PixelSpacing"].tolist() == ["0.1|0.1", ""]
    errors = pd.read_csv(tmp_path / "out" / "errors.csv")
    assert errors["path"].tolist() == [str(src / "bad.dcm")] and "not a DICOM file" in errors["error"][0]


def test_take_rows_gathers_like_numpy_in_blocks():
    """The block-wise gather equals ``table[idx]`` whatever the block (1 row, several, all), for
    unsigned and for int16 offsets taken in uint16 (``arr - lo`` wraps to the right index)."""
    from data_prep.dicom.fastlut import take_rows

    rng = np.random.default_rng(7)
    table = rng.integers(0, 65536, 5000).astype(np.uint16)
    idx = rng.integers(0, 5000, (37, 41)).astype(np.uint16)
    for block in (1, 41, 100, 41 * 37, 10 ** 7):
        assert np.array_equal(take_rows(table, idx, block), table[idx])
    signed = rng.integers(-2500, 2500, (37, 41)).astype(np.int16)
    lo = int(signed.min())
    wrapped = signed.view(np.uint16) - np.uint16(lo & 0xFFFF)
    assert np.array_equal(wrapped.astype(np.int64), signed.astype(np.int64) - lo)


def test_native_frame0_equals_pydicom(tmp_path, build):
    """The in-place read of uncompressed 16-bit frames gives pydicom's stored values on every
    hand-built case it takes (unsigned 12-bit, garbage above Bits Stored, signed 16-bit) and on
    pydicom's own files; the others (signed 12-bit, 8-bit, big endian, compressed) are left to
    pydicom (None)."""
    import pydicom
    from pydicom.pixels import pixel_array

    from data_prep.dicom.attributes import native_frame0
    from ref_dicom import CASES, bundled_grayscale

    taken = left = 0
    paths = []
    for name, (raw, kwargs, *_rest) in sorted(CASES.items()):
        paths.append(tmp_path / f"{name}.dcm")
        build(raw, **kwargs).save_as(paths[-1], enforce_file_format=True)
    for path in paths + bundled_grayscale():
        try:
            ds = pydicom.dcmread(path)
            want = pixel_array(ds, index=0)
        except Exception:     # pydicom's broken-on-purpose files
            continue
        got = native_frame0(ds)
        if got is None:
            left += 1
            continue
        taken += 1
        assert got.dtype == want.dtype and np.array_equal(got, want), path
    assert taken >= 30 and left >= 10, (taken, left)
