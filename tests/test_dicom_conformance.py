"""data_prep.dicom against DICOM PS3.3 C.11.1 (Modality LUT) / C.11.2 (VOI LUT) written here in numpy.

The reference below (``ref_*``) reads its parameters from a case's spec (hand-built files) or
straight from the dataset's attributes (pydicom's bundled files); it shares no code with
data_prep.dicom / data_prep.voi. Every case must agree within 1 gray level at full resolution.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.sequence import Sequence

from data_prep import dicom as dcm
from data_prep.dicom import DicomReadError, read_dicom
from data_prep.voi import VoiOptions, choose_voi

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ----------------------------------------------------------------------------- the reference (numpy)
def ref_stored(raw: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """Stored values: the low ``bits`` bits of each container word, two's complement if signed."""
    v = raw.astype(np.int64) & ((1 << bits) - 1)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v) if signed else v


def ref_lut(x: np.ndarray, first: int, entries) -> np.ndarray:
    """C.11.1.1 / C.11.2.1.1: input ``first`` -> entry 0; below -> entry 0; above the last -> last."""
    entries = np.asarray(entries, dtype=np.float64)
    i = np.rint(x).astype(np.int64) - first
    return entries[np.minimum(np.maximum(i, 0), len(entries) - 1)]


def ref_window(x: np.ndarray, c: float, w: float, function: str = "LINEAR") -> np.ndarray:
    """C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT), C.11.2.1.3.1 (SIGMOID) to [0, 255]."""
    x = x.astype(np.float64)
    if function == "SIGMOID":
        return 255 / (1 + np.exp(-4 * (x - c) / w))
    if function == "LINEAR_EXACT":
        return np.select([x <= c - w / 2, x > c + w / 2], [0.0, 255.0], ((x - c) / w + 0.5) * 255)
    below, above = x <= c - 0.5 - (w - 1) / 2, x > c - 0.5 + (w - 1) / 2
    return np.select([below, above], [0.0, 255.0], ((x - (c - 0.5)) / max(w - 1, 1e-12) + 0.5) * 255)


def ref_render(stored: np.ndarray, spec: dict, stretch: str = "minmax") -> np.ndarray:
    """Stored values -> float [0, 255]: modality (LUT or rescale), VOI (window, LUT or none),
    MONOCHROME1 inversion of the VOI output, then min-max (or the VOI range for "window")."""
    x = stored.astype(np.float64)
    if spec.get("mlut") is not None:
        x = ref_lut(x, *spec["mlut"])
    elif spec.get("slope") is not None:
        x = x * spec["slope"] + spec["intercept"]
    voi = spec.get("voi")
    if voi is None:
        y = x
    elif voi[0] == "window":
        c, w, function = voi[1]
        y = ref_window(x, c, w, function)
    else:
        first, entries, bits = voi[1]
        y = ref_lut(x, first, entries) * 255 / (2 ** bits - 1)
    if spec.get("mono1"):
        y = 255 - y if voi is not None else y.max() + y.min() - y
    if stretch == "minmax" or voi is None:
        lo, hi = y.min(), y.max()
        y = (y - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(y)
    return y


# ----------------------------------------------------------------------------- hand-built files
@pytest.fixture(scope="session")
def build(make_ds):
    """``build(raw, bits, signed=False, mono1=False, windows=(), function=None, slope=None,
    intercept=None, luts=(), mlut=None)``: the conftest dataset (:func:`make_ds`) of ``raw``
    (uint16/int16 words as written), windows ``[(c, w)]``, VOI LUTs made by :func:`lut`, Modality
    LUT ``(first, entries, bits)``."""
    def make(raw: np.ndarray, bits: int, signed: bool = False, mono1: bool = False, windows=(),
             function: str | None = None, slope=None, intercept=None, luts=(), mlut=None) -> Dataset:
        ds = make_ds(raw.astype("<u2" if not signed else "<i2"), "MONOCHROME1" if mono1 else "MONOCHROME2", bits,
                     PixelRepresentation=int(signed))
        if windows:
            ds.WindowCenter = [c for c, _ in windows] if len(windows) > 1 else windows[0][0]
            ds.WindowWidth = [w for _, w in windows] if len(windows) > 1 else windows[0][1]
        if function:
            ds.VOILUTFunction = function
        if slope is not None:
            ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        items = []
        for descriptor, vr, data in luts:
            item = Dataset()
            item.add_new(0x00283002, "US", descriptor)
            item.add_new(0x00283006, vr, data)
            items.append(item)
        if items:
            ds.VOILUTSequence = Sequence(items)
        if mlut is not None:
            item = Dataset()
            item.add_new(0x00283002, "US", [len(mlut[1]), mlut[0], mlut[2]])
            item.ModalityLUTType = "US"
            item.add_new(0x00283006, "US", list(mlut[1]))
            ds.ModalityLUTSequence = Sequence([item])
        return ds
    return make


def lut(first: int, bits: int, entries, layout: str = "US") -> tuple:
    """A VOI LUT for :func:`build`: LUT Data as US values, OW words (one entry per 16-bit
    word), or OW with 8-bit entries packed two per word (low byte first)."""
    if layout == "US":
        vr, data = "US", list(entries)
    elif layout == "OW":
        vr, data = "OW", np.asarray(entries, "<u2").tobytes()
    else:
        vr, data = "OW", bytes(entries)
    return [len(entries), first, bits], vr, data


def ramp(lo: int, hi: int, step: int) -> np.ndarray:
    v = np.arange(lo, hi + 1, step)
    return np.stack([v, v[::-1]])


R12 = ramp(0, 4095, 7)                          # 12-bit unsigned ramp, both directions
S12 = ramp(-2048, 2047, 7)                      # 12-bit signed
CURVE = [int(4095 * (i / 2047) ** 0.5) for i in range(2048)]       # 12-bit entries, 2048 of them
LUT8 = [i >> 4 for i in range(4096)]                                # 8-bit entries, 4096 of them
GARBAGE = np.random.default_rng(0).integers(0, 16, R12.shape) << 12

# name: (raw words, build kwargs, reference spec, options, expected voi kind, fallback expected)
CASES = {
    "no_voi": (R12, dict(bits=12), {}, {}, "none", False),
    "window_linear_clips": (R12, dict(bits=12, windows=[(2048, 1000)]),
                            dict(voi=("window", (2048, 1000, "LINEAR"))), {}, "window", False),
    "window_linear_exact": (R12, dict(bits=12, windows=[(2048, 1000)], function="LINEAR_EXACT"),
                            dict(voi=("window", (2048, 1000, "LINEAR_EXACT"))), {}, "window", False),
    "window_sigmoid": (R12, dict(bits=12, windows=[(2048, 800)], function="SIGMOID"),
                       dict(voi=("window", (2048, 800, "SIGMOID"))), {}, "window", False),
    "window_sigmoid_stretch_window": (R12, dict(bits=12, windows=[(2048, 800)], function="SIGMOID"),
                                      dict(voi=("window", (2048, 800, "SIGMOID"))), dict(stretch="window"),
                                      "window", False),
    "window_width_1": (R12, dict(bits=12, windows=[(2048, 1)]),
                       dict(voi=("window", (2048, 1, "LINEAR"))), {}, "window", False),
    "rescale_window_in_rescaled_units": (
        R12, dict(bits=12, slope=2, intercept=-1000, windows=[(3000, 2000)]),
        dict(slope=2, intercept=-1000, voi=("window", (3000, 2000, "LINEAR"))), {}, "window", False),
    "negative_slope_window": (
        R12, dict(bits=12, slope=-1, intercept=4095, windows=[(2048, 2400)]),
        dict(slope=-1, intercept=4095, voi=("window", (2048, 2400, "LINEAR"))), {}, "window", False),
    "negative_slope_window_mono1": (
        R12, dict(bits=12, mono1=True, slope=-2.5, intercept=9000, windows=[(4000, 3000)]),
        dict(slope=-2.5, intercept=9000, mono1=True, voi=("window", (4000, 3000, "LINEAR"))), {},
        "window", False),
    "negative_slope_window_stretch_window": (
        R12, dict(bits=12, slope=-1, intercept=4095, windows=[(2048, 2400)]),
        dict(slope=-1, intercept=4095, voi=("window", (2048, 2400, "LINEAR"))), dict(stretch="window"),
        "window", False),
    "mono1_clipping_window": (R12, dict(bits=12, mono1=True, windows=[(1500, 1000)]),
                              dict(mono1=True, voi=("window", (1500, 1000, "LINEAR"))), {}, "window", False),
    "mono1_clipping_window_stretch_window": (
        R12, dict(bits=12, mono1=True, windows=[(1500, 1000)]),
        dict(mono1=True, voi=("window", (1500, 1000, "LINEAR"))), dict(stretch="window"), "window", False),
    "mono1_no_voi": (R12, dict(bits=12, mono1=True), dict(mono1=True), {}, "none", False),
    "mono1_voi_lut": (R12, dict(bits=12, mono1=True, luts=[lut(500, 12, CURVE)]),
                      dict(mono1=True, voi=("lut", (500, CURVE, 12))), {}, "lut", False),
    "voi_lut_16bit_entries": (R12, dict(bits=12, luts=[lut(500, 12, CURVE)]),
                              dict(voi=("lut", (500, CURVE, 12))), {}, "lut", False),
    "voi_lut_stretch_window": (R12, dict(bits=12, luts=[lut(500, 12, CURVE)]),
                               dict(voi=("lut", (500, CURVE, 12))), dict(stretch="window"), "lut", False),
    "voi_lut_8bit_4096_entries_ow": (
        R12, dict(bits=12, luts=[lut(0, 8, LUT8, "OW")]),
        dict(voi=("lut", (0, LUT8, 8))), {}, "lut", False),
    "voi_lut_8bit_4096_entries_us": (R12, dict(bits=12, luts=[lut(0, 8, LUT8)]),
                                     dict(voi=("lut", (0, LUT8, 8))), {}, "lut", False),
    "voi_lut_8bit_packed": (R12, dict(bits=12, luts=[lut(0, 8, LUT8, "packed")]),
                            dict(voi=("lut", (0, LUT8, 8))), dict(stretch="window"), "lut", False),
    "two_windows_index_1": (R12, dict(bits=12, windows=[(1000, 500), (3000, 1000)]),
                            dict(voi=("window", (3000, 1000, "LINEAR"))), dict(window_index=1), "window", False),
    "window_index_beyond": (R12, dict(bits=12, windows=[(1000, 500)]),
                            dict(voi=("window", (1000, 500, "LINEAR"))), dict(window_index=3), "window", True),
    "width_0_next_window": (R12, dict(bits=12, windows=[(2048, 0), (3000, 1000)]),
                            dict(voi=("window", (3000, 1000, "LINEAR"))), {}, "window", True),
    "width_0_min_max": (R12, dict(bits=12, windows=[(2048, 0)]), {}, {}, "none", True),
    "width_half_linear_next_window": (R12, dict(bits=12, windows=[(2048, 0.5), (3000, 1000)]),
                                      dict(voi=("window", (3000, 1000, "LINEAR"))), {}, "window", True),
    "width_half_linear_exact_is_valid": (
        R12, dict(bits=12, windows=[(2048, 0.5)], function="LINEAR_EXACT"),
        dict(voi=("window", (2048, 0.5, "LINEAR_EXACT"))), {}, "window", False),
    "width_0_then_voi_lut": (R12, dict(bits=12, windows=[(2048, 0)], luts=[lut(500, 12, CURVE)]),
                             dict(voi=("lut", (500, CURVE, 12))), dict(voi="window"), "lut", True),
    "lut_and_window_auto": (R12, dict(bits=12, windows=[(1000, 800)], luts=[lut(500, 12, CURVE)]),
                            dict(voi=("lut", (500, CURVE, 12))), {}, "lut", False),
    "lut_and_window_voi_window": (R12, dict(bits=12, windows=[(1000, 800)], luts=[lut(500, 12, CURVE)]),
                                  dict(voi=("window", (1000, 800, "LINEAR"))), dict(voi="window"), "window", False),
    "mono1_lut_and_window_voi_window_stretch_window": (   # inverted from the WINDOW's top, not the LUT's
        R12, dict(bits=12, mono1=True, windows=[(1000, 800)], luts=[lut(500, 12, CURVE)]),
        dict(mono1=True, voi=("window", (1000, 800, "LINEAR"))), dict(voi="window", stretch="window"),
        "window", False),
    "mono1_lut_and_window_auto_stretch_window": (         # inverted from the LUT's top 4095
        R12, dict(bits=12, mono1=True, windows=[(1000, 800)], luts=[lut(500, 12, CURVE)]),
        dict(mono1=True, voi=("lut", (500, CURVE, 12))), dict(stretch="window"), "lut", False),
    "lut_and_window_voi_none": (R12, dict(bits=12, windows=[(1000, 800)], luts=[lut(500, 12, CURVE)]),
                                {}, dict(voi="none"), "none", False),
    "signed_12bit_voi_lut_first_mapped_negative": (   # first value mapped -1000, read as US 64536
        S12, dict(bits=12, signed=True, luts=[lut(64536, 12, CURVE)]),
        dict(voi=("lut", (-1000, CURVE, 12))), {}, "lut", False),
    "signed_12bit_window": (S12, dict(bits=12, signed=True, windows=[(0, 2000)]),
                            dict(voi=("window", (0, 2000, "LINEAR"))), {}, "window", False),
    "signed_16bit_rescale_window": (
        ramp(-30000, 30000, 97), dict(bits=16, signed=True, slope=1, intercept=-1024, windows=[(-500, 15000)]),
        dict(slope=1, intercept=-1024, voi=("window", (-500, 15000, "LINEAR"))), {}, "window", False),
    "garbage_above_bits_stored": (R12 | GARBAGE, dict(bits=12, windows=[(2048, 3000)]),
                                  dict(voi=("window", (2048, 3000, "LINEAR"))), {}, "window", False),
    "modality_lut_then_window": (R12, dict(bits=12, mlut=(100, CURVE, 12), windows=[(2000, 1500)]),
                                 dict(mlut=(100, CURVE), voi=("window", (2000, 1500, "LINEAR"))), {},
                                 "window", False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_built_files_match_the_standard(name, tmp_path, caplog, build):
    raw, kwargs, spec, opts, kind, fallback = CASES[name]
    path = tmp_path / f"{name}.dcm"
    build(raw, **kwargs).save_as(path, enforce_file_format=True)
    options = VoiOptions(**opts)
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom"):
        img, header = read_dicom(path, options=options)
    stored = ref_stored(raw, kwargs["bits"], kwargs.get("signed", False))
    want = ref_render(stored, spec, options.stretch)
    diff = np.abs(img.astype(np.float64) - want)
    assert diff.max() <= 1, f"{name}: {diff.max():.2f} gray levels off at stored {stored.flat[diff.argmax()]}"
    assert header["voi"] == kind and bool(header["voi_fallback"]) == fallback, header
    if spec.get("voi") and spec["voi"][0] == "window":
        c, w, function = spec["voi"][1]
        assert header["voi_window"] == f"{c:g}|{w:g}" + ("" if function == "LINEAR" else f"|{function}")
    invalid = fallback and name.startswith("width_")
    assert (str(path) in caplog.text) == invalid, caplog.text     # a warning names the file, only then


# ----------------------------------------------------------------------------- the examples
@pytest.mark.parametrize("stretch", ["minmax", "window"])
def test_negative_rescale_slope_with_window_is_not_inverted(stretch, tmp_path, build, save):
    """BitsStored 12, slope -1, intercept 4095, window 2048/2400: stored [0, 1000, 3000, 4095]
    are 4095, 3095, 1095, 0 after the rescale; C.11.2.1.2.1 gives 255, 238.84, 26.25, 0."""
    raw = np.array([[0, 1000, 3000, 4095]])
    ds = build(raw, 12, slope=-1, intercept=4095, windows=[(2048, 2400)])
    img, _ = read_dicom(save(ds, tmp_path / "neg.dcm"), options=VoiOptions(stretch=stretch))
    assert img.tolist() == [[255, 239, 26, 0]]
    ds.PhotometricInterpretation = "MONOCHROME1"
    img, _ = read_dicom(save(ds, tmp_path / "neg1.dcm"), options=VoiOptions(stretch=stretch))
    assert img.tolist() == [[0, 16, 229, 255]]


@pytest.mark.parametrize("layout", ["one entry per word", "two entries per word"])
def test_8bit_voi_lut_with_4096_entries(layout, tmp_path, build, save):
    """A 4096-entry 8-bit LUT v -> v // 16 maps [0, 255, 256, 4095] to [0, 15, 16, 255] (C.11.2.1.1),
    whether its entries fill 16-bit words or are packed two per word."""
    ds = build(np.array([[0, 255, 256, 4095]]), 12,
               luts=[lut(0, 8, LUT8, "OW" if layout == "one entry per word" else "packed")])
    img, header = read_dicom(save(ds, tmp_path / "lut8.dcm"), options=VoiOptions(stretch="window"))
    assert img.tolist() == [[0, 15, 16, 255]] and header["voi"] == "lut"


def test_window_width_0_falls_back_with_a_warning(tmp_path, caplog, build, save):
    ds = build(R12, 12, windows=[(2048, 0), (1000, 500)])
    path = save(ds, tmp_path / "w0.dcm")
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom"):
        img, header = read_dicom(path)
    assert header["voi"] == "window" and header["voi_window"] == "1000|500"
    assert "Window Width 0" in header["voi_fallback"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: window 0") and "using window 1 (1000|500)" in lines[0]


# ----------------------------------------------------------------------------- MONOCHROME1 (issue 20)
def test_monochrome1_is_inverted_after_a_clipping_window(tmp_path, build, save):
    """Stored 0..4095 in MONOCHROME1 with window 1000/400 (LINEAR edges 799.5 and 1198.5):
    values below the window are WHITE (window -> 0, inverted -> 255), values above BLACK. Inverting
    the stored values before the window would window stored 2896..3295 instead."""
    raw = np.array([[0, 700, 800, 1000, 1199, 1200, 3000, 4095]])
    ds = build(raw, 12, mono1=True, windows=[(1000, 400)])
    img, _ = read_dicom(save(ds, tmp_path / "m1.dcm"), options=VoiOptions(stretch="window"))
    want = ref_render(raw, dict(mono1=True, voi=("window", (1000, 400, "LINEAR"))), "window")
    assert np.abs(img - want).max() <= 1
    assert img.tolist() == [[255, 255, 255, 127, 0, 0, 0, 0]]     # 1000: 255 - 127.8


def test_monochrome1_cr_file_with_a_clipping_window():
    """pydicom's MONOCHROME1 CR (slope 0.684) with its window narrowed so that it clips on both
    sides: the output equals the reference and holds both clipped ends."""
    ds = pydicom.dcmread(get_testdata_file("dicomdirtests/77654033/CR1/6154", download=False))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    stored = pixel_array(ds, index=0)
    m = stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    c, w = float(np.percentile(m, 50)), float(np.percentile(m, 70) - np.percentile(m, 30))
    ds.WindowCenter, ds.WindowWidth = round(c, 2), round(w, 2)
    img = dcm.to_uint8(stored, ds)
    want = ref_render(stored, dict(slope=float(ds.RescaleSlope), intercept=float(ds.RescaleIntercept),
                                   mono1=True, voi=("window", (float(ds.WindowCenter), float(ds.WindowWidth),
                                                               "LINEAR"))))
    assert np.abs(img - want).max() <= 1
    assert (img == 255).sum() >= 0.2 * img.size and (img == 0).sum() >= 0.2 * img.size
    assert (img[m < c - w] == 255).all() and (img[m > c + w] == 0).all()   # low values bright


# ----------------------------------------------------------------------------- pydicom's bundled files
def ref_spec_from_dataset(ds) -> dict:
    """The reference's parameters read straight from the attributes (first window; the bundled
    grayscale files hold no VOI LUT or Modality LUT Sequence, which this would refuse)."""
    assert "VOILUTSequence" not in ds and "ModalityLUTSequence" not in ds, "extend the reference"
    spec = {"mono1": ds.PhotometricInterpretation == "MONOCHROME1"}
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        spec.update(slope=float(ds.RescaleSlope), intercept=float(ds.RescaleIntercept))
    if "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = ds.WindowCenter, ds.WindowWidth
        c, w = float(c[0] if isinstance(c, pydicom.multival.MultiValue) else c), \
            float(w[0] if isinstance(w, pydicom.multival.MultiValue) else w)
        spec["voi"] = ("window", (c, w, str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR")))
    return spec


def bundled_grayscale() -> list[str]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(get_testdata_files()):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            if "PixelData" in ds or "Rows" in ds:
                if str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME"):
                    out.append(path)
    return out


# the bundled grayscale files no decoder here reads (or that are broken on purpose), with the phrase
# their error must hold; the error also names the file and the transfer syntax (UID and name)
UNDECODABLE = {
    "JPEG-lossy.dcm": "JPEG Extended",        # 12-bit JPEG Extended: libjpeg stops, Pillow refuses 12-bit
    "JPEG2000-embedded-sequence-delimiter.dcm": "JPEG 2000",
    "MR_truncated.dcm": "less than expected",
    "badVR.dcm": "invalid literal",
}


def test_every_bundled_grayscale_file_decodes_right_or_fails_clearly():
    files = bundled_grayscale()
    assert len(files) >= 50, f"only {len(files)} pydicom grayscale test files found"
    decoded, failed = 0, set()
    for path in files:
        name = path.rsplit("/", 1)[-1]
        ts = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        try:
            for stretch in ("minmax", "window"):
                img, header = read_dicom(path, options=VoiOptions(stretch=stretch))
                ds = pydicom.dcmread(path)
                stored = pixel_array(ds, index=0)
                want = ref_render(stored, ref_spec_from_dataset(ds), stretch)
                diff = np.abs(img - want).max()
                assert diff <= 1, f"{path} ({stretch}): {diff:.2f} gray levels off the reference"
            decoded += 1
        except DicomReadError as e:
            msg = str(e)
            assert name in UNDECODABLE, f"{path} should decode: {msg}"
            assert path in msg and str(ts) in msg and ts.name in msg and UNDECODABLE[name] in msg, msg
            failed.add(name)
    assert failed == set(UNDECODABLE) and decoded == len(files) - len(UNDECODABLE)


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
    assert np.array_equal(dcm.to_uint16(stored, ds, via_table=True), dcm.to_uint16(stored, ds, via_table=False))


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


# ----------------------------------------------------------------------------- options, config, meta.csv
def test_config_keys_default_to_todays_output():
    from data_prep.config import load_config

    cfg = load_config()
    assert (cfg["voi"], cfg["window_index"], cfg["stretch"]) == ("auto", 0, "minmax")
    assert VoiOptions.from_config(cfg) == VoiOptions()
    assert VoiOptions.from_config(load_config(None, ["voi=window", "window_index=1", "stretch=window"])) == \
        VoiOptions("window", 1, "window")
    with pytest.raises(ValueError, match=r"voi = 'windows': expected one of auto \| window \| lut \| none"):
        VoiOptions.from_config(load_config(None, ["voi=windows"]))
    with pytest.raises(ValueError, match="stretch = 'max'"):
        VoiOptions(stretch="max")


def test_convert_records_the_voi_and_redoes_images_made_with_other_options(tmp_path, caplog, build, save):
    import pandas as pd

    from data_prep.convert import convert_folder
    from detection.cli import main

    src = tmp_path / "src"
    src.mkdir()
    save(build(R12, 12, windows=[(2048, 0), (1000, 500)]), src / "w0.dcm")
    save(build(R12, 12, windows=[(1000, 800)], luts=[lut(500, 12, CURVE)]), src / "both.dcm")
    save(build(R12, 12), src / "plain.dcm")
    dst = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        res = convert_folder(src, dst, size=None, workers=1, progress=False)
    assert res.n_converted == 3 and not res.errors
    assert sum(str(src / "w0.dcm") in r.getMessage() for r in caplog.records) == 1
    meta = pd.read_csv(dst / "meta.csv", keep_default_na=False).set_index("image_id")
    assert meta.loc["w0", ["voi", "voi_window"]].tolist() == ["window", "1000|500"]
    assert "Window Width 0" in meta.loc["w0", "voi_fallback"]
    assert meta.loc["both", ["voi", "voi_window", "voi_fallback"]].tolist() == ["lut", "", ""]
    assert meta.loc["plain", ["voi", "voi_window", "voi_fallback"]].tolist() == ["none", "", ""]
    assert set(meta["voi_options"]) == {"voi=auto;window_index=0;stretch=minmax"}
    before = (dst / "both.png").read_bytes()

    # the same options resume; other options (CLI key=value) convert again
    assert convert_folder(src, dst, size=None, workers=1, progress=False).n_skipped == 3
    assert main(["convert", str(src), str(dst), "voi=window", "stretch=window"]) == 0
    meta = pd.read_csv(dst / "meta.csv", keep_default_na=False).set_index("image_id")
    assert meta.loc["both", ["voi", "voi_window"]].tolist() == ["window", "1000|800"]
    assert meta.loc["plain", "voi_fallback"] == "no window in the file"
    assert set(meta["voi_options"]) == {"voi=window;window_index=0;stretch=window"}
    assert (dst / "both.png").read_bytes() != before


def test_predict_and_show_read_dicoms_with_the_options(tmp_path, build, save):
    from types import SimpleNamespace

    from detection.predict import load_image
    from detection.visualize import load_display

    src = tmp_path / "src"
    src.mkdir()
    path = save(build(R12, 12, windows=[(1000, 800)], luts=[lut(500, 12, CURVE)]), src / "both.dcm")
    row = SimpleNamespace(kind="dicom", path=path)
    for opts in (VoiOptions(), VoiOptions(voi="window"), VoiOptions(voi="window", stretch="window")):
        want, _ = read_dicom(path, size=64, options=opts)
        assert np.array_equal(load_image(row, 64, False, opts)[0], want)
        shown, _ = read_dicom(path, size=R12.shape[1], keep_ratio=True, options=opts)
        assert np.array_equal(load_display("both", src, None, opts)[0], shown)
    assert not np.array_equal(load_image(row, 64, False, VoiOptions())[0],
                              load_image(row, 64, False, VoiOptions(voi="window"))[0])


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
        np.testing.assert_array_equal(fast, slow)


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
