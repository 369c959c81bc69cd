"""Detector families (detection/models): torchvision's tv:<name>, ultralytics' RT-DETR, beside YOLO.

Fast tests use an untrained tv: checkpoint (built and saved here, no training) and the shipped YOLO
weights; the slow ones train each family one epoch on tiny phantoms (make_prep) offline.
"""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BOX_COLUMNS = ["image_id", "class_id", "class_name", "x_min", "y_min", "x_max", "y_max", "score", "rater"]
TV_FAST = "fasterrcnn_mobilenet_v3_large_320_fpn"
TV_LIMITS = {"rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50, "rpn_pre_nms_top_n_train": 100,
             "rpn_post_nms_top_n_train": 50, "box_batch_size_per_image": 32}
RTDETR_TINY = Path(__file__).parent / "data" / "rtdetr-tiny.yaml"
YOLO_PT = Path(__file__).resolve().parents[1] / "weights" / "vinbig_phantom_yolo11n.pt"


def _tv_checkpoint(path: Path, names: dict, imgsz: int = 128, seed: int = 0) -> Path:
    """An untrained tv: checkpoint as `cxrdet train` writes it (random weights, fixed seed)."""
    import torch

    from detection.models import tv

    torch.manual_seed(seed)
    m = tv.build(TV_FAST, len(names), imgsz, TV_LIMITS)
    ck = tv.checkpoint(m, TV_FAST, names, imgsz, TV_LIMITS, epoch=-1, train_args={"epochs": 1, "data": "x.json"})
    return tv.save(ck, path)


@pytest.fixture(scope="module")
def yolo_names():
    from detection.runtime import open_yolo

    return {int(k): v for k, v in open_yolo(YOLO_PT).names.items()}


@pytest.fixture(scope="module")
def tv_pt(tmp_path_factory, yolo_names):
    return _tv_checkpoint(tmp_path_factory.mktemp("tv") / "tv.pt", yolo_names)


# ----------------------------------------------------------------------------- which family
def test_family_of_specs_and_files(tv_pt):
    from detection.models import family, weights_family

    assert family("tv:fcos_resnet50_fpn") == "tv"
    assert family("yolo11n.yaml") == "yolo"
    assert family("rtdetr-l.yaml") == "rtdetr"             # ultralytics' bundled RT-DETR YAML
    assert family(str(RTDETR_TINY)) == "rtdetr"            # any YAML whose head is RTDETRDecoder
    assert weights_family(tv_pt) == "tv" and family(str(tv_pt)) == "tv"
    assert weights_family(YOLO_PT) == "yolo"


def test_unknown_tv_name_is_one_line_listing_the_registry(tmp_path, make_prep, capsys):
    from detection.cli import main

    prep = make_prep(tmp_path / "prep", n=4)
    rc = main(["train", "vinbigdata", "--prep", str(prep), "model=tv:fasterrcnn_resnet5", "device=cpu",
               f"project={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "tv:fasterrcnn_resnet5" in err and "fasterrcnn_resnet50_fpn_v2" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_tv_checkpoint_is_plain_data(tv_pt, yolo_names):
    """It loads with weights_only=True and records family, classes and image size; no pickled class."""
    import torch

    ck = torch.load(tv_pt, map_location="cpu", weights_only=True)
    assert ck["cxrdet_family"] == "tv" and ck["arch"] == TV_FAST and ck["imgsz"] == 128
    assert ck["names"] == yolo_names
    with zipfile.ZipFile(tv_pt) as z:
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"torchvision" not in pkl and b"ultralytics" not in pkl


def test_backbone_weights_load_and_bad_file_is_named(tmp_path):
    import torch
    import torchvision

    from data_prep.errors import InputError
    from detection.models import tv

    torch.manual_seed(1)
    mob = torchvision.models.mobilenet_v3_large(weights=None)
    torch.save(mob.state_dict(), tmp_path / "mobilenet.pth")
    m = tv.build(TV_FAST, 2, 128, TV_LIMITS)
    n = tv.load_backbone(m, tmp_path / "mobilenet.pth")
    assert n > 100   # the feature extractor's tensors
    got = m.backbone.body.state_dict()
    k = next(k for k in got if k.endswith("weight") and got[k].ndim == 4)
    assert torch.equal(got[k], mob.state_dict()[f"features.{k}"])
    torch.save({"x": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="other.pth.*matches the backbone"):
        tv.load_backbone(m, tmp_path / "other.pth")


# ----------------------------------------------------------------------------- downstream stages, no training
def _pngs(tmp_path, n=3, size=96):
    import cv2

    d = tmp_path / "pngs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        im = (rng.random((size, size)) * 60).astype(np.uint8)
        im[20:50, 30:70] = 220
        cv2.imwrite(str(d / f"p{i}.png"), im)
    return d


def test_tv_predicts_png_and_dicom_the_box_table(tmp_path, tv_pt, write_dicom):
    from detection.predict import infer, predict

    src = _pngs(tmp_path)
    out = predict(str(tv_pt), src, device="cpu", conf=0.01)
    assert list(out.columns) == BOX_COLUMNS and len(out) and set(out["image_id"]) <= {"p0", "p1", "p2"}
    assert out["score"].between(0.01, 1).all()
    tta = infer(str(tv_pt), src, device="cpu", conf=0.01, tta=True).raw
    assert list(tta.columns) == BOX_COLUMNS and len(tta)
    arr = np.zeros((300, 200), np.uint16)
    arr[100:200, 50:150] = 3000
    dcm = tmp_path / "dcm"
    dcm.mkdir()
    write_dicom(dcm / "d0.dcm", arr)
    out = predict(str(tv_pt), dcm, device="cpu", conf=0.01, size=128)
    assert list(out.columns) == BOX_COLUMNS and len(out)
    assert (out["x_max"] <= 200 + 1e-6).all() and (out["y_max"] <= 300 + 1e-6).all()   # original pixels


def test_mixed_family_ensemble_equals_ensemble_boxes_wbf(tmp_path, tv_pt):
    """predict --weights YOLO TV with ens_weights = ensemble-boxes' WBF of the two members' raw tables."""
    from ensemble_boxes import weighted_boxes_fusion

    from detection.predict import infer

    src = _pngs(tmp_path)
    kw = dict(device="cpu", conf=0.05, imgsz=128)
    a = infer(str(YOLO_PT), src, **kw).raw
    b = infer(str(tv_pt), src, **kw).raw
    assert len(a) and len(b)
    post = {"ens_weights": [2.0, 1.0], "ens_iou": 0.5, "ens_skip": 0.0001}
    got = infer([str(YOLO_PT), str(tv_pt)], src, post=post, ens_iou=0.5, **kw).raw
    h, w = 96, 96   # no meta: the PNG is the original image
    for iid in ["p0", "p1", "p2"]:
        bl, sl, ll = [], [], []
        for t in (a, b):
            t = t[t["image_id"] == iid]
            bl.append(t[["x_min", "y_min", "x_max", "y_max"]].to_numpy() / [w, h, w, h])
            sl.append(t["score"].to_numpy())
            ll.append(t["class_id"].to_numpy())
        fb, fs, fl = weighted_boxes_fusion(bl, sl, ll, weights=[2.0, 1.0], iou_thr=0.5, skip_box_thr=0.0001)
        g = got[got["image_id"] == iid].sort_values(["score", "x_min"], ascending=[False, True])
        ref = pd.DataFrame(fb * [w, h, w, h], columns=["x_min", "y_min", "x_max", "y_max"]).assign(score=fs, class_id=fl)
        ref = ref.sort_values(["score", "x_min"], ascending=[False, True])
        assert len(g) == len(ref)
        np.testing.assert_allclose(g[["x_min", "y_min", "x_max", "y_max"]].to_numpy(),
                                   ref[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), atol=1e-3)
        np.testing.assert_allclose(g["score"].to_numpy(), ref["score"].to_numpy(), atol=1e-6)
        assert (g["class_id"].to_numpy() == ref["class_id"].to_numpy().astype(int)).all()


@pytest.mark.slow
def test_tv_checkpoint_exports_to_onnx_and_predicts(tmp_path, tv_pt):
    from detection.models import weights_family
    from detection.predict import infer

    pt = shutil.copy(tv_pt, tmp_path / "m.pt")
    src = _pngs(tmp_path, size=128)
    from detection.cli import main

    assert main(["export", str(pt), "imgsz=128", "--out", str(tmp_path / "m.onnx")]) == 0
    assert weights_family(tmp_path / "m.onnx") == "tv"
    kw = dict(device="cpu", conf=0.05, imgsz=128)
    a = infer(str(pt), src, **kw).raw
    b = infer(str(tmp_path / "m.onnx"), src, **kw).raw
    # an untrained model scores hundreds of boxes equally (to 1e-7): which of them survive NMS is a
    # tie broken differently by torch and onnxruntime, so only the trained model (slow test below)
    # is compared box by box; here: the same columns, the same top score, about as many boxes
    assert list(b.columns) == BOX_COLUMNS and len(a) and len(b)
    assert abs(a["score"].max() - b["score"].max()) < 1e-4 and abs(len(a) - len(b)) <= 0.1 * len(a)


def _same_boxes(a: pd.DataFrame, b: pd.DataFrame, px: float, score: float) -> None:
    """Every box of ``a`` has one in ``b`` (same image and class) within ``px`` pixels and ``score``
    (near-tied scores of an untrained model may come out in another order)."""
    cols = ["x_min", "y_min", "x_max", "y_max"]
    left = b.copy()
    for r in a.itertuples():
        c = left[(left["image_id"] == r.image_id) & (left["class_id"] == r.class_id)]
        d = np.abs(c[cols].to_numpy() - [r.x_min, r.y_min, r.x_max, r.y_max]).max(1)
        ok = (d <= px) & (np.abs(c["score"].to_numpy() - r.score) <= score)
        assert ok.any(), f"no match for {r}"
        left = left.drop(c.index[np.flatnonzero(ok)[0]])
    assert left.empty


# ----------------------------------------------------------------------------- training (slow)
def _trained(tmp_path, make_prep, tiny_cfg, model, **kw):
    from detection.train import train_detector

    prep = make_prep(tmp_path / "prep", n=6, png=64)
    cfg = tiny_cfg(tmp_path, model=model, imgsz=64, batch=4, **kw)
    return prep, cfg, Path(train_detector(cfg, prep, 0))


@pytest.mark.slow
def test_tv_trains_validates_resumes_predicts_and_exports(tmp_path, make_prep, tiny_cfg):
    import torch

    from detection.predict import infer
    from detection.train import checkpoint_finished, train_detector, trained_on, train_list

    class Stop(Exception):
        pass

    def stop(state):
        raise Stop

    prep = make_prep(tmp_path / "prep", n=6, png=64)
    cfg = tiny_cfg(tmp_path, model=f"tv:{TV_FAST}", imgsz=64, batch=4, epochs=2, tv_args=TV_LIMITS)
    with pytest.raises(Stop):   # killed after its first epoch
        train_detector(cfg, prep, 0, callbacks={"on_fit_epoch_end": stop})
    run = tmp_path / "runs" / "vinbigdata_fold0"
    assert not checkpoint_finished(run / "weights" / "last.pt")
    best = Path(train_detector({**cfg, "resume": True}, prep, 0))
    comp = pd.read_csv(run / "competition.csv")
    assert comp["epoch"].tolist() == [1, 2] and (comp["metric"] == "vinbigdata").all()
    ck = torch.load(best, map_location="cpu", weights_only=True)
    assert ck["cxrdet_family"] == "tv" and ck["imgsz"] == 64 and ck["names"] == {0: "Aortic enlargement",
                                                                                  1: "Atelectasis"}
    assert ck["epoch"] + 1 == int(comp.loc[comp["score"].idxmax(), "epoch"])   # best.pt = the best scored epoch
    assert checkpoint_finished(run / "weights" / "last.pt")
    assert sorted(p.stem for p in train_list(trained_on(best))) == ["img001", "img003", "img005"]
    raw = infer(str(best), prep / "images", device="cpu").raw
    assert list(raw.columns) == BOX_COLUMNS
    from detection.export_onnx import export_onnx

    onnx = export_onnx(best, imgsz=64)
    _same_boxes(raw, infer(str(onnx), prep / "images", device="cpu").raw, px=0.5, score=1e-3)


@pytest.mark.slow
def test_rtdetr_trains_predicts_and_exports(tmp_path, make_prep, tiny_cfg):
    from detection.export_onnx import export_onnx
    from detection.models import weights_family
    from detection.predict import infer

    prep, cfg, best = _trained(tmp_path, make_prep, tiny_cfg, str(RTDETR_TINY))
    assert weights_family(best) == "rtdetr"
    comp = pd.read_csv(best.parents[1] / "competition.csv")
    assert comp["epoch"].tolist() == [1]
    a = infer(str(best), prep / "images", device="cpu", imgsz=64).raw
    assert list(a.columns) == BOX_COLUMNS and len(a)
    onnx = export_onnx(best, imgsz=64)
    assert weights_family(onnx) == "rtdetr"
    b = infer(str(onnx), prep / "images", device="cpu", imgsz=64).raw
    assert len(a) == len(b)
    _same_boxes(a, b, px=0.5, score=1e-3)


@pytest.mark.slow   # starts a LocalCluster whose workers load torch and both models
def test_mixed_family_ensemble_on_a_local_cluster_equals_the_local_run(tmp_path, tv_pt):
    from detection.predict import infer

    src = _pngs(tmp_path, n=4)
    kw = dict(device="cpu", conf=0.05, imgsz=128, post={"ens_weights": [2.0, 1.0]}, tta=True)
    a = infer([str(YOLO_PT), str(tv_pt)], src, **kw).raw
    b = infer([str(YOLO_PT), str(tv_pt)], src, scheduler="local", workers=2, **kw).raw
    assert len(a) == len(b) > 0 and a.image_id.tolist() == b.image_id.tolist()
    np.testing.assert_allclose(b[["x_min", "y_min", "x_max", "y_max"]].to_numpy(),
                               a[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), atol=1e-4)
    np.testing.assert_allclose(b["score"].to_numpy(), a["score"].to_numpy(), atol=1e-5)


@pytest.mark.slow   # two tv: trainings
def test_cv_of_a_tv_model_covers_every_image_and_reuses_its_folds(tmp_path, make_prep, tiny_cfg):
    import json

    from detection.cv import cross_validate

    prep = make_prep(tmp_path / "prep", n=6, png=64)
    cfg = tiny_cfg(tmp_path, model=f"tv:{TV_FAST}", imgsz=64, batch=4, tv_args=TV_LIMITS)
    res = cross_validate(cfg, prep, "0,1")
    oof = pd.read_csv(prep / "cv" / "oof.csv", dtype={"image_id": str})
    assert set(oof["fold"]) == {0, 1} and res["oof"]["n_images"] == 6
    cvj = json.loads((prep / "cv" / "cv.json").read_text())
    assert [Path(f["weights"]).parts[-3] for f in cvj["folds"]] == ["vinbigdata_fold0", "vinbigdata_fold1"]
    assert [f["n_train"] for f in cvj["folds"]] == [3, 3]   # leak-checked against the COCO list it trained on
    stamps = [(tmp_path / "runs" / f"vinbigdata_fold{k}" / "weights" / "best.pt").stat().st_mtime_ns for k in (0, 1)]
    cross_validate(cfg, prep, "0,1")
    assert stamps == [(tmp_path / "runs" / f"vinbigdata_fold{k}" / "weights" / "best.pt").stat().st_mtime_ns
                      for k in (0, 1)]
