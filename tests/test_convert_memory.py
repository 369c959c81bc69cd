"""What the ``cxrdet convert`` process holds (issue 29 item 4: peak memory per worker <= 150 MB).

A pool worker is a fork of the convert process and starts with every module that process
imported; bench/convert.py measures the peaks. These tests check the causes that a subprocess can
see without timing anything: the command imports no pandas (the config check reads the dataset's
class names, through data_prep.datasets and pandas, only where a class_thr / alpha mapping names
classes), and the class names are still checked where one does.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.core.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    code = ("import sys; from detection.cli import main; rc = main(sys.argv[1:]); "
            "print('MODULES', rc, sorted(m for m in ('pandas', 'torch', 'ultralytics', 'requests', 'data_prep.datasets') "
            "if m in sys.modules))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          cwd=str(REPO), env={"PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def _modules(out: subprocess.CompletedProcess) -> str:
    line = [s for s in out.stdout.splitlines() if s.startswith("MODULES")]
    assert line, out.stdout + out.stderr
    return line[-1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cxrdet_convert_imports_no_pandas_nor_requests(tmp_path, write_dicom, workers):
    """The whole command (argument parsing, config merge and check, convert, meta.csv): no pandas,
    torch, ultralytics, requests (hidden while pydicom imports: data_prep.dicom) or
    data_prep.datasets in the process, and the PNGs are written
    (64 px, keep ratio: 40 x 64 from a 200 x 320 image)."""
    src = tmp_path / "src"
    img = np.tile(np.arange(320, dtype=np.uint16) * 10, (200, 1))
    for i in range(3):
        write_dicom(src / f"im{i}.dcm", img + i)
    out = _run_cli(["convert", str(src), str(tmp_path / "out"), "--size", "64", "--keep-ratio",
                    "--workers", workers])
    assert _modules(out) == "MODULES 0 []", out.stderr
    import cv2

    png = cv2.imread(str(tmp_path / "out" / "im0.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (40, 64) and png.dtype == np.uint8
    assert png[:, 0].max() == 0 and png[:, -1].min() == 255      # the ramp stretched to 0..255


def test_requests_imports_as_usual_after_data_prep_dicom():
    """pydicom was imported without requests (its test-data downloader then keeps urllib), yet a
    later ``import requests`` works."""
    code = ("import sys, data_prep.dicom.read, pydicom.data.download as d; h = 'requests' in sys.modules; "
            "import requests; print(h, d.HAVE_REQUESTS, requests.get.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(REPO),
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["False", "False", "get"], out.stdout + out.stderr


def test_class_thr_mapping_still_checked_against_the_dataset(tmp_path):
    """Where class_thr names classes the names are read (data_prep.datasets) and a wrong one is
    refused with the dataset's names; an empty mapping needs none."""
    from data_prep.core.config import load_config

    cfg = load_config(None, {"class_thr": {"Aortic enlargement": 0.3}})
    assert cfg["class_thr"] == {"Aortic enlargement": 0.3}
    with pytest.raises(InputError, match="did you mean 'Aortic enlargement'"):
        load_config(None, {"class_thr": {"Aortic enlargment": 0.3}})
    assert load_config(None, {"alpha": {"Aortic enlargement": 2.0}})["alpha"] == {"Aortic enlargement": 2.0}
    with pytest.raises(InputError, match="key 'alpha' = .*a class name of the dataset"):
        load_config(None, {"alpha": {"No such class": 2.0}})
    assert load_config(None, {"class_thr": {}, "alpha": 1.5})["alpha"] == 1.5


# ----------------------------------------------------------------------------- one image's memory
def _chest(h: int, w: int, top: int = 4095, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = 0.3 + 0.4 * np.exp(-((x - 0.4) ** 2 + (y - 0.5) ** 2) / 0.05) + 0.2 * (x > 0.75)
    return np.clip(img * top + rng.normal(0, 30, (h, w)), 0, top).astype(np.uint16)


def _traced_peak(fn) -> tuple[float, object]:
    """(peak MB of Python and numpy allocations while ``fn()`` runs, its result)."""
    import tracemalloc

    tracemalloc.start()
    try:
        out = fn()
        return tracemalloc.get_traced_memory()[1] / 2 ** 20, out
    finally:
        tracemalloc.stop()


def test_native_frame0_reads_a_deferred_pixel_data_from_the_file(tmp_path, make_ds, save):
    """open_dicom leaves the Pixel Data in the file; native_frame0 reads frame 0 into a writable
    array equal to pydicom's pixel_array, garbage above Bits Stored masked off (in place), and
    the dataset never holds the bytes."""
    import pydicom

    from data_prep.dicom.attributes import native_frame0
    from data_prep.dicom.read import open_dicom

    arr = _chest(1000, 600)                               # 1.2 MB: above open_dicom's DEFER_SIZE (256 KiB)
    garbage = arr | np.uint16(0xF000)                     # bits above Bits Stored 12 set
    for name, stored in (("clean", arr), ("garbage", garbage)):
        path = save(make_ds(stored, bits=12), tmp_path / f"{name}.dcm")
        ds = open_dicom(path)
        got = native_frame0(ds)
        assert got.flags.writeable and got.dtype == np.uint16 and got.shape == (1000, 600)
        assert np.array_equal(got, arr)
        assert np.array_equal(got, pydicom.dcmread(path).pixel_array)
        assert ds.get_item("PixelData", keep_deferred=True).value is None     # never read into ds
    path = save(make_ds(arr, bits=12), tmp_path / "read.dcm")
    view = native_frame0(pydicom.dcmread(path))              # bytes read already: a view of them
    assert np.array_equal(view, arr) and not view.flags.writeable


@pytest.mark.parametrize("window", [False, True])
def test_to_uint16_into_its_input_equals_a_new_array(window, make_ds):
    """``out=arr``: the table gather and the OpenCV pass overwrite the stored values with the same
    uint16 image they return without ``out`` (a window: the affine pass; a VOI LUT-like curve
    through MONOCHROME1 + padding: the gather)."""
    from data_prep.dicom import read as dcm

    arr = _chest(257, 131)
    extra = {"WindowCenter": 2000, "WindowWidth": 3000} if window else {"PixelPaddingValue": 0}
    ds = make_ds(arr, "MONOCHROME2" if window else "MONOCHROME1", bits=12, **extra)
    arr[:5] = 0                                                                  # some padding
    pad = None if window else (0, 0)
    want = dcm.to_uint16(arr.copy(), ds, pad=pad)
    buf = arr.copy()
    got = dcm.to_uint16(buf, ds, pad=pad, out=buf)
    assert got is buf and np.array_equal(got, want)


def test_read_dicom_holds_one_full_size_image_at_its_peak(tmp_path, make_ds, save):
    """A 1500 x 1200 uint16 file (3.4 MB of pixels) to 256 px: the pixel data are read from the file
    into the image, which then becomes its own 16-bit form (no second full-size array): the peak of
    Python/numpy allocations stays under 1.4 images (it was 2: the bytes plus the 16-bit image).
    The PNG equals the one made from a fresh copy of the stored values."""
    from data_prep.dicom import read as dcm

    arr = _chest(1500, 1200)
    path = save(make_ds(arr, bits=12, WindowCenter=2000, WindowWidth=3600), tmp_path / "big.dcm")
    image_mb = arr.nbytes / 2 ** 20
    peak, (img, header) = _traced_peak(lambda: dcm.read_dicom(path, 256, keep_ratio=True))
    assert peak < 1.4 * image_mb, f"peak {peak:.1f} MB for a {image_mb:.1f} MB image"
    ds = dcm.open_dicom(path)
    ref = dcm.to_uint8(arr.copy(), ds, (256, 205), voi=dcm.choose_voi(ds))
    assert img.shape == (256, 205) and np.array_equal(img, ref)


def test_j2k_reduced_decode_reads_the_codestream_from_the_file(tmp_path, make_ds, save):
    """A one-fragment JPEG 2000 file opened by open_dicom: Pillow reads the codestream from the file
    (single_fragment gives its place: the Pixel Data and a frame copy of them are never held; the
    peak RSS is bench/convert.py's), the same reduced image as from the bytes."""
    import pydicom
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEG2000Lossless

    from data_prep.dicom import read as dcm
    from data_prep.dicom.j2k import single_fragment

    arr = _chest(1100, 900)
    ds = make_ds(arr, bits=12)
    ds.compress(JPEG2000Lossless)
    path = save(ds, tmp_path / "j2k.dcm")
    full = pydicom.dcmread(path)
    codestream = next(generate_frames(full.PixelData, number_of_frames=1))
    ref = dcm.decode_j2k_reduced(full, (128, 128))                     # from the bytes, as before
    deferred = dcm.open_dicom(path)
    name, start, length = single_fragment(deferred)
    assert length == len(codestream) and open(name, "rb").read()[start:start + length] == codestream
    assert single_fragment(full) is None                               # read already: the bytes are used
    got = dcm.decode_j2k_reduced(deferred, (128, 128))
    assert got.shape == ref.shape and got.shape[0] < 1100 and np.array_equal(got, ref)    # reduced
    assert deferred.get_item("PixelData", keep_deferred=True).value is None    # never read into memory


def test_take_rows_in_place_holds_one_index_block():
    """The gather into its own index array (a VOI LUT, padding: the table path) holds one block of
    int64 indices at a time: 2 MB (1 << 18 pixels) on top of the image, whatever the image."""
    from data_prep.dicom.fastlut import take_rows

    rng = np.random.default_rng(3)
    table = rng.integers(0, 65536, 4096).astype(np.uint16)
    idx = rng.integers(0, 4096, (2000, 1500)).astype(np.uint16)            # 5.7 MB
    want = table[idx]
    peak, got = _traced_peak(lambda: take_rows(table, idx, out=idx))
    assert got is idx and np.array_equal(got, want)
    assert peak < 2.2, f"{peak:.2f} MB"


def test_a_flat_image_read_from_the_file_still_names_the_step(tmp_path, make_ds, save, caplog):
    """A 700 x 600 file (above DEFER_SIZE: its stored values are read into a writable array that
    to_uint8 may overwrite) with Rescale Slope 0: the warning still names the rescale, from the
    stored values read again."""
    import logging

    from data_prep.dicom.read import read_dicom

    ds = make_ds(_chest(700, 600), bits=12, RescaleSlope=0, RescaleIntercept=7)
    path = save(ds, tmp_path / "flat.dcm")
    with caplog.at_level(logging.WARNING, logger="data_prep.dicom.read"):
        img, _ = read_dicom(path, 128)
    assert img.min() == img.max()
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "constant image although its stored values differ" in msgs[0], msgs
    assert "the rescale (slope 0" in msgs[0] and "to 7" in msgs[0], msgs[0]
