"""The edges of data_prep.dicom.voi and data_prep.dicom.read that the mutation run found untested
(issue 28 item 6): the stored value range Bits Stored / Bits Allocated / Pixel Representation allow
and the sign of the modality output it gives (how a VOI LUT's first value mapped is read, PS3.3
C.11.2.1.1), empty or lone rescale attributes, and the 8-bit stretch's padding and block rules.
Expected values come from the standard's definitions written here or in tests/ref_dicom.py (which
shares no code with data_prep)."""
from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from data_prep.dicom.voi import choose_voi, modality_output_signed, stored_range
from ref_dicom import ref_stored

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _zigzag_voi_lut() -> Sequence:
    """A VOI LUT Sequence of one 4-entry, 16-bit LUT that is not monotone (0, 9, 3, 65535)."""
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 16])
    item.add_new(0x00283006, "US", [0, 9, 3, 65535])
    return Sequence([item])


def _ds(**attrs) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


# ----------------------------------------------------------------------------- voi.stored_range
@pytest.mark.parametrize("attrs, bits, signed", [
    ({"BitsStored": 12}, 12, False),
    ({"BitsStored": 12, "PixelRepresentation": 1}, 12, True),
    ({"BitsStored": 16, "PixelRepresentation": 1}, 16, True),
    ({"BitsStored": 1}, 1, False),
    ({"BitsAllocated": 8}, 8, False),                                   # Bits Stored absent: Bits Allocated
    ({"BitsAllocated": 8, "PixelRepresentation": 1}, 8, True),
    ({"BitsStored": 10, "BitsAllocated": 16}, 10, False),               # Bits Stored wins
    ({}, 16, False),                                                    # neither: 16 bits
    ({"PixelRepresentation": 1}, 16, True),
])
def test_stored_range_is_every_value_the_stored_bits_can_hold(attrs, bits, signed):
    """PS3.3 C.7.6.3.1: a stored value is ``bits`` bits, two's complement when Pixel Representation
    is 1. The reference enumerates every bit pattern (tests/ref_dicom.ref_stored) and takes its
    extremes: 12 bits unsigned 0..4095, signed -2048..2047."""
    values = ref_stored(np.arange(1 << bits), bits, signed)
    assert stored_range(_ds(**attrs)) == (int(values.min()), int(values.max()))


# ----------------------------------------------------------------------------- voi.modality_output_signed
def _first_read(ds: Dataset) -> int:
    """The VOI LUT first value mapped 40000 (as written, US) as choose_voi reads it for ``ds``."""
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 40000, 16])
    item.add_new(0x00283006, "US", [1, 2, 3, 4])
    ds.VOILUTSequence = Sequence([item])
    voi = choose_voi(ds)
    assert voi.kind == "lut"
    return voi.lut.first


@pytest.mark.parametrize("attrs, modality_min", [
    # signed 12-bit (-2048..2047) through slope -1: the minimum is -2047 + intercept, at the top stored value
    ({"BitsStored": 12, "PixelRepresentation": 1, "RescaleSlope": -1, "RescaleIntercept": 2047}, 0),
    ({"BitsStored": 12, "PixelRepresentation": 1, "RescaleSlope": -1, "RescaleIntercept": 2046}, -1),
    # unsigned 12-bit (0..4095) through slope 1: the minimum is the intercept, at stored 0
    ({"BitsStored": 12, "RescaleSlope": 1, "RescaleIntercept": -1}, -1),
    ({"BitsStored": 12, "RescaleSlope": 1, "RescaleIntercept": 0}, 0),
    # no Bits Stored: Bits Allocated 8 (0..255), else 16 bits (0..65535)
    ({"BitsAllocated": 8, "RescaleSlope": -1, "RescaleIntercept": 255}, 0),
    ({"BitsAllocated": 8, "RescaleSlope": -1, "RescaleIntercept": 254}, -1),
    ({"RescaleSlope": -1, "RescaleIntercept": 65535}, 0),
    ({"RescaleSlope": -1, "RescaleIntercept": 65534}, -1),
    # a lone Rescale Slope or Intercept is not a rescale (C.11.1 needs both): the stored values, 0..4095
    ({"BitsStored": 12, "RescaleSlope": -1}, 0),
    ({"BitsStored": 12, "RescaleIntercept": -1024}, 0),
    ({"BitsStored": 12, "PixelRepresentation": 1, "RescaleIntercept": 2048}, -2048),
    # an empty Rescale Slope counts as 1, an empty Rescale Intercept as 0
    ({"BitsStored": 12, "RescaleSlope": "", "RescaleIntercept": -1024}, -1024),
    ({"BitsStored": 12, "PixelRepresentation": 1, "RescaleSlope": "", "RescaleIntercept": 2048}, 0),
    ({"BitsStored": 12, "PixelRepresentation": 1, "RescaleSlope": None, "RescaleIntercept": 2048}, 0),
    ({"BitsStored": 8, "PixelRepresentation": 1, "RescaleSlope": 0.0078125, "RescaleIntercept": ""}, -1),
    ({"BitsStored": 8, "PixelRepresentation": 1, "RescaleSlope": 0.0078125, "RescaleIntercept": None}, -1),
])
def test_voi_lut_first_value_read_by_the_modality_output_range(attrs, modality_min):
    """C.11.2.1.1: the VOI LUT's first value mapped is signed (40000 -> 40000 - 65536) exactly when
    the Modality LUT stage can output a negative value. ``modality_min`` is that stage's minimum over
    the stored range, by hand (comments); 0 is not negative."""
    ds = _ds(**attrs)
    assert modality_output_signed(ds) == (modality_min < 0)
    assert _first_read(ds) == (40000 - 65536 if modality_min < 0 else 40000)


# ----------------------------------------------------------------------------- read.minmax_uint8's exclude
def test_minmax_uint8_leaves_padding_pixels_out_of_the_range():
    """``exclude`` > 0 (any padding in the pixel, a partial 0.25 included) keeps a pixel out of min
    and max; it still goes through the stretch and clips: kept 1000..3000 -> 0..255."""
    from data_prep.dicom.read import minmax_uint8

    arr = np.array([[0, 1000, 2100, 3000], [60000, 1500, 2500, 40000]], np.uint16)
    exclude = np.array([[1, 0, 0, 0], [1, 0, 0, 0.25]], np.float32)
    want = np.clip((arr - 1000.0) * 255 / 2000, 0, 255)
    got = minmax_uint8(arr, exclude=exclude)
    assert got.dtype == np.uint8
    assert np.abs(got - want).max() <= 0.5
    assert got[0, 1] == 0 and got[0, 3] == 255 and got[1, 0] == 255 and got[0, 0] == 0


def test_minmax_uint8_blocks_leave_out_every_cell_holding_padding():
    """block=4 on a 16 x 16 image: the range is that of the 4 x 4 cell means, and a cell holding a
    single padding pixel (here its corner, value 65535, exclude 1) is left out, whichever pixel of
    the cell it is. Cell (i, j) holds 1000 + 100 (4i + j): kept means 1100..2500."""
    from data_prep.dicom.read import minmax_uint8

    k = np.arange(16).reshape(4, 4)
    arr = np.kron(1000 + 100 * k, np.ones((4, 4))).astype(np.uint16)
    exclude = np.zeros(arr.shape, np.float32)
    for corner in [(0, 0), (3, 3)]:                              # first and last pixel of cell (0, 0)
        a, ex = arr.copy(), exclude.copy()
        a[corner], ex[corner] = 65535, 1.0
        want = np.clip((a - 1100.0) * 255 / 1400, 0, 255)
        got = minmax_uint8(a, block=4, exclude=ex)
        assert np.abs(got - want).max() <= 0.5, corner
        assert got[corner] == 255 and got[4:8, 0].tolist() == [int(round(300 * 255 / 1400))] * 4


# ----------------------------------------------------------------------------- read.to_uint16 with padding
@pytest.mark.parametrize("via_table", [True, False])
def test_to_uint16_padding_out_of_the_range_and_zero(via_table):
    """Stored 100..4000 (12-bit, no VOI) with Pixel Padding Value 4095 in a few pixels: the padding is
    left out of the stretch (100 -> 0, 4000 -> 65535, (v - 100) * 65535 / 3900 in between) and set
    to exactly 0, through the value table (which spans 0..4095: values absent from the image,
    0..99, must not count) and pixel by pixel."""
    from data_prep.dicom.read import to_uint16

    rng = np.random.default_rng(5)
    arr = rng.integers(100, 4001, (20, 30)).astype(np.uint16)
    arr[0, 0], arr[0, 1] = 100, 4000
    arr[5:8, 10:14] = 4095
    is_pad = arr == 4095
    ds = _ds(PhotometricInterpretation="MONOCHROME2", BitsStored=12, PixelRepresentation=0)
    got = to_uint16(arr, ds, via_table=via_table, pad=(4095, 4095))
    want = (arr.astype(np.float64) - 100) * 65535 / 3900
    assert got.dtype == np.uint16
    assert (got[is_pad] == 0).all()
    assert np.abs(got[~is_pad] - want[~is_pad]).max() <= 0.5
    assert got[0, 0] == 0 and got[0, 1] == 65535


def test_to_uint8_finds_the_padding_pixels_itself_and_leaves_their_cells_out():
    """to_uint8 given ``pad`` but no ``mask`` computes the mask: a 16 x 16 image with a 4-pixel frame
    of padding 0 shrunk to 4 x 4. The 2 x 2 inner cells' means set the 8-bit range (the inner
    image reaches 0 and 255), the frame is black; counting the frame would lift the darkest inner
    cell (mean 2000 of 1000..4000) to 85."""
    from data_prep.dicom.padding import padding_mask
    from data_prep.dicom.read import to_uint8

    inner = np.kron(np.array([[2000, 3000], [3000, 4000]]), np.ones((4, 4))).astype(np.int64)
    inner[4, 4] = 1000                                    # the minimum, inside the bright cell
    stored = np.zeros((16, 16), np.uint16)
    stored[4:12, 4:12] = inner
    ds = _ds(PhotometricInterpretation="MONOCHROME2", BitsStored=12, PixelRepresentation=0)
    got = to_uint8(stored, ds, (4, 4), pad=(0, 0))
    np.testing.assert_array_equal(got, to_uint8(stored, ds, (4, 4), pad=(0, 0), mask=padding_mask(stored, (0, 0))))
    u16 = (inner - 1000) * 65535 / 3000                   # the 16-bit stretch of the inner image
    means = u16.reshape(2, 4, 2, 4).mean(axis=(1, 3))
    want = (means - means.min()) / (means.max() - means.min()) * 255
    assert np.abs(got[1:3, 1:3] - want).max() <= 1
    assert got[1, 1] == 0 and got[2, 2] == 255
    frame = np.ones((4, 4), bool)
    frame[1:3, 1:3] = False
    assert (got[frame] == 0).all()


# ----------------------------------------------------------------------------- read: which path runs
def test_a_clipped_line_goes_through_one_opencv_pass_other_tables_through_the_gather(monkeypatch):
    """What keeps convert fast (module docstring): a rescale on 16-bit integer data is a clipped
    line, mapped by one OpenCV pass with no table gather; a VOI LUT is not, and is gathered. Both
    equal the pixel-by-pixel chain within 1 of 65535."""
    from data_prep.dicom import read as dcm

    gathers = []
    take = dcm.take_rows
    monkeypatch.setattr(dcm, "take_rows", lambda table, idx, **kw: gathers.append(idx.shape) or take(table, idx, **kw))
    rng = np.random.default_rng(7)
    for dtype, lo, hi in ((np.uint16, 0, 4096), (np.int16, -2048, 2048), (np.uint8, 0, 256)):
        arr = rng.integers(lo, hi, (24, 40)).astype(dtype)
        ds = _ds(PhotometricInterpretation="MONOCHROME2", RescaleSlope=2, RescaleIntercept=-100)
        gathers.clear()
        fast = dcm.to_uint16(arr, ds)
        assert gathers == [], dtype
        assert np.abs(fast.astype(np.int64) - dcm.to_uint16(arr, ds, via_table=False)).max() <= 1
        ds.VOILUTSequence = _zigzag_voi_lut()                       # not a line
        gathers.clear()
        dcm.to_uint16(arr, ds)
        assert gathers == [arr.shape], dtype


def test_to_uint8_via_table_false_runs_the_chain_on_the_pixels(monkeypatch):
    """``via_table=False`` (the reference path the tests compare the table against) reaches
    to_uint16: the chain runs once, on the image itself."""
    from data_prep.dicom import read as dcm

    seen = []
    chain = dcm.lut_chain
    monkeypatch.setattr(dcm, "lut_chain", lambda v, ds, voi: seen.append(np.shape(v)) or chain(v, ds, voi))
    arr = np.arange(0, 4000, 10, dtype=np.uint16).reshape(20, 20)
    ds = _ds(PhotometricInterpretation="MONOCHROME2", RescaleSlope=1, RescaleIntercept=0)
    slow = dcm.to_uint8(arr, ds, via_table=False)
    assert seen == [(20, 20)]
    seen.clear()
    fast = dcm.to_uint8(arr, ds)
    assert seen == [(3991,)]                                        # arange(0, max + 1)
    assert np.abs(slow.astype(int) - fast).max() <= 1


def test_a_monotone_chain_takes_its_range_from_the_table_ends_without_counting_pixels(monkeypatch):
    """What keeps convert lean: when the chain is monotone over the stored range (a LINEAR window,
    flat where it clips; MONOCHROME1 the same, decreasing) the 16-bit range is the table's values
    at the image's min and max; the pixels are not counted (np.bincount casts the image to int64,
    8 bytes a pixel). A non-monotone VOI LUT needs the count. The pixels equal the pixel-by-pixel
    chain within 1 of 65535 in every case."""
    from data_prep.dicom import read as dcm

    counted = []
    bincount = np.bincount
    monkeypatch.setattr(np, "bincount", lambda x, *a, **kw: counted.append(np.shape(x)) or bincount(x, *a, **kw))
    arr = np.tile(np.arange(0, 4000, 8, dtype=np.uint16), (4, 1))
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        ds = _ds(PhotometricInterpretation=photometric, WindowCenter=2000, WindowWidth=1000)
        counted.clear()
        fast = dcm.to_uint16(arr, ds)
        assert counted == [], photometric
        assert np.abs(fast.astype(np.int64) - dcm.to_uint16(arr, ds, via_table=False)).max() <= 1
    ds = _ds(PhotometricInterpretation="MONOCHROME2", VOILUTSequence=_zigzag_voi_lut())
    counted.clear()
    dcm.to_uint16(arr, ds)
    assert counted == [(arr.size,)]


def test_float_and_integer_pixels_of_the_same_values_give_the_same_16_bit_image():
    """Float pixels go pixel by pixel, integer pixels through the value table; through a table that
    is not a line (a VOI LUT 0 6 1 5 2 4 3: no OpenCV pass) both round a halfway value up, so the
    same stored values give the same image to the unit: outputs 0..6 stretched by 65535 / 6, odd
    ones halfway (10922.5, 32767.5, 54612.5 -> 10923, 32768, 54613)."""
    from data_prep.dicom.read import to_uint16

    entries = [0, 6, 1, 5, 2, 4, 3]
    item = Dataset()
    item.add_new(0x00283002, "US", [7, 0, 16])
    item.add_new(0x00283006, "US", entries)
    ds = _ds(PhotometricInterpretation="MONOCHROME2", VOILUTSequence=Sequence([item]))
    stored = np.array([[0, 1, 2, 3], [4, 5, 6, 6]])
    want = np.floor(np.array(entries)[stored] * 65535 / 6 + 0.5).astype(np.uint16)
    assert want[0, 2] == 10923 and want[0, 1] == 65535
    for dtype in (np.uint16, np.int16, np.float32, np.float64):
        np.testing.assert_array_equal(to_uint16(stored.astype(dtype), ds), want, err_msg=str(dtype))


def test_minmax_uint8_blocks_on_a_three_channel_image():
    """``block`` cells are spatial on a (16, 16, 3) image too: the range is that of the 4 x 4 cell
    means over every channel (1000..2600 here), and a single pixel beyond it (3000, noise) clips to
    255 instead of setting the range."""
    from data_prep.dicom.read import minmax_uint8

    base = np.kron(1000 + 100 * np.arange(16).reshape(4, 4), np.ones((4, 4)))
    arr = np.stack([base, base + 50, base + 100], axis=-1).astype(np.uint16)
    arr[5, 5, 0] = 3000                                          # its cell's mean: 1593.75, inside the range
    got = minmax_uint8(arr, block=4)
    assert got.shape == arr.shape and got.dtype == np.uint8
    want = np.clip((arr - 1000.0) * 255 / 1600, 0, 255)
    assert np.abs(got - want).max() <= 0.5
    assert got[5, 5, 0] == 255 and got[0, 0, 0] == 0


def test_an_empty_voi_lut_data_is_skipped_naming_the_word_count():
    """A VOI LUT item whose LUT Data holds no value (built in memory: an empty US list) is not usable:
    the file's window is used and the reason names what is missing."""
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 16])
    item.add_new(0x00283006, "US", [])
    ds = _ds(PhotometricInterpretation="MONOCHROME2", WindowCenter=100, WindowWidth=50,
             VOILUTSequence=Sequence([item]))
    voi = choose_voi(ds)
    assert voi.kind == "window" and voi.invalid
    assert voi.fallback == "VOI LUT 0: LUT Data holds 0 16-bit words; the LUT Descriptor says 4 entries of 16 bits"


# ----------------------------------------------------------------------------- empty values read from a file
def test_an_empty_voi_lut_data_read_from_a_file_falls_back_naming_the_word_count(make_ds, save, tmp_path):
    """An empty US LUT Data element written to disk reads back as None (not an empty list): the VOI
    LUT is skipped with the same reason as an empty list, and the file's window is used."""
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8) * 16
    ds = make_ds(raw, "MONOCHROME2", 12, WindowCenter=512, WindowWidth=512)
    item = Dataset()
    item.add_new(0x00283002, "US", [4, 0, 16])
    item.add_new(0x00283006, "US", None)
    ds.VOILUTSequence = Sequence([item])
    from data_prep.dicom.read import read_dicom
    from data_prep.dicom.voi import VoiOptions
    img, header = read_dicom(save(ds, tmp_path / "empty_lut.dcm"), options=VoiOptions(voi="lut"))
    assert header["voi"] == "window" and header["voi_window"].startswith("512|512")
    assert header["voi_fallback"] == ("VOI LUT 0: LUT Data holds 0 16-bit words; "
                                      "the LUT Descriptor says 4 entries of 16 bits")
    # the LINEAR window of C.11.2.1.2.1 (c 512, w 512) then min-max to 0..255, by hand:
    y = np.clip((raw.astype(float) - 511.5) / 511 + 0.5, 0, 1)
    want = np.rint((y - y.min()) / (y.max() - y.min()) * 255)
    assert np.abs(img.astype(float) - want).max() <= 1


def test_empty_rescale_slope_and_intercept_read_as_one_and_zero(make_ds, save, tmp_path):
    """Empty Rescale Slope / Intercept (DS, zero length): the modality stage reads them as 1 and 0,
    as the sign rule of C.11.2.1.1 does; the file converts like one without a rescale."""
    raw = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 37) % 4096
    from data_prep.dicom.read import read_dicom
    from data_prep.dicom.voi import modality
    plain = make_ds(raw, "MONOCHROME2", 12)
    empty = make_ds(raw, "MONOCHROME2", 12)
    empty.add_new(0x00281053, "DS", "")
    empty.add_new(0x00281052, "DS", "")
    back = read_dicom(save(empty, tmp_path / "empty_rescale.dcm"))[0]
    assert np.array_equal(back, read_dicom(save(plain, tmp_path / "plain.dcm"))[0])
    assert np.array_equal(modality(raw, empty), raw.astype(np.float64))
