"""cxrdet synth: competition layouts, raters, determinism, header variety, visible lesions."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

from data_prep.phantoms import phantom
from data_prep.phantoms import synth
from data_prep.phantoms.synth import (CLASSES, DATA_DIR, VIN_COLUMNS, make_subset, synth_rsna, synth_vinbigdata,
                             true_boxes)

try:  # written by another engineer; the tests use it where it exists
    from data_prep.dicom.read import read_dicom
except ImportError:  # pragma: no cover
    read_dicom = None

HEX32 = re.compile(r"^[0-9a-f]{32}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def display(ds) -> np.ndarray:
    """The display chain: stored -> modality LUT -> VOI LUT/window -> MONOCHROME1 inverted ->
    min-max 0..255 float64 (H, W)."""
    a = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = a.max() + a.min() - a
    return (a - a.min()) / max(a.max() - a.min(), 1e-9) * 255


def contrast(img: np.ndarray, box) -> float:
    """mean inside the box minus mean of the ring around it (box grown by 50% each side)."""
    h, w = img.shape
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    inner = np.zeros_like(img, bool)
    inner[int(np.ceil(y0)):int(y1), int(np.ceil(x0)):int(x1)] = True
    outer = np.zeros_like(img, bool)
    outer[max(0, int(y0 - bh / 2)):int(y1 + bh / 2), max(0, int(x0 - bw / 2)):int(x1 + bw / 2)] = True
    return float(img[inner].mean() - img[outer & ~inner].mean())


@pytest.fixture(scope="module")
def vin(tmp_path_factory):
    out = tmp_path_factory.mktemp("vin")
    res = synth_vinbigdata(out, n=20, n_test=5, size=256, seed=1)
    return out, res


def test_vinbigdata_layout(vin):
    out, res = vin
    train = pd.read_csv(out / "train.csv")
    assert list(train.columns) == VIN_COLUMNS
    assert train["class_id"].dtype == np.int64 and train["x_min"].dtype == np.float64
    assert sorted(p.stem for p in (out / "train").glob("*.dicom")) == sorted(train["image_id"].unique())
    assert len(list((out / "test").glob("*.dicom"))) == 5
    assert all(HEX32.match(i) for i in train["image_id"].unique())
    assert train.groupby("image_id")["rad_id"].nunique().eq(3).all()
    normal = train.groupby("image_id")["class_id"].min().eq(14)
    assert normal.sum() == 14                               # round(20 * 0.3) = 6 abnormal exactly
    nf = train[train["class_id"] == 14]
    assert nf[["x_min", "y_min", "x_max", "y_max"]].isna().all().all()
    assert (nf["class_name"] == "No finding").all() and nf.groupby("image_id").size().eq(3).all()
    fnd = train[train["class_id"] < 14]
    assert not fnd[["x_min", "y_min", "x_max", "y_max"]].isna().any().any()
    assert (fnd["class_name"] == fnd["class_id"].map(dict(enumerate(CLASSES)))).all()
    assert set(fnd["rad_id"]) <= {f"R{i}" for i in range(1, 18)}
    # boxes inside the image (size from the DICOM itself), positive area
    sizes = {p.stem: pydicom.dcmread(p, stop_before_pixels=True) for p in (out / "train").glob("*.dicom")}
    for r in fnd.itertuples():
        ds = sizes[r.image_id]
        assert 0 <= r.x_min < r.x_max <= ds.Columns and 0 <= r.y_min < r.y_max <= ds.Rows
        assert max(ds.Rows, ds.Columns) in (255, 256, 257)
    sub = pd.read_csv(out / "sample_submission.csv")
    assert list(sub.columns) == ["image_id", "PredictionString"]
    assert sorted(sub["image_id"]) == sorted(p.stem for p in (out / "test").glob("*.dicom"))
    assert (sub["PredictionString"] == "14 1 0 0 1 1").all()
    truth = pd.read_csv(out / "test_truth.csv")
    assert list(truth.columns) == VIN_COLUMNS + ["n_raters"]
    assert set(truth["image_id"]) == set(sub["image_id"]) and truth["rad_id"].isna().all()
    assert set(res["test"]["image_id"]) == set(sub["image_id"]) and len(res["train"]) == 20


def test_rater_boxes_jitter_true_box(vin):
    out, _ = vin
    train, truth = pd.read_csv(out / "train.csv"), pd.read_csv(out / "train_truth.csv")
    fnd, tr = train[train["class_id"] < 14], truth[truth["class_id"] < 14]
    assert len(tr) >= 6 and (tr["n_raters"] >= 1).all() and (tr["n_raters"] <= 3).all()
    for r in fnd.itertuples():   # every rater box is a jittered copy of a true box of its class
        t = tr[(tr["image_id"] == r.image_id) & (tr["class_id"] == r.class_id)]
        b = np.array([r.x_min, r.y_min, r.x_max, r.y_max])
        assert max(synth._iou(b, tb) for tb in t[["x_min", "y_min", "x_max", "y_max"]].to_numpy()) > 0.6
    # each finding's n_raters equals the rater rows near it; misses happen, but not all three
    assert tr["n_raters"].sum() == len(fnd)


def test_determinism(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, seed in ((a, 3), (b, 3), (c, 4)):
        synth_vinbigdata(d, n=6, n_test=2, size=128, seed=seed)
    for f in ("train.csv", "sample_submission.csv", "test_truth.csv", "train_truth.csv"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "train.csv").read_bytes() != (c / "train.csv").read_bytes()
    for p in (a / "train").glob("*.dicom"):
        assert np.array_equal(pydicom.dcmread(p).pixel_array, pydicom.dcmread(b / "train" / p.name).pixel_array)
    ra, rb = tmp_path / "ra", tmp_path / "rb"
    for d in (ra, rb):
        synth_rsna(d, n=2, n_test=1, seed=5)
    assert (ra / "stage_2_train_labels.csv").read_bytes() == (rb / "stage_2_train_labels.csv").read_bytes()
    for p in (ra / "stage_2_train_images").glob("*.dcm"):
        assert p.read_bytes() == (rb / "stage_2_train_images" / p.name).read_bytes()


def _one_finding_per_class(tmp_path, h=1000, w=840):
    """A labels/meta pair: 14 images, image k has one class-k finding at a class-typical box
    (fractions of the image), marked by R8/R9/R10 with small disagreements."""
    rows, meta = [], []
    for cid, (spec, cy, bw, bh) in synth._GEOM.items():
        cx = 0.3 if not isinstance(spec, tuple) else sum(spec) / 2
        bw, bh = max(bw, 0.05), max(bh, 0.05)
        box = np.array([(cx - bw / 2) * w, (sum(cy) / 2 - bh / 2) * h, (cx + bw / 2) * w, (sum(cy) / 2 + bh / 2) * h])
        iid = f"{cid:032x}"
        meta.append({"image_id": iid, "dim0": h, "dim1": w})
        for k, rad in enumerate(["R8", "R9", "R10"]):
            b = box + (k - 1) * 2.0
            rows.append(dict(image_id=iid, class_name=CLASSES[cid], class_id=cid, rad_id=rad,
                             **dict(zip(["x_min", "y_min", "x_max", "y_max"], b.round(1)))))
    rows += [dict(image_id="f" * 32, class_name="No finding", class_id=14, rad_id=r) for r in ("R1", "R2", "R3")]
    meta.append({"image_id": "f" * 32, "dim0": h, "dim1": w})
    pd.DataFrame(rows, columns=VIN_COLUMNS).to_csv(tmp_path / "lab.csv", index=False)
    pd.DataFrame(meta).to_csv(tmp_path / "meta.csv", index=False)
    return tmp_path / "lab.csv", tmp_path / "meta.csv"


def test_each_class_visible_and_monochrome1_displayed_like_monochrome2(tmp_path):
    lab, meta = _one_finding_per_class(tmp_path)
    out = tmp_path / "out"
    synth_vinbigdata(out, n=14, n_test=1, size=500, seed=2, labels=lab, meta=meta)
    truth = pd.concat([pd.read_csv(out / f"{s}_truth.csv").assign(split=s) for s in ("train", "test")])
    flavours = {"pi": set(), "bits": set(), "ts": set(), "voi": set()}
    seen = {}
    for r in truth[truth["class_id"] < 14].itertuples():
        ds = pydicom.dcmread(out / r.split / f"{r.image_id}.dicom")
        flavours["pi"].add(ds.PhotometricInterpretation)
        flavours["bits"].add(int(ds.BitsStored))
        flavours["ts"].add(ds.file_meta.TransferSyntaxUID)
        flavours["voi"].add("lut" if "VOILUTSequence" in ds else "window" if "WindowCenter" in ds else "none")
        img = display(ds)
        c = contrast(img, (r.x_min, r.y_min, r.x_max, r.y_max))
        seen[r.class_id] = (round(c, 1), ds.PhotometricInterpretation)
        if r.class_id == 12:        # pneumothorax: a dark air patch
            assert c < -20, (r.class_name, c)
        else:                       # everything else is denser (brighter) than its surroundings
            assert c > 12, (r.class_name, c, ds.PhotometricInterpretation)
        if read_dicom is not None:  # the project's reader shows the same picture
            u8, hdr = read_dicom(out / r.split / f"{r.image_id}.dicom")
            assert u8.shape == img.shape and (hdr["height"], hdr["width"]) == img.shape
            assert np.corrcoef(u8.ravel().astype(float), img.ravel())[0, 1] > 0.98
    assert sorted(seen) == list(range(14))
    # the header variety was exercised (so the assertions above covered MONOCHROME1 too)
    assert flavours["pi"] == {"MONOCHROME1", "MONOCHROME2"}, flavours
    assert len(flavours["bits"]) >= 2 and JPEG2000Lossless in flavours["ts"] and len(flavours["ts"]) == 2
    assert flavours["voi"] >= {"window", "lut"}, flavours


@pytest.mark.parametrize("key", list(range(14)) + ["rsna"])
def test_looks_are_visible_inside_their_box_only(key):
    """Same seed with and without the lesion: the background is identical (drawn first), so the
    difference is the lesion (+ zero-mean noise). [0, 1] display intensity."""
    h, w, box = 600, 500, (150.0, 200.0, 260.0, 300.0)
    with_l = phantom.render(h, w, [(key, box)], np.random.default_rng(0))
    without = phantom.render(h, w, [], np.random.default_rng(0))
    d = with_l.astype(np.float64) - without
    inside = np.zeros((h, w), bool)
    inside[200:300, 150:260] = True
    assert abs(d[~inside].mean()) < 0.002
    if key == 12:
        assert d[inside].mean() < -0.1
    else:
        assert d[inside].mean() > 0.04, (key, d[inside].mean())
    assert np.abs(d[inside]).max() > 0.15                # the look's own features are strong


def test_looks_are_distinct():
    """Every pair of the 14 VinBigData looks, drawn in the same 96x96 box, differs clearly: not
    the same pattern (correlation < 0.95) and not just a brightness change (relative L2 > 0.35)."""
    patches = {k: phantom.LOOKS[k][1](96, 96, 96, np.random.default_rng(1)) for k in range(14)}
    for i in range(14):
        for j in range(i + 1, 14):
            a, b = patches[i].ravel(), patches[j].ravel()
            r = np.corrcoef(a, b)[0, 1]
            rel = np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b))
            assert r < 0.95 and rel > 0.35, (CLASSES[i], CLASSES[j], r, rel)


def test_labels_mode_reproduces_real_rows(tmp_path, test_data):
    lab, meta = test_data / "synth_real_rows.csv", test_data / "synth_real_meta.csv"
    real, dims = pd.read_csv(lab), pd.read_csv(meta).set_index("image_id")
    out = tmp_path / "real"
    synth_vinbigdata(out, n=6, n_test=2, size=512, seed=0, labels=lab, meta=meta)
    got = pd.read_csv(out / "train.csv")
    ids = got["image_id"].unique()
    assert len(ids) == 6 and set(ids) <= set(real["image_id"])
    assert got.groupby("image_id")["class_id"].min().lt(14).sum() == 4     # 6 of 10 abnormal: round(6 * 0.6)
    test_ids = pd.read_csv(out / "sample_submission.csv")["image_id"]
    assert not set(test_ids) & set(ids) and set(test_ids) <= set(real["image_id"])
    key = ["image_id", "rad_id", "class_id", "x_min", "y_min"]
    for iid in ids:
        s = 512 / dims.loc[iid, ["dim0", "dim1"]].max()
        want = real[real["image_id"] == iid].copy()
        for c in ["x_min", "y_min", "x_max", "y_max"]:
            want[c] = want[c] * s
        mine = got[got["image_id"] == iid]
        assert len(mine) == len(want)
        a, b = want.sort_values(key).reset_index(drop=True), mine.sort_values(key).reset_index(drop=True)
        assert (a[["rad_id", "class_id", "class_name"]].to_numpy() == b[["rad_id", "class_id", "class_name"]].to_numpy()).all()
        np.testing.assert_allclose(b[["x_min", "y_min", "x_max", "y_max"]], a[["x_min", "y_min", "x_max", "y_max"]],
                                   atol=0.051)
        ds = pydicom.dcmread(out / "train" / f"{iid}.dicom", stop_before_pixels=True)
        assert (ds.Rows, ds.Columns) == (round(dims.loc[iid, "dim0"] * s), round(dims.loc[iid, "dim1"] * s))


def test_true_boxes_hand_computed():
    rows = pd.DataFrame([
        dict(class_id=8, rad_id="R8", x_min=10, y_min=10, x_max=20, y_max=20),
        dict(class_id=8, rad_id="R9", x_min=12, y_min=10, x_max=22, y_max=20),   # IoU 0.67 with R8
        dict(class_id=8, rad_id="R9", x_min=50, y_min=50, x_max=60, y_max=60),   # a second nodule
        dict(class_id=14, rad_id="R10", x_min=np.nan, y_min=np.nan, x_max=np.nan, y_max=np.nan),
    ])
    got = true_boxes(rows)
    assert [(c, b.tolist(), k) for c, b, k in got] == [
        (8, [11.0, 10.0, 21.0, 20.0], 2), (8, [50.0, 50.0, 60.0, 60.0], 1)]


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")   # real RSNA ages are bare numbers too
def test_rsna_layout(tmp_path):
    out = tmp_path / "rsna"
    synth_rsna(out, n=10, n_test=3, seed=0)
    lab = pd.read_csv(out / "stage_2_train_labels.csv")
    assert list(lab.columns) == ["patientId", "x", "y", "width", "height", "Target"]
    assert all(UUID.match(p) for p in lab["patientId"])
    neg, pos = lab[lab["Target"] == 0], lab[lab["Target"] == 1]
    assert neg[["x", "y", "width", "height"]].isna().all().all() and neg["patientId"].is_unique
    assert pos.groupby("patientId").size().max() <= 4 and lab["patientId"].nunique() == 10
    assert pos["patientId"].nunique() == 3                        # round(0.3 * 10)
    assert ((pos["x"] >= 0) & (pos["x"] + pos["width"] <= 1024) & (pos["y"] + pos["height"] <= 1024)).all()
    info = pd.read_csv(out / "stage_2_detailed_class_info.csv")
    assert len(info) == len(lab) and set(info["class"]) <= set(synth.RSNA_CLASSES)
    is_op = info.drop_duplicates().set_index("patientId")["class"].eq("Lung Opacity").sort_index()
    assert is_op.equals(lab.groupby("patientId")["Target"].max().astype(bool).sort_index().rename("class"))
    sub = pd.read_csv(out / "stage_2_sample_submission.csv", keep_default_na=False)
    assert list(sub.columns) == ["patientId", "PredictionString"] and (sub["PredictionString"] == "").all()
    assert set(pd.read_csv(out / "stage_2_test_labels.csv")["patientId"]) == set(sub["patientId"])
    assert len(list((out / "stage_2_test_images").glob("*.dcm"))) == 3
    contrasts = []
    for p in (out / "stage_2_train_images").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        assert ds.file_meta.TransferSyntaxUID == JPEGBaseline8Bit and ds.PhotometricInterpretation == "MONOCHROME2"
        assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored) == (1024, 1024, 8, 8)
        assert ds.Modality == "CR" and ds.ViewPosition in ("PA", "AP") and ds.PatientSex in ("M", "F")
        assert int(ds.PatientAge) > 0 and len(ds.PixelSpacing) == 2 and ds.PatientID == p.stem
        a = ds.pixel_array
        assert a.dtype == np.uint8 and a.shape == (1024, 1024)
        for r in pos[pos["patientId"] == p.stem].itertuples():
            contrasts.append(contrast(a.astype(float), (r.x, r.y, r.x + r.width, r.y + r.height)))
    # RSNA boxes are big (~20% x 30% of the image), so their ring takes in the mediastinum and the
    # chest wall: the opacity is still brighter than all of that (per-look strength: test_looks)
    assert len(contrasts) >= 3 and min(contrasts) > 5 and np.mean(contrasts) > 10, contrasts


def test_embedded_subsets(tmp_path):
    for f in DATA_DIR.glob("*.csv"):
        assert f.stat().st_size < 150_000, f
    vin = pd.read_csv(DATA_DIR / "vinbigdata_subset_train.csv")
    meta = pd.read_csv(DATA_DIR / "vinbigdata_subset_meta.csv")
    assert vin["image_id"].nunique() == 300 and set(meta["image_id"]) == set(vin["image_id"])
    assert vin.groupby("image_id")["rad_id"].nunique().eq(3).all()
    assert vin.groupby("image_id")["class_id"].min().lt(14).mean() == pytest.approx(0.38, abs=0.01)
    assert vin.loc[vin["class_id"] < 14].groupby("class_id")["image_id"].nunique().ge(6).sum() == 14
    rs = pd.read_csv(DATA_DIR / "rsna_subset_labels.csv")
    assert rs["patientId"].nunique() == 200 and rs.groupby("patientId")["Target"].max().mean() == 0.4
    out = tmp_path / "emb"
    synth_vinbigdata(out, n=3, n_test=1, size=128, seed=0, labels="embedded")
    got = pd.read_csv(out / "train.csv")
    assert set(got["image_id"]) <= set(vin["image_id"]) and got["image_id"].nunique() == 3
    synth_rsna(tmp_path / "embr", n=2, n_test=1, seed=0, labels="embedded")
    assert set(pd.read_csv(tmp_path / "embr" / "stage_2_train_labels.csv")["patientId"]) <= set(rs["patientId"])


def test_make_subset_reproduces_committed_files(tmp_path, shared_data):
    make_subset(shared_data, tmp_path)
    for f in DATA_DIR.glob("*.csv"):
        assert (tmp_path / f.name).read_bytes() == f.read_bytes(), f.name


def test_cli(tmp_path, capsys):
    from detection.cli import main
    assert main(["synth", "vinbigdata", str(tmp_path / "v"), "--n", "2", "--n-test", "1", "--size", "96"]) == 0
    assert len(list((tmp_path / "v" / "train").glob("*.dicom"))) == 2
    assert main(["synth", "rsna", str(tmp_path / "r"), "--size", "512"]) == 2
    assert "1024x1024" in capsys.readouterr().err
    assert main(["synth", "vinbigdata", str(tmp_path / "w"), "--labels", "nope.csv"]) == 2   # needs --meta
