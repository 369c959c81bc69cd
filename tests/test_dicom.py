"""data_prep.dicom.read: every transfer syntax, the LUT chain, MONOCHROME1, sizes, bad files, J2K fast path
(the VOI/LUT steps one by one: test_voi.py)."""
from __future__ import annotations

import io
import math

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

from data_prep.dicom import read as dcm
from data_prep.dicom.read import DicomReadError, read_dicom

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ----------------------------------------------------------------------------- transfer syntaxes
MR_ENCODINGS = ["MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]


def test_lossless_encodings_of_one_image_give_identical_pngs(tfile):
    """Uncompressed LE/BE/implicit, RLE, JPEG 2000 lossless, JPEG-LS lossless: same pixels."""
    ref, header = read_dicom(tfile("MR_small.dcm"))
    assert ref.dtype == np.uint8 and ref.shape == (64, 64) and (ref.min(), ref.max()) == (0, 255)
    for name in MR_ENCODINGS[1:]:
        img, h = read_dicom(tfile(name))
        assert np.array_equal(img, ref), name
        assert (h["height"], h["width"]) == (64, 64)


@pytest.mark.parametrize("name, ts, shape", [
    ("CT_small.dcm", "1.2.840.10008.1.2.1", (128, 128)),
    ("693_J2KI.dcm", "1.2.840.10008.1.2.4.91", (512, 512)),            # JPEG 2000 (lossy allowed), signed
    ("JPEGLSNearLossless_16.dcm", "1.2.840.10008.1.2.4.81", (50, 10)),  # JPEG-LS near-lossless
    ("JPGExtended.dcm", "1.2.840.10008.1.2.4.51", (1024, 256)),         # JPEG extended 12-bit
    ("SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.70", (100, 100)),     # JPEG lossless, RGB
    ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50", (100, 100)),    # JPEG baseline, YBR
    ("SC_rgb_rle.dcm", "1.2.840.10008.1.2.5", (100, 100)),              # RLE, RGB
    ("examples_ybr_color.dcm", "1.2.840.10008.1.2.4.50", (240, 320)),   # 30 frames: frame 0
])
def test_transfer_syntaxes_decode_to_uint8(tfile, name, ts, shape):
    path = tfile(name)
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
    img, header = read_dicom(path)
    assert img.dtype == np.uint8 and img.shape == shape
    assert (header["height"], header["width"]) == shape
    assert img.min() == 0 and img.max() == 255          # min-max stretched
    small, _ = read_dicom(path, size=32)
    assert small.shape == (32, 32) and small.dtype == np.uint8


def test_ct_small_matches_hand_computed_minmax(tfile):
    """CT_small has a rescale (slope 1) and no window: the output is the plain min-max stretch."""
    ds = pydicom.dcmread(tfile("CT_small.dcm"))
    a = ds.pixel_array.astype(np.float64)
    want = np.floor((a - a.min()) / (a.max() - a.min()) * 255 + 0.5).astype(np.uint8)
    img, header = read_dicom(tfile("CT_small.dcm"))
    assert np.abs(img.astype(int) - want).max() <= 1
    assert header == {"height": 128, "width": 128, "PhotometricInterpretation": "MONOCHROME2",
                      "BitsStored": 16, "Modality": "CT", "PatientSex": "O", "PatientAge": "000Y",
                      "PixelSpacing": "0.661468|0.661468", "voi": "none", "voi_window": "", "voi_fallback": "",
                      "n_padding": 0}   # CT_small has Pixel Padding Value -2000, no pixel holds it


def test_rgb_becomes_luma(tfile):
    ds = pydicom.dcmread(tfile("SC_rgb_jpeg_gdcm.dcm"))     # lossless, so the RGB values are exact
    rgb = ds.pixel_array.astype(np.float64)
    gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    want = (gray - gray.min()) / (gray.max() - gray.min()) * 255
    img, _ = read_dicom(tfile("SC_rgb_jpeg_gdcm.dcm"))
    assert np.abs(img - want).max() <= 1.0


def test_multiframe_takes_frame_0(tfile):
    path = tfile("examples_ybr_color.dcm")
    ds = pydicom.dcmread(path)
    want = dcm.to_uint8(pixel_array(ds, index=0), ds)
    other = dcm.to_uint8(pixel_array(ds, index=29), ds)
    img, _ = read_dicom(path)
    assert np.array_equal(img, want) and not np.array_equal(img, other)


def test_jpeg_baseline_grayscale(make_ds, save, tmp_path):
    y, x = np.mgrid[0:64, 0:96]
    src = ((x * 2 + y) % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(src).save(buf, format="JPEG", quality=95)
    ds = make_ds(src)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    img, header = read_dicom(save(ds, tmp_path / "jpeg.dcm"))
    want = (src - src.min()) / (src.max() - src.min()) * 255
    assert img.shape == (64, 96) and header["BitsStored"] == 8
    assert np.abs(img - want).mean() < 3


def test_lossy_12bit_jpeg_names_the_transfer_syntax(tfile):
    path = tfile("JPEG-lossy.dcm")
    with pytest.raises(DicomReadError) as e:
        read_dicom(path)
    msg = str(e.value)
    assert "JPEG-lossy.dcm" in msg and "1.2.840.10008.1.2.4.51" in msg and "JPEG Extended" in msg
    assert isinstance(e.value, ValueError)


# ----------------------------------------------------------------------------- LUT chain
def test_modality_lut_rescale_moves_the_window(make_ds, save, tmp_path):
    """Stored 0..999; window 300..700 (center 500, width 400 -> LINEAR edges 300.5 and 699.5).
    Without rescale the ramp saturates at stored 300 / 700; with slope 2, intercept -100 the
    same window sits at stored (300 + 100) / 2 = 200 and (700 + 100) / 2 = 400."""
    arr = np.tile(np.arange(1000, dtype=np.uint16), (4, 1))
    base = dict(WindowCenter=500, WindowWidth=401)
    plain, _ = read_dicom(save(make_ds(arr, **base), tmp_path / "plain.dcm"))
    resc, _ = read_dicom(save(make_ds(arr, RescaleSlope=2, RescaleIntercept=-100, **base), tmp_path / "r.dcm"))
    row_p, row_r = plain[0].astype(int), resc[0].astype(int)
    assert row_p[:300].max() == 0 and row_p[701:].min() == 255 and 0 < row_p[500] < 255
    assert row_r[:200].max() == 0 and row_r[401:].min() == 255 and 0 < row_r[300] < 255
    assert abs(row_p[500] - 128) <= 1 and abs(row_r[300] - 128) <= 1     # window centers


def test_voi_lut_sequence_preferred_over_window(make_ds, save, tmp_path):
    """A VOI LUT (256 entries, first mapped value 0) that maps v -> (255 - v) ** 2 overrides the
    window: bright stored values come out dark, and the curve is the square, not linear."""
    arr = np.tile(np.arange(256, dtype=np.uint16), (8, 1))
    ds = make_ds(arr, bits=8 + 8, WindowCenter=128, WindowWidth=256)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.add_new(0x00283006, "US", [(255 - v) ** 2 for v in range(256)])   # LUT Data
    ds.VOILUTSequence = Sequence([item])
    img, _ = read_dicom(save(ds, tmp_path / "voi.dcm"))
    want = np.floor((255 - np.arange(256.0)) ** 2 / 255 ** 2 * 255 + 0.5)
    assert np.abs(img[0] - want).max() <= 1
    assert img[0, 0] == 255 and img[0, 255] == 0 and img[0, 128] == 63      # 127**2/255 = 63.25


def test_monochrome1_bright_region_becomes_dark(make_ds, save, tmp_path):
    """MONOCHROME1: high stored values are dark. A block of 4000 on a background of 500."""
    arr = np.full((60, 80), 500, np.uint16)
    arr[10:30, 20:40] = 4000
    img, header = read_dicom(save(make_ds(arr, "MONOCHROME1", bits=12), tmp_path / "m1.dcm"))
    assert header["PhotometricInterpretation"] == "MONOCHROME1"
    assert img[10:30, 20:40].max() == 0 and img[40:, :].min() == 255
    img2, _ = read_dicom(save(make_ds(arr, "MONOCHROME2", bits=12), tmp_path / "m2.dcm"))
    assert img2[10:30, 20:40].min() == 255 and img2[40:, :].max() == 0


# The MONOCHROME1 file with a clipping window and the value-table-vs-reference check are in
# tests/test_dicom_conformance.py (against the standard's formulas written in numpy).


# ----------------------------------------------------------------------------- sizes
def test_square_and_keep_ratio_sizes(make_ds, ramp, save, tmp_path):
    path = save(make_ds(ramp(600, 400)), tmp_path / "r.dcm")
    sq, header = read_dicom(path, size=512)
    kr, _ = read_dicom(path, size=512, keep_ratio=True)
    full, _ = read_dicom(path)
    assert sq.shape == (512, 512) and kr.shape == (512, 341) and full.shape == (600, 400)
    assert (header["height"], header["width"]) == (600, 400)
    assert dcm.output_size(400, 600, 512, keep_ratio=True) == (341, 512)


# ----------------------------------------------------------------------------- bad files
def test_bad_files_raise_clear_errors(make_ds, ramp, save, tfile, tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    text = tmp_path / "notes.dcm"
    text.write_text("not a dicom file\n" * 20)
    nopix = make_ds(ramp(4, 4))
    del nopix.PixelData
    nopix_path = save(nopix, tmp_path / "nopix.dcm")
    good = open(tfile("CT_small.dcm"), "rb").read()
    cut_pixels = tmp_path / "cut_pixels.dcm"
    cut_pixels.write_bytes(good[: len(good) - 5000])
    cut_header = tmp_path / "cut_header.dcm"
    cut_header.write_bytes(good[:300])
    cases = [(empty, "empty file (0 bytes)"), (text, "not a DICOM file"), (nopix_path, "no pixel data"),
             (cut_pixels, "Explicit VR Little Endian"), (cut_header, "truncated"),
             (tmp_path / "missing.dcm", "no such file"), (tfile("MR_truncated.dcm"), "less than expected")]
    for path, phrase in cases:
        with pytest.raises(DicomReadError) as e:
            read_dicom(path, size=64)
        assert str(path) in str(e.value) and phrase in str(e.value), str(e.value)


# ----------------------------------------------------------------------------- JPEG 2000 fast path
def test_j2k_reduce_level():
    assert dcm.j2k_reduce_level(2500, 2400, (512, 512), levels=5) == 2
    assert dcm.j2k_reduce_level(1022, 1100, (512, 512), levels=5) == 0      # 511 < 512 at r = 1
    assert dcm.j2k_reduce_level(1024, 1100, (512, 512), levels=5) == 1
    assert dcm.j2k_reduce_level(4096, 4096, (512, 512), levels=2) == 2      # codestream's levels
    assert dcm.j2k_reduce_level(4096, 4096, (512, 512), levels=5) == 3


def test_j2k_reduced_decode_close_to_full(make_ds, save, tmp_path):
    """1029 x 1030 px (1029 = 4k + 1: Pillow's own reduced size would be off by one at r = 2)."""
    rng = np.random.default_rng(0)
    h, w = 1029, 1030
    y, x = np.mgrid[0:h, 0:w] / 1000.0
    img = 0.3 + 0.4 * np.exp(-((x - 0.4) ** 2 + (y - 0.5) ** 2) / 0.05) + 0.2 * (x > 0.75)
    arr = np.clip(img * 4095 + rng.normal(0, 40, (h, w)), 0, 4095).astype(np.uint16)
    ds = make_ds(arr, bits=12, WindowCenter=2048, WindowWidth=3600)
    ds.compress(JPEG2000Lossless)
    path = save(ds, tmp_path / "j2k.dcm")
    ds = pydicom.dcmread(path)
    reduced = dcm.decode_j2k_reduced(ds, (256, 256))
    assert reduced is not None and reduced.shape == (math.ceil(h / 4), math.ceil(w / 4))
    assert abs(float(reduced.mean()) - float(arr.mean())) < 2                # same stored-value units
    fast, _ = read_dicom(path, size=256)
    full, _ = read_dicom(path, size=256, fast_j2k=False)
    assert fast.shape == full.shape == (256, 256)
    assert np.abs(fast.astype(int) - full).mean() <= 2
    assert dcm.decode_j2k_reduced(ds, (600, 600)) is None                    # less than 2x: full decode


def test_downscaled_range_ignores_single_pixel_extremes(make_ds, save, tmp_path):
    """A 1-pixel spike in a 1024 px ramp sets the min-max of the full image, but not the range of
    the 4 x 4-cell averaged 256 px output: the ramp still spans 0..255 there."""
    arr = np.tile(np.linspace(1000, 3000, 1024).round().astype(np.uint16), (1024, 1))
    arr[500, 500] = 4095
    img, _ = read_dicom(save(make_ds(arr, bits=12), tmp_path / "spike.dcm"), size=256)
    assert img[:, 0].max() <= 1 and img[:, -1].min() >= 254          # ramp ends, not squeezed by the spike
    assert abs(int(img[10, 128]) - 128) <= 2
    full, _ = read_dicom(tmp_path / "spike.dcm")                       # no resize: plain min-max
    assert full[500, 500] == 255 and full[0, -1] == round(2000 / 3095 * 255)


def test_j2k_reduce_level_equals_its_definition_on_non_square_sizes():
    """The largest r <= levels with ceil(h / 2**r) >= out_h and ceil(w / 2**r) >= out_w, by trying
    every r (each side checked against its own output side)."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(50, 5000, 2))
        out = (int(rng.integers(16, 600)), int(rng.integers(16, 600)))
        levels = int(rng.integers(0, 7))
        want = max(r for r in range(levels + 1)
                   if r == 0 or (math.ceil(h / 2 ** r) >= out[0] and math.ceil(w / 2 ** r) >= out[1]))
        assert dcm.j2k_reduce_level(h, w, out, levels) == want, (h, w, out, levels)
    assert dcm.j2k_reduce_level(1000, 3000, (100, 700), 5) == 2     # the width limits: 3000 / 4 = 750
    assert dcm.j2k_reduce_level(3000, 1000, (700, 100), 5) == 2     # the height limits


def test_fixed_window_16_to_8_bits_rounds_half_up_and_minmax_block_range():
    # stretch "window": x * 255 / 65535 rounded half up, on every 16-bit value (computed here in float)
    x = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    want = np.floor(x.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    from data_prep.dicom.voi import Voi, Window
    voi = Voi("window", Window(32767.5, 65536.0, "LINEAR_EXACT"))
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    got = dcm.to_uint8(x, ds, voi=voi, stretch="window")
    np.testing.assert_array_equal(got, want)
    # min-max over 4 x 4 block means (numpy here) when asked; the default is the plain min-max
    rng = np.random.default_rng(2)
    img = rng.integers(1000, 2000, (8, 12)).astype(np.float32)
    img[0, 0], img[7, 11] = 0, 5000                                    # single-pixel extremes
    means = img.reshape(2, 4, 3, 4).mean(axis=(1, 3))
    lo, hi = float(means.min()), float(means.max())
    want = np.clip((img.astype(np.float64) - lo) * (255 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(dcm.minmax_uint8(img, block=4), want)
    plain = np.clip((img.astype(np.float64) - 0) * (255 / 5000) + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(dcm.minmax_uint8(img), plain)
    np.testing.assert_array_equal(dcm.minmax_uint8(img[:7], block=4), dcm.minmax_uint8(img[:7]))  # < 2 blocks


def test_j2k_read_small_never_runs_the_full_decode(make_ds, save, tmp_path, monkeypatch):
    """A JPEG 2000 file read at 4x smaller takes the reduced decode only (the full decode would
    raise here) and is close to the full decode + area resize; with
    fast_j2k=False (or no size) the reduced decode is never tried."""
    h, w = 512, 520
    y, x = np.mgrid[0:h, 0:w]
    arr = (500 + 3000 * np.exp(-((x - 300) ** 2 + (y - 200) ** 2) / 40000.0)).astype(np.uint16)
    ds = make_ds(arr, bits=12)
    ds.compress(JPEG2000Lossless)
    path = save(ds, tmp_path / "j2k.dcm")
    full, _ = read_dicom(path, size=128, fast_j2k=False)

    def no_full_decode(ds):
        raise AssertionError("full decode")
    monkeypatch.setattr(dcm, "decode", no_full_decode)
    fast, header = read_dicom(path, size=128)
    assert fast.shape == (128, 128) and (header["height"], header["width"]) == (h, w)
    diff = np.abs(fast.astype(int) - full)
    assert diff.mean() <= 1.5 and diff.max() <= 3          # a wavelet low band, not an area average
    monkeypatch.undo()

    tried = []
    monkeypatch.setattr(dcm, "decode_j2k_reduced", lambda ds, hw: tried.append(hw))
    assert np.array_equal(read_dicom(path, size=128, fast_j2k=False)[0], full)
    assert read_dicom(path)[0].shape == (h, w)
    assert tried == []


def test_an_unreadable_header_field_is_left_out_with_a_warning_naming_the_file(make_ds, save, tmp_path, caplog):
    ds = make_ds(np.arange(12, dtype=np.uint16).reshape(3, 4), bits=12, PixelSpacing=[0.1, 0.1])
    path = save(ds, tmp_path / "garbage.dcm")
    data = open(path, "rb").read()
    assert data.count(b"0.1\\0.1") == 1
    open(path, "wb").write(data.replace(b"0.1\\0.1", b"ab\\cd  "))       # PixelSpacing: not numbers
    with caplog.at_level("WARNING", logger="data_prep.dicom.read"):
        img, header = read_dicom(path)
    assert img.shape == (3, 4) and "PixelSpacing" not in header
    assert any(str(path) in r.getMessage() and "PixelSpacing" in r.getMessage() for r in caplog.records)
