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
