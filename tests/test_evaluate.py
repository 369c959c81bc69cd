"""detection.evaluation.evaluate: `cxrdet evaluate` on tiny hand-made competition files (numbers by hand),
--fold restriction, JSON + PR plots, image-level table, RSNA, and the radiologists' baseline."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from data_prep.datasets import describe
from data_prep.core.tables import read_truth, write_boxes
from detection.evaluation import evaluate as E
from detection.competition.submission import read_predictions
from detection.cli import main

HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.fixture
def vin(tmp_path):
    """Raw 3-rater train.csv: img1 class 0 by all, img2 normal, img3 class 3 by R8 only."""
    rows = [f"img1,Aortic enlargement,0,{r},10,10,50,50" for r in ("R8", "R9", "R10")]
    rows += [f"img2,No finding,14,{r},,,," for r in ("R8", "R9", "R10")]
    rows += ["img3,Cardiomegaly,3,R8,100,100,200,200", "img3,No finding,14,R9,,,,", "img3,No finding,14,R10,,,,"]
    truth = write(tmp_path / "train.csv", HEADER + "\n".join(rows) + "\n")
    meta = write(tmp_path / "meta.csv", "image_id,dim0,dim1\nimg1,300,300\nimg2,300,300\nimg3,300,300\n")
    # class 0: TP .9 then FP .4 -> AP 1; class 3: IoU 0.3 -> FP -> AP 0; class 14: TP .8, FP .1 -> AP 1
    pred = write(tmp_path / "sub.csv", "image_id,PredictionString\n"
                 "img1,0 0.9 10 10 50 50 14 0.1 0 0 1 1\nimg2,14 0.8 0 0 1 1\n"
                 "img3,3 0.5 100 100 130 200 0 0.4 0 0 5 5\n")
    folds = write(tmp_path / "folds.csv", "image_id,fold\nimg1,0\nimg2,1\nimg3,1\n")
    return {"truth": truth, "meta": meta, "pred": pred, "folds": folds, "dir": tmp_path}


def test_cli_vinbigdata_json_plots_table(vin, capsys, caplog):
    out, plots = vin["dir"] / "res.json", vin["dir"] / "plots"
    caplog.set_level("INFO")
    rc = main(["evaluate", "--metric", "vinbigdata", "--truth", vin["truth"], "--meta", vin["meta"],
               "--pred", vin["pred"], "--json", str(out), "--plots", str(plots), "--image-level"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fused by WBF" in caplog.text
    assert "Aortic enlargement" in text and "Cardiomegaly" in text and "abnormal vs normal" in text
    assert "mAP@0.4 (VOC all-point) over 3 images: 0.6667" in text
    res = json.loads(out.read_text())
    assert res["metric"] == "vinbigdata" and res["n_images"] == 3
    assert res["mAP"] == pytest.approx(2 / 3)
    pc = res["per_class"]
    assert (pc["Aortic enlargement"], pc["Cardiomegaly"], pc["No finding"]) == (1.0, 0.0, 1.0)
    assert pc["Atelectasis"] is None and len(pc) == 15
    assert res["image_level"]["per_class"]["Aortic enlargement"]["auc"] == 1.0
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert pngs == ["pr_00_aortic_enlargement.png", "pr_03_cardiomegaly.png", "pr_14_no_finding.png"]
    assert all((plots / p).stat().st_size > 1000 for p in pngs)


def test_cli_fold_restricts_truth_and_pred(vin, capsys):
    out = vin["dir"] / "fold1.json"
    assert main(["evaluate", "--metric", "vinbigdata", "--truth", vin["truth"], "--meta", vin["meta"],
                 "--pred", vin["pred"], "--folds", vin["folds"], "--fold", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    # img2 + img3: class 0 has no truth (img3's FP ignored); class 3 AP 0; class 14: img1's FP is out -> 1
    assert res["n_images"] == 2 and res["fold"] == 1
    assert res["per_class"]["Aortic enlargement"] is None
    assert res["mAP"] == pytest.approx(0.5)
    # the config key on the command line means the same (it was silently pooled over every fold)
    out2 = vin["dir"] / "fold1_key.json"
    assert main(["evaluate", "--metric", "vinbigdata", "--truth", vin["truth"], "--meta", vin["meta"],
                 "--pred", vin["pred"], "--folds", vin["folds"], "fold=1", "--json", str(out2)]) == 0
    key = json.loads(out2.read_text())
    assert (key["n_images"], key["fold"], key["mAP"]) == (2, 1, res["mAP"])
    assert main(["evaluate", "--metric", "vinbigdata", "--truth", vin["truth"], "--meta", vin["meta"],
                 "--pred", vin["pred"], "fold=1"]) == 2
    assert "--folds and --fold go together" in capsys.readouterr().err


def test_box_table_truth_and_pred_give_same_numbers(vin, tmp_path):
    vb = describe("vinbigdata")
    images, truth, ds = read_truth(vin["truth"], vb, vin["meta"])
    assert ds is vb and len(images) == 3
    pred = read_predictions(vin["pred"], vb)
    write_boxes(truth, tmp_path / "truth_boxes.csv")
    write_boxes(pred, tmp_path / "pred_boxes.csv")
    i2, t2, d2 = read_truth(tmp_path / "truth_boxes.csv", vb, vin["meta"])
    assert d2 is vb and sorted(i2["image_id"]) == ["img1", "img2", "img3"]
    a = E.evaluate(truth, pred, images, "vinbigdata")
    b = E.evaluate(t2, read_predictions(tmp_path / "pred_boxes.csv", vb), i2, "vinbigdata")
    assert a["mAP"] == b["mAP"] == pytest.approx(2 / 3)
    # coco metric on the same data: class 0 TP FP -> 1, class 3 -> 0, class 14 -> 1
    assert E.evaluate(truth, pred, images, "coco")["mAP"] == pytest.approx(2 / 3, abs=1e-12)


def test_raw_truth_without_meta_is_an_error(vin, capsys):
    assert main(["evaluate", "--truth", vin["truth"], "--pred", vin["pred"]]) == 2
    assert "--meta" in capsys.readouterr().err


def test_cli_rsna(tmp_path, capsys):
    truth = write(tmp_path / "labels.csv", "patientId,x,y,width,height,Target\n"
                  "p1,0,0,10,10,1\np1,20,20,10,10,1\np2,,,,,0\np3,0,0,10,10,1\n")
    pred = write(tmp_path / "sub.csv", "patientId,PredictionString\n"
                 "p1,0.9 0 0 10 10 0.8 20 20 10 6 0.3 50 50 10 10\np2,\np3,\n")
    out = tmp_path / "r.json"
    assert main(["evaluate", "--metric", "rsna", "--truth", truth, "--pred", pred, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    # p1: 11/24 (see test_metrics), p2 skipped, p3 missed -> 0
    assert res["mAP"] == pytest.approx(11 / 48) and res["n_images"] == 3 and res["n_scored"] == 2
    assert "RSNA score" in capsys.readouterr().out


def test_rater_baseline_by_hand(tmp_path, capsys):
    rows = ["i1,Aortic enlargement,0,R1,0,0,10,10", "i1,Aortic enlargement,0,R2,0,0,10,10", "i1,No finding,14,R3,,,,"]
    rows += [f"i2,No finding,14,{r},,,," for r in ("R1", "R2", "R3")]
    rows += ["i3,Atelectasis,1,R1,0,0,10,10", "i3,No finding,14,R2,,,,", "i3,Atelectasis,1,R3,0,0,10,10"]
    truth = write(tmp_path / "train.csv", HEADER + "\n".join(rows) + "\n")
    meta = write(tmp_path / "meta.csv", "image_id,dim0,dim1\ni1,100,100\ni2,100,100\ni3,100,100\n")
    df = E.rater_baseline(truth, meta, min_images=2).set_index("rater")
    # R1 finds all the others' boxes -> 1. R2 misses i3's class 1 (AP 0) and calls i3 normal:
    # class 14 TP (i2) then FP (i3) in file order -> 1; single point 1 x 0.5. R3 misses i1's
    # class 0 (0), class 1 -> 1, class 14 FP (i1) then TP (i2) -> 0.5
    assert df["mAP"].tolist() == pytest.approx([1.0, 2 / 3, 0.5])
    assert df["mAP_point"].tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert df["n_images"].tolist() == [3, 3, 3]
    out = tmp_path / "b.json"
    assert main(["evaluate", "--rater-baseline", "--truth", truth, "--meta", meta, "--min-images", "2",
                 "--json", str(out)]) == 0
    assert "mean mAP@0.4 over 3 radiologists: 0.7222" in capsys.readouterr().out
    assert json.loads(out.read_text())["mAP"] == pytest.approx(13 / 18)
    assert E.rater_baseline(truth, meta, min_images=4).empty


def test_evaluate_function_rejects_unknown_metric():
    with pytest.raises(ValueError, match="metric"):
        E.evaluate(pd.DataFrame(), pd.DataFrame(), [], "f1")
