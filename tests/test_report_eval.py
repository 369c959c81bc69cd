"""detection.pictures.report_eval (`cxrdet report-eval`): one self-contained HTML file on a phantom dataset —
the numbers agree with `evaluate`, every picture is an embedded PNG that decodes, the baseline
JSON of `cxrdet evaluate --rater-baseline` is shown, the worst images carry the false positive's
class colour — and headless Chromium loads every image and paints a non-blank page."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep.core.boxes import make_boxes
from detection.pictures import visualize as V
from detection.cli import main
from detection.evaluation.evaluate import evaluate, read_inputs
from detection.pictures.report_eval import ReportSettings, build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# test-only: counts the <img> elements that loaded, written into the DOM on window load
CHECK_JS = ("<script>window.addEventListener('load',function(){var im=document.images,ok=0;"
            "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}"
            "var d=document.createElement('div');d.id='img-check';d.textContent=ok+'/'+im.length;"
            "document.body.appendChild(d);});</script>")


@pytest.fixture(scope="module")
def rep(tmp_path_factory):
    """Phantoms (8 DICOMs, 160 px PNGs), predictions = truth shifted 3 px (TPs) + one confident
    Cardiomegaly FP, the radiologists' baseline JSON, and the report written by the CLI."""
    from data_prep.dicom.convert import convert_folder
    from data_prep.phantoms.synth import synth_vinbigdata

    d = tmp_path_factory.mktemp("rep")
    synth_vinbigdata(d / "vin", n=8, n_test=0, size=300, seed=5)
    convert_folder(d / "vin" / "train", d / "png", size=160, workers=1, progress=False)
    truth = pd.read_csv(d / "vin" / "train_truth.csv", dtype={"image_id": str})
    truth = truth[truth["class_id"] < 14].drop(columns=["rad_id", "n_raters"])
    pred = truth.copy()
    pred[["x_min", "x_max"]] += 3
    pred["score"] = 0.8
    fp = pred.iloc[[0]].assign(class_id=3, class_name="Cardiomegaly", score=0.95, y_min=200.0, y_max=260.0)
    pd.concat([pred, fp]).to_csv(d / "pred.csv", index=False)
    paths = {"train": d / "vin" / "train.csv", "meta": d / "png" / "meta.csv", "pred": d / "pred.csv",
             "png": d / "png", "base": d / "baseline.json", "out": d / "report.html", "dir": d,
             "fp_image": str(fp["image_id"].iloc[0])}
    assert main(["evaluate", "--rater-baseline", "--truth", str(paths["train"]), "--meta", str(paths["meta"]),
                 "--min-images", "2", "--json", str(paths["base"])]) == 0
    assert main(["report-eval", "--truth", str(paths["train"]), "--meta", str(paths["meta"]),
                 "--pred", str(paths["pred"]), "--metric", "vinbigdata", "--source", str(paths["png"]),
                 "--baseline", str(paths["base"]), "--out", str(paths["out"])]) == 0
    paths["html"] = paths["out"].read_text(encoding="utf-8")
    return paths


def embedded_pngs(html: str) -> list[np.ndarray]:
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', html)
    out = []
    for s in srcs:
        assert s.startswith("data:image/png;base64,"), s[:60]
        im = cv2.imdecode(np.frombuffer(base64.b64decode(s.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
        assert im is not None and im.shape[0] > 50 and im.shape[1] > 50
        out.append(im[:, :, ::-1])
    return out


def test_report_numbers_match_evaluate(rep):
    images, truth, pred, ds = read_inputs(rep["train"], rep["pred"], "vinbigdata", rep["meta"])
    res = evaluate(truth, pred, images, "vinbigdata", 0.4, dataset=ds)
    html = rep["html"]
    assert f"mAP@0.4 {res['mAP']:.4f}" in html
    assert f"{res['n_images']} images · {len(pred)} predicted boxes · {len(truth)} truth boxes" in html
    for r in res["table"]:
        ap = "—" if r["ap"] is None else f"{r['ap']:.4f}"
        assert (f"<td>{r['class_id']}</td><td>{r['class_name']}</td><td>{r['n_truth']}</td>"
                f"<td>{r['n_pred']}</td><td>{ap}</td>") in html
    assert res["per_class"]["Cardiomegaly"] is None                 # the FP's class has no truth here
    assert "<td>3</td><td>Cardiomegaly</td><td>0</td><td>1</td><td>—</td>" in html


def test_report_self_contained_with_all_sections(rep):
    import json

    html = rep["html"]
    text = re.sub(r'src="data:image/png;base64,[^"]*"', "", html)
    assert "<script" not in text and "<link" not in text and "http" not in text and "src=" not in text
    pngs = embedded_pngs(html)
    res_pr = len(re.findall(r'alt="pr_\d\d_', html))
    assert res_pr >= 2                                              # PR curve per class with truth
    # AP bars + PR curves + worst gallery + 1 overlay (one image costs anything: the FP's)
    assert len(pngs) == 1 + res_pr + 1 + 1
    for h2 in ("Per class", "Precision-recall curves", "Radiologists' baseline", "Worst images", "Overlays"):
        assert f"<h2>{h2}</h2>" in html
    base = json.loads(rep["base"].read_text())
    assert base["n_raters"] >= 2
    for r in base["rater_baseline"]:
        assert f"<td>{r['rater']}</td><td>{r['n_images']}</td><td>{r['mAP']:.4f}</td>" in html
    assert f"radiologists' baseline {base['mAP']:.4f}" in html
    assert f"{rep['fp_image'][:8]} cost 0.95 (fn 0, fp 1, tp " in html
    overlay = pngs[-1]
    fp_px = (np.abs(overlay.astype(int) - V.class_rgb(3)) <= 3).all(-1)
    assert fp_px[:160, :160].sum() > 50                               # the FP drawn over the image
    assert fp_px[:, 160:].sum() > 10                                  # and in the legend


def test_report_without_costly_images(rep, tmp_path):
    images = pd.DataFrame({"image_id": ["a"], "height": [100], "width": [100]})
    cv2.imwrite(str(tmp_path / "a.png"), np.full((100, 100), 90, np.uint8))
    truth = make_boxes("a", 0, "Aortic enlargement", [[10, 10, 50, 50]])
    pred = truth.assign(score=0.9)
    out = build_report(truth, pred, images, tmp_path, tmp_path / "r" / "ok.html", ReportSettings(title="perfect <run>"))
    html = out.read_text()
    assert "<h1>perfect &lt;run&gt;</h1>" in html and "mAP@0.4 1.0000" in html
    assert "No image costs anything" in html and "<h2>Overlays</h2>" not in html
    assert len(embedded_pngs(html)) == 1 + 1                          # AP bars + the one PR curve
    assert [p.name for p in out.parent.iterdir()] == ["ok.html"]       # no temp file left


def _chromium(args: list[str], profile) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROME_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (`make browser` installs it; CI does)")
@pytest.mark.slow   # drives headless Chromium
def test_report_renders_in_headless_chromium(rep, tmp_path):
    page = tmp_path / "report_check.html"
    page.write_text(rep["html"].replace("</body>", CHECK_JS + "</body>"), encoding="utf-8")
    broken = tmp_path / "broken_check.html"      # the check itself can fail: one undecodable image
    broken.write_text(rep["html"].replace("</body>", '<img src="data:image/png;base64,AAAA">' + CHECK_JS
                                          + "</body>"), encoding="utf-8")
    n_img = len(re.findall(r"<img ", rep["html"]))
    counts = {}
    for p in (page, broken):
        r = _chromium(["--virtual-time-budget=5000", "--dump-dom", p.as_uri()], tmp_path / f"prof_{p.stem}")
        m = re.search(r'id="img-check">(\d+)/(\d+)<', r.stdout)
        assert m, (r.returncode, r.stderr[-2000:])
        counts[p.stem] = (int(m.group(1)), int(m.group(2)))
    assert counts["report_check"] == (n_img, n_img)
    assert counts["broken_check"] == (n_img, n_img + 1)
    shot = tmp_path / "shot.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", rep["out"].as_uri()], tmp_path / "prof_shot")
    assert shot.is_file(), r.stderr[-2000:]
    im = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert im.shape[:2] == (2000, 1280)
    non_white = (im < 240).any(-1)
    assert 0.03 < non_white.mean() < 0.9 and im.std() > 20           # text, table, plots painted
    blue = (np.abs(im[:, :, ::-1].astype(int) - (0x1f, 0x4e, 0x9c)) <= 12).all(-1)
    assert blue[:200].sum() > 200                                    # the headline number, top of page


def test_rsna_report_says_rsna_score_not_ap(tmp_path):
    from detection.pictures.report_eval import _ap_bars, _table_html, score_names

    assert score_names("rsna") == ("RSNA score", "RSNA score") and score_names("vinbigdata") == ("AP", "mAP")
    res = {"metric": "rsna", "mAP": 0.904,
           "table": [{"class_id": 0, "class_name": "Lung Opacity", "n_truth": 5, "n_pred": 6, "ap": 0.904}]}
    t = _table_html(res)
    assert "<th>RSNA score</th>" in t and "AP" not in t
    assert "<th>AP</th>" in _table_html(dict(res, metric="vinbigdata"))
    # the value of a long (dark red) bar is written inside it in white: light pixels inside the bar
    im = cv2.imread(str(_ap_bars(res, tmp_path / "b.png")))[:, :, ::-1].astype(int)
    red = (np.abs(im - np.array(V.class_rgb(0))) <= 3).all(-1)
    rows = np.flatnonzero(red.sum(1) > 100)
    band = im[rows[len(rows) // 2] - 3: rows[len(rows) // 2] + 4]
    cols = np.flatnonzero(red[rows[len(rows) // 2]])
    inside = band[:, cols[0]:cols[-1]]
    assert (inside.min(-1) > 200).sum() > 15                     # white text on the bar
