"""The independent reference of the DICOM tests: DICOM PS3.3 C.11.1 (Modality LUT) / C.11.2 (VOI LUT)
written here in numpy (``ref_*``; it shares no code with data_prep.dicom.read / data_prep.dicom.voi), the
``build`` fixture of hand-built files, their LUTs and ramps, and the hand-built CASES (shared by
test_dicom_conformance.py and test_dicom_pixels.py)."""
from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.sequence import Sequence


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


# ----------------------------------------------------------------------------- pydicom's grayscale files (shared)
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


def ref_frame0(ds) -> np.ndarray:
    """Frame 0's stored values by pydicom; where its Number of Frames is not an integer (badVR.dcm:
    "1A" on 15 frames, which cxrdet reads as DCMTK does) the first Rows x Columns words of the
    native pixel data, read here by hand (unsigned, every allocated bit stored only)."""
    try:
        return pixel_array(ds, index=0)
    except ValueError:
        assert ds.PixelRepresentation == 0 and ds.BitsStored == ds.BitsAllocated and ds.SamplesPerPixel == 1
        dtype = {8: "u1", 16: "<u2", 32: "<u4"}[ds.BitsAllocated]
        return np.frombuffer(ds.PixelData, dtype, count=ds.Rows * ds.Columns).reshape(ds.Rows, ds.Columns)


# the bundled grayscale files no decoder here reads (or that are broken on purpose), with the phrase
# their error must hold; the error also names the file and the transfer syntax (UID and name)
UNDECODABLE = {
    "JPEG-lossy.dcm": "JPEG Extended",        # 12-bit JPEG Extended: libjpeg stops, Pillow refuses 12-bit
    "JPEG2000-embedded-sequence-delimiter.dcm": "JPEG 2000",
    "MR_truncated.dcm": "less than expected",
}
