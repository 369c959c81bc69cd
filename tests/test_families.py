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
    from detection.models.runtime import open_yolo

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
    rc = main(["train", "--config", "vinbigdata", "--prep", str(prep), "model=tv:fasterrcnn_resnet5", "device=cpu",
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

    from data_prep.core.errors import InputError
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
    from detection.engine.predict import infer, predict

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


def _wbf_reference(tables, sizes, weights, iou, skip, conf_type) -> pd.DataFrame:
    """ensemble-boxes' WBF of the members' raw tables, image by image, on boxes normalised by the
    original (height, width) in ``sizes`` ({image_id: (h, w)}); mapped back to pixels."""
    from ensemble_boxes import weighted_boxes_fusion

    cols = ["x_min", "y_min", "x_max", "y_max"]
    out = []
    for iid, (h, w) in sizes.items():
        bl, sl, ll = [], [], []
        for t in tables:
            t = t[t["image_id"] == iid]
            bl.append(t[cols].to_numpy() / [w, h, w, h])
            sl.append(t["score"].to_numpy())
            ll.append(t["class_id"].to_numpy())
        if not any(len(b) for b in bl):
            continue
        fb, fs, fl = weighted_boxes_fusion(bl, sl, ll, weights=weights, iou_thr=iou, skip_box_thr=skip,
                                           conf_type=conf_type)
        out.append(pd.DataFrame(fb * [w, h, w, h], columns=cols).assign(score=fs, class_id=fl.astype(int),
                                                                          image_id=iid))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=[*cols, "score", "class_id", "image_id"])


def _assert_same_table(got: pd.DataFrame, ref: pd.DataFrame, px: float = 1e-3) -> None:
    """The same boxes (image, class, xyxy within ``px``, score within 1e-6) in any row order."""
    key = ["image_id", "score", "x_min", "y_min"]
    g = got.sort_values(key).reset_index(drop=True)
    r = ref.sort_values(key).reset_index(drop=True)
    assert len(g) == len(r) and g["image_id"].tolist() == r["image_id"].tolist()
    cols = ["x_min", "y_min", "x_max", "y_max"]
    np.testing.assert_allclose(g[cols].to_numpy(float), r[cols].to_numpy(float), atol=px)
    np.testing.assert_allclose(g["score"].to_numpy(float), r["score"].to_numpy(float), atol=1e-6)
    assert g["class_id"].astype(int).tolist() == r["class_id"].astype(int).tolist()


def test_mixed_family_ensemble_equals_ensemble_boxes_wbf(tmp_path, tv_pt):
    """predict --weights YOLO TV with ens_weights = ensemble-boxes' WBF of the two members' raw tables."""
    from detection.engine.predict import infer

    src = _pngs(tmp_path)
    kw = dict(device="cpu", conf=0.05, imgsz=128)
    a = infer(str(YOLO_PT), src, **kw).raw
    b = infer(str(tv_pt), src, **kw).raw
    assert len(a) and len(b)
    post = {"ens_weights": [2.0, 1.0], "ens_iou": 0.5, "ens_skip": 0.0001}
    got = infer([str(YOLO_PT), str(tv_pt)], src, post=post, ens_iou=0.5, **kw).raw
    sizes = {iid: (96, 96) for iid in ["p0", "p1", "p2"]}   # no meta: the PNG is the original image
    ref = _wbf_reference([a, b], sizes, [2.0, 1.0], 0.5, 0.0001, "avg")
    assert len(ref)
    _assert_same_table(got, ref)


@pytest.mark.slow
def test_tv_checkpoint_exports_to_onnx_and_predicts(tmp_path, tv_pt):
    from detection.models import weights_family
    from detection.engine.predict import infer

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
    from detection.engine.train import train_detector

    prep = make_prep(tmp_path / "prep", n=6, png=64)
    cfg = tiny_cfg(tmp_path, model=model, imgsz=64, batch=4, **kw)
    return prep, cfg, Path(train_detector(cfg, prep, 0))


@pytest.mark.slow
def test_tv_trains_validates_resumes_predicts_and_exports(tmp_path, make_prep, tiny_cfg):
    import torch

    from detection.engine.predict import infer
    from detection.engine.train import checkpoint_finished, train_detector, trained_on, train_list

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
    from detection.engine.export import export_onnx

    onnx = export_onnx(best, imgsz=64)
    _same_boxes(raw, infer(str(onnx), prep / "images", device="cpu").raw, px=0.5, score=1e-3)


# ----------------------------------------------------------------------------- every family, trained (slow)
FAMILY_MODELS = {"yolo": "yolo11n.yaml", "rtdetr": str(RTDETR_TINY), "tv": f"tv:{TV_FAST}"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, make_prep, tiny_cfg):
    """``trained(family) -> best.pt``: that family trained one epoch (64 px, batch 4) on the same
    6 phantoms (``trained.prep``), offline; each family is trained once per module, when first asked."""
    from detection.engine.train import train_detector

    root = tmp_path_factory.mktemp("families")
    prep = make_prep(root / "prep", n=6, png=64)
    done: dict[str, Path] = {}

    def get(fam: str) -> Path:
        if fam not in done:
            kw = {"tv_args": TV_LIMITS} if fam == "tv" else {}
            cfg = tiny_cfg(root, model=FAMILY_MODELS[fam], imgsz=64, batch=4, name=fam, **kw)
            done[fam] = Path(train_detector(cfg, prep, 0))
        return done[fam]

    get.prep = prep
    return get


def _dicoms_of(prep: Path, dst: Path, write_dicom) -> Path:
    """The prep PNGs as 12-bit DICOMs of the original size (320 x 240) in ``dst``."""
    import cv2

    meta = pd.read_csv(prep / "meta.csv")
    for r in meta.itertuples():
        im = cv2.imread(str(prep / "images" / f"{r.image_id}.png"), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(im, (int(r.width), int(r.height)), interpolation=cv2.INTER_NEAREST).astype(np.uint16) * 16
        write_dicom(dst / f"{r.image_id}.dcm", big)
    return dst


@pytest.mark.slow   # trains each family one epoch (module fixture), exports it to ONNX
@pytest.mark.parametrize("fam", list(FAMILY_MODELS))
def test_each_family_trains_and_round_trips_predict_and_export(fam, trained, tmp_path, write_dicom):
    """One epoch offline -> a checkpoint that records family, classes and image size; it predicts the
    box table (CLI --raw = infer's raw table) from PNGs and from DICOMs (= the same DICOMs converted by
    `cxrdet convert`, then predicted as PNGs), TTA = WBF of the plain and the mirrored predictions,
    and its ONNX export gives the torch model's boxes."""
    import cv2

    from data_prep.dicom.convert import convert_folder
    from detection.cli import main
    from detection.engine.export import export_onnx
    from detection.models import open_model, weights_family
    from detection.engine.predict import infer

    best, prep = trained(fam), trained.prep
    assert weights_family(best) == fam
    comp = pd.read_csv(best.parents[1] / "competition.csv")
    assert comp["epoch"].tolist() == [1] and (comp["metric"] == "vinbigdata").all()
    m = open_model(best)
    assert {int(k): v for k, v in m.names.items()} == {0: "Aortic enlargement", 1: "Atelectasis"}
    assert int(m.overrides["imgsz"]) == 64

    # PNG source through the CLI: --raw is infer's raw table, in original pixels (meta.csv: 320 x 240)
    conf = "0.001"
    raw_csv, out_csv = tmp_path / "raw.csv", tmp_path / "out.csv"
    assert main(["predict", "--weights", str(best), "--source", str(prep / "images"), "--raw", str(raw_csv),
                 "--out", str(out_csv), f"conf={conf}", "device=cpu"]) == 0
    raw = pd.read_csv(raw_csv, dtype={"image_id": str})
    assert list(raw.columns) == BOX_COLUMNS and len(raw) and set(raw["image_id"]) <= {f"img{i:03d}" for i in range(6)}
    assert list(pd.read_csv(out_csv).columns) == BOX_COLUMNS
    assert (raw["x_max"] <= 240 + 1e-6).all() and (raw["y_max"] <= 320 + 1e-6).all() and (raw["score"] >= 0.001).all()
    kw = dict(device="cpu", conf=float(conf))
    mine = infer(str(best), prep / "images", **kw).raw
    _assert_same_table(raw, mine)

    # DICOM source = the same DICOMs converted to PNG (+ meta.csv) and predicted as PNGs
    dcm = _dicoms_of(prep, tmp_path / "dcm", write_dicom)
    convert_folder(dcm, tmp_path / "conv", size=64, workers=1, progress=False)
    a = infer(str(best), dcm, size=64, **kw).raw
    b = infer(str(best), tmp_path / "conv", **kw).raw
    assert list(a.columns) == BOX_COLUMNS and len(a)
    _assert_same_table(a, b)

    # TTA: WBF (weights 1, 1) of the plain view and the mirrored PNGs' boxes mirrored back
    flip = tmp_path / "flip"
    flip.mkdir()
    for p in (prep / "images").glob("*.png"):
        cv2.imwrite(str(flip / p.name), cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)[:, ::-1])
    shutil.copy(prep / "meta.csv", flip / "meta.csv")
    back = infer(str(best), flip, **kw).raw
    back[["x_min", "x_max"]] = 240 - back[["x_max", "x_min"]].to_numpy()
    sizes = {f"img{i:03d}": (320, 240) for i in range(6)}
    tta = infer(str(best), prep / "images", tta=True, ens_iou=0.55, ens_skip=0.0001, **kw).raw
    assert len(tta)
    _assert_same_table(tta, _wbf_reference([mine, back], sizes, None, 0.55, 0.0001, "avg"))

    # ONNX export: the network's output and the box table equal the torch checkpoint's
    onnx = export_onnx(best, imgsz=64, out=tmp_path / f"{fam}.onnx")
    assert weights_family(onnx) == fam
    if fam != "tv":   # ultralytics' graph ends before NMS: compare that tensor (tv's graph is compared by its boxes)
        _onnx_output_equals_torch(best, onnx, prep / "images" / "img001.png")
    ox = infer(str(onnx), prep / "images", **kw).raw
    assert list(ox.columns) == BOX_COLUMNS
    if fam == "yolo":
        # one epoch of YOLO from scratch scores dozens of whole-image boxes equally (to 1e-7): which
        # survive NMS is a tie that torch and onnxruntime break differently; the top box per image is not
        top = lambda t: t.groupby("image_id")["score"].max()  # noqa: E731
        pd.testing.assert_series_equal(top(ox), top(mine), atol=1e-4)
    else:
        _same_boxes(mine, ox, px=0.5, score=1e-3)


def _onnx_output_equals_torch(pt: Path, onnx: Path, png: Path) -> None:
    """An ultralytics checkpoint and its ONNX give the same output tensor for the same input."""
    import cv2
    import onnxruntime as ort
    import torch

    from detection.models.runtime import open_yolo

    m = open_yolo(pt).model.float().eval()
    x = torch.from_numpy(cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)[None, None].astype(np.float32) / 255)
    with torch.no_grad():
        y = m(x)
    y = (y[0] if isinstance(y, (list, tuple)) else y).numpy()
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    o = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert o.shape == y.shape
    np.testing.assert_allclose(o, y, rtol=1e-4, atol=1e-4)


@pytest.mark.slow   # needs the three trained families
@pytest.mark.parametrize("conf_type", ["avg", "max", "box_and_model_avg", "absent_model_aware_avg"])
def test_three_family_ensemble_equals_ensemble_boxes_wbf(conf_type, trained):
    """predict --weights YOLO RT-DETR TV (trained) with ens_weights/ens_iou/ens_skip/ens_conf_type =
    ensemble-boxes' WBF of the three members' raw tables with the same settings."""
    from detection.engine.predict import infer

    ws = [str(trained(f)) for f in FAMILY_MODELS]
    src = trained.prep / "images"
    kw = dict(device="cpu", conf=0.001)
    members = [infer(w, src, **kw).raw for w in ws]
    assert all(len(t) for t in members)
    post = {"ens_weights": [3.0, 1.0, 2.0], "ens_conf_type": conf_type}
    got = infer(ws, src, post=post, ens_iou=0.4, ens_skip=0.002, **kw).raw
    sizes = {f"img{i:03d}": (320, 240) for i in range(6)}
    ref = _wbf_reference(members, sizes, [3.0, 1.0, 2.0], 0.4, 0.002, conf_type)
    assert len(ref) and list(got.columns) == BOX_COLUMNS
    _assert_same_table(got, ref)


@pytest.mark.slow   # starts a LocalCluster whose workers load torch and both models
def test_mixed_family_ensemble_on_a_local_cluster_equals_the_local_run(tmp_path, tv_pt):
    from detection.engine.predict import infer

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

    from detection.competition.cv import cross_validate

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
