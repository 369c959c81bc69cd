"""data_prep.dicom.read against DICOM PS3.3 C.11.1 (Modality LUT) / C.11.2 (VOI LUT) written here in numpy.

The reference (``ref_*``, tests/ref_dicom.py) reads its parameters from a case's spec (hand-built files) or
straight from the dataset's attributes (pydicom's bundled files); it shares no code with
data_prep.dicom.read / data_prep.dicom.voi. Every case must agree within 1 gray level at full resolution.
"""
from __future__ import annotations

import logging

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import pixel_array

from data_prep.dicom import read as dcm
from data_prep.dicom.read import DicomReadError, read_dicom
from data_prep.dicom.voi import VoiOptions
from ref_dicom import (CASES, CURVE, LUT8, R12, UNDECODABLE, build, bundled_grayscale, lut, ref_frame0,  # noqa: F401 (build: fixture)
                       ref_render, ref_spec_from_dataset, ref_stored)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_built_files_match_the_standard(name, tmp_path, caplog, build):
    raw, kwargs, spec, opts, kind, fallback = CASES[name]
    path = tmp_path / f"{name}.dcm"
    build(raw, **kwargs).save_as(path, enforce_file_format=True)
    options = VoiOptions(**opts)
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom.read"):
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
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom.read"):
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
                stored = ref_frame0(ds)
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


# ----------------------------------------------------------------------------- options, config, meta.csv
def test_config_keys_default_to_todays_output():
    from data_prep.core.config import load_config

    cfg = load_config()
    assert (cfg["voi"], cfg["window_index"], cfg["stretch"]) == ("auto", 0, "minmax")
    assert VoiOptions.from_config(cfg) == VoiOptions()
    assert VoiOptions.from_config(load_config(None, ["voi=window", "window_index=1", "stretch=window"])) == \
        VoiOptions("window", 1, "window")
    with pytest.raises(ValueError, match=r"key 'voi' = 'windows'; expected one of auto \| window \| lut \| none"):
        VoiOptions.from_config(load_config(None, ["voi=windows"]))
    with pytest.raises(ValueError, match="stretch = 'max'"):
        VoiOptions(stretch="max")


def test_convert_records_the_voi_and_redoes_images_made_with_other_options(tmp_path, caplog, build, save):
    import pandas as pd

    from data_prep.dicom.convert import convert_folder
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
    assert set(meta["voi_options"]) == {"voi=auto;window_index=0;stretch=minmax;padding=true"}
    before = (dst / "both.png").read_bytes()

    # the same options resume; other options (CLI key=value) convert again
    assert convert_folder(src, dst, size=None, workers=1, progress=False).n_skipped == 3
    assert main(["convert", str(src), str(dst), "voi=window", "stretch=window"]) == 0
    meta = pd.read_csv(dst / "meta.csv", keep_default_na=False).set_index("image_id")
    assert meta.loc["both", ["voi", "voi_window"]].tolist() == ["window", "1000|800"]
    assert meta.loc["plain", "voi_fallback"] == "no window in the file"
    assert set(meta["voi_options"]) == {"voi=window;window_index=0;stretch=window;padding=true"}
    assert (dst / "both.png").read_bytes() != before


def test_predict_and_show_read_dicoms_with_the_options(tmp_path, build, save):
    from types import SimpleNamespace

    from detection.engine.predict import load_image
    from detection.pictures.visualize import load_display

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
