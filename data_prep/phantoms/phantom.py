"""Phantom pixels and DICOM writers for ``cxrdet synth`` (split out of data_prep/phantoms/synth.py).

* :func:`chest` draws a chest-like background (float32 (H, W), brighter = denser): body, two
  darker lung fields, mediastinum + heart, curved ribs, gradients, low-frequency texture;
* :data:`LOOKS` maps each VinBigData class id (0-13) and ``"rsna"`` to its own lesion look, drawn
  inside the lesion's true box; :func:`render` composes background + lesions + noise at the
  ORIGINAL size (drawn at longest side <= RENDER_MAX, then resized, so big originals stay fast);
* :func:`write_vin_dicom` (random header flavour: MONOCHROME1/2, BitsStored 12/14/16, window /
  VOI LUT Sequence / none, rescale, JPEG 2000 lossless or explicit VR little endian) and
  :func:`write_rsna_dicom` (1024x1024 8-bit MONOCHROME2 JPEG baseline).
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, generate_uid

from data_prep.core.atomic import atomic_path
from data_prep.dicom.read import unvalidated

_j2k_log = logging.getLogger("openjpeg.encode")
RENDER_MAX = 768          # phantoms are drawn with longest side <= this, then resized


# ----------------------------------------------------------------------------- pixels
def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), float(sigma)) if sigma >= 0.3 else a


def _ell(p, c, ax, v, thick=-1, a0=0, a1=360):
    """cv2.ellipse on a float32 canvas with float centre/axes (rounded)."""
    cv2.ellipse(p, (int(round(c[0])), int(round(c[1]))), (max(1, int(round(ax[0]))), max(1, int(round(ax[1])))),
                0, a0, a1, float(v), int(thick) if thick == -1 else max(1, int(round(thick))))


def chest(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Chest-like background, float32 (h, w), roughly in [0.05, 0.9] (brighter = denser).
    The smooth anatomy masks are drawn and blurred at <= 192 px, then resized (fast)."""
    f = min(1.0, 192 / max(h, w))
    hs, ws = max(8, round(h * f)), max(8, round(w * f))
    smooth = lambda a, sig: cv2.resize(_blur(a, sig * max(hs, ws)), (w, h), interpolation=cv2.INTER_LINEAR)
    body = np.zeros((hs, ws), np.float32)
    _ell(body, (0.5 * ws, 0.56 * hs), (0.49 * ws, 0.62 * hs), 1.0)
    lungs = np.zeros((hs, ws), np.float32)
    dy, sc = rng.uniform(-0.03, 0.03), rng.uniform(0.9, 1.1)
    for side in (-1, 1):
        cx = 0.5 + side * (0.215 + rng.uniform(-0.015, 0.015))
        _ell(lungs, (cx * ws, (0.45 + dy) * hs), (0.155 * sc * ws, 0.3 * sc * hs), 1.0)
    med = np.zeros((hs, ws), np.float32)
    cv2.rectangle(med, (int(0.44 * ws), int(0.05 * hs)), (int(0.56 * ws), int(0.7 * hs)), 1.0, -1)
    _ell(med, (rng.uniform(0.52, 0.56) * ws, 0.64 * hs), (0.13 * ws, 0.11 * hs), 1.0)
    v = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    u = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    ribs = np.cos(2 * np.pi * (9.0 * v - 4.0 * (u - 0.5) ** 2 + rng.uniform(0, 1))) * 0.5 + 0.5
    img = 0.08 + 0.42 * smooth(body, 0.02) + (0.07 * ribs ** 4 - 0.28) * smooth(lungs, 0.025)
    img += 0.2 * smooth(med, 0.02)
    img += rng.uniform(-0.08, 0.08) * (u - 0.5) + rng.uniform(-0.08, 0.08) * (v - 0.5)
    for cells, amp in ((6, 0.04), (40, 0.015)):
        g = rng.standard_normal((cells, cells)).astype(np.float32)
        img += amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
    return img.astype(np.float32)


def _aortic(h, w, m, rng):       # bright arch: thick upper half ring over a faint fill
    p = np.zeros((h, w), np.float32)
    _ell(p, (w / 2, 0.62 * h), (0.42 * w, 0.5 * h), 0.12, -1, 180, 360)
    _ell(p, (w / 2, 0.62 * h), (0.42 * w, 0.5 * h), 0.45, 0.17 * m, 180, 360)
    return _blur(p, 0.03 * m)


def _atelectasis(h, w, m, rng):  # bright wedge (triangle)
    p = np.zeros((h, w), np.float32)
    pts = np.array([[0, 0], [w - 1, h // 2], [0, h - 1]]) if rng.random() < 0.5 else \
        np.array([[w - 1, 0], [0, h // 2], [w - 1, h - 1]])
    cv2.fillPoly(p, [pts.astype(np.int32)], 0.35)
    return _blur(p, 0.03 * m)


def _calcification(h, w, m, rng):  # a few tiny very dense dots
    p = np.zeros((h, w), np.float32)
    r = max(1.0, 0.13 * m)
    for cx, cy in [(w / 2, h / 2)] + list(zip(rng.uniform(r, w - r, 4), rng.uniform(r, h - r, 4))):
        _ell(p, (cx, cy), (r, r), 0.6)
    return _blur(p, 0.02 * m)


def _cardiomegaly(h, w, m, rng):  # wide dome (upper half of a big ellipse) filling the box
    p = np.zeros((h, w), np.float32)
    _ell(p, (w / 2, h - 1), (0.5 * w, 0.95 * h), 0.3)
    return _blur(p, 0.04 * m)


def _consolidation(h, w, m, rng):  # dense ellipse crossed by dark air bronchograms
    p = np.zeros((h, w), np.float32)
    _ell(p, (w / 2, h / 2), (0.46 * w, 0.46 * h), 0.38)
    for k in range(3):
        x0 = w * (0.3 + 0.2 * k)
        cv2.line(p, (int(x0), int(0.15 * h)), (int(x0 + rng.uniform(-0.1, 0.1) * w), int(0.85 * h)),
                 0.12, max(1, int(0.05 * m)))
    return _blur(p, 0.03 * m)


def _ild(h, w, m, rng):  # reticulonodular lattice of dots over a faint haze
    p = np.zeros((h, w), np.float32)
    _ell(p, (w / 2, h / 2), (0.48 * w, 0.48 * h), 0.15)
    step, r = max(3.0, 0.16 * m), max(1.0, 0.05 * m)
    for y in np.arange(step / 2, h, step):
        for x in np.arange(step / 2, w, step):
            _ell(p, (x, y), (r, r), 0.4)
    return _blur(p, 0.015 * m)


def _infiltration(h, w, m, rng):  # mottled: many distinct small soft spots over a faint haze
    p = np.zeros((h, w), np.float32)
    _ell(p, (w / 2, h / 2), (0.45 * w, 0.45 * h), 0.12)
    for _ in range(14):
        r = rng.uniform(0.06, 0.1) * m
        _ell(p, (rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h), (r, r), 0.36)
    return _blur(p, 0.025 * m)


def _lung_opacity(h, w, m, rng):  # flat, uniform ground-glass plateau filling the box, soft edges
    p = np.zeros((h, w), np.float32)
    cv2.rectangle(p, (int(0.1 * w), int(0.1 * h)), (int(0.9 * w), int(0.9 * h)), 0.26, -1)
    return _blur(p, 0.06 * m)


def _nodule(h, w, m, rng):  # one small dense disc, sharp edge
    p = np.zeros((h, w), np.float32)
    _ell(p, (w / 2, h / 2), (0.42 * w, 0.42 * h), 0.5)
    return _blur(p, 0.02 * m)


def _other(h, w, m, rng):  # thick ring with a dark centre (cavity)
    p = np.full((h, w), 0.0, np.float32)
    _ell(p, (w / 2, h / 2), (0.3 * w, 0.3 * h), -0.08)
    _ell(p, (w / 2, h / 2), (0.38 * w, 0.38 * h), 0.4, 0.14 * m)
    return _blur(p, 0.02 * m)


def _effusion(h, w, m, rng):  # bright lower part with a sharp, slightly tilted fluid level
    p = np.zeros((h, w), np.float32)
    t0, t1 = (0.35, 0.5) if rng.random() < 0.5 else (0.5, 0.35)
    pts = np.array([[0, t0 * h], [w - 1, t1 * h], [w - 1, h - 1], [0, h - 1]], np.int32)
    cv2.fillPoly(p, [pts], 0.4)
    return _blur(p, 0.02 * m)


def _thickening(h, w, m, rng):  # two parallel horizontal bright lines
    p = np.zeros((h, w), np.float32)
    t = max(1, int(0.2 * h))
    for f in (0.25, 0.75):
        cv2.line(p, (int(0.05 * w), int(f * h)), (int(0.95 * w), int(f * h)), 0.45, t)
    return _blur(p, 0.02 * m)


def _pneumothorax(h, w, m, rng):  # dark air patch with a thin bright pleural edge
    p = np.full((h, w), -0.22, np.float32)
    xe = int(0.15 * w) if rng.random() < 0.5 else int(0.85 * w)
    cv2.line(p, (xe, int(0.05 * h)), (xe, int(0.95 * h)), 0.2, max(1, int(0.03 * m)))
    return _blur(p, 0.02 * m)


def _fibrosis(h, w, m, rng):  # coarse parallel diagonal streaks
    p = np.zeros((h, w), np.float32)
    step = max(3.0, 0.22 * m)
    for k in np.arange(-h, w, step):
        cv2.line(p, (int(k), 0), (int(k + h), h - 1), 0.38, max(1, int(0.07 * m)))
    return _blur(p, 0.02 * m)


def _rsna_opacity(h, w, m, rng):  # consolidation cloud: dense soft ellipse + blobs, mottled
    p = np.zeros((h, w), np.float32)
    _ell(p, (w / 2, h / 2), (0.42 * w, 0.44 * h), 0.34)      # cv2 draws by overwriting, not adding
    for _ in range(10):
        _ell(p, (rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h),
             (rng.uniform(0.1, 0.2) * w, rng.uniform(0.08, 0.16) * h), 0.46)
    mottle = cv2.resize(rng.random((8, 8), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return _blur(p, 0.05 * m) * (0.8 + 0.4 * mottle)


#: class_id -> (description, draw(h, w, min_side, rng) -> float32 (h, w) intensity delta)
LOOKS = {
    0: ("bright arch (upper half ring) over a faint fill", _aortic),
    1: ("bright wedge/triangle", _atelectasis),
    2: ("five tiny very dense dots", _calcification),
    3: ("wide bright dome filling the box (enlarged heart)", _cardiomegaly),
    4: ("dense ellipse crossed by dark air-bronchogram lines", _consolidation),
    5: ("regular lattice of small dots over faint haze (reticulonodular)", _ild),
    6: ("mottled: many small soft spots over a faint haze", _infiltration),
    7: ("flat uniform ground-glass plateau with soft edges", _lung_opacity),
    8: ("single dense disc with a sharp edge", _nodule),
    9: ("thick bright ring with a darker centre", _other),
    10: ("bright lower part under a sharp tilted fluid level", _effusion),
    11: ("two parallel horizontal bright lines", _thickening),
    12: ("dark air patch with a thin bright pleural line", _pneumothorax),
    13: ("coarse parallel diagonal streaks", _fibrosis),
    "rsna": ("mottled consolidation cloud", _rsna_opacity),
}


def render(h: int, w: int, lesions: list[tuple], rng: np.random.Generator) -> np.ndarray:
    """Phantom of ORIGINAL size (h, w) as float32 in [0, 1]. ``lesions``: (look key, xyxy in
    original pixels). Drawn at longest side <= RENDER_MAX, resized, then pixel noise added."""
    r = min(1.0, RENDER_MAX / max(h, w))
    hr, wr = max(8, round(h * r)), max(8, round(w * r))
    img = chest(hr, wr, rng)
    for key, (x0, y0, x1, y1) in lesions:
        a, b = int(np.floor(x0 * wr / w)), int(np.floor(y0 * hr / h))
        c, d = max(a + 2, int(np.ceil(x1 * wr / w))), max(b + 2, int(np.ceil(y1 * hr / h)))
        a, b, c, d = max(0, min(a, wr - 2)), max(0, min(b, hr - 2)), min(c, wr), min(d, hr)
        ph, pw = d - b, c - a
        img[b:d, a:c] += LOOKS[key][1](ph, pw, min(ph, pw), rng)
    if (hr, wr) != (h, w):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    img += rng.normal(0, 0.012, img.shape).astype(np.float32)
    return np.clip(img / 1.25, 0, 1)


# ----------------------------------------------------------------------------- DICOM writers
def _base_ds(uid_key: str, sop_class: str, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[uid_key, "sop"])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[uid_key, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[uid_key, "series"])
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality, ds.BodyPartExamined = modality, "CHEST"
    return ds


def _save(ds: Dataset, path: Path) -> None:
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def write_vin_dicom(path: Path, img: np.ndarray, image_id: str, rng: np.random.Generator,
                    pixel_spacing: float = 0.139) -> dict:
    """Write ``img`` (float32 (H, W) in [0, 1], display intensity) as a VinBigData-like DICOM
    with a random header flavour; returns the flavour (dict of chosen fields)."""
    bits = int(rng.choice([12, 14, 16]))
    maxv = (1 << bits) - 1
    mono1 = bool(rng.random() < 0.3)
    voi = str(rng.choice(["window", "lut", "none"], p=[0.7, 0.15, 0.15]))
    if voi == "lut" and bits == 16:
        bits, maxv = 14, (1 << 14) - 1
    slope, icpt = (1.0, 0.0) if voi == "lut" or rng.random() < 0.6 else \
        [(1.0, -1024.0), (0.5, 0.0), (2.0, -2048.0)][int(rng.integers(3))]
    j2k = bool(rng.random() < 0.3)
    lo, hi = rng.uniform(0.02, 0.08) * maxv, rng.uniform(0.85, 0.97) * maxv
    p = np.round(lo + img * (hi - lo))
    stored = (maxv - p if mono1 else p).astype(np.uint16)
    ds = _base_ds(image_id, "1.2.840.10008.5.1.4.1.1.1.1", "DX")   # Digital X-Ray, presentation
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientID, ds.PatientSex = "", str(rng.choice(["M", "F", "O"]))
    ds.PatientAge = f"{int(rng.integers(18, 90)):03d}Y" if rng.random() < 0.8 else ""
    ds.ViewPosition = "PA" if rng.random() < 0.9 else "AP"
    ds.PixelSpacing = [round(pixel_spacing, 6)] * 2
    ds.set_pixel_data(stored, "MONOCHROME1" if mono1 else "MONOCHROME2", bits)
    if (slope, icpt) != (1.0, 0.0) or rng.random() < 0.5:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{icpt:g}", "US"
    mlo, mhi = float(stored.min()) * slope + icpt, float(stored.max()) * slope + icpt
    if voi == "window":
        ds.WindowCenter, ds.WindowWidth = f"{(mlo + mhi) / 2:.1f}", f"{max(mhi - mlo, 2.0):.1f}"
    elif voi == "lut":   # identity-ish sigmoid over the used range, 16-bit output
        x = (np.arange(maxv + 1, dtype=np.float64) - mlo) / max(mhi - mlo, 1.0)
        lut = np.clip(x, 0, 1) ** 0.9 * 65535
        item = Dataset()
        item.LUTDescriptor = [maxv + 1, 0, 16]
        item.add_new("LUTData", "OW", np.round(lut).astype("<u2").tobytes())
        item.LUTExplanation = "phantom"
        ds.VOILUTSequence = [item]
    if j2k:
        _j2k_log.setLevel(logging.WARNING)     # openjpeg logs every tile at INFO
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    _save(ds, path)
    return {"PhotometricInterpretation": ds.PhotometricInterpretation, "BitsStored": bits, "voi": voi,
            "slope": slope, "intercept": icpt, "j2k": j2k}


def write_rsna_dicom(path: Path, img: np.ndarray, patient_id: str, rng: np.random.Generator) -> None:
    """Write ``img`` (float32 (1024, 1024) in [0, 1]) as an RSNA-like 8-bit MONOCHROME2 JPEG
    baseline DICOM (Pillow-free: cv2.imencode, encapsulated with pydicom.encaps.encapsulate)."""
    u8 = np.round(img * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise ValueError(f"{path}: cv2 JPEG encoding failed")
    ds = _base_ds(patient_id, "1.2.840.10008.5.1.4.1.1.7", "CR")   # Secondary Capture, like RSNA
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PatientID = ds.PatientName = patient_id
    ds.PatientSex = str(rng.choice(["M", "F"]))
    with unvalidated():  # the real RSNA files hold a bare number, not the AS form "043Y"
        ds.PatientAge = str(int(rng.integers(10, 90)))
    ds.ViewPosition = str(rng.choice(["PA", "AP"]))
    ds.PixelSpacing = [float(rng.choice([0.143, 0.168, 0.139])), ] * 2
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = u8.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    ds.PixelData = encapsulate([buf.tobytes()])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    _save(ds, path)
