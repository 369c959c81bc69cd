"""Benchmark: ``cxrdet convert`` vs the widely copied Kaggle DICOM -> PNG notebook recipe.

Writes ~28 synthetic VinBigData-like DICOMs (16-bit containers, 2,400-2,800 px, half MONOCHROME1,
a quarter JPEG 2000 lossless, chest-like smooth anatomy + noise so that compression is realistic)
into a temp dir, then, in one run:

1. the Kaggle recipe, serially (``dcmread``, ``apply_voi_lut(ds.pixel_array, ds)``,
   ``np.amax(data) - data`` for MONOCHROME1, float min-max, ``(data * 255).astype(uint8)``,
   PIL ``thumbnail((512, 512), LANCZOS)``, PIL PNG save);
2. ``convert_folder(..., size=512, keep_ratio=True, workers=2)`` (the recipe's thumbnail keeps
   the aspect ratio too);
3. on the JPEG 2000 subset: reduced-resolution decode vs full decode (speed, and the mean
   absolute difference in gray levels of the 512 px results, which must be <= 2);
4. a per-stage timing of both pipelines on one uncompressed and one JPEG 2000 image.

Usage: ``python bench/convert.py [--n 28] [--workers 2] [--keep DIR]``. Prints a table; exits 1 if
the speed-up is below 3.5x or the JPEG 2000 difference above 2 gray levels.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import apply_voi_lut  # noqa: E402
from pydicom.uid import (DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian,  # noqa: E402
                         JPEG2000Lossless, generate_uid)

from data_prep import dicom as dcm  # noqa: E402
from data_prep.convert import PNG_COMPRESSION, convert_folder  # noqa: E402

TARGET_SPEEDUP = 3.5
MAX_J2K_DIFF = 2.0


# ----------------------------------------------------------------------------- synthetic data
def chest_phantom(h: int, w: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth chest-like uint16 image (body, lungs, mediastinum, ribs, spine) + noise."""
    sh, sw = h // 8, w // 8
    y, x = np.mgrid[0:sh, 0:sw].astype(np.float32)
    y /= sh
    x /= sw
    img = np.full((sh, sw), 0.05, np.float32)                       # air around the body
    body = ((x - 0.5) / 0.46) ** 2 + ((y - 0.55) / 0.55) ** 2 < 1
    img[body] = 0.55
    for cx in (0.3 + rng.normal(0, 0.01), 0.7 + rng.normal(0, 0.01)):  # lungs: darker
        lung = ((x - cx) / 0.17) ** 2 + ((y - 0.45) / 0.3) ** 2 < 1
        img[lung] = 0.25 + 0.1 * y[lung]
        ribs = lung & (np.sin(y * 38 + np.abs(x - 0.5) * 9) > 0.6)
        img[ribs] += 0.12
    img[(np.abs(x - 0.5) < 0.06) & body] = 0.8                       # spine / mediastinum
    heart = ((x - 0.55) / 0.14) ** 2 + ((y - 0.62) / 0.12) ** 2 < 1
    img[heart] = np.maximum(img[heart], 0.7)
    for _ in range(rng.integers(0, 3)):                              # a nodule or two
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.8), rng.uniform(0.01, 0.03)
        img[((x - cx) ** 2 + (y - cy) ** 2) < r * r] += 0.15
    img = cv2.GaussianBlur(img, (0, 0), 2.0)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 0.01, img.shape).astype(np.float32)         # quantum noise
    top = 2 ** bits - 1
    return np.clip(img * top, 0, top).astype(np.uint16)


def write_phantom(path: Path, i: int, rng: np.random.Generator, mono1: bool, j2k: bool) -> None:
    h, w = int(rng.integers(2400, 2801)), int(rng.integers(2000, 2601))
    bits = 14 if i % 3 else 12
    arr = chest_phantom(h, w, bits, rng)
    if mono1:
        arr = (2 ** bits - 1 - arr).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = DigitalXRayImageStorageForPresentation, uid
    ds.Modality, ds.PatientSex, ds.PatientAge = "DX", "FM"[i % 2], f"{40 + i:03d}Y"
    ds.PixelSpacing = [0.139, 0.139]
    ds.Rows, ds.Columns = h, w
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    if i % 2 == 0:                                 # half carry a window, as many VinBigData files do
        ds.WindowCenter, ds.WindowWidth = 2 ** (bits - 1), int(2 ** bits * 0.9)
    ds.PixelData = arr.tobytes()
    if j2k:
        ds.compress(JPEG2000Lossless)
    ds.save_as(path, enforce_file_format=True)


def make_dataset(root: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"img{i:03d}.dicom"
        write_phantom(p, i, rng, mono1=i % 2 == 1, j2k=i % 4 == 0)
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------- the Kaggle recipe
def kaggle_read_xray(path: Path) -> np.ndarray:
    """The notebook's ``read_xray`` (VOI LUT on, MONOCHROME1 fix), verbatim in spirit."""
    dicom = pydicom.dcmread(path)
    data = apply_voi_lut(dicom.pixel_array, dicom)
    if dicom.PhotometricInterpretation == "MONOCHROME1":
        data = np.amax(data) - data
    data = data - np.min(data)
    data = data / np.max(data)
    return (data * 255).astype(np.uint8)


def kaggle_convert(paths: list[Path], out: Path) -> None:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for p in paths:
        im = Image.fromarray(kaggle_read_xray(p))
        im.thumbnail((512, 512), Image.LANCZOS)
        im.save(out / f"{p.stem}.png")


# ----------------------------------------------------------------------------- stage timings
def stage_times(path: Path) -> dict[str, float]:
    """Milliseconds per stage of the recipe and of ours, on one file."""
    from PIL import Image

    t: dict[str, float] = {}

    def tick(key, t0):
        t[key] = (time.perf_counter() - t0) * 1000
        return time.perf_counter()

    t0 = time.perf_counter()
    ds = pydicom.dcmread(path)
    t0 = tick("kaggle read", t0)
    a = ds.pixel_array
    t0 = tick("kaggle decode", t0)
    data = apply_voi_lut(a, ds)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        data = np.amax(data) - data
    data = data - np.min(data)
    data = data / np.max(data)
    data = (data * 255).astype(np.uint8)
    t0 = tick("kaggle LUT+minmax (float64)", t0)
    im = Image.fromarray(data)
    im.thumbnail((512, 512), Image.LANCZOS)
    t0 = tick("kaggle thumbnail LANCZOS", t0)
    im.save(Path(tempfile.gettempdir()) / "bench_k.png")
    t0 = tick("kaggle PIL PNG save", t0)

    t0 = time.perf_counter()
    ds = dcm.open_dicom(path)
    t0 = tick("ours read", t0)
    hw = dcm.output_size(int(ds.Rows), int(ds.Columns), 512, True)
    arr = dcm.decode_j2k_reduced(ds, hw)
    t0 = tick("ours decode (reduced J2K)" if arr is not None else "ours decode", t0)
    if arr is None:
        arr = dcm.decode(ds)
    img = dcm.to_uint16(arr, ds)
    t0 = tick("ours LUT table -> uint16", t0)
    img = dcm.resize(img, hw)
    t0 = tick("ours resize INTER_AREA (uint16)", t0)
    img = dcm.minmax_uint8(img)
    t0 = tick("ours min-max -> uint8", t0)
    for level in (PNG_COMPRESSION, 3, 6):
        cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, level])
        t0 = tick(f"ours cv2 PNG encode level {level}", t0)
    return t


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=28, help="number of synthetic DICOMs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", default=None, help="keep the work folder here instead of a temp dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_convert_"))
    try:
        t0 = time.perf_counter()
        paths = make_dataset(work / "dicom", args.n)
        j2k = [p for p in paths if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID
               == JPEG2000Lossless]
        mb = sum(p.stat().st_size for p in paths) / 2 ** 20
        print(f"synthetic set: {len(paths)} DICOMs ({len(j2k)} JPEG 2000 lossless), {mb:.0f} MiB, "
              f"written in {time.perf_counter() - t0:.1f} s")

        t0 = time.perf_counter()
        kaggle_convert(paths, work / "kaggle")
        t_kaggle = time.perf_counter() - t0

        t0 = time.perf_counter()
        res = convert_folder(work / "dicom", work / "ours", size=512, keep_ratio=True,
                             workers=args.workers, progress=False)
        t_ours = time.perf_counter() - t0
        assert res.n_converted == len(paths) and not res.errors, res.summary()

        t0 = time.perf_counter()
        convert_folder(work / "dicom", work / "ours_serial", size=512, keep_ratio=True, workers=1,
                       progress=False)
        t_serial = time.perf_counter() - t0

        n = len(paths)
        speedup = t_kaggle / t_ours
        print(f"\n{'pipeline':<44}{'seconds':>9}{'images/s':>10}")
        print(f"{'Kaggle recipe (serial, PIL LANCZOS, PNG)':<44}{t_kaggle:>9.2f}{n / t_kaggle:>10.2f}")
        print(f"{f'cxrdet convert ({args.workers} workers)':<44}{t_ours:>9.2f}{n / t_ours:>10.2f}")
        print(f"{'cxrdet convert (1 worker, same machine)':<44}{t_serial:>9.2f}{n / t_serial:>10.2f}")
        print(f"speed-up: {speedup:.2f}x (target >= {TARGET_SPEEDUP}x); per image on one core "
              f"{t_kaggle / t_serial:.2f}x, from the 2nd worker {t_serial / t_ours:.2f}x")

        # agreement with the recipe (different resampling filters, so not identical)
        diffs = []
        for p in paths:
            a = cv2.imread(str(work / "kaggle" / f"{p.stem}.png"), cv2.IMREAD_GRAYSCALE)
            b = cv2.imread(str(work / "ours" / f"{p.stem}.png"), cv2.IMREAD_GRAYSCALE)
            if a.shape == b.shape:
                diffs.append(np.abs(a.astype(int) - b).mean())
        print(f"mean |ours - recipe| over {len(diffs)} same-size PNGs: {np.mean(diffs):.2f} gray levels")

        # JPEG 2000: reduced vs full decode
        t_fast = t_full = 0.0
        j2k_diffs = []
        for p in j2k:
            t0 = time.perf_counter()
            fast, _ = dcm.read_dicom(p, 512, keep_ratio=True, fast_j2k=True)
            t_fast += time.perf_counter() - t0
            t0 = time.perf_counter()
            full, _ = dcm.read_dicom(p, 512, keep_ratio=True, fast_j2k=False)
            t_full += time.perf_counter() - t0
            j2k_diffs.append(np.abs(fast.astype(int) - full).mean())
        j2k_diff = max(j2k_diffs) if j2k_diffs else 0.0
        if j2k:
            print(f"\nJPEG 2000 subset ({len(j2k)} files, serial read_dicom to 512 px):")
            print(f"  full decode    {len(j2k) / t_full:6.2f} images/s")
            print(f"  reduced decode {len(j2k) / t_fast:6.2f} images/s  ({t_full / t_fast:.1f}x)")
            print(f"  mean |reduced - full| per image: max {j2k_diff:.2f}, mean {np.mean(j2k_diffs):.2f} "
                  f"gray levels (limit {MAX_J2K_DIFF})")

        print("\nper-stage ms (one uncompressed, one JPEG 2000 file):")
        plain = next(p for p in paths if p not in j2k)
        for label, p in (("uncompressed", plain), ("JPEG 2000", j2k[0] if j2k else plain)):
            for k, v in stage_times(p).items():
                print(f"  {label:<13}{k:<36}{v:8.1f}")
        ok = speedup >= TARGET_SPEEDUP and j2k_diff <= MAX_J2K_DIFF
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
