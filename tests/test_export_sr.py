"""cxrdet export-sr: TID 1500 Structured Reports (+ GSPS) from a prediction table, checked by reading them
back with highdicom and by Debian's DICOM validator dciodvfy (dicom3tools, `make dicom3tools`)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pydicom
import pytest

from data_prep.datasets import DATASETS, describe
from data_prep.datasets.common import LOCAL_SCHEME
from detection.cli import main

DCIODVFY = shutil.which("dciodvfy")
DSRDUMP = shutil.which("dsrdump")   # DCMTK's SR reader: an implementation independent of highdicom
COLS = ["x_min", "y_min", "x_max", "y_max"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """3 VinBigData phantom DICOMs (longest side 128 px) and their headers by image_id."""
    from data_prep.phantoms.synth import synth_vinbigdata

    d = tmp_path_factory.mktemp("sr") / "vin"
    synth_vinbigdata(d, n=3, n_test=0, size=128, seed=5)
    src = d / "train"
    heads = {p.stem: pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(src.iterdir())}
    return src, heads


def _pred(heads, ids, seed=0) -> pd.DataFrame:
    """Boxes with 6-decimal coordinates inside each image (classes 3, 8, 11), plus a 'No finding' row each."""
    d = describe("vinbigdata")
    rng = np.random.default_rng(seed)
    rows = []
    for iid in ids:
        h, w = int(heads[iid].Rows), int(heads[iid].Columns)
        for c in (3, 8, 11):
            x0, y0 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            x1, y1 = rng.uniform(x0 + 1, w), rng.uniform(y0 + 1, h)
            rows.append({"image_id": iid, "class_id": c, "class_name": d.names[c], "x_min": round(x0, 6),
                         "y_min": round(y0, 6), "x_max": round(x1, 6), "y_max": round(y1, 6),
                         "score": round(float(rng.uniform(0.01, 1)), 6)})
        rows.append({"image_id": iid, "class_id": d.normal_id, "class_name": d.normal_name, "x_min": 0.0, "y_min": 0.0,
                     "x_max": 1.0, "y_max": 1.0, "score": 0.125})
    return pd.DataFrame(rows)


def test_every_code_is_the_standards_own(tmp_path):
    """Each class of each dataset has a code; every SCT/DCM code is PS3.16's (pydicom's concept dictionary,
    an independent source) with the same meaning, except the two taken from other terminology sources."""
    from pydicom.sr._concepts_dict import concepts

    elsewhere = {("SCT", "8186001"), ("SCT", "233604007")}   # Cardiomegaly (FHIR value sets), Pneumonia (UMLS)
    for d in DATASETS.values():
        assert [c[0] for c in d.codes] == list(d.classes), d.name
        for name, scheme, value, meaning in d.codes:
            assert len(value) <= 16 and len(meaning) <= 64            # SH / LO
            if scheme == LOCAL_SCHEME:
                assert scheme.startswith("99") and meaning == name    # PS3.16 8.2: private schemes start with 99
                continue
            if (scheme, value) in elsewhere:
                continue
            meanings = {m.lower() for codes in concepts[scheme].values() for v, (m, _) in codes.items() if v == value}
            assert meaning.lower() in meanings, (d.name, name, scheme, value, meanings)
    vin = describe("vinbigdata")
    assert vin.code(vin.normal_id) == ("DCM", "111286", "No abnormality")
    assert describe({"dataset": "vinbigdata", "classes": ["A", "Atelectasis"]}).code(0) == (LOCAL_SCHEME, "VINBIGDATA_0", "A")


def test_export_sr_reads_back_the_boxes_and_dciodvfy_finds_no_error(tmp_path, phantoms, capsys):
    import highdicom as hd

    from detection.pacs.export_sr import read_report

    src, heads = phantoms
    ids = sorted(heads)[:2]
    pred = _pred(heads, ids)
    pred.to_csv(tmp_path / "pred.csv", index=False)
    out = tmp_path / "sr"
    assert main(["export-sr", "--pred", str(tmp_path / "pred.csv"), "--source", str(src), "--out", str(out), "--gsps"]) == 0
    said = capsys.readouterr().out
    assert "2 SR(s) + GSPS for 2 image(s)" in said and "6 box(es)" in said
    assert "1 source image(s) without a row in the table: no report" in said
    index = pd.read_csv(out / "index.csv", dtype=str)
    assert sorted(index["image_id"]) == ids and (index["n_boxes"] == "3").all()
    vin = describe("vinbigdata")
    for iid in ids:
        sr = hd.sr.srread(out / f"{iid}.sr.dcm")
        head = heads[iid]
        assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"         # Comprehensive 3D SR
        assert (sr.StudyInstanceUID, sr.PatientID) == (head.StudyInstanceUID, head.get("PatientID", ""))
        ref = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == head.SeriesInstanceUID
        assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == head.SOPInstanceUID
        groups = sr.content.get_planar_roi_measurement_groups()
        assert len(groups) == 3
        for g in groups:   # the SCOORD itself: a closed 5-point POLYLINE in the image's own pixels
            assert g.roi.graphic_type.value == "POLYLINE" and g.roi.value.shape == (5, 2)
            assert np.array_equal(g.roi.value[0], g.roi.value[-1])
            assert g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == head.SOPInstanceUID
        got = read_report(sr, vin).sort_values(["class_id"]).reset_index(drop=True)
        want = pred[pred.image_id == iid].sort_values(["class_id"]).reset_index(drop=True)
        assert got["class_id"].tolist() == want["class_id"].tolist()
        assert got["class_name"].tolist() == want["class_name"].tolist()
        assert np.abs(got[COLS + ["score"]].to_numpy() - want[COLS + ["score"]].to_numpy()).max() < 1e-3
        assert (got["sop_instance_uid"] == head.SOPInstanceUID).all()
        finding = {g.finding_type.value: g.finding_type.scheme_designator for g in groups}
        assert finding == {"8186001": "SCT", "NODULE_MASS": LOCAL_SCHEME, "PLEURAL_THICKEN": LOCAL_SCHEME}
        assert [g.finding_type.meaning for g in sr.content.get_image_measurement_groups()] == ["No abnormality"]
        pr = pydicom.dcmread(out / f"{iid}.gsps.dcm")   # the GSPS draws the same rectangles
        drawn = sorted(tuple(np.asarray(o.GraphicData, float).reshape(-1, 2)[[0, 2]].ravel())
                       for o in pr.GraphicAnnotationSequence[0].GraphicObjectSequence)
        boxes = sorted(tuple(r) for r in want[want.class_id != vin.normal_id][COLS].to_numpy())
        assert np.allclose(drawn, boxes, atol=1e-3)
        assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == head.SOPInstanceUID
    # the same predictions give the same instances (a PACS replaces them); changed ones a new instance
    again = tmp_path / "sr2"
    assert main(["export-sr", "--pred", str(tmp_path / "pred.csv"), "--source", str(src), "--out", str(again)]) == 0
    assert pd.read_csv(again / "index.csv")["sr_sop_instance_uid"].tolist() == index["sr_sop_instance_uid"].tolist()
    if DCIODVFY is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed: `make dicom3tools`; the read-back above passed")
    for f in sorted(out.glob("*.dcm")):
        r = subprocess.run([DCIODVFY, str(f)], capture_output=True, text=True, timeout=60)
        errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, (f.name, errors)


def test_images_without_rows_get_a_no_abnormality_report_only_when_asked(tmp_path, phantoms, capsys):
    import highdicom as hd

    from detection.pacs.export_sr import read_report

    src, heads = phantoms
    ids = sorted(heads)
    pred = _pred(heads, ids[:1])
    pred = pred[pred.class_id != 14]
    pred.to_csv(tmp_path / "pred.csv", index=False)
    out = tmp_path / "sr"
    assert main(["export-sr", "--pred", str(tmp_path / "pred.csv"), "--source", str(src), "--out", str(out),
                 "--no-box-reports"]) == 0
    assert "2 source image(s) without a row in the table: a 'No abnormality' report each" in capsys.readouterr().out
    assert sorted(pd.read_csv(out / "index.csv", dtype=str)["image_id"]) == ids
    for iid in ids[1:]:
        sr = hd.sr.srread(out / f"{iid}.sr.dcm")
        assert sr.content.get_planar_roi_measurement_groups() == []
        [g] = sr.content.get_image_measurement_groups()
        assert (g.finding_type.value, g.finding_type.meaning) == ("111286", "No abnormality")
        assert g.get_measurements() == []            # no score: nothing was predicted
        assert read_report(sr, describe("vinbigdata")).empty


def test_rsna_classes_and_an_image_missing_from_the_source(tmp_path, phantoms, capsys):
    """RSNA's class is coded Opacity (DCM 112001); a row whose image is not in --source fails that image
    only (listed, exit 1) and the others are written."""
    import highdicom as hd

    src, heads = phantoms
    iid = sorted(heads)[0]
    rows = [{"image_id": iid, "class_id": 0, "x_min": 1.5, "y_min": 2.25, "x_max": 30.0, "y_max": 40.125, "score": 0.5},
            {"image_id": "not-there", "class_id": 0, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4, "score": 0.5}]
    pd.DataFrame(rows).to_csv(tmp_path / "pred.csv", index=False)
    out = tmp_path / "sr"
    assert main(["export-sr", "--pred", str(tmp_path / "pred.csv"), "--source", str(src), "--out", str(out),
                 "--dataset", "rsna"]) == 1
    said = capsys.readouterr().out
    assert "failed: image_id 'not-there': no DICOM with that file stem or SOP Instance UID" in said
    [g] = hd.sr.srread(out / f"{iid}.sr.dcm").content.get_planar_roi_measurement_groups()
    assert (g.finding_type.value, g.finding_type.scheme_designator, g.finding_type.meaning) == ("112001", "DCM", "Opacity")
    assert not (out / "not-there.sr.dcm").exists()


@pytest.mark.parametrize("case", ["bad_class", "other_names", "out_in_source", "url_credentials", "study_without_dicomweb",
                                  "outside", "locked"])
def test_bad_input_is_one_line(tmp_path, phantoms, capsys, case):
    src, heads = phantoms
    iid = sorted(heads)[0]
    row = {"image_id": iid, "class_id": 3, "x_min": 1, "y_min": 2, "x_max": 3, "y_max": 4, "score": 0.5}
    args = ["export-sr", "--pred", str(tmp_path / "pred.csv"), "--source", str(src), "--out", str(tmp_path / "sr")]
    if case == "bad_class":
        row["class_id"] = 15
    elif case == "other_names":   # an RSNA table exported as VinBigData: class 0 would be coded Aortic enlargement
        row.update(class_id=0, class_name="Lung Opacity")
    elif case == "out_in_source":
        args[-1] = str(src / "sr")
    elif case == "url_credentials":
        args += ["--to", "dicomweb:http://alice:hunter2@127.0.0.1:9/dicom-web"]
    elif case == "study_without_dicomweb":
        args += ["--study", "1.2.3"]
    elif case == "outside":
        row["x_max"] = int(heads[iid].Columns) + 5
    elif case == "locked":   # another live run holds the output folder (pid 1 never dies)
        import json
        import socket

        (tmp_path / "sr").mkdir()
        (tmp_path / "sr" / ".cxrdet.lock").write_text(json.dumps({"pid": 1, "host": socket.gethostname(),
                                                                   "what": "export-sr", "started": "now"}))
    pd.DataFrame([row]).to_csv(tmp_path / "pred.csv", index=False)
    rc = main(args)
    cap = capsys.readouterr()
    if case == "outside":  # a data problem of one image: listed, exit 1
        assert rc == 1 and "lies outside the image" in cap.out
        return
    err = cap.err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("cxrdet export-sr: error:"), cap.err
    assert "hunter2" not in cap.err + cap.out
    assert {"bad_class": "class_id 15 is not a class of vinbigdata", "out_in_source": "is inside --source",
            "other_names": "class_name 'Lung Opacity' is not vinbigdata's class 0 ('Aortic enlargement')",
            "locked": "in use by another run (export-sr: pid 1",
            "url_credentials": "holds credentials", "study_without_dicomweb": "--study"}[case] in err[0]
    assert not (src / "sr").exists() and not list((tmp_path / "sr").glob("*.dcm"))


@pytest.mark.parametrize("secret", ["Bearer tok-3e1f", "alice:pw-3e1f", "just-a-token-3e1f"])
def test_credentials_come_from_the_environment_and_are_never_shown(monkeypatch, secret):
    import requests

    from data_prep.core.errors import InputError
    from detection.pacs import dicomweb

    monkeypatch.setenv(dicomweb.AUTH_ENV, secret)
    if ":" not in secret and not secret.startswith("Bearer"):
        with pytest.raises(InputError) as e:
            dicomweb.client("http://127.0.0.1:9/dicom-web")
        assert "3e1f" not in str(e.value) and dicomweb.AUTH_ENV in str(e.value)
        return
    dw = dicomweb.client("http://127.0.0.1:9/dicom-web")
    req = dw._session.prepare_request(requests.Request("GET", "http://127.0.0.1:9/dicom-web/studies"))
    header = req.headers["Authorization"]
    assert header == ("Bearer tok-3e1f" if secret.startswith("Bearer") else requests.auth._basic_auth_str("alice", "pw-3e1f"))
    if secret.startswith("Bearer"):  # the token is not in the client's logged headers, nor in the auth's repr
        assert "Authorization" not in dw._session.headers and "3e1f" not in repr(dw._session.auth)


def _dsrdump_rows(path) -> list[dict]:
    """The measurement groups of an SR as DCMTK's dsrdump prints them (+Pl all coordinates, +Pu UIDs)."""
    import re

    text = subprocess.run([DSRDUMP, "+Pl", "+Pu", str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    rows = []
    for line in text.splitlines():
        if 'CONTAINER:(,,"Measurement Group")' in line:
            rows.append({})
        elif m := re.search(r'CODE:\(,,"Finding"\)=\(([^,]+),([^,]+),"([^"]*)"\)', line):
            rows[-1]["code"] = (m[2], m[1], m[3])
        elif m := re.search(r'NUM:\(,,"Certainty of Finding"\)="([^"]+)"', line):
            rows[-1]["score"] = float(m[1])
        elif m := re.search(r'SCOORD:\(,,"Image Region"\)=\(POLYLINE,([^)]+)\)', line):
            rows[-1]["points"] = np.array([[float(v) for v in p.split("/")] for p in m[1].split(",")])
        elif m := re.search(r'selected from IMAGE:.*"([0-9.]+)"\)', line):
            rows[-1]["sop"] = m[1]
    return rows


def test_dcmtk_reads_the_same_boxes_codes_and_scores(tmp_path, phantoms):
    """DCMTK's dsrdump (not highdicom) finds each box as a closed POLYLINE on the source image, its code
    and its score."""
    if DSRDUMP is None:
        pytest.skip("dsrdump (Debian's dcmtk) is not installed; the highdicom read-back test covers the boxes")
    from detection.pacs.export_sr import export_sr

    src, heads = phantoms
    iid = sorted(heads)[0]
    vin = describe("vinbigdata")
    pred = _pred(heads, [iid], seed=3)
    export_sr(pred, src, tmp_path, vin)
    rows = _dsrdump_rows(tmp_path / f"{iid}.sr.dcm")
    assert len(rows) == len(pred)
    for r, want in zip(rows, pred.itertuples()):
        assert r["code"] == vin.code(want.class_id) and abs(r["score"] - want.score) < 1e-5
        if want.class_id == vin.normal_id:
            assert "points" not in r
            continue
        pts = r["points"]
        assert pts.shape == (5, 2) and np.array_equal(pts[0], pts[-1]) and r["sop"] == heads[iid].SOPInstanceUID
        box = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
        assert np.abs(np.array(box) - [want.x_min, want.y_min, want.x_max, want.y_max]).max() < 1e-3
