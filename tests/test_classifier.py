"""Multi-label classifier: a tiny real training run (timm + torch loop), resume, classify from PNG
and DICOM, the ONNX round trip, evaluate-cls against scikit-learn, and the fusion formula."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from data_prep.core.atomic import write_csv
from data_prep.core.config import load_config
from detection.engine.classifier import (ABNORMAL, _pos_weight, is_multilabel, load_checkpoint, select_labels,
                                  train_multilabel)
from detection.engine.classify import classify, export_onnx, load_runner, probs_table
from detection.cli import main as cli
from detection.evaluation.evaluate_cls import best_f1, bootstrap_auc_ci, evaluate_cls
from detection.competition.postprocess import apply as post_apply
from data_prep.core.tables import read_probs

N = 24


def _img(kind: int, rng) -> np.ndarray:
    """48x48 uint8: label A = a bright disc on the left, B = a bright bar on the right."""
    im = (rng.normal(60, 8, (48, 48))).clip(0, 255).astype(np.uint8)
    if kind & 1:
        cv2.circle(im, (12, 24), 7, 230, -1)
    if kind & 2:
        cv2.rectangle(im, (32, 8), (40, 40), 230, -1)
    return im


@pytest.fixture(scope="module")
def prep_dir(tmp_path_factory) -> Path:
    """A prep-like folder: images/*.png, images.csv, folds.csv (2 folds, patient-grouped), labels."""
    root = tmp_path_factory.mktemp("clsprep")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    rows, lab = [], []
    for i in range(N):
        kind = i % 4
        iid = f"img{i:02d}"
        p = root / "images" / f"{iid}.png"
        cv2.imwrite(str(p), _img(kind, rng))
        rows.append({"image_id": iid, "height": 48, "width": 48, "path": str(p), "patient_id": f"p{i // 2}"})
        lab.append({"image_id": iid, "patient_id": f"p{i // 2}", "A": kind & 1, "B": (kind >> 1) & 1,
                    "abnormal": int(kind > 0)})
    images = pd.DataFrame(rows)
    write_csv(images, root / "images.csv")
    write_csv(pd.DataFrame({"image_id": images["image_id"], "fold": [(i // 4) % 2 for i in range(N)]}),
              root / "folds.csv")
    write_csv(pd.DataFrame(lab), root / "image_labels.csv")
    write_csv(images[["image_id", "height", "width"]], root / "meta.csv")
    return root


def _cfg(prep: Path, project: Path, **kw) -> dict:
    ov = dict(cls_task="multilabel", cls_arch="test_resnet", cls_imgsz=32, cls_epochs=1, batch=8, workers=0,
              cls_label_table=str(prep / "image_labels.csv"), project=str(project), name="ml", dataset="vinbigdata",
              cls_lr=0.01)
    ov.update(kw)
    return load_config(None, ov)


@pytest.fixture(scope="module")
def trained(prep_dir, tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("runs")
    return train_multilabel(_cfg(prep_dir, project), prep_dir, fold=0)


def test_training_writes_checkpoint_and_history(trained, prep_dir):
    ck = load_checkpoint(trained)
    assert ck["labels"] == ["A", "B", ABNORMAL] and ck["arch"] == "test_resnet" and ck["imgsz"] == 32
    assert is_multilabel(trained) and not is_multilabel(Path(__file__).parents[1] / "weights" / "vinbig_phantom_cls.pt")
    hist = pd.read_csv(trained.parents[1] / "results.csv")
    assert hist["epoch"].tolist() == [1] and np.isfinite(hist["train_loss"]).all()
    # the checkpoint's validation AUCs are scikit-learn's on its own fold-0 predictions
    folds = pd.read_csv(prep_dir / "folds.csv", dtype={"image_id": str})
    assert set(ck["per_label_auc"]) == {"A", "B", ABNORMAL}
    assert not np.isnan(list(ck["per_label_auc"].values())).any()  # every kind of image is in both folds
    assert hist.at[0, "val_mean_auc"] == pytest.approx(np.mean(list(ck["per_label_auc"].values())))
    assert (folds["fold"] == 0).sum() == N // 2


def test_resume_continues_to_more_epochs(prep_dir, tmp_path):
    cfg = _cfg(prep_dir, tmp_path)
    train_multilabel(cfg, prep_dir, 0)
    best = train_multilabel(dict(cfg, resume=True, cls_epochs=2), prep_dir, 0)
    hist = pd.read_csv(best.parents[1] / "results.csv")
    assert hist["epoch"].tolist() == [1, 2]
    with pytest.raises(FileNotFoundError, match="resume=true: no checkpoint"):
        train_multilabel(dict(cfg, resume=True, name="other"), prep_dir, 0)


def test_patient_shared_between_folds_is_refused(prep_dir, tmp_path):
    bad = tmp_path / "prep"
    bad.mkdir()
    for f in ("images.csv", "image_labels.csv"):
        (bad / f).write_bytes((prep_dir / f).read_bytes())
    folds = pd.read_csv(prep_dir / "folds.csv")
    folds["fold"] = [i % 2 for i in range(N)]  # img00 (p0) fold 0, img01 (p0) fold 1
    folds.to_csv(bad / "folds.csv", index=False)
    with pytest.raises(ValueError, match="patient 'p0' is in fold 0 and in the training folds"):
        train_multilabel(_cfg(prep_dir, tmp_path), bad, 0)


def test_label_subset_and_pos_weight():
    t = pd.DataFrame({"image_id": list("abcd"), "A": [1, 0, 0, 1], "B": [0, 1, 0, 1], "abnormal": [1, 1, 0, 1]})
    sub, outputs = select_labels(t, ["A"], "labels_or_normal")
    assert outputs == ["A", ABNORMAL] and sub["image_id"].tolist() == ["a", "c", "d"]  # b: B only -> out
    assert select_labels(t, None, "all")[1] == ["A", "B", ABNORMAL]
    with pytest.raises(ValueError, match=r"cls_labels \['C'\]"):
        select_labels(t, ["C"])
    y = np.array([[1, 0], [0, 0], [1, np.nan], [0, 1]])
    assert _pos_weight("auto", y, ["A", "B"]).tolist() == [1.0, 2.0]  # n_neg / n_pos, unknown cells skipped
    assert _pos_weight(None, y, ["A", "B"]) is None


def test_classify_png_dicom_onnx_round_trip(trained, prep_dir, tmp_path):
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from data_prep.dicom.read import read_dicom

    src = tmp_path / "png"
    src.mkdir()
    dcm = tmp_path / "dcm"
    dcm.mkdir()
    for i in range(4):
        img = cv2.imread(str(prep_dir / "images" / f"img{i:02d}.png"), cv2.IMREAD_GRAYSCALE)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 48, 48, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = img.tobytes()
        ds.save_as(dcm / f"img{i:02d}.dcm", enforce_file_format=True)
        assert pydicom.dcmread(dcm / f"img{i:02d}.dcm").pixel_array.shape == (48, 48)
        cv2.imwrite(str(src / f"img{i:02d}.png"), read_dicom(dcm / f"img{i:02d}.dcm", size=48)[0])  # = convert
    t_png = classify(trained, src, prep_dir / "meta.csv", size=48)
    t_dcm = classify(trained, dcm, size=48)
    assert list(t_png.columns) == ["image_id", "A", "B", ABNORMAL] and t_png["image_id"].tolist() == [
        f"img{i:02d}" for i in range(4)]
    np.testing.assert_allclose(t_png.iloc[:, 1:].to_numpy(), t_dcm.iloc[:, 1:].to_numpy(), atol=1e-6)
    # ONNX: same probabilities, exported once and cached beside the weights
    t_onnx = classify(trained, src, size=48, onnx=True)
    np.testing.assert_allclose(t_png.iloc[:, 1:].to_numpy(), t_onnx.iloc[:, 1:].to_numpy(), atol=1e-5)
    assert (trained.parent / "best_32.onnx").is_file()
    assert load_runner(trained.parent / "best_32.onnx").labels == ["A", "B", ABNORMAL]
    # the table round trip: write, read back, same numbers
    write_csv(t_png, tmp_path / "probs.csv")
    back = read_probs(tmp_path / "probs.csv")
    pd.testing.assert_frame_equal(back, t_png, check_dtype=False)
    # the CLI writes the same table; `cxrdet export` exports a multi-label checkpoint too
    assert cli(["classify", "--weights", str(trained), "--source", str(src), "--out", str(tmp_path / "c.csv"),
                "size=48"]) == 0
    pd.testing.assert_frame_equal(read_probs(tmp_path / "c.csv"), back, atol=1e-7)
    assert cli(["export", str(trained), "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file()


# ----------------------------------------------------------------------------- evaluate-cls
def test_auc_f1_hand_case_and_sklearn():
    labels = pd.DataFrame({"image_id": list("abcd"), "A": [0.0, 0.0, 1.0, 1.0], "abnormal": [0.0, 1.0, 1.0, 1.0]})
    probs = pd.DataFrame({"image_id": list("abcd"), "A": [0.1, 0.4, 0.35, 0.8], "abnormal": [0.2, 0.3, 0.9, 0.7]})
    r = evaluate_cls(labels, probs, n_boot=200)
    a = r["per_label"]["A"]
    assert a["auc"] == pytest.approx(0.75)  # 3 of the 4 (pos, neg) pairs ordered right
    assert a["f1"] == pytest.approx(0.8) and a["threshold"] == pytest.approx(0.35)  # p >= .35: TP 2, FP 1
    assert a["n_pos"] == 2 and a["prevalence"] == 0.5
    assert r["per_label"]["abnormal"]["auc"] == pytest.approx(1.0)
    assert r["macro_auc"] == pytest.approx(0.75) and r["micro_auc"] == pytest.approx(0.75)
    assert best_f1(np.array([0, 1, 1]), np.array([0.9, 0.2, 0.3])) == (pytest.approx(0.8), 0.2)


def test_auc_equals_sklearn_random_with_unknown_cells():
    rng = np.random.default_rng(3)
    n = 300
    y = (rng.random((n, 3)) < [0.1, 0.3, 0.6]).astype(float)
    y[rng.random((n, 3)) < 0.1] = np.nan
    p = np.clip(np.nan_to_num(y, nan=0.5) * 0.3 + rng.random((n, 3)) * 0.7, 0, 1)
    ids = [f"i{i}" for i in range(n)]
    labels = pd.DataFrame({"image_id": ids, "L0": y[:, 0], "L1": y[:, 1], "abnormal": y[:, 2]})
    probs = pd.DataFrame({"image_id": ids[::-1], "L0": p[::-1, 0], "L1": p[::-1, 1], "abnormal": p[::-1, 2]})
    r = evaluate_cls(labels, probs, n_boot=100)
    for j, c in enumerate(["L0", "L1", "abnormal"]):
        k = ~np.isnan(y[:, j])
        assert r["per_label"][c]["auc"] == pytest.approx(roc_auc_score(y[k, j], p[k, j]), abs=1e-12)
        lo, hi = r["per_label"][c]["auc_ci"]
        assert lo <= r["per_label"][c]["auc"] <= hi
    k = ~np.isnan(y[:, :2])
    assert r["micro_auc"] == pytest.approx(roc_auc_score(y[:, :2][k], p[:, :2][k]), abs=1e-12)
    assert r["macro_auc"] == pytest.approx(np.mean([r["per_label"][c]["auc"] for c in ("L0", "L1")]))
    yk, pk = y[:, 1][~np.isnan(y[:, 1])], np.round(p[:, 1][~np.isnan(y[:, 1])], 2)  # rounded: many ties
    assert bootstrap_auc_ci(yk, pk, 100, seed=1) == bootstrap_auc_ci(yk, pk, 100, seed=1)
    # the bootstrap's rank form of the AUC is sklearn's on every resample (one resample = the interval
    # of a single draw): same seed -> same indices
    idx = np.random.default_rng(5).integers(0, len(yk), size=(1, len(yk)))[0]
    lo, hi = bootstrap_auc_ci(yk, pk, 1, seed=5)
    assert lo == hi == pytest.approx(roc_auc_score(yk[idx], pk[idx]), abs=1e-12)


def test_evaluate_cls_cli_json_keys_and_plot(trained, prep_dir, tmp_path):
    t = classify(trained, prep_dir / "images", prep_dir / "meta.csv", size=48)
    write_csv(t, tmp_path / "probs.csv")
    js, plots = tmp_path / "m.json", tmp_path / "plots"
    assert cli(["evaluate-cls", "--labels", str(prep_dir / "image_labels.csv"), "--probs", str(tmp_path / "probs.csv"),
                "--folds", str(prep_dir / "folds.csv"), "--fold", "0", "--json", str(js), "--plots", str(plots),
                "--n-boot", "200"]) == 0
    r = json.loads(js.read_text())
    assert {"per_label", "macro_auc", "micro_auc"} <= set(r)
    assert set(r["per_label"]) == {"A", "B", "abnormal"}
    for v in r["per_label"].values():
        assert set(v) == {"auc", "auc_ci", "f1", "threshold", "prevalence", "n_pos"}
    assert r["n_images"] == N // 2
    # fold 0 AUCs equal the checkpoint's own validation AUCs (best.pt is stored in float16: to 1e-6 of rank ties)
    ck = load_checkpoint(trained)
    for c, a in ck["per_label_auc"].items():
        assert r["per_label"][c]["auc"] == pytest.approx(a, abs=0.05)
    img = cv2.imread(str(plots / "roc_curves.png"))
    assert img is not None and img.shape[0] > 200


# ----------------------------------------------------------------------------- fusion
def _boxes():
    from data_prep.core.boxes import make_boxes

    return pd.concat([make_boxes("i1", [0, 0, 1], ["A", "A", "C"], [[0, 0, 5, 5]] * 3, score=[0.8, 0.5, 0.9]),
                      make_boxes("i2", [0], ["A"], [[1, 1, 4, 4]], score=[0.6])], ignore_index=True)


def _post(**kw) -> dict:
    return {"cls_low": 0.0, "cls_high": 0.0, **kw}  # low = high = 0: the 2-class filter off


def test_fusion_formula_hand_case():
    probs = pd.DataFrame({"image_id": ["i1"], "A": [0.5], "abnormal": [0.9]})
    out = post_apply(_boxes(), probs, _post(cls_fusion="multiply", alpha=2.0), (14, "No finding"))
    got = dict(zip(zip(out["image_id"], out["class_name"], out["x_max"]), out["score"]))
    # score * p_class ** alpha: A on i1 * 0.5 ** 2; C has no column and i2 no row: unchanged
    assert sorted(out["score"].round(9).tolist()) == sorted([0.8 * 0.25, 0.5 * 0.25, 0.9, 0.6])
    assert got[("i1", "C", 5.0)] == pytest.approx(0.9) and got[("i2", "A", 4.0)] == pytest.approx(0.6)
    same = post_apply(_boxes(), probs, _post(cls_fusion="multiply", alpha=0.0), (14, "No finding"))
    assert sorted(same["score"].tolist()) == pytest.approx(sorted([0.8, 0.5, 0.9, 0.6]))
    half = post_apply(_boxes(), probs, _post(cls_fusion="multiply", alpha=0.5), (14, "No finding"))
    assert np.isclose(half["score"].to_numpy(), 0.8 * 0.5 ** 0.5).sum() == 1


def test_multilabel_abnormal_drives_the_filter():
    probs = pd.DataFrame({"image_id": ["i1", "i2"], "A": [0.5, 0.9], "abnormal": [0.5, 0.01]})
    out = post_apply(_boxes(), probs, {"cls_fusion": "multiply", "alpha": 1.0, "cls_low": 0.08, "cls_high": 0.95},
                     (14, "No finding"))
    i1 = out[out["image_id"] == "i1"]
    # i1: boxes fused (A * 0.5) and a "No finding" row at 1 - p(abnormal); i2: p < low -> normal only
    assert sorted(i1["score"].round(6).tolist()) == [0.25, 0.4, 0.5, 0.9]
    assert out[out["image_id"] == "i2"][["class_id", "score"]].to_numpy().tolist() == [[14, 1.0]]


def test_predict_with_multilabel_classifier(tmp_path, repo_root):
    """predict --classifier multilabel.pt: its probabilities table drives the filter and the fusion,
    the same as applying that table to the classifier-free predictions."""
    import torch

    from data_prep.datasets import vinbigdata
    from detection.engine.classifier import FORMAT, build_model
    from detection.engine.predict import predict

    labels = list(vinbigdata.CLASSES) + [ABNORMAL]
    torch.manual_seed(0)
    m = build_model("test_resnet", len(labels))
    ck = {"format": FORMAT, "arch": "test_resnet", "labels": labels, "imgsz": 32, "in_chans": 1, "mean": 0.5,
          "std": 0.25, "state_dict": m.state_dict(), "epoch": 0, "val_auc": 0.5, "per_label_auc": {}}
    torch.save(ck, tmp_path / "ml.pt")
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(src / f"x{i}.png"), rng.integers(0, 255, (128, 128), dtype=np.uint8))
    det = repo_root / "weights" / "vinbig_phantom_yolo11n.pt"
    kw = dict(imgsz=128, conf=0.0001, cls_low=0.0, cls_high=1.0, normal=(14, "No finding"))  # no default normal class
    plain = predict(det, src, cls_low=0.0, cls_high=0.0, imgsz=128, conf=0.0001)
    fused = predict(det, src, classifier=tmp_path / "ml.pt", post={"cls_fusion": "multiply", "alpha": 1.0}, **kw)
    probs = fused.attrs["cls_probs"]
    assert list(probs.columns) == ["image_id", ABNORMAL, *vinbigdata.CLASSES] and len(probs) == 2  # issue 25: abnormal first
    want = post_apply(plain, probs, {"cls_fusion": "multiply", "alpha": 1.0, "cls_low": 0.0, "cls_high": 1.0},
                      (14, "No finding"))
    pd.testing.assert_frame_equal(fused.reset_index(drop=True), want, check_dtype=False)
    assert not fused[fused["class_id"] != 14]["score"].equals(plain["score"])  # the fusion changed scores
    assert (fused["class_id"] == 14).sum() == 2  # low <= p < high: a "No finding" row per image at 1 - p
