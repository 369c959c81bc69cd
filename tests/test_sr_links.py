"""The explorer and the HTML report link each image to its DICOM SR (`--sr SR_DIR`, an export-sr folder)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest

from detection.cli import main


@pytest.fixture(scope="module")
def srs(tmp_path_factory):
    """4 phantom DICOMs, predictions = truth shifted 4 px + one false positive, SRs for the first 3 images."""
    from data_prep.phantoms.synth import synth_vinbigdata

    d = tmp_path_factory.mktemp("links")
    synth_vinbigdata(d / "vin", n=4, n_test=0, size=128, seed=7)
    t = pd.read_csv(d / "vin" / "train_truth.csv", dtype={"image_id": str})
    ids = sorted(t["image_id"].unique())
    t = t[t["class_id"] < 14].drop(columns=["rad_id", "n_raters"]).reset_index(drop=True)
    pred = t.assign(x_min=t.x_min + 4, x_max=t.x_max + 4, score=0.7)
    fp = pd.DataFrame([{"image_id": i, "class_id": 3, "class_name": "Cardiomegaly", "x_min": 10.0, "y_min": 10.0,
                        "x_max": 40.0, "y_max": 40.0, "score": 0.9} for i in ids])
    pred = pd.concat([pred, fp], ignore_index=True)
    pred.to_csv(d / "pred.csv", index=False)
    t.to_csv(d / "truth.csv", index=False)
    pred[pred.image_id.isin(ids[:3])].to_csv(d / "pred3.csv", index=False)
    assert main(["export-sr", "--pred", str(d / "pred3.csv"), "--source", str(d / "vin" / "train"),
                 "--out", str(d / "sr")]) == 0
    from data_prep.dicom.convert import header_meta

    meta = header_meta(d / "vin" / "train")
    meta.to_csv(d / "meta.csv", index=False)
    return d, ids


def test_explorer_links_each_image_to_its_sr(srs, tmp_path):
    d, ids = srs
    out = tmp_path / "explore"
    assert main(["explore", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "pred.csv"), "--source", str(d / "vin" / "train"), "--sr", str(d / "sr"),
                 "--out", str(out)]) == 0
    data = json.loads((out / "data.json").read_text())
    links = {im["id"]: im["sr"] for im in data["images"]}
    assert set(links) == set(ids)
    for iid in ids[:3]:   # a relative link from the page that opens this image's own SR
        assert (out / unquote(links[iid])).resolve() == (d / "sr" / f"{iid}.sr.dcm").resolve()
    assert links[ids[3]] is None
    assert 'id="sr-link"' in (out / "index.html").read_text()


def test_report_links_each_shown_image_to_its_sr(srs, tmp_path):
    d, ids = srs
    rep = tmp_path / "r" / "report.html"
    assert main(["report-eval", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "pred.csv"), "--source", str(d / "vin" / "train"), "--sr", str(d / "sr"), "--out", str(rep),
                 "--n-overlays", "4"]) == 0
    html = rep.read_text()
    assert "3 of 4 images have one" in html
    found = dict(re.findall(r"<a class='sr' data-image='([^']+)' href='([^']+)'>DICOM SR</a>", html))
    assert set(found) == set(ids[:3])       # every shown image with an SR, and no other
    for iid, href in found.items():
        assert (rep.parent / unquote(href)).resolve() == (d / "sr" / f"{iid}.sr.dcm").resolve()
    # without --sr: no SR link or line
    plain = tmp_path / "plain.html"
    assert main(["report-eval", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "pred.csv"), "--source", str(d / "vin" / "train"), "--out", str(plain)]) == 0
    assert "DICOM SR" not in plain.read_text()


def test_sr_folder_without_index_is_one_line(srs, tmp_path, capsys):
    d, _ = srs
    rc = main(["explore", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
               str(d / "pred.csv"), "--source", str(d / "vin" / "train"), "--sr", str(tmp_path), "--out",
               str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no index.csv" in err[0]
    assert not Path(tmp_path / "x").exists()


@pytest.mark.browser
@pytest.mark.slow   # drives headless Chromium
def test_explorer_page_shows_the_sr_link_only_for_images_with_one(srs, tmp_path, chrome_driver):
    from selenium.webdriver.common.keys import Keys

    drv = chrome_driver(tmp_path)   # (skips here without chromium)
    d, ids = srs
    out = tmp_path / "explore"
    try:
        assert main(["explore", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                     str(d / "pred.csv"), "--source", str(d / "vin" / "train"), "--sr", str(d / "sr"),
                     "--out", str(out)]) == 0
        drv.get((out / "index.html").as_uri())
        seen = {}
        for _ in ids:
            iid = drv.find_element("id", "image-id").text
            link = drv.find_element("id", "sr-link")
            seen[iid] = unquote(link.get_attribute("href") or "") if link.is_displayed() else None
            drv.find_element("tag name", "body").send_keys(Keys.ARROW_RIGHT)
        assert set(seen) == set(ids)
        for iid in ids[:3]:
            assert seen[iid].endswith(f"/sr/{iid}.sr.dcm") and Path(seen[iid][len("file://"):]).is_file()
        assert seen[ids[3]] is None
    finally:
        drv.quit()
