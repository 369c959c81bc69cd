"""Per-radiologist scoring (detection/evaluation/raters.py, `cxrdet evaluate --per-rater`): hand-built
three-radiologist cases with hand-computed APs; the baseline is rater_baseline's, unchanged."""
from __future__ import annotations

import base64
import json
import re

import cv2
import numpy as np

import pandas as pd
import pytest

from data_prep.datasets import vinbigdata
from detection.cli import main
from detection.evaluation.raters import rater_baseline
from detection.evaluation.raters import PerRaterSettings, per_rater

N = vinbigdata.NORMAL_ID
C0, C1 = vinbigdata.CLASSES[0], vinbigdata.CLASSES[1]

# a, b, c: read by R1, R2, R3; d: read by R4 only. All images 100 x 100.
TRAIN = f"""image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max
a,{C0},0,R1,10,10,50,50
a,{C0},0,R2,12,12,52,52
a,{vinbigdata.NORMAL_NAME},{N},R3,,,,
b,{vinbigdata.NORMAL_NAME},{N},R1,,,,
b,{C0},0,R2,60,60,90,90
b,{C0},0,R3,60,60,90,90
c,{C1},1,R1,20,20,80,80
c,{vinbigdata.NORMAL_NAME},{N},R2,,,,
c,{C1},1,R3,20,20,80,80
d,{vinbigdata.NORMAL_NAME},{N},R4,,,,
"""
META = "image_id,dim0,dim1\na,100,100\nb,100,100\nc,100,100\nd,100,100\n"
PRED = f"""image_id,class_id,class_name,x_min,y_min,x_max,y_max,score
a,0,{C0},10,10,50,50,0.9
a,{N},{vinbigdata.NORMAL_NAME},0,0,1,1,0.2
b,0,{C0},60,60,90,90,0.8
c,1,{C1},20,20,80,80,0.7
c,{N},{vinbigdata.NORMAL_NAME},0,0,1,1,0.1
d,0,{C0},10,10,50,50,0.95
"""


@pytest.fixture()
def files(tmp_path):
    for name, text in (("train.csv", TRAIN), ("meta.csv", META), ("pred.csv", PRED)):
        (tmp_path / name).write_text(text)
    (tmp_path / "folds.csv").write_text("image_id,fold\na,0\nb,0\nc,1\nd,1\n")
    return tmp_path


def _run(files, min_images: int, keep=None):
    return per_rater(*vinbigdata.load(files / "train.csv", files / "meta.csv"),
                     pd.read_csv(files / "pred.csv", dtype={"image_id": str}), PerRaterSettings(min_images=min_images),
                     keep=keep, labels=files / "train.csv", meta=files / "meta.csv")


def test_hand_computed_per_rater_maps(files):
    """R1 (truth a: C0, b: normal, c: C1): C0 preds a 0.9 TP, b 0.8 FP -> AP 1; C1 c TP -> 1;
    normal truth b, preds a 0.2 FP, c 0.1 FP -> 0; mAP 2/3.
    R2 (a: C0 IoU 1444/1756 with the prediction, b: C0, c: normal): C0 two TPs -> 1; normal truth c,
    preds a 0.2 FP then c 0.1 TP -> precision 1/2 at recall 1 -> 0.5; C1 has no R2 truth (not
    averaged); mAP 0.75.
    R3 (a: normal, b: C0, c: C1): C0 a 0.9 FP then b 0.8 TP -> 0.5; C1 -> 1; normal a 0.2 TP
    first -> 1; mAP 2.5/3. The prediction on d (read by R4 only) counts for nobody else."""
    res = _run(files, 3)
    pr = res["per_rater"]
    assert list(pr) == ["R1", "R2", "R3"] and res["unscored"] == {"R4": 1}
    assert pr["R1"]["mAP"] == pytest.approx(2 / 3) and pr["R2"]["mAP"] == pytest.approx(0.75)
    assert pr["R3"]["mAP"] == pytest.approx(2.5 / 3)
    assert pr["R1"]["per_class"][C0] == 1.0 and pr["R1"]["per_class"][vinbigdata.NORMAL_NAME] == 0.0
    assert pr["R2"]["per_class"][C1] is None and pr["R2"]["per_class"][vinbigdata.NORMAL_NAME] == 0.5
    assert pr["R3"]["per_class"][C0] == 0.5
    assert all(d["n_images"] == 3 for d in pr.values())
    assert [pr[r]["n_truth"] for r in ("R1", "R2", "R3")] == [2, 2, 2]
    # the baseline is rater_baseline's own figure for each radiologist, unchanged
    base = rater_baseline(files / "train.csv", files / "meta.csv", 3)
    assert {r: pr[r]["baseline"] for r in pr} == dict(zip(base["rater"], base["mAP"]))


def test_fold_restricts_images_and_min_images(files):
    """Fold 0 (a, b): R1 truth a C0, b normal: C0 a TP, b FP -> 1; normal b, pred a 0.2 FP -> 0:
    mAP 0.5. R2: C0 a, b both TP -> 1, no normal truth: 1.0. R3: C0 a FP, b TP -> 0.5; normal
    a TP -> 1: 0.75. With min_images 3 nobody has 3 images of fold 0: all listed, none scored."""
    res = _run(files, 2, keep=["a", "b"])
    assert {r: d["mAP"] for r, d in res["per_rater"].items()} == pytest.approx({"R1": 0.5, "R2": 1.0, "R3": 0.75})
    assert res["unscored"] == {} and res["n_images"] == 2
    res = _run(files, 3, keep=["a", "b"])
    assert res["per_rater"] == {} and res["unscored"] == {"R1": 2, "R2": 2, "R3": 2}


def test_cli_per_rater_json(files, capsys):
    j = files / "m.json"
    rc = main(["evaluate", "--per-rater", "--truth", str(files / "train.csv"), "--meta", str(files / "meta.csv"),
               "--pred", str(files / "pred.csv"), "--json", str(j), "--min-images", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "R1" in out and "0.6667" in out and "R4 (1)" in out
    d = json.loads(j.read_text())
    assert set(d["per_rater"]) == {"R1", "R2", "R3"} and d["unscored"] == {"R4": 1}
    r2 = d["per_rater"]["R2"]
    assert set(r2) >= {"mAP", "n_images", "per_class", "baseline"} and r2["mAP"] == 0.75 and r2["n_images"] == 3
    assert isinstance(r2["baseline"], float)
    rc = main(["evaluate", "--per-rater", "--truth", str(files / "train.csv"), "--meta", str(files / "meta.csv"),
               "--pred", str(files / "pred.csv"), "--folds", str(files / "folds.csv"), "--fold", "0",
               "--min-images", "2", "--json", str(j)])
    assert rc == 0 and json.loads(j.read_text())["per_rater"]["R1"]["mAP"] == 0.5


def test_cli_per_rater_needs_raw_labels(files, capsys):
    fused = files / "fused.csv"
    fused.write_text("image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max,n_raters\n"
                     f"a,{C0},0,,10,10,50,50,2\n")
    rc = main(["evaluate", "--per-rater", "--truth", str(fused), "--meta", str(files / "meta.csv"),
               "--pred", str(files / "pred.csv")])
    assert rc == 2 and "no radiologists" in capsys.readouterr().err


# ----------------------------------------------------------------------------- radiologists against each other
def test_pairwise_agreement_by_hand(files):
    """Single-point mAP (P x R per class the reference marked; normal = a reader without boxes).
    R1 vs R2 (a, b, c): C0 R1 1 box, R2 2, 1 matched (IoU 0.82) -> 1/2; normal R1 b, R2 c -> 0;
    C1 only R1 -> not a class of R2: 0.25. R2 vs R1: C0 1/2, normal 0, C1 (R2 drew none) 0 -> 1/6.
    R1 vs R3 and back: C0 on different images 0, normal 0, C1 1 -> 1/3. R2 vs R3: normal 0, C0
    (b) 1^2/(2*1) 1/2, C1 0 -> 1/6; R3 vs R2: C0 1/2, normal 0 -> 1/4. R4 shares no image."""
    from data_prep.labels import raters as R

    im, bx = vinbigdata.load(files / "train.csv", files / "meta.csv")
    pw = R.pairwise_agreement(im, bx, 0.4, R.dataset_normal("vinbigdata"))
    s = pw["score"]
    assert list(s.index) == list(s.columns) == ["R1", "R2", "R3", "R4"]
    want = {("R1", "R2"): 0.25, ("R2", "R1"): 1 / 6, ("R1", "R3"): 1 / 3, ("R3", "R1"): 1 / 3,
            ("R2", "R3"): 1 / 6, ("R3", "R2"): 0.25}
    for (a, b), v in want.items():
        assert s.loc[a, b] == pytest.approx(v), (a, b)
    assert s["R4"].isna().all() and s.loc["R4"].isna().all() and all(pd.isna(s.loc[r, r]) for r in s.index)
    assert pw["shared"].loc["R1", "R2"] == 3 and pw["shared"].loc["R1", "R4"] == 0 and pw["shared"].loc["R4", "R4"] == 1
    # IoU threshold: the a-boxes of R1 and R2 overlap at 0.82, so at 0.9 they no longer match
    s9 = R.pairwise_agreement(im, bx, 0.9, R.dataset_normal("vinbigdata"))["score"]
    assert s9.loc["R1", "R2"] == 0.0 and s9.loc["R2", "R3"] == pytest.approx(1 / 6)


def test_box_size_ratios_by_hand(files):
    """C0 areas (fraction of 100 x 100): R1 0.16; R2 0.16, 0.09; R3 0.09; median of all 0.125."""
    from data_prep.labels import raters as R

    im, bx = vinbigdata.load(files / "train.csv", files / "meta.csv")
    r = R.box_size_ratios(im, bx, min_boxes=1)
    assert r.loc[C0].to_dict() == pytest.approx({"R1": 1.28, "R2": 1.0, "R3": 0.72})
    assert r.loc[C1, "R1"] == 1.0 and np.isnan(r.loc[C1, "R2"])
    assert R.box_size_ratios(im, bx, min_boxes=2).loc[C0].isna().tolist() == [True, False, True]


def test_dataset_report_shows_the_matrix(files, tmp_path, monkeypatch):
    from data_prep.labels import raters as R

    monkeypatch.setattr(R, "MIN_BOXES", 1)
    out = tmp_path / "rep"
    assert main(["report", "--dataset", "vinbigdata", "--labels", str(files / "train.csv"),
                 "--meta", str(files / "meta.csv"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Radiologists scored against each other" in md and "![" in md and "rater_pairs.png" in md
    assert "| R1 | – | 0.25 | 0.333 | – |" in md
    assert "## Box size ratios between radiologists" in md
    for png in ("rater_pairs.png", "rater_box_size.png"):
        img = cv2.imread(str(out / png))
        assert img is not None and img.shape[0] > 100 and img.std() > 10


def test_html_report_shows_per_rater_and_matrix(files, tmp_path, monkeypatch):
    from data_prep.labels import raters as R

    monkeypatch.setattr(R, "MIN_BOXES", 1)
    png = tmp_path / "png"
    png.mkdir()
    for i in "abcd":
        cv2.imwrite(str(png / f"{i}.png"), np.full((100, 100), 90, np.uint8))
    pj = tmp_path / "pr.json"
    assert main(["evaluate", "--per-rater", "--truth", str(files / "train.csv"), "--meta", str(files / "meta.csv"),
                 "--pred", str(files / "pred.csv"), "--json", str(pj), "--min-images", "3"]) == 0
    out = tmp_path / "r.html"
    assert main(["report-eval", "--truth", str(files / "train.csv"), "--meta", str(files / "meta.csv"),
                 "--pred", str(files / "pred.csv"), "--source", str(png), "--rater-labels", str(files / "train.csv"),
                 "--per-rater-json", str(pj), "--out", str(out)]) == 0
    h = out.read_text()
    assert "<h2>Radiologists</h2>" in h and "<td>R2</td><td>3</td><td>0.7500</td>" in h and "R4 (1)" in h
    imgs = dict(re.findall(r'<img class="[^"]*" alt="([^"]*)" src="data:image/png;base64,([^"]+)"', h))
    for alt in ("pairwise agreement matrix", "box size ratios"):
        img = cv2.imdecode(np.frombuffer(base64.b64decode(imgs[alt]), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 100 and img.std() > 10
