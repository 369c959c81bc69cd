"""Shared test fixtures. Tests build their own tiny data in tmp_path; nothing needs ../shared."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from data_prep.core.boxes import from_frame, make_boxes, xyxy_to_yolo

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
TEST_DATA = Path(__file__).resolve().parent / "data"

# Keep every ultralytics run in the tests off the network and out of the user's home.
os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Small real-label subsets committed under tests/data/."""
    return TEST_DATA


def pytest_report_header(config):
    state = "present" if SHARED.is_dir() else "ABSENT: the real-file tests will be SKIPPED"
    return f"cxrdet real annotation files ({SHARED}): {state}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real annotation files beside the checkout. Tests using it skip (with the reason in the
    summary) when it is absent, except under CI, where ../shared is always laid beside the clone: there
    a missing folder fails them instead of letting the real-file checks vanish silently."""
    if not SHARED.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {SHARED} is missing: the real-file tests cannot run")
        pytest.skip(f"{SHARED} is not beside this checkout (real-file test skipped)")
    return SHARED


# ----------------------------------------------------------------------------- builders shared by test modules
# (tests take them as fixtures; no test module imports another)
ORIG_HW = (320, 240)  # original (height, width) of every fixture image
NAMES = ["Aortic enlargement", "Atelectasis"]


def _make_prep(root: Path, n: int = 12, png: int = 128, channels: int = 1, k: int = 2, seed: int = 0) -> Path:
    """A prep output folder with ``n`` images: every 3rd image is normal, others hold one bright
    square of class ``i % 2`` (class 1 squares are hollow). Returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    h, w = ORIG_HW
    meta, boxes, folds = [], [], []
    for i in range(n):
        iid = f"img{i:03d}"
        im = (rng.random((png, png)) * 50).astype(np.uint8)
        lines = []
        if i % 3:
            c = i % 2
            s = int(rng.integers(png // 6, png // 3))
            x, y = (int(v) for v in rng.integers(4, png - s - 4, 2))
            im[y:y + s, x:x + s] = 230
            if c:
                im[y + 4:y + s - 4, x + 4:x + s - 4] = 60
            png_box = np.array([[x, y, x + s, y + s]], dtype="float64")
            orig = from_frame(png_box, _png_frame(png))
            boxes.append(make_boxes(iid, c, NAMES[c], orig))
            cx, cy, bw, bh = xyxy_to_yolo(png_box, png, png)[0]
            lines.append(f"{c} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        cv2.imwrite(str(root / "images" / f"{iid}.png"), im)
        (root / "labels" / f"{iid}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        meta.append({"image_id": iid, "height": h, "width": w, "png_height": png, "png_width": png})
        folds.append({"image_id": iid, "fold": i % k})
    meta = pd.DataFrame(meta)
    meta.to_csv(root / "meta.csv", index=False)
    it = meta[["image_id", "height", "width"]].assign(path=[str(root / "images" / f"{m}.png") for m in meta.image_id],
                                                     patient_id=meta.image_id)
    it.to_csv(root / "images.csv", index=False)
    pd.concat(boxes, ignore_index=True).to_csv(root / "fused_boxes.csv", index=False)
    folds = pd.DataFrame(folds)
    folds.to_csv(root / "folds.csv", index=False)
    for f in range(k):
        d = root / "yolo" / f"fold{f}"
        d.mkdir(parents=True)
        paths = {s: [str(root / "images" / f"{r.image_id}.png") for r in folds.itertuples() if (r.fold == f) == (s == "val")]
                 for s in ("train", "val")}
        for s, ps in paths.items():
            (d / f"{s}.txt").write_text("\n".join(ps) + "\n")
        data = {"path": str(d), "train": str(d / "train.txt"), "val": str(d / "val.txt"), "nc": len(NAMES),
                "names": dict(enumerate(NAMES))}
        if channels == 1:
            data["channels"] = 1
        (d / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    from data_prep.labels.export import write_coco   # prep's own COCO writer (the tv: family trains on it)

    write_coco(it.assign(png_height=png, png_width=png), pd.concat(boxes, ignore_index=True), folds, root, NAMES)
    return root


def _png_frame(png: int):
    from data_prep.core.boxes import frame_for

    return frame_for(*ORIG_HW, png)


def _tiny_cfg(tmp_path: Path, **kw) -> dict:
    """The default config with a tiny, fast training setup under ``tmp_path/runs``."""
    from data_prep.core.config import load_config

    ov = {"epochs": 1, "imgsz": 128, "batch": 4, "device": "cpu", "project": str(tmp_path / "runs"),
          "workers": 0, "folds": 2, "yolo_args": {"plots": False, "val": True, "mosaic": 0.0}, **kw}
    return load_config(None, ov)


def _tfile(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} not shipped")
    return path


def _make_ds(arr: np.ndarray, photometric: str = "MONOCHROME2", bits: int | None = None, **elems) -> Dataset:
    """An uncompressed single-frame grayscale dataset holding ``arr`` (uint8 or uint16)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits or ds.BitsAllocated
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    for k, v in elems.items():
        setattr(ds, k, v)
    ds.PixelData = arr.tobytes()
    return ds


def _save_dicom(ds: Dataset, path) -> str:
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def _write_dicom(path: Path, arr: np.ndarray, **elems) -> Path:
    """A 16-bit file, 12 bits stored, MONOCHROME2, PatientAge 045Y, PixelSpacing 0.1 (``elems``
    override or add elements); its folder is made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_dicom(_make_ds(np.asarray(arr).astype("<u2"), bits=12,
                         **{"PatientAge": "045Y", "PixelSpacing": [0.1, 0.1], **elems}), path)
    return path


def _ramp(h: int = 40, w: int = 1000, top: int = 1000) -> np.ndarray:
    """Columns 0..top-ish, every row the same: uint16 (h, w)."""
    return np.tile(np.linspace(0, top, w).round().astype(np.uint16), (h, 1))


@pytest.fixture(scope="session")
def make_prep():
    """``make_prep(root, n=12, png=128, channels=1, k=2, seed=0) -> root``: a `cxrdet prep` output folder."""
    return _make_prep


@pytest.fixture(scope="session")
def tiny_cfg():
    """``tiny_cfg(tmp_path, **keys) -> config``: a tiny, fast training setup under tmp_path/runs."""
    return _tiny_cfg


@pytest.fixture(scope="session")
def prep_names():
    """The class names of the :func:`make_prep` folders, and their original (height, width)."""
    return NAMES, ORIG_HW


@pytest.fixture(scope="session")
def tfile():
    """``tfile(name) -> path`` of a pydicom test file (skips when pydicom does not ship it)."""
    return _tfile


@pytest.fixture(scope="session")
def make_ds():
    """``make_ds(arr, photometric="MONOCHROME2", bits=None, **elements)``: an uncompressed grayscale dataset."""
    return _make_ds


@pytest.fixture(scope="session")
def save():
    """``save(ds, path) -> str``: write a DICOM file (File Meta enforced)."""
    return _save_dicom


@pytest.fixture(scope="session")
def write_dicom():
    """``write_dicom(path, arr, **elements) -> path``: a 12-bit DX file with age and pixel spacing."""
    return _write_dicom


@pytest.fixture(scope="session")
def ramp():
    """``ramp(h=40, w=1000, top=1000)``: a uint16 horizontal ramp."""
    return _ramp


# ----------------------------------------------------------------------------- fake ultralytics models (predict)
def _fake_result(xyxy, conf, cls):
    """A stand-in for an ultralytics detect ``Results``: ``.boxes.xyxy/conf/cls`` tensors."""
    import torch

    boxes = SimpleNamespace(xyxy=torch.tensor(np.asarray(xyxy, "float32").reshape(-1, 4)),
                            conf=torch.tensor(np.asarray(conf, "float32").reshape(-1)),
                            cls=torch.tensor(np.asarray(cls, "float32").reshape(-1)))
    return SimpleNamespace(boxes=boxes)


class _BrightBoxDetector:
    """Fake ultralytics detect model: one class-0 box around the pixels > 180 of each input image
    (xyxy in that image's own frame, pixel edges: max index + 1), score 0.9; nothing if none."""
    names = dict(enumerate(NAMES))

    def __init__(self):
        self.calls = []

    def predict(self, imgs, **kw):
        self.calls.append(len(imgs))
        out = []
        for im in imgs:
            ys, xs = np.nonzero((im if im.ndim == 2 else im[..., 0]) > 180)
            if len(xs):
                out.append(_fake_result([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [0.9], [0]))
            else:
                out.append(_fake_result(np.zeros((0, 4)), [], []))
        return out


class _FakeClassifier:
    """Fake classify model: p(abnormal) = 0.97 with bright pixels, else 0.02; classes in
    ultralytics' folder order (abnormal = 0, normal = 1) unless ``names`` says otherwise."""

    def __init__(self, names=None):
        self.names = names or {0: "abnormal", 1: "normal"}

    def predict(self, imgs, **kw):
        import torch

        ia = [k for k, v in self.names.items() if v == "abnormal"][0]
        res = []
        for im in imgs:
            p = np.zeros(len(self.names), "float32")
            pa = 0.97 if (im > 180).any() else 0.02
            p[ia], p[1 - ia] = pa, 1 - pa
            res.append(SimpleNamespace(probs=SimpleNamespace(data=torch.tensor(p))))
        return res


@pytest.fixture
def fake_models(monkeypatch):
    """Patch load_model: ``*.cls`` weights give a FakeClassifier, anything else a BrightBoxDetector."""
    import detection.engine.predict_models as PM

    made = []

    def load(weights, imgsz, batch, task="detect", onnx=False):
        m = _FakeClassifier() if str(weights).endswith(".cls") else _BrightBoxDetector()
        made.append(m)
        return PM.Loaded(m, str(weights), imgsz, batch)

    monkeypatch.setattr(PM, "load_model", load)   # what predict_models.load_models calls
    return made


@pytest.fixture(scope="session")
def fake_result():
    """``fake_result(xyxy, conf, cls)``: a stand-in for an ultralytics detect ``Results``."""
    return _fake_result


@pytest.fixture(scope="session")
def bright_box_detector():
    """The fake detect model class (one class-0 box around the bright pixels, score 0.9)."""
    return _BrightBoxDetector


@pytest.fixture(scope="session")
def fake_classifier():
    """The fake classify model class (p(abnormal) 0.97 with bright pixels, else 0.02)."""
    return _FakeClassifier


# ----------------------------------------------------------------------------- headless Chromium (selenium)
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _chrome_driver(tmp_path):
    """A headless selenium Chrome driver (Debian's chromium + chromium-driver, offline flags, console log
    kept); skips the test where they are absent."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("chromium / chromium-driver not installed (`make browser` installs both; CI runs it)")
    from selenium import webdriver  # the dev extra pins it: missing selenium is a broken setup, not a skip
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))


@pytest.fixture(scope="session")
def chrome_driver():
    """``chrome_driver(tmp_path)``: a headless selenium Chrome driver, or a skip where chromium is absent."""
    return _chrome_driver
