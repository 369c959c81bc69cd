"""data_prep.dicom.voi and the pixel steps one by one: LUT Data layouts and byte order, LUT descriptors,
signed first values, PALETTE COLOR, MONOCHROME1 inversion, each C.11 step's values, choose_voi's rules."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from data_prep.dicom import read as dcm

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("where, little", [("file_meta", True), ("file_meta", False), ("original_encoding", True),
                                           ("original_encoding", False), ("default", True)])
def test_ow_lut_data_read_in_the_file_byte_order(where, little):
    """LUT Data kept as raw OW bytes is read in the dataset's byte order: the transfer syntax of
    the file meta, else the encoding the dataset was read with, else little endian."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

    from data_prep.dicom.voi import read_lut

    entries = np.array([0, 1, 258, 65535, 4660], dtype=np.uint16)   # 258 = 0x0102: byte order shows
    item = Dataset()
    item.LUTDescriptor = [5, 10, 16]
    item.add_new(0x00283006, "OW", entries.astype("<u2" if little else ">u2").tobytes())
    ds = Dataset()
    if where == "file_meta":
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    elif where == "original_encoding":
        ds.set_original_encoding(False, little, "iso8859")
    lut = read_lut(item, ds)
    assert lut.first == 10 and lut.bits == 16
    np.testing.assert_array_equal(lut.entries, entries.astype(np.int64))
    np.testing.assert_array_equal(lut.apply(np.array([9, 10, 12, 14, 99])), [0, 0, 258, 4660, 4660])


def _lut_item(desc, data, vr="US"):
    item = Dataset()
    item.LUTDescriptor = desc
    if data is not None:
        item.add_new(0x00283006, vr, data)
    return item


def test_read_lut_descriptor_rules():
    """C.11.1.1 / C.11.2.1.1 LUT descriptors: 0 entries means 65536; the first mapped value is read
    as signed (>= 32768 -> minus 65536) only for signed input; 8..16 bits per entry; 8-bit entries
    may come packed two per word (low byte first); float input is rounded before the lookup."""
    from data_prep.dicom.voi import read_lut

    ds = Dataset()
    full = read_lut(_lut_item([0, 0, 16], list(range(65536))), ds)
    assert len(full.entries) == 65536 and full.entries[-1] == 65535
    assert read_lut(_lut_item([2, 40000, 16], [7, 9]), ds).first == 40000
    assert read_lut(_lut_item([2, 40000, 16], [7, 9]), ds, signed_input=True).first == 40000 - 65536
    assert read_lut(_lut_item([2, 32768, 16], [7, 9]), ds, signed_input=True).first == -32768
    assert read_lut(_lut_item([2, 32767, 16], [7, 9]), ds, signed_input=True).first == 32767
    assert read_lut(_lut_item([1, 0, 16], 5), ds).entries.tolist() == [5]          # one entry, one value
    packed = read_lut(_lut_item([3, 0, 8], [0x0201, 0x0003]), ds)
    assert packed.entries.tolist() == [1, 2, 3]
    odd = read_lut(_lut_item([2, 0, 16], bytes([1, 0, 2, 0, 9]), "OW"), ds)        # a stray last byte
    assert odd.entries.tolist() == [1, 2]
    lut = read_lut(_lut_item([3, 10, 16], [100, 200, 300]), ds)
    np.testing.assert_array_equal(lut.apply(np.array([10.4, 10.6, 11.5, 9.0, 99.0])), [100, 200, 300, 100, 300])
    for desc, data, why in (([2, 0, 17], [1, 2], "bits per entry 17"), ([2, 0, 7], [1, 2], "bits per entry 7"),
                            ([4, 0, 16], [1, 2], "2 16-bit words"), ([5, 0, 8], [1, 2], "2 16-bit words"),
                            ([4, 0], [1, 2], "expected 3 values"), (4, [1, 2], "expected 3 values"),
                            ([2, 0, 16], None, "missing")):
        with pytest.raises(ValueError, match=why):
            read_lut(_lut_item(desc, data), ds)


@pytest.mark.parametrize("attrs, first", [
    ({}, 64512),                                                              # unsigned values: as written
    ({"PixelRepresentation": 1}, -1024),                                      # signed stored values
    ({"RescaleIntercept": "-1024", "RescaleSlope": "1"}, -1024),               # a negative intercept
    ({"RescaleIntercept": "0", "RescaleSlope": "-1"}, -1024),                  # a negative slope
    ({"RescaleIntercept": "0", "RescaleSlope": "1"}, 64512),
    ({"RescaleIntercept": "", "RescaleSlope": ""}, 64512),                     # empty values: the defaults
    ({"RescaleIntercept": "5", "RescaleSlope": "1", "PixelRepresentation": 0}, 64512),
    ({"RescaleIntercept": "0", "RescaleSlope": "0.5"}, 64512),                # a positive slope below 1
])
def test_voi_lut_first_value_signed_when_the_modality_output_can_be_negative(attrs, first):
    """C.11.2.1.1: a VOI LUT's first mapped value of 32768 or more is a negative number when the
    modality output can be negative (signed pixels, or a negative rescale intercept or slope)."""
    from pydicom.sequence import Sequence as Seq

    from data_prep.dicom.voi import choose_voi

    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.VOILUTSequence = Seq([_lut_item([4, 64512, 16], [1, 2, 3, 4])])
    voi = choose_voi(ds)
    assert voi.kind == "lut" and voi.lut.first == first


def test_palette_color_goes_through_its_lookup_tables_then_luma():
    """PALETTE COLOR: each stored index picks (R, G, B) from the three palette tables (written here),
    then gray = 0.299 R + 0.587 G + 0.114 B (float32); a missing interpretation means MONOCHROME2."""
    ds = Dataset()
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.BitsAllocated, ds.SamplesPerPixel, ds.PixelRepresentation = 8, 1, 0
    tables = {"Red": [0, 100, 200, 65535], "Green": [65535, 0, 300, 400], "Blue": [10, 20, 30, 40]}
    for c, vals in tables.items():
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{c}PaletteColorLookupTableData", np.array(vals, "<u2").tobytes())
    arr = np.array([[0, 1], [2, 3]], np.uint8)
    r, g, b = (np.array(tables[c], np.float64) for c in ("Red", "Green", "Blue"))
    gray = dcm.to_gray(arr, ds)
    assert gray.dtype == np.float32
    np.testing.assert_allclose(gray, (0.299 * r + 0.587 * g + 0.114 * b)[arr], rtol=1e-6)
    plain = Dataset()
    assert dcm.to_gray(arr, plain) is arr


def test_invert_monochrome1_step_by_itself():
    """The step alone (C.11.2: the presentation inverts the VOI output): 1 - x after a window
    (the file's window when no VOI is passed), top - x after a VOI LUT of n bits, -x with no
    VOI; MONOCHROME2 and a file without Photometric Interpretation are left as they are."""
    from data_prep.dicom.voi import Lut, Voi, Window

    x = np.array([[0.0, 0.25], [0.5, 1.0]])
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter, ds.WindowWidth = 100, 50
    np.testing.assert_array_equal(dcm.invert_monochrome1(x, ds), 1.0 - x)
    np.testing.assert_array_equal(dcm.invert_monochrome1(x, ds, Voi()), -x)
    lut = Voi("lut", lut=Lut(0, np.arange(4), 10))
    np.testing.assert_array_equal(dcm.invert_monochrome1(x, ds, lut), 1023.0 - x)
    np.testing.assert_array_equal(dcm.invert_monochrome1(x, ds, Voi("window", Window(1, 2))), 1.0 - x)
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert dcm.invert_monochrome1(x, ds) is x
    assert dcm.invert_monochrome1(x, Dataset()) is x


def test_each_lut_step_gives_float64_with_the_standard_values():
    """C.11.1 / C.11.2 step by step on uint16 / float32 input: every step returns float64.
    Modality: no rescale (or only a slope) leaves the values; a Modality LUT in OW words is read
    in the file's byte order and its first value mapped (65436) is -100 for signed pixels only.
    VOI: the file's window when none is passed (LINEAR: c - 0.5, w - 1), a VOI LUT, none.
    Windows of width 1 (LINEAR) and 0.5 (LINEAR_EXACT) by hand."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from data_prep.dicom.voi import Lut, Voi, Window, modality

    u = np.array([[0, 1000], [2000, 4095]], np.uint16)
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    out = modality(u, ds)
    assert out.dtype == np.float64 and out.tolist() == [[0, 1000], [2000, 4095]]
    ds.RescaleSlope = 2                                                  # a slope without an intercept
    assert modality(u, ds).tolist() == [[0, 1000], [2000, 4095]]
    ds.RescaleIntercept = -5
    assert modality(u, ds).tolist() == [[-5, 1995], [3995, 8185]]

    item = Dataset()
    item.LUTDescriptor = [4, 65436, 16]
    item.add_new(0x00283006, "OW", np.array([10, 20, 30, 40], "<u2").tobytes())
    mds = Dataset()
    mds.file_meta = FileMetaDataset()
    mds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    mds.ModalityLUTSequence = Sequence([item])
    signed = np.array([-101, -100, -98, -97, 0], np.int16)
    unsigned = np.array([65435, 65436, 65438, 65439, 0], np.uint16)
    want_signed, want_unsigned = [10, 10, 30, 40, 40], [10, 10, 30, 40, 10]
    for pr, arr, want in ((1, signed, want_signed), (0, unsigned, want_unsigned), (None, unsigned, want_unsigned)):
        if pr is None:
            del mds.PixelRepresentation
        else:
            mds.PixelRepresentation = pr
        out = modality(arr, mds)
        assert out.dtype == np.float64 and out.tolist() == want, pr

    ds.WindowCenter, ds.WindowWidth = 1000.5, 2001                       # 0 .. 2000 -> 0 .. 1
    got = dcm.voi_lut(u.astype(np.float64), ds)
    np.testing.assert_allclose(got, [[0, 0.5], [1, 1]])
    for voi in (Voi(), Voi("lut", lut=Lut(0, np.arange(4096) // 2, 11))):
        out = dcm.voi_lut(u, ds, voi)
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, u if voi.kind == "none" else u // 2)
    f32 = np.array([0.0, 999.5, 1000.5, 2000.0], np.float32)
    for window in (Window(1000.5, 2001), Window(1000.5, 2001, "SIGMOID"), Window(2048, 1)):
        assert window.apply(f32).dtype == np.float64
    assert Window(1000.5, 2001, "SIGMOID").apply(np.array([1000.5])).tolist() == [0.5]
    # LINEAR width 1: a step at c - 0.5; LINEAR width 1.5 / LINEAR_EXACT width 0.5: a ramp of 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                   # no 0 / 0 behind the step
        np.testing.assert_array_equal(Window(10, 1).apply(np.array([8.0, 9.5, 9.6, 12.0])), [0, 0, 1, 1])
    np.testing.assert_allclose(Window(10, 0.5, "LINEAR_EXACT").apply(np.array([9.75, 9.8, 10.0, 10.25, 10.3])),
                               [0, 0.1, 0.5, 1, 1])
    np.testing.assert_allclose(Window(10, 1.5).apply(np.array([9.25, 9.3, 9.5, 9.75, 9.8])), [0, 0.1, 0.5, 1, 1])
    mono1 = Dataset()
    mono1.PhotometricInterpretation = "MONOCHROME1"
    inv = dcm.invert_monochrome1(np.array([0.25, 0.1], np.float32), mono1, Voi("window", Window(1, 2)))
    assert inv.dtype == np.float64 and inv.tolist() == [0.75, 1 - float(np.float32(0.1))]


def test_choose_voi_rules_and_what_it_records():
    """No Photometric Interpretation means monochrome (the file's window applies); color images
    get no VOI; empty Window Center/Width mean no window (nothing invalid); the notes name the
    missing kind, a window_index equal to the number of windows, and every skipped view in file
    order separated by "; "; the chosen view is the only one recorded."""
    from data_prep.dicom.voi import Lut, Voi, VoiOptions, choose_voi

    ds = Dataset()
    ds.WindowCenter, ds.WindowWidth = 100, 50
    assert choose_voi(ds).kind == "window"
    ds.PhotometricInterpretation = "RGB"
    assert choose_voi(ds) == Voi()
    empty = Dataset()
    empty.PhotometricInterpretation = "MONOCHROME2"
    empty.WindowCenter, empty.WindowWidth = "", ""
    assert choose_voi(empty) == Voi()                                  # kind none, no fallback, not invalid

    ds.PhotometricInterpretation = "MONOCHROME2"
    voi = choose_voi(ds, VoiOptions(voi="lut"))
    assert (voi.kind, voi.fallback, voi.lut) == ("window", "no VOI LUT in the file", None)
    voi = choose_voi(ds, VoiOptions(window_index=1))
    assert (voi.kind, voi.index, voi.fallback) == ("window", 0, "window_index 1: the file has 1 window(s)")
    item = Dataset()
    item.LUTDescriptor = [2, 0, 12]
    item.add_new(0x00283006, "US", [7, 9])
    ds.VOILUTSequence = Sequence([item])
    voi = choose_voi(ds)
    assert voi.kind == "lut" and voi.window is None and isinstance(voi.lut, Lut)
    voi = choose_voi(ds, VoiOptions(voi="window", window_index=1))
    assert (voi.kind, voi.index, voi.lut) == ("window", 0, None)
    assert voi.fallback == "window_index 1: the file has 1 window(s)"

    bad = Dataset()
    bad.PhotometricInterpretation = "MONOCHROME2"
    bad.WindowCenter, bad.WindowWidth = [100, 200], [0, 0.5]
    voi = choose_voi(bad)
    notes = voi.fallback.split("; ")
    assert voi.kind == "none" and voi.invalid and len(notes) == 2
    assert notes[0].startswith("window 0: Window Width 0 <") and notes[1].startswith("window 1: Window Width 0.5 <")
    bad.WindowCenter, bad.WindowWidth = [100, 200, 300], [0, 0.5, 40]
    voi = choose_voi(bad)
    assert (voi.kind, voi.index, voi.window.center, voi.invalid) == ("window", 2, 300, True)
    assert voi.fallback.split("; ") == notes
