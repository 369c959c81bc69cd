"""detection.pictures.explore (`cxrdet explore`): the data the page draws (displayed-frame boxes, the metric's
own matches at every confidence, IoU to the best truth box, one layer per radiologist), images
<= max side from PNGs and DICOMs, resumable output — and, in a real headless Chromium driven by
selenium, the page's DOM contract: slider, class toggles, arrow keys, hover, per-image TP/FP/FN."""
from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from detection.cli import main
from detection.evaluation.image_metrics import image_costs
from detection.evaluation.metrics import rsna_score



@pytest.fixture(scope="module")
def ex(tmp_path_factory):
    """12 phantoms (300 px DICOMs -> 160 px square PNGs), predictions = truth shifted 3 px with
    scores 0.2..0.9 + one confident Cardiomegaly FP, a second prediction file, the raw raters,
    and the explorer written by the CLI."""
    from data_prep.dicom.convert import convert_folder
    from data_prep.phantoms.synth import synth_vinbigdata

    d = tmp_path_factory.mktemp("ex")
    synth_vinbigdata(d / "vin", n=12, n_test=0, size=300, seed=3)
    convert_folder(d / "vin" / "train", d / "png", size=160, workers=1, progress=False)
    t = pd.read_csv(d / "vin" / "train_truth.csv", dtype={"image_id": str})
    t = t[t["class_id"] < 14].drop(columns=["rad_id", "n_raters"]).reset_index(drop=True)
    assert t["image_id"].nunique() >= 3
    pred = t.copy()
    pred[["x_min", "x_max"]] += 3
    pred["score"] = np.resize([0.2, 0.5, 0.9, 0.45, 0.7], len(pred))
    fp = pred.iloc[[0]].assign(class_id=3, class_name="Cardiomegaly", score=0.95, y_min=200.0, y_max=260.0)
    pred = pd.concat([pred, fp], ignore_index=True)
    pred.to_csv(d / "pred.csv", index=False)
    pred.assign(score=0.6).to_csv(d / "other.csv", index=False)
    t.to_csv(d / "truth.csv", index=False)
    argv = ["explore", "--truth", str(d / "truth.csv"), "--meta", str(d / "png" / "meta.csv"), "--pred",
            str(d / "pred.csv"), "--pred", str(d / "other.csv"), "--rater-labels", str(d / "vin" / "train.csv"),
            "--source", str(d / "png"), "--out", str(d / "out")]
    assert main(argv) == 0
    data = json.loads((d / "out" / "data.json").read_text())
    return {"dir": d, "out": d / "out", "data": data, "truth": t, "pred": pred, "argv": argv,
            "meta": pd.read_csv(d / "png" / "meta.csv", dtype={"image_id": str})}


def boxes_of(data, image_id, kind=None, layer=None):
    f = {n: i for i, n in enumerate(data["box_fields"])}
    im = next(i for i in data["images"] if i["id"] == image_id)
    rows = data["boxes"][im["box_start"]:im["box_start"] + im["box_count"]]
    out = [dict(zip(data["box_fields"], r)) for r in rows]
    if kind is not None:
        out = [b for b in out if data["layers"][b["layer"]]["kind"] == kind]
    if layer is not None:
        out = [b for b in out if b["layer"] == layer]
    assert all(len(r) == len(f) for r in rows)
    return out


def test_output_files_and_json_layout(ex):
    out, data = ex["out"], ex["data"]
    assert {p.name for p in out.iterdir()} == {"index.html", "data.json", "data.js", "images"}
    js = (out / "data.js").read_text()
    assert js.startswith("window.CXRDET_EXPLORE = ") and json.loads(js[len("window.CXRDET_EXPLORE = "):-2]) == data
    assert '<script src="data.js"></script>' in (out / "index.html").read_text()
    assert set(data) == {"format", "title", "metric", "iou_thresholds", "conf", "normal_class", "classes", "layers",
                         "box_fields", "boxes", "images"}
    assert data["box_fields"] == ["layer", "class_id", "x_min", "y_min", "x_max", "y_max", "score", "tp", "match",
                                  "iou"]
    assert [(lay["kind"], lay["name"]) for lay in data["layers"]] == [
        ("truth", "truth"), ("pred", "pred.csv"), ("pred", "other.csv"), ("rater", "R8"), ("rater", "R9"),
        ("rater", "R10")]
    assert len(data["images"]) == 12 and data["metric"] == "vinbigdata" and data["iou_thresholds"] == [0.4]
    from detection.pictures.visualize import class_color
    assert all(c["color"] == class_color(c["id"]) for c in data["classes"])
    for im in data["images"]:
        f = out / im["file"]
        a = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        assert a.shape == (im["height"], im["width"]) == (160, 160)
    # every box of the box tables is there once: truth, 2 x predictions, raters' raw boxes
    raw = pd.read_csv(ex["dir"] / "vin" / "train.csv")
    n_raw = int(raw["class_id"].lt(14).sum())
    assert len(data["boxes"]) == len(ex["truth"]) + 2 * len(ex["pred"]) + n_raw
    starts = [(i["box_start"], i["box_count"]) for i in data["images"]]
    assert sum(c for _, c in starts) == len(data["boxes"])


def test_raters_selects_the_radiologist_layers(ex, tmp_path):
    """--raters R10 (config key raters) keeps R10's layer only, with the same boxes as in the full
    explorer; --raters alone with the raw labels as --truth: a layer per radiologist again."""
    argv = [a if a != str(ex["out"]) else str(tmp_path / "r10") for a in ex["argv"]]
    assert main([*argv, "--raters", "R10"]) == 0
    data = json.loads((tmp_path / "r10" / "data.json").read_text())
    assert [(lay["kind"], lay["name"]) for lay in data["layers"]] == [
        ("truth", "truth"), ("pred", "pred.csv"), ("pred", "other.csv"), ("rater", "R10")]
    full = ex["data"]
    r10 = [lay["name"] for lay in full["layers"]].index("R10")
    for im in data["images"]:
        mine = [{**b, "layer": 0} for b in boxes_of(data, im["id"], "rater")]
        assert mine == [{**b, "layer": 0} for b in boxes_of(full, im["id"], layer=r10)]
    raw = str(ex["dir"] / "vin" / "train.csv")
    i = argv.index("--rater-labels")
    argv = [a if a != str(tmp_path / "r10") else str(tmp_path / "all") for a in argv[:i] + argv[i + 2:]]
    assert main([*argv[:argv.index("--truth") + 1], raw, *argv[argv.index("--truth") + 2:], "--raters"]) == 0
    data = json.loads((tmp_path / "all" / "data.json").read_text())
    assert [lay["name"] for lay in data["layers"] if lay["kind"] == "rater"] == ["R8", "R9", "R10"]


def test_boxes_in_the_displayed_frame_and_iou(ex):
    """A truth box in original px lands at x * 160 / width in the 160 px PNG frame; the prediction
    shifted 3 px right has IoU (w - 3) / (w + 3) with it."""
    data, t, meta = ex["data"], ex["truth"], ex["meta"].set_index("image_id")
    row = t.iloc[0]
    h, w = meta.loc[row["image_id"], ["height", "width"]]
    truth = boxes_of(data, row["image_id"], "truth")
    want = [row["x_min"] * 160 / w, row["y_min"] * 160 / h, row["x_max"] * 160 / w, row["y_max"] * 160 / h]
    got = [b for b in truth if b["class_id"] == row["class_id"]]
    assert any(np.allclose([b["x_min"], b["y_min"], b["x_max"], b["y_max"]], want, atol=0.051) for b in got)
    assert all(b["score"] is None and b["tp"] is None for b in truth)
    bw = row["x_max"] - row["x_min"]
    preds = [b for b in boxes_of(data, row["image_id"], "pred", 1) if b["class_id"] == row["class_id"]]
    assert any(abs(b["iou"] - (bw - 3) / (bw + 3)) < 1e-3 for b in preds)
    # a match points at a truth box of the same image and class
    for b in preds:
        if b["match"] >= 0:
            m = dict(zip(data["box_fields"], data["boxes"][b["match"]]))
            assert m["layer"] == 0 and m["class_id"] == b["class_id"]


@pytest.mark.parametrize("conf", [0.0, 0.3, 0.5, 0.6, 0.92])
def test_tp_fp_fn_from_the_bits_equal_image_costs_at_every_confidence(ex, conf):
    """The page's rule (TP = shown predictions with bit 0, FP = the other shown ones, FN = truth - TP,
    cost = FN + sum of FP scores) against detection.evaluation.image_metrics.image_costs re-run at that confidence."""
    data = ex["data"]
    ids = [i["id"] for i in data["images"]]
    ref = image_costs(ex["truth"], ex["pred"], ids, metric="vinbigdata", normal_class=14, iou_thr=0.4, conf_thr=conf).set_index("image_id")
    assert (ref["n_fp"] + ref["n_tp"]).sum() > 0
    for iid in ids:
        shown = [b for b in boxes_of(data, iid, "pred", 1) if b["score"] >= conf]
        tp = sum(b["tp"] & 1 for b in shown)
        fp = len(shown) - tp
        fn = len(boxes_of(data, iid, "truth")) - tp
        cost = fn + sum(b["score"] for b in shown if not b["tp"] & 1)
        assert (tp, fp, fn) == tuple(ref.loc[iid, ["n_tp", "n_fp", "n_fn"]]), iid
        assert cost == pytest.approx(ref.loc[iid, "cost"])


def test_rsna_bits_give_the_rsna_image_score(ex, tmp_path):
    """--metric rsna: bit k = TP at IoU > 0.40 + 0.05 k; the mean over bits of TP/(TP+FP+FN) is the
    image's score of detection.evaluation.metrics.rsna_score on the predictions >= the confidence."""
    argv = [a if a != str(ex["out"]) else str(tmp_path / "rs") for a in ex["argv"]]
    assert main(argv[:argv.index("--rater-labels")] + argv[argv.index("--source"):] + ["--metric", "rsna"]) == 0
    data = json.loads((tmp_path / "rs" / "data.json").read_text())
    assert len(data["iou_thresholds"]) == 8 and data["layers"][-1]["kind"] == "pred"
    ids = [i["id"] for i in data["images"]]
    for conf in (0.0, 0.5):
        p = ex["pred"][ex["pred"]["score"] >= conf]
        ref = rsna_score(ex["truth"], p, ids)["per_image"].set_index("image_id")["score"]
        for iid in ids:
            shown = [b for b in boxes_of(data, iid, "pred", 1) if b["score"] >= conf]
            nt = len(boxes_of(data, iid, "truth"))
            if nt + len(shown) == 0:
                assert np.isnan(ref[iid])
                continue
            tps = [sum((b["tp"] >> k) & 1 for b in shown) for k in range(8)]
            assert np.mean([tp / (nt + len(shown) - tp) for tp in tps]) == pytest.approx(ref[iid]), iid


def test_dicom_source_downscaled_and_resumed(ex, tmp_path):
    """From the DICOMs with --max-side 128: images 128 px on the longest side at the original aspect,
    boxes scaled by 128 / 300; a second run re-uses every image and writes the same data."""
    d = ex["dir"]
    out = tmp_path / "dcm"
    argv = ["explore", "--truth", str(d / "vin" / "train.csv"), "--meta", str(d / "vin" / "train_meta.csv"),
            "--pred", str(d / "pred.csv"), "--source", str(d / "vin" / "train"), "--max-side", "128",
            "--out", str(out)]
    if not (d / "vin" / "train_meta.csv").is_file():
        argv[argv.index("--meta") + 1] = str(d / "png" / "meta.csv")
    assert main(argv) == 0
    data = json.loads((out / "data.json").read_text())
    meta = ex["meta"].set_index("image_id")
    for im in data["images"]:
        h, w = meta.loc[im["id"], ["height", "width"]]
        assert max(im["width"], im["height"]) == 128
        assert (im["height"], im["width"]) == (round(h * 128 / max(h, w)), round(w * 128 / max(h, w)))
        assert cv2.imread(str(out / im["file"]), cv2.IMREAD_GRAYSCALE).shape == (im["height"], im["width"])
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == mtimes
    assert json.loads((out / "data.json").read_text()) == data
    # key=value DICOM rendering options (the config's voi) reach the images: same frames, other pixels
    assert main([*argv[:-1], str(tmp_path / "novoi"), "voi=none"]) == 0
    other = json.loads((tmp_path / "novoi" / "data.json").read_text())
    assert other["boxes"] == data["boxes"]
    diff = [np.abs(cv2.imread(str(out / a["file"]), 0).astype(int)
                   - cv2.imread(str(tmp_path / "novoi" / b["file"]), 0)).mean()
            for a, b in zip(data["images"], other["images"])]
    assert max(diff) > 5


def test_bad_inputs_are_one_line_errors(ex, tmp_path, capsys):
    base = [a if a != str(ex["out"]) else str(tmp_path / "bad") for a in ex["argv"]]
    assert main(base + ["--fold", "0"]) == 2
    assert "--folds and --fold go together" in capsys.readouterr().err
    assert main(base + ["--max-side", "4096"]) == 2
    err = capsys.readouterr().err
    assert "max_side 4096" in err and "Traceback" not in err
    i = base.index("--rater-labels")
    assert main([*base[:i + 1], str(ex["dir"] / "truth.csv"), *base[i + 2:]]) == 2
    assert "--rater-labels " in (err := capsys.readouterr().err) and "not a raw VinBigData labels file" in err
    assert main([*base[:i], "--raters", *base[i + 1:]]) == 2      # the labels file given to the selection flag
    assert "the raw labels file is given as --rater-labels" in capsys.readouterr().err
    assert main([*base[:i], *base[i + 2:], "--raters"]) == 2      # no raw labels: truth.csv is fused
    assert "--truth " in (err := capsys.readouterr().err) and "not a raw VinBigData labels file" in err
    src = str(ex["dir"] / "png")
    assert main([a if a != str(tmp_path / "bad") else src for a in base]) == 2       # --out = --source
    assert "is the input" in capsys.readouterr().err and not (ex["dir"] / "png" / "index.html").exists()
    (tmp_path / "file").write_text("x")
    assert main([a if a != str(tmp_path / "bad") else str(tmp_path / "file") for a in base]) == 2
    assert "is a file; expected an output folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the page, in Chromium
def _displayed(drv, sel):
    return [e for e in drv.find_elements("css selector", sel) if e.is_displayed()]


@pytest.mark.browser
@pytest.mark.slow   # drives headless Chromium
def test_page_in_headless_chromium(ex, tmp_path, chrome_driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    drv = chrome_driver(tmp_path)
    try:
        drv.get((ex["out"] / "index.html").as_uri())
        assert drv.execute_script("return window.CXRDET_TIMING.ready_ms") > 0
        first = drv.find_element("id", "image-id").text
        assert first in set(ex["truth"]["image_id"])           # the costliest image comes first
        drv.execute_script("var s=document.getElementById('conf'); s.value='0.5';"
                           "s.dispatchEvent(new Event('input', {bubbles: true}));")
        # every image of the list (right arrow): displayed predictions = those scoring >= 0.5 (of both
        # files; other.csv scores 0.6 everywhere) and TP/FP/FN = image_costs at 0.5
        pred, ids = ex["pred"], [i["id"] for i in ex["data"]["images"]]
        assert (pred["score"] == 0.5).any()
        ref = image_costs(ex["truth"], pred, ids, metric="vinbigdata", normal_class=14, conf_thr=0.5).set_index("image_id")
        time.sleep(0.5)                      # the list re-sorts by the costs at 0.5 once the slider rests
        for _ in ids:                        # to the top of the list
            ActionChains(drv).send_keys(Keys.ARROW_LEFT).perform()
        top = drv.find_element("id", "image-id").text
        assert top == drv.find_element("css selector", "#list li[data-i] .lid").get_attribute("textContent")
        seen = []
        for _ in ids:
            iid = drv.find_element("id", "image-id").text
            seen.append(iid)
            n_want = int(((pred["image_id"] == iid) & (pred["score"] >= 0.5)).sum() + (pred["image_id"] == iid).sum())
            assert len(_displayed(drv, "[data-kind=pred]")) == n_want, iid
            stat = {k: int(drv.find_element("css selector", f'[data-stat="{k}"][data-layer="1"]').text)
                    for k in ("tp", "fp", "fn")}
            assert stat == {"tp": ref.loc[iid, "n_tp"], "fp": ref.loc[iid, "n_fp"], "fn": ref.loc[iid, "n_fn"]}, iid
            ActionChains(drv).send_keys(Keys.ARROW_RIGHT).perform()
        assert sorted(seen) == sorted(ids)                               # the arrows walked the whole list
        assert drv.find_element("id", "image-id").text == seen[-1]       # and stop at its end
        for _ in ids:
            ActionChains(drv).send_keys(Keys.ARROW_LEFT).perform()
        assert drv.find_element("id", "image-id").text == seen[0]
        # hover a prediction: class, score and IoU with the best truth box
        tip = drv.find_element("id", "tip")
        assert not tip.is_displayed()
        box = _displayed(drv, "[data-kind=pred]")[0]
        f = {n: i for i, n in enumerate(ex["data"]["box_fields"])}
        b = ex["data"]["boxes"][int(box.get_attribute("data-b"))]
        w = box.rect["width"]
        ActionChains(drv).move_to_element_with_offset(box, int(-w / 2 + 1), 0).perform()   # on its left edge
        name = next(c["name"] for c in ex["data"]["classes"] if c["id"] == b[f["class_id"]])
        assert tip.is_displayed(), tip.text
        assert name in tip.text and f"score {b[f['score']]:.3f}" in tip.text
        assert f"IoU with the best {name} truth box: {b[f['iou']]:.3f}" in tip.text
        # class toggle off: its boxes are gone, the others stay
        cls = box.get_attribute("data-class")
        n_all = len(_displayed(drv, "[data-kind]"))
        n_cls = len(_displayed(drv, f'[data-kind][data-class="{cls}"]'))
        drv.find_element("css selector", f'input[data-class-toggle="{cls}"]').click()
        assert _displayed(drv, f'[data-kind][data-class="{cls}"]') == []
        assert len(_displayed(drv, "[data-kind]")) == n_all - n_cls
        # radiologists' layer on: rater boxes appear
        assert _displayed(drv, "[data-kind=rater]") == []
        drv.find_element("id", "raters-all").click()
        assert len(drv.find_elements("css selector", "[data-kind=rater]")) > 0
        # right arrow: the next image of the list; left arrow: back
        ActionChains(drv).send_keys(Keys.ARROW_RIGHT).perform()
        assert drv.find_element("id", "image-id").text == seen[1] != seen[0]
        ActionChains(drv).send_keys(Keys.ARROW_LEFT).perform()
        assert drv.find_element("id", "image-id").text == seen[0]
        errors = [m for m in drv.get_log("browser") if m["level"] == "SEVERE"]
        assert errors == []
    finally:
        drv.quit()


def test_report_links_to_the_explorer_beside_it(ex, tmp_path):
    from detection.pictures.report_eval import _explorer_link

    rep = ex["out"].parent / "report.html"
    assert _explorer_link(rep, None) == ""                                      # folder named out/, not explore/
    assert "href='out/index.html'" in _explorer_link(rep, ex["out"])
    link = _explorer_link(tmp_path / "r.html", ex["out"])
    assert "Open the interactive explorer" in link and "/out/index.html" in link
    (tmp_path / "explore").mkdir()
    assert _explorer_link(tmp_path / "r.html", None) == ""                      # no index.html there yet
    (tmp_path / "explore" / "index.html").write_text("x")
    assert "href='explore/index.html'" in _explorer_link(tmp_path / "r.html", None)


def test_fold_selection_missing_and_broken_images(ex, tmp_path, capsys, caplog):
    """--folds/--fold keep that fold's images; an image absent from --source is left out (warned), an
    unreadable one is reported at the end (exit 1) while every other image is written."""
    import shutil

    ids = [i["id"] for i in ex["data"]["images"]]
    folds = pd.DataFrame({"image_id": ids, "fold": [k % 2 for k in range(len(ids))]})
    folds.to_csv(tmp_path / "folds.csv", index=False)
    src = tmp_path / "png"
    shutil.copytree(ex["dir"] / "png", src)
    (src / f"{ids[0]}.png").unlink()                          # fold 0, missing
    (src / f"{ids[2]}.png").write_bytes(b"not a png")          # fold 0, broken
    argv = [a if a not in (str(ex["out"]), str(ex["dir"] / "png")) else str(tmp_path / "out" if a == str(ex["out"])
            else src) for a in ex["argv"]]
    assert main(argv + ["--folds", str(tmp_path / "folds.csv"), "--fold", "0"]) == 1
    assert "1 image(s) failed" in capsys.readouterr().out
    assert f"{ids[2]}.png: not a readable PNG" in caplog.text and f"not under {src}" in caplog.text
    data = json.loads((tmp_path / "out" / "data.json").read_text())
    assert [i["id"] for i in data["images"]] == [i for k, i in enumerate(ids) if k % 2 == 0 and k not in (0, 2)]
