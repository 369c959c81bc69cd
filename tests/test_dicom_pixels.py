"""data_prep.dicom.read's pixel steps against the C.11 reference of ref_dicom.py: the value table and
the pixelwise chain, the 2**20 table bounds, non-monotone LUTs, the 8-bit range on a block grid,
resize, constant images, LUT entries above their bits."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array

from data_prep.dicom import read as dcm
from data_prep.dicom.read import read_dicom
from data_prep.dicom.voi import VoiOptions, choose_voi
from ref_dicom import CASES, R12, build, lut, ref_render, ref_spec_from_dataset, ref_stored  # noqa: F401 (build: fixture)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ----------------------------------------------------------------------------- the table and the chain
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "JPGExtended.dcm",
                                  "dicomdirtests/77654033/CR1/6154", "rtdose_1frame.dcm"])
def test_lookup_table_and_pixelwise_chain_equal_the_reference(name):
    """to_uint16 through its value table and pixel by pixel both equal the reference (1/65535)."""
    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    stored = pixel_array(ds, index=0)
    want = ref_render(stored, ref_spec_from_dataset(ds)) * (65535 / 255)
    for via_table in (True, False):
        got = dcm.to_uint16(stored, ds, via_table=via_table)
        assert np.abs(got - want).max() <= 1, (name, via_table)
    # the table path's OpenCV pass for a clipped-line chain (dcm.affine_table) may round a value
    # exactly halfway the other way: 1 of 65535 at most
    fast, slow = dcm.to_uint16(stored, ds, via_table=True), dcm.to_uint16(stored, ds, via_table=False)
    assert np.abs(fast.astype(np.int64) - slow).max() <= 1


# ----------------------------------------------------------------------------- the 8-bit range on a block grid
def test_range_of_a_non_square_shrink_uses_row_major_blocks(tmp_path, build, save):
    """A 32 x 64 image of stored values v = 0, 1000, 1000, 1000, 2500, 2500, 2500, 4000 (top to
    bottom, each on 4 rows), read at keep-ratio 32 -> 16 x 32 (a 2x shrink). The 16-bit rows are
    u = v / 4000 * 65535 = 0, 16384, 40959, 65535; the 8-bit range is taken on 4 x 4 blocks of the
    16 x 32 output = 4 block rows x 8 block columns, with means (0 + 16384) / 2 = 8192, 16384,
    40959, (40959 + 65535) / 2 = 53247. So 0 -> 0 (clipped), 16384 -> (16384 - 8192) * 255 /
    45055 = 46.4, 40959 -> 185.4, 65535 -> 255 (clipped). Blocks with rows and columns swapped
    (8 block rows x 4 block columns, of 2 output rows each) would give the range [0, 65535]: a
    plain stretch, 64 and 159."""
    v = np.repeat(np.array([0, 1000, 1000, 1000, 2500, 2500, 2500, 4000]), 4)
    raw = np.tile(v[:, None], (1, 64))
    img, _ = read_dicom(save(build(raw, 12), tmp_path / "wide.dcm"), size=32, keep_ratio=True)
    assert img.shape == (16, 32) and (img == img[:, :1]).all()
    want = [0, 0, 46, 46, 46, 46, 46, 46, 185, 185, 185, 185, 185, 185, 255, 255]
    assert img[:, 0].tolist() == want


def test_the_chain_runs_once_per_stored_value_not_per_pixel(monkeypatch):
    """What makes convert fast: to_uint16 evaluates the modality/VOI chain once per stored value
    of the image's range (arange(0, max + 1) for unsigned data, arange(min, max + 1) for signed)
    and looks the pixels up; data with a range wider than 2**20 values, float data and
    via_table=False run it on the pixels. The pixels are the same either way."""
    seen = []
    chain = dcm.lut_chain
    monkeypatch.setattr(dcm, "lut_chain", lambda v, ds, voi: seen.append(np.asarray(v).copy()) or chain(v, ds, voi))
    ds = Dataset()
    ds.PhotometricInterpretation, ds.RescaleSlope, ds.RescaleIntercept = "MONOCHROME2", 2, -1000
    ds.WindowCenter, ds.WindowWidth = 2000, 3000
    rng = np.random.default_rng(3)
    unsigned = rng.integers(100, 4001, (64, 48)).astype(np.uint16)
    unsigned[0, 0], unsigned[0, 1] = 100, 4000
    signed = unsigned.astype(np.int16) - 2000
    wide = unsigned.astype(np.int32) * 600                       # range 60,000 .. 2,400,000 > 2**20
    for arr, table in ((unsigned, np.arange(0, 4001)), (signed, np.arange(-1900, 2001)), (wide, None),
                       (unsigned.astype(np.float32), None)):
        seen.clear()
        fast = dcm.to_uint16(arr, ds)
        (got,) = seen
        if table is None:
            assert got.shape == arr.shape
        else:
            np.testing.assert_array_equal(got, table)
        seen.clear()
        slow = dcm.to_uint16(arr, ds, via_table=False)
        assert seen[0].shape == arr.shape
        assert np.abs(fast.astype(np.int64) - slow).max() <= 1      # 1 of 65535: dcm.affine_table's rounding


@pytest.mark.parametrize("name", sorted(CASES))
def test_pixelwise_chain_matches_the_standard(name, build):
    """The same cases through the pixel-by-pixel chain (via_table=False, what float data and
    stored ranges over 2**20 values take), with the VOI the options choose: 16-bit output
    within 1 level of the reference times 65535 / 255."""
    raw, kwargs, spec, opts, kind, fallback = CASES[name]
    ds = build(raw, **kwargs)
    options = VoiOptions(**opts)
    stored = ref_stored(raw, kwargs["bits"], kwargs.get("signed", False))
    voi = choose_voi(ds, options)
    got = dcm.to_uint16(pixel_array(ds, index=0), ds, via_table=False, voi=voi, stretch=options.stretch)
    want = ref_render(stored, spec, options.stretch) * (65535 / 255)
    assert got.dtype == np.uint16 and voi.kind == kind
    assert np.abs(got - want).max() <= 1, name


def test_a_non_monotone_voi_lut_on_signed_values_through_the_table(tmp_path, build, save):
    """Signed stored values -50..50 through a VOI LUT that first steps down (5 -> 0), then climbs
    by 1 to 99: not monotone, so the min-max takes the extremes over the values present (0 and
    99), not the LUT's ends (5 and 99); every pixel matches the reference."""
    entries = [5] + list(range(0, 100))
    stored = np.tile(np.arange(-50, 51), (2, 1))
    ds = build(stored, 12, signed=True, luts=[lut(65536 - 50, 12, entries)])
    img, header = read_dicom(save(ds, tmp_path / "bump.dcm"))
    want = ref_render(stored, dict(voi=("lut", (-50, entries, 12))))
    assert header["voi"] == "lut"
    assert np.abs(img - want).max() <= 0.5 + 1e-9
    assert img[0, 1] == 0 and img[0, 100] == 255 and img[0, 0] == round(5 / 99 * 255)


def test_non_monotone_lut_extremes_come_from_the_values_present_only(tmp_path, build, save):
    """Stored values 0 (three pixels) and 40 (one pixel) through a VOI LUT that peaks at 20 and
    dips at 30, values no pixel has: the min-max runs over the LUT outputs of 0 and 40 only
    (10 -> 0, 30 -> 255), whatever the table holds in between or how often a value occurs."""
    entries = [10] * 20 + [4095] + [10] * 9 + [0] + [10] * 9 + [30]      # 41 entries for 0..40
    stored = np.array([[0, 0, 40, 0]])
    ds = build(stored, 12, luts=[lut(0, 12, entries)])
    img, header = read_dicom(save(ds, tmp_path / "spike.dcm"))
    assert header["voi"] == "lut"
    np.testing.assert_array_equal(img, [[0, 0, 255, 0]])
    want = ref_render(stored, dict(voi=("lut", (0, entries, 12))))
    np.testing.assert_array_equal(img, np.floor(want + 0.5).astype(np.uint8))
    # the 16-bit step alone (the 8-bit min-max after it would hide a wider 16-bit range)
    np.testing.assert_array_equal(dcm.to_uint16(stored.astype(np.uint16), ds), [[0, 0, 65535, 0]])


def test_the_table_bounds_are_2_to_the_20_values(monkeypatch):
    """Unsigned data index the table from 0 while the largest value is below 2**20, else from
    their minimum; any integer data whose range (max - min) is below 2**20 use a table from the
    minimum, wider ranges go pixel by pixel; read through to_uint8 the table is used by default.
    The pixels equal the pixelwise chain in every case."""
    seen = []
    chain = dcm.lut_chain
    monkeypatch.setattr(dcm, "lut_chain", lambda v, ds, voi: seen.append(np.asarray(v).copy()) or chain(v, ds, voi))
    ds = Dataset()
    ds.PhotometricInterpretation, ds.RescaleSlope, ds.RescaleIntercept = "MONOCHROME2", 1, 0
    m = 1 << 20
    cases = [(np.array([[m - 1, 5, 9]], np.uint32), (0, m - 1)),
             (np.array([[m, m - 3, m - 1]], np.uint32), (m - 3, m)),
             (np.array([[m + 5, m + 50, m + 7]], np.int32), (m + 5, m + 50)),
             (np.array([[-3, m - 4, 7]], np.int32), (-3, m - 4)),
             (np.array([[0, m, 7]], np.int32), None)]
    for arr, table in cases:
        seen.clear()
        fast = dcm.to_uint16(arr, ds)
        (got,) = seen
        if table is None:
            assert got.shape == arr.shape, arr
        else:
            assert (got[0], got[-1], len(got)) == (table[0], table[1], table[1] - table[0] + 1), arr
        seen.clear()
        np.testing.assert_array_equal(fast, dcm.to_uint16(arr, ds, via_table=False))
    seen.clear()
    small = np.array([[100, 4000], [2000, 3000]], np.uint16)
    dcm.to_uint8(small, ds)
    (got,) = seen
    np.testing.assert_array_equal(got, np.arange(0, 4001))


@pytest.mark.parametrize("axis", [0, 1])
def test_8bit_range_on_blocks_when_exactly_one_side_is_halved(axis):
    """A 16 x 8 image (or 8 x 16) to 8 x 8: only one side shrinks, exactly 2x, which counts as
    shrunk: the 8-bit range is the min-max of the 4 x 4 block means of the 8 x 8 output
    (numpy here), so the one bright output pixel clips to 255 instead of setting the top. An
    original under 2x the output on both sides: plain min-max."""
    ramp8 = (1000 + 100 * np.arange(8))[None, :].repeat(8, 0)                 # the 8 x 8 output, stored
    ramp8[1, 3] = 4000                                                         # one bright output pixel
    full = np.repeat(ramp8, 2, axis=0)                                         # every output row twice
    if axis == 1:
        ramp8, full = ramp8.T.copy(), np.repeat(ramp8.T, 2, axis=1)
    full = full.astype(np.uint16)
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    u16 = np.floor((ramp8 - 1000) * (65535 / 3000) + 0.5)                      # the 16-bit output
    means = u16.reshape(2, 4, 2, 4).mean(axis=(1, 3))
    lo, hi = means.min(), means.max()
    want = np.clip(np.floor((u16 - lo) * (255 / (hi - lo)) + 0.5), 0, 255)
    got = dcm.to_uint8(full, ds, (8, 8))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)
    assert got.max() == 255 and (got == 255).sum() > 1
    plain = dcm.to_uint8(full, ds, (8, 8), full_hw=(15, 15))                   # less than 2x: plain min-max
    np.testing.assert_array_equal(plain, np.floor(u16 * (255 / 65535) + 0.5))
    # minmax_uint8 with 2 x 2 blocks (numpy means here) on the 16-bit output
    m2 = u16.reshape(4, 2, 4, 2).mean(axis=(1, 3))
    want2 = np.clip(np.floor((u16 - m2.min()) * (255 / (m2.max() - m2.min())) + 0.5), 0, 255)
    np.testing.assert_array_equal(dcm.minmax_uint8(u16.astype(np.uint16), block=2), want2)


def test_resize_area_to_shrink_linear_otherwise():
    """Both sides smaller or equal: area average (3 x 1 or 1 x 3 means, numpy here); a side that
    grows: bilinear with pixel centres at (i + 0.5) * scale - 0.5, clamped at the border (numpy
    here), also when the other side shrinks."""
    rng = np.random.default_rng(4)
    a = rng.random((6, 12)).astype(np.float32)
    np.testing.assert_allclose(dcm.resize(a, (6, 4)), a.reshape(6, 4, 3).mean(axis=2), atol=1e-6)
    np.testing.assert_allclose(dcm.resize(a.T, (4, 6)), a.T.reshape(4, 3, 6).mean(axis=1), atol=1e-6)
    b = rng.random((12, 3)).astype(np.float32)
    np.testing.assert_allclose(dcm.resize(b, (4, 3)), b.reshape(4, 3, 3).mean(axis=1), atol=1e-6)

    def bilinear(x, h, w):
        def axis(n_in, n_out):
            s = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
            i0 = np.floor(s).astype(int)
            i1 = np.minimum(i0 + 1, n_in - 1)
            return i0, i1, s - i0
        y0, y1, fy = axis(x.shape[0], h)
        x0, x1, fx = axis(x.shape[1], w)
        top = x[y0][:, x0] * (1 - fx) + x[y0][:, x1] * fx
        bot = x[y1][:, x0] * (1 - fx) + x[y1][:, x1] * fx
        return top * (1 - fy[:, None]) + bot * fy[:, None]
    for src, hw in ((a, (12, 24)), (a, (12, 4)), (a, (3, 24))):
        np.testing.assert_allclose(dcm.resize(src, hw), bilinear(src.astype(np.float64), *hw), atol=1e-5)
    assert dcm.resize(a, (6, 12)) is a


def test_a_constant_image_is_uint8_zeros_and_every_output_is_uint8(tmp_path, build, save, caplog):
    """Every pixel the same: zeros, uint8, with either stretch; the 16-bit step gives uint16 zeros
    (table and pixelwise); a windowed image with stretch "window" is uint8 too."""
    flat = np.full((6, 10), 700)
    path = save(build(flat, 12), tmp_path / "flat.dcm")
    for options in (VoiOptions(), VoiOptions(stretch="window")):
        img, _ = read_dicom(path, options=options)
        assert img.dtype == np.uint8 and img.shape == (6, 10) and not img.any()
    ds = build(flat, 12)
    for via_table in (True, False):
        u16 = dcm.to_uint16(flat.astype(np.uint16), ds, via_table=via_table)
        assert u16.dtype == np.uint16 and not u16.any()
    img, _ = read_dicom(save(build(R12, 12, windows=[(2048, 1000)]), tmp_path / "w.dcm"),
                        options=VoiOptions(stretch="window"))
    assert img.dtype == np.uint8 and img.min() == 0 and img.max() == 255
    assert dcm.output_size(100, 50, 40) == (40, 40)                  # square unless keep_ratio


@pytest.mark.parametrize("mono1", [False, True])
def test_voi_lut_entries_above_its_bits_clip_with_stretch_window(mono1, tmp_path, build, save):
    """A VOI LUT whose descriptor says 8 bits but whose entries climb to 1023 (entry = stored // 4):
    with stretch "window" the output range is 0..255, so entries above 255 are white (black for
    MONOCHROME1, whose 255 - entry is then below 0), through the table and pixel by pixel."""
    entries = [i // 4 for i in range(4096)]
    ds = build(R12, 12, mono1=mono1, luts=[lut(0, 8, entries)])
    img, header = read_dicom(save(ds, tmp_path / "over.dcm"), options=VoiOptions(stretch="window"))
    y = np.minimum(R12 // 4, 255)
    want = 255 - y if mono1 else y
    assert header["voi"] == "lut" and img.tolist() == want.tolist()
    u16 = dcm.to_uint16(pixel_array(ds, index=0), ds, via_table=False, voi=choose_voi(ds), stretch="window")
    assert u16.tolist() == (want * 257).tolist()
