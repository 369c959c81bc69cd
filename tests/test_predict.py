"""Prediction: PNG-frame -> original-pixel mapping, TTA un-flip, WBF ensembles, the 2-class filter,
DICOM vs PNG sources, ONNX, the CLI, and the end-to-end synth -> prep -> train -> predict -> submit.

Geometry tests use a FAKE detector (bright-pixel bounding box, in whatever frame it is given) so
that the expected boxes are known exactly; real ultralytics models are used for ONNX and the
end-to-end run.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

import detection.engine.predict as P
import detection.engine.predict_batch as PB   # the batch: where predict looks its steps up
import detection.engine.predict_models as PM
from data_prep.core.boxes import BOX_COLUMNS, Frame, frame_for, keep_ratio_size, to_frame
from data_prep.datasets import describe


NAMES = {0: "Aortic enlargement", 1: "Atelectasis"}
NF = describe("vinbigdata").normal   # predict has no default normal class (issue 28)


# ----------------------------------------------------------------------------- fakes


def _square_pngs(root: Path, orig_hw=(320, 240), png_hw=(128, 128), boxes=None):
    """PNGs in a ``png_hw`` frame of ``orig_hw`` originals, with bright squares drawn at the given
    ORIGINAL boxes (rounded to PNG pixels) + meta.csv. Returns {image_id: drawn box in PNG px}."""
    root.mkdir(parents=True, exist_ok=True)
    frame = Frame(png_hw[0] / orig_hw[0], png_hw[1] / orig_hw[1], 0, 0, *png_hw)
    drawn, meta = {}, []
    for i, b in enumerate(boxes or [[30, 40, 110, 150], [120, 200, 230, 300], None]):
        iid = f"im{i}"
        im = np.full(png_hw, 40, np.uint8)
        if b is not None:
            x0, y0, x1, y1 = np.round(to_frame([b], frame)[0]).astype(int)
            im[y0:y1, x0:x1] = 230
            drawn[iid] = (x0, y0, x1, y1)
        cv2.imwrite(str(root / f"{iid}.png"), im)
        meta.append({"image_id": iid, "height": orig_hw[0], "width": orig_hw[1],
                     "png_height": png_hw[0], "png_width": png_hw[1]})
    pd.DataFrame(meta).to_csv(root / "meta.csv", index=False)
    return drawn, frame


# ----------------------------------------------------------------------------- pure mapping
@pytest.mark.parametrize("keep_ratio", [False, True])
@pytest.mark.parametrize("hw", [(2880, 2304), (1024, 1024), (2000, 2500)])
def test_prediction_in_png_frame_maps_back_to_original(fake_result, keep_ratio, hw):
    """A known original box -> PNG frame (as prep resizes) -> fake ultralytics result -> original."""
    h, w = hw
    ph, pw = keep_ratio_size(h, w, 512) if keep_ratio else (512, 512)
    frame = Frame(ph / h, pw / w, 0, 0, ph, pw)  # what load_image builds from meta.csv
    assert frame == frame_for(h, w, 512, keep_ratio)  # the same Frame data_prep.core.boxes gives prep
    orig = np.array([[100.0, 200.0, 900.0, 1000.0], [0.0, 0.0, w, h]])
    png_box = to_frame(orig, frame)
    v = P.view_from_result(fake_result(png_box, [0.8, 0.5], [3, 7]), frame, hw)
    np.testing.assert_allclose(v.xyxy, orig, atol=1.0)
    np.testing.assert_allclose(v.scores, [0.8, 0.5], atol=1e-6)
    assert v.labels.tolist() == [3, 7]
    # rounding the PNG box to whole PNG pixels costs at most 0.5 / scale original px
    v = P.view_from_result(fake_result(np.round(png_box), [0.8, 0.5], [3, 7]), frame, hw)
    assert np.abs(v.xyxy - orig).max() <= 0.5 / min(frame.sx, frame.sy) + 1e-9


def test_boxes_outside_the_image_are_clipped(fake_result):
    frame = Frame(0.5, 0.25, 0, 0, 100, 50)  # original 200 x 200
    v = P.view_from_result(fake_result([[-5, -3, 60, 120]], [0.5], [0]), frame, (200, 200))
    np.testing.assert_allclose(v.xyxy, [[0, 0, 200, 200]])


def test_unflip_known_box(fake_result):
    # a box at x 10..30 in a 100 px wide image is at x 70..90 in the flipped image, and back
    np.testing.assert_allclose(P.unflip_x([[70, 20, 90, 40]], 100), [[10, 20, 30, 40]])
    b = np.array([[3.5, 1, 17, 9], [0, 0, 100, 5]])
    np.testing.assert_allclose(P.unflip_x(P.unflip_x(b, 100), 100), b)
    frame = Frame(0.5, 0.5, 0, 0, 64, 100)  # original 128 x 200
    v = P.view_from_result(fake_result([[70, 20, 90, 40]], [0.5], [1]), frame, (128, 200), flipped=True)
    np.testing.assert_allclose(v.xyxy, [[20, 40, 60, 80]])


def test_fuse_views_identical_views_give_the_same_boxes():
    v = P.View(np.array([[10.0, 20, 50, 60], [100, 100, 150, 180]]), np.array([0.9, 0.4]), np.array([0, 2]))
    f = P.fuse_views([v, v], (200, 300), iou_thr=0.55, skip_box_thr=0.0001)
    order = np.argsort(-f.scores)
    np.testing.assert_allclose(f.xyxy[order], v.xyxy, atol=1e-3)
    np.testing.assert_allclose(f.scores[order], v.scores, atol=1e-6)
    assert f.labels[order].tolist() == [0, 2]
    # a box found by one of two views keeps half its score (ensemble-boxes "avg")
    one = P.fuse_views([v, P.View(v.xyxy[:1], v.scores[:1], v.labels[:1])], (200, 300))
    assert sorted(np.round(one.scores, 6).tolist()) == [0.2, 0.9]
    assert P.fuse_views([v], (200, 300)) is v


# ----------------------------------------------------------------------------- 2-class filter
def test_two_class_filter_three_regimes():
    from data_prep.core.boxes import make_boxes

    boxes = make_boxes(["a", "a", "b", "c"], [0, 3, 0, 5], ["x", "y", "x", "z"],
                       [[1, 2, 3, 4], [5, 6, 7, 8], [1, 1, 2, 2], [3, 3, 4, 4]], score=[0.9, 0.3, 0.5, 0.7])
    p = {"a": 0.05, "b": 0.30, "c": 0.96, "d": 0.01}  # d: an image without boxes
    out = P.two_class_filter(boxes, p, low=0.08, high=0.95, normal_class=describe("vinbigdata").normal)
    assert list(out.columns[:len(BOX_COLUMNS)]) == BOX_COLUMNS
    got = {(r.image_id, r.class_id): r.score for r in out.itertuples()}
    assert got == pytest.approx({("a", 14): 1.0,             # p < low: normal only
                                 ("b", 0): 0.5, ("b", 14): 0.70,  # low <= p < high: boxes + 14 at 1 - p
                                 ("c", 5): 0.7,              # p >= high: boxes only
                                 ("d", 14): 1.0})
    nf = out[out.class_id == 14]
    assert (nf[["x_min", "y_min", "x_max", "y_max"]].to_numpy() == [0, 0, 1, 1]).all()
    assert set(nf.class_name) == {"No finding"}
    # without a "No finding" class (RSNA): normal images just lose their boxes
    out = P.two_class_filter(boxes, p, 0.08, 0.95, normal_class=None)
    assert sorted(map(tuple, out[["image_id", "class_id"]].to_numpy().tolist())) == [("b", 0), ("c", 5)]
    # boundaries: p == low keeps boxes (+14 at 1 - low), p == high is boxes only
    out = P.two_class_filter(boxes, {"a": 0.08, "c": 0.95}, 0.08, 0.95, normal_class=NF)
    assert {(r.image_id, r.class_id): round(r.score, 6) for r in out.itertuples()} == \
        {("a", 0): 0.9, ("a", 3): 0.3, ("a", 14): 0.92, ("b", 0): 0.5, ("c", 5): 0.7}
    with pytest.raises(ValueError, match="low <= high"):
        P.two_class_filter(boxes, p, 0.9, 0.1, normal_class=NF)


def test_classifier_probs_reads_the_abnormal_class_by_name(fake_classifier):
    imgs = [np.full((8, 8), 250, np.uint8), np.zeros((8, 8), np.uint8)]
    for names in ({0: "abnormal", 1: "normal"}, {0: "normal", 1: "abnormal"}):
        p = PM.classifier_probs(P.Loaded(fake_classifier(names), "c.pt", 64, 1), imgs)
        np.testing.assert_allclose(p, [0.97, 0.02], atol=1e-6)
    with pytest.raises(ValueError, match="no 'abnormal'"):
        PM.classifier_probs(P.Loaded(fake_classifier({0: "cat", 1: "dog"}), "c.pt", 64, 1), imgs)


# ----------------------------------------------------------------------------- predict() with fakes
def test_predict_png_folder_in_original_pixels(tmp_path, fake_models):
    drawn, frame = _square_pngs(tmp_path / "png")
    out = P.predict("det.pt", tmp_path / "png", batch=2)
    assert fake_models[0].calls == [2, 1]  # batches of 2 images
    assert sorted(out.image_id) == ["im0", "im1"]
    for r in out.itertuples():
        exp = np.array(drawn[r.image_id], float) / [frame.sx, frame.sy, frame.sx, frame.sy]
        np.testing.assert_allclose([r.x_min, r.y_min, r.x_max, r.y_max], exp, atol=1e-6)
        assert r.class_name == NAMES[0] and r.score == pytest.approx(0.9)
    # and within 1 PNG px (2.5 original px) of the box that was drawn in original pixels
    np.testing.assert_allclose(out.loc[out.image_id == "im0", ["x_min", "y_min", "x_max", "y_max"]].to_numpy()[0],
                               [30, 40, 110, 150], atol=2.5)


def test_predict_keep_ratio_pngs_and_dim_meta(tmp_path, fake_models):
    ph, pw = keep_ratio_size(320, 240, 128)  # 128 x 96
    drawn, frame = _square_pngs(tmp_path / "png", png_hw=(ph, pw))
    pd.read_csv(tmp_path / "png" / "meta.csv").rename(columns={"height": "dim0", "width": "dim1"})[
        ["image_id", "dim0", "dim1"]].to_csv(tmp_path / "dims.csv", index=False)
    (tmp_path / "png" / "meta.csv").unlink()
    out = P.predict("det.pt", tmp_path / "png", meta=tmp_path / "dims.csv")
    r = out[out.image_id == "im1"].iloc[0]
    np.testing.assert_allclose([r.x_min, r.y_min, r.x_max, r.y_max], [120, 200, 230, 300], atol=1.5 / frame.sx)


def test_tta_and_ensemble_of_identical_models_equal_the_single_model(tmp_path, fake_models):
    _square_pngs(tmp_path / "png")
    single = P.predict("a.pt", tmp_path / "png")
    for kw in ({"weights": ["a.pt", "b.pt"]}, {"weights": "a.pt", "tta": True}, {"weights": ["a.pt", "b.pt"], "tta": True}):
        fused = P.predict(source=tmp_path / "png", **kw)
        assert fused["image_id"].tolist() == single["image_id"].tolist()
        np.testing.assert_allclose(fused[["x_min", "y_min", "x_max", "y_max"]], single[["x_min", "y_min", "x_max", "y_max"]],
                                   atol=1e-3)
        np.testing.assert_allclose(fused["score"], single["score"], atol=1e-6)


def test_tta_with_a_wrong_unflip_would_move_the_box(tmp_path, fake_models, monkeypatch):
    """The fused TTA box equals the plain one only because the flipped view is un-flipped."""
    _square_pngs(tmp_path / "png", boxes=[[20, 40, 80, 150]])
    single = P.predict("a.pt", tmp_path / "png")
    monkeypatch.setattr(PB, "unflip_x", lambda b, w: np.asarray(b, float).reshape(-1, 4))
    wrong = P.predict("a.pt", tmp_path / "png", tta=True)
    assert len(wrong) == 2  # the flipped box lands elsewhere: two half-score boxes
    assert wrong.score.tolist() == pytest.approx([0.45, 0.45])
    assert single.score.tolist() == pytest.approx([0.9])


def test_predict_with_classifier_filter(tmp_path, fake_models):
    _square_pngs(tmp_path / "png")  # im0, im1 abnormal (p 0.97), im2 normal (p 0.02)
    out = P.predict("a.pt", tmp_path / "png", classifier="c.cls", cls_low=0.08, cls_high=0.95, normal=NF)
    assert sorted(zip(out.image_id, out.class_id)) == [("im0", 0), ("im1", 0), ("im2", 14)]
    out = P.predict("a.pt", tmp_path / "png", classifier="c.cls", cls_low=0.01, cls_high=0.98, normal=NF)
    assert sorted(zip(out.image_id, out.class_id, out.score.round(2))) == \
        [("im0", 0, 0.9), ("im0", 14, 0.03), ("im1", 0, 0.9), ("im1", 14, 0.03), ("im2", 14, 0.98)]


def test_bad_image_is_skipped_and_reported(tmp_path, fake_models):
    _square_pngs(tmp_path / "png")
    (tmp_path / "png" / "im1.png").write_bytes(b"not a png")
    errors = []
    out = P.predict("a.pt", tmp_path / "png", errors=errors)
    assert sorted(out.image_id) == ["im0"]
    assert len(errors) == 1 and "im1.png" in errors[0]


def test_meta_without_an_image_is_named(tmp_path, fake_models):
    _square_pngs(tmp_path / "png")
    m = pd.read_csv(tmp_path / "png" / "meta.csv")
    m[m.image_id != "im2"].to_csv(tmp_path / "png" / "meta.csv", index=False)
    with pytest.raises(ValueError, match="im2"):
        P.predict("a.pt", tmp_path / "png")


def _write_dicom(path: Path, arr: np.ndarray):
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PhotometricInterpretation = "DX", "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("keep_ratio", [False, True])
def test_dicom_source_equals_png_source(tmp_path, fake_models, keep_ratio):
    """DICOMs predicted directly = the same DICOMs converted to PNG + meta.csv, within 1 px."""
    from data_prep.dicom.convert import convert_folder

    rng = np.random.default_rng(0)
    (tmp_path / "dcm").mkdir()
    truth = {"d0": [30, 40, 110, 150], "d1": [150, 20, 230, 90]}
    for iid, (x0, y0, x1, y1) in truth.items():
        arr = rng.integers(0, 800, (320, 240))
        arr[y0:y1, x0:x1] = 4000
        _write_dicom(tmp_path / "dcm" / f"{iid}.dcm", arr)
    convert_folder(tmp_path / "dcm", tmp_path / "png", size=128, keep_ratio=keep_ratio, workers=1)
    a = P.predict("a.pt", tmp_path / "dcm", size=128, keep_ratio=keep_ratio)
    b = P.predict("a.pt", tmp_path / "png", size=128, keep_ratio=keep_ratio)
    assert a.image_id.tolist() == b.image_id.tolist() == ["d0", "d1"]
    xy = ["x_min", "y_min", "x_max", "y_max"]
    np.testing.assert_allclose(a[xy].to_numpy(), b[xy].to_numpy(), atol=1.0)
    # and near the truth: INTER_AREA blurs the edge by at most one PNG pixel (2.5 original px)
    np.testing.assert_allclose(a[xy].to_numpy(), [truth["d0"], truth["d1"]], atol=2.6)


def test_cli_predict_writes_a_box_table(tmp_path, fake_models):
    from detection.cli import main

    _square_pngs(tmp_path / "png")
    rc = main(["predict", "--weights", "a.pt", "--source", str(tmp_path / "png"), "--out", str(tmp_path / "p.csv"),
               "--tta", "conf=0.01"])
    assert rc == 0
    df = pd.read_csv(tmp_path / "p.csv")
    assert list(df.columns) == BOX_COLUMNS and sorted(df.image_id) == ["im0", "im1"]


# ----------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def untrained_pt(tmp_path_factory):
    """A 1-channel, 2-class yolo11n with its initial (seeded) weights, saved as ultralytics does."""
    import detection.models.runtime  # noqa: F401
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    m = DetectionModel("yolo11n.yaml", nc=2, ch=1, verbose=False)
    m.names = dict(NAMES)
    path = tmp_path_factory.mktemp("w") / "untrained.pt"
    torch.save({"model": m, "train_args": {"imgsz": 128, "task": "detect"}}, path)
    return path


def test_onnx_export_and_predict_match_pt(make_prep, tmp_path, untrained_pt):
    from detection.engine.export import export_onnx

    prep = make_prep(tmp_path / "prep", n=3)
    onnx = export_onnx(untrained_pt, imgsz=128, out=tmp_path / "m.onnx")
    assert onnx == tmp_path / "m.onnx" and onnx.stat().st_size > 1e6
    kw = dict(source=prep / "images", imgsz=128, conf=0.001, max_det=5)
    a = P.predict(untrained_pt, **kw)
    b = P.predict(onnx, **{**kw, "imgsz": 256})  # the ONNX keeps its own 128 px input
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.score, b.score, atol=1e-4)
    np.testing.assert_allclose(a[["x_min", "y_min", "x_max", "y_max"]], b[["x_min", "y_min", "x_max", "y_max"]], atol=0.5)
    assert (a[["x_max", "y_max"]].to_numpy() <= [240, 320]).all()  # clipped to the 320 x 240 originals


# ----------------------------------------------------------------------------- end to end
def test_end_to_end_synth_prep_train_predict_submit(tmp_path):
    """16 phantoms -> prep (128 px, 2 folds) -> 1-epoch detector + classifier -> predict the test
    DICOMs (TTA + 2-class filter) -> a valid VinBigData submission."""
    from data_prep.core.config import load_config
    from data_prep.prep import prep
    from data_prep.phantoms.synth import synth_vinbigdata
    from detection.competition.submission import validate_submission, write_submission
    from detection.engine.train import train_classifier, train_detector

    data = tmp_path / "vin"
    synth_vinbigdata(data, n=16, n_test=3, size=256, seed=0)
    cfg = load_config("vinbigdata", {"size": 128, "folds": 2, "workers": 1, "epochs": 1, "imgsz": 128, "batch": 8,
                                     "cls_epochs": 1, "cls_imgsz": 64, "project": str(tmp_path / "runs"),
                                     "yolo_args": {"plots": False, "mosaic": 0.0}})
    paths = prep(cfg, data, tmp_path / "prep")
    det = train_detector(cfg, paths["out"], 0)
    clf = train_classifier(cfg, paths["out"], 0)
    assert det.parts[-3:] == ("vinbigdata_fold0", "weights", "best.pt")
    assert clf.parts[-3:] == ("vinbigdata_fold0_cls", "weights", "best.pt")
    pred = P.predict(det, data / "test", tta=True, imgsz=128, conf=0.001, max_det=20, classifier=clf,
                     normal=NF, cls_imgsz=64, size=cfg["size"], keep_ratio=cfg["keep_ratio"])
    test_ids = sorted(p.stem for p in (data / "test").glob("*.dicom"))
    assert set(pred.image_id) <= set(test_ids)
    # every test image gets boxes or a "No finding" row (untrained p(abnormal) is near 0.5: middle regime)
    sizes = pd.DataFrame([{"image_id": i, **_dicom_hw(data / "test" / f"{i}.dicom")} for i in test_ids])
    from data_prep.core.boxes import validate_boxes

    validate_boxes(pred[pred.class_id != 14], sizes)
    out = write_submission(pred, data / "sample_submission.csv", "vinbigdata", tmp_path / "submission.csv",
                           images=sizes)
    assert validate_submission(out, data / "sample_submission.csv", "vinbigdata", images=sizes) == []
    sub = pd.read_csv(out)
    assert sorted(sub.image_id) == test_ids and sub.PredictionString.str.len().gt(0).all()


def _dicom_hw(path: Path) -> dict:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {"height": int(ds.Rows), "width": int(ds.Columns)}


# ----------------------------------------------------------------------------- lists and several classifiers
def test_txt_list_source_predicts_the_listed_images_only(tmp_path, fake_models):
    _square_pngs(tmp_path / "png")
    full = P.predict("a.pt", tmp_path / "png")
    listing = tmp_path / "png" / "some.txt"
    listing.write_text(f"im1.png\n\n{tmp_path / 'png' / 'im2.png'}\n")  # relative and absolute paths
    part = P.predict("a.pt", listing)  # meta.csv found beside the list
    pd.testing.assert_frame_equal(part, full[full.image_id.isin(["im1", "im2"])].reset_index(drop=True))
    listing.write_text("im1.png\nim2.dcm\n")
    with pytest.raises(ValueError, match="some.txt line 2: 'im2.dcm'"):
        P.predict("a.pt", listing)


def test_several_classifiers_average_p_abnormal(tmp_path, fake_models, monkeypatch):
    _square_pngs(tmp_path / "png")
    p = {"hi.cls": 0.9, "lo.cls": 0.1}
    monkeypatch.setattr(PB, "classifier_probs", lambda clf, imgs, device="cpu": np.full(len(imgs), p[clf.path]))
    out = P.predict("a.pt", tmp_path / "png", classifier=["hi.cls", "lo.cls"], cls_low=0.08, cls_high=0.95, normal=NF)
    normal = out[out.class_id == 14].set_index("image_id")["score"]
    assert sorted(normal.index) == ["im0", "im1", "im2"] and np.allclose(normal, 0.5)  # 1 - mean(0.9, 0.1)
    out = P.predict("a.pt", tmp_path / "png", classifier="hi.cls", cls_low=0.08, cls_high=0.95, normal=NF)
    assert np.allclose(out[out.class_id == 14]["score"], 0.1)


def test_one_prediction_settings_object_for_predict_classify_and_cv(tmp_path):
    """Issue 28 item 3: PredictSettings (a StageSettings) is the one shape of the prediction settings:
    predict, classify and cv build it from the merged config; the old keyword names are refused."""
    from data_prep.core.config import load_config
    from data_prep.datasets import describe
    from data_prep.dicom.voi import VoiOptions
    from detection.competition.cv import predict_settings
    from detection.engine.classify import classify
    from detection.engine.settings import PredictSettings

    cfg = load_config(overrides=["dataset=rsna", "cls_low=0.1", "cls_high=0.7", "scheduler=local", "voi=window",
                                 "size=256", "batch=4"])
    s = PredictSettings.from_config(cfg, conf=0.2)
    assert (s.conf, s.cls_low, s.cls_high, s.size, s.batch, s.scheduler) == (0.2, 0.1, 0.7, 256, 4, "local")
    assert s.imgsz is None                              # not asked for: each checkpoint's training size
    assert s.normal is None and PredictSettings.from_config(load_config()).normal == describe("vinbigdata").normal
    assert s.voi == VoiOptions.from_config(cfg) and s.voi.voi == "window" and s.post == dict(cfg)
    assert PredictSettings.of(cfg, conf=0.2) == s and PredictSettings.of(s) is not None
    c = predict_settings(cfg)                           # cv: the training imgsz, never a cluster of its own
    assert (c.imgsz, c.scheduler) == (512, None) and c.replace(imgsz=None, scheduler="local", conf=0.2) == s
    for old, new in (("low", "cls_low"), ("high", "cls_high"), ("normal_class", "normal"), ("voi_options", "voi")):
        with pytest.raises(TypeError, match=rf"PredictSettings: unknown setting\(s\) \['{old}'\]; expected .*'{new}'"):
            s.replace(**{old: None})
        with pytest.raises(TypeError, match=rf"unknown setting\(s\) \['{old}'\]"):
            P.predict("a.pt", tmp_path, **{old: None})   # refused before any model or image is read
        with pytest.raises(TypeError, match=rf"unknown setting\(s\) \['{old}'\]"):
            classify("c.pt", tmp_path, **{old: None})
