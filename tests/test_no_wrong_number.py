"""No confident wrong number (issue 25 item 5): validate-submission's --meta coverage, report-eval and
tune on out-of-fold predictions of some folds, evaluate on another dataset's labels, predict's imgsz."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from data_prep.core.boxes import make_boxes
from detection.cli import main

NF = "14 1 0 0 1 1"


def _write(path, text):
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------- validate-submission
def test_validate_submission_meta_of_other_images_is_an_error(tmp_path, capsys):
    sample = _write(tmp_path / "s.csv", f"image_id,PredictionString\na,{NF}\nb,{NF}\nc,{NF}\n")
    sub = _write(tmp_path / "sub.csv", "image_id,PredictionString\na,0 0.5 0 0 99999 99999\nb,14 1 0 0 1 1\n"
                                       "c,14 1 0 0 1 1\n")
    other = _write(tmp_path / "other.csv", "image_id,dim0,dim1\nx,100,100\ny,100,100\n")
    args = ["validate-submission", "--format", "vinbigdata", "--sample", sample, sub]
    assert main(args + ["--meta", other]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cxrdet validate-submission: error: --meta {other}: holds none of the 3 image(s) of {sub} "
                   "(e.g. 'a'); expected the sizes of these images (the test set's meta.csv)"]
    some = _write(tmp_path / "some.csv", "image_id,dim0,dim1\nb,100,100\nc,100,100\n")
    assert main(args + ["--meta", some]) == 0      # a's box is out of bounds, but a has no size there
    out = capsys.readouterr().out
    assert f"{sub}: note: box bounds checked on 2 of 3 images; the other 1 have no size in {some}" in out
    assert "valid vinbigdata submission (3 images)" in out
    full = _write(tmp_path / "full.csv", "image_id,dim0,dim1\na,100,100\nb,100,100\nc,100,100\n")
    assert main(args + ["--meta", full]) == 1      # with a's size, the 99999 box is caught
    assert "outside" in capsys.readouterr().out


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_rsna_labels_without_dataset_scores_rsna_or_refuses(tmp_path, capsys):
    truth = _write(tmp_path / "labels.csv", "patientId,x,y,width,height,Target\n"
                   "p1,0,0,10,10,1\np1,20,20,10,10,1\np2,,,,,0\np3,0,0,10,10,1\n")
    pred = _write(tmp_path / "sub.csv", "patientId,PredictionString\n"
                  "p1,0.9 0 0 10 10 0.8 20 20 10 6 0.3 50 50 10 10\np2,\np3,\n")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--truth", truth, "--pred", pred, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["metric"] == "rsna" and res["mAP"] == pytest.approx(11 / 48)   # as with --dataset rsna
    capsys.readouterr()
    assert main(["evaluate", "--truth", truth, "--pred", pred, "--metric", "vinbigdata"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metric=vinbigdata: the truth is RSNA Pneumonia labels (scored with the rsna metric)" \
        in err[0] and "expected dataset=rsna" in err[0]


# ----------------------------------------------------------------------------- one fold's predictions
def _two_folds(tmp_path):
    """8 images, folds 0/1 alternating, one box each; predictions = the truth on fold 0 only."""
    ids = [f"i{k}" for k in range(8)]
    boxes = np.array([[10 + k, 10, 60 + k, 70] for k in range(8)], dtype=float)
    truth = make_boxes(ids, 0, "Aortic enlargement", boxes)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    pd.DataFrame({"image_id": ids, "height": 100, "width": 100}).to_csv(tmp_path / "meta.csv", index=False)
    pd.DataFrame({"image_id": ids, "fold": [k % 2 for k in range(8)]}).to_csv(tmp_path / "folds.csv", index=False)
    pred = truth.iloc[::2].assign(score=0.9)
    pred.to_csv(tmp_path / "oof0.csv", index=False)
    return tmp_path


def test_report_eval_with_folds_reports_the_predicted_folds(tmp_path, monkeypatch, caplog):
    import detection.pictures.report_eval as R

    d = _two_folds(tmp_path)
    seen = {}

    def fake_build(truth, pred, images, source, out, settings, **kw):
        seen["ids"] = sorted(images["image_id"])
        return out

    monkeypatch.setattr(R, "build_report", fake_build)
    args = ["report-eval", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
            str(d / "oof0.csv"), "--source", str(d), "--out", str(d / "r.html")]
    with caplog.at_level(logging.WARNING):
        assert main(args + ["--folds", str(d / "folds.csv")]) == 0
    assert seen["ids"] == ["i0", "i2", "i4", "i6"]
    assert f"no prediction on the images of fold(s) [1] of {d / 'folds.csv'}: the report covers fold(s) [0]" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):   # no --folds: every truth image, and a warning saying so
        assert main(args) == 0
    assert len(seen["ids"]) == 8
    assert "predictions cover 4 of the 8 evaluated truth images; the other 4 count as predicted empty; " \
           "scoring one held-out fold? pass --folds folds.csv --fold K" in caplog.text


def test_tune_on_one_folds_predictions_estimates_that_fold_only(tmp_path, caplog, capsys):
    d = _two_folds(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert main(["tune", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                     str(d / "oof0.csv"), "--folds", str(d / "folds.csv"), "--trials", "3",
                     "--out", str(d / "tuned.yaml")]) == 0
    res = json.loads((d / "tuned.json").read_text())
    assert res["before"] == pytest.approx(1.0)       # fold 0 alone, every box found (not 0.5 over both folds)
    assert f"{d / 'folds.csv'}: fold(s) [1] have no prediction: tuned and estimated on fold(s) [0] only" \
        in caplog.text
    assert res["nested"]["per_fold"] == []           # one fold left: no leave-one-fold-out, and no 0.0000s


# ----------------------------------------------------------------------------- predict's imgsz
def test_predict_uses_the_checkpoints_training_imgsz_unless_given(repo_root, caplog):
    from detection.engine.predict_models import load_model

    w = repo_root / "weights" / "vinbig_phantom_yolo11n.pt"
    with caplog.at_level(logging.INFO, "detection.engine.predict"):
        m = load_model(w, None, 4)
    assert m.imgsz == 320    # configs/phantom.yaml trained it at 320
    assert f"{w}: predicting at imgsz 320 (the size it was trained at; imgsz=N to change)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, "detection.engine.predict"):
        assert load_model(w, 512, 4).imgsz == 512
    assert f"{w}: predicting at imgsz 512 as asked (it was trained at 320)" in caplog.text


def test_predict_settings_take_imgsz_only_when_asked():
    from data_prep.core.config import load_config
    from detection.engine.predict import PredictSettings

    assert PredictSettings.from_config(load_config()).imgsz is None
    assert PredictSettings.from_config(load_config(overrides=["imgsz=256"])).imgsz == 256
