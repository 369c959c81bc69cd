"""A real PACS round trip: Debian's Orthanc + its DICOMweb plugin (`make orthanc`) on 127.0.0.1, its own
port, config and storage folder, basic auth on; stopped at the end. Source DICOMs and SRs go in through
STOW-RS, are found by QIDO-RS and come back through WADO-RS with the same boxes; `predict --source
dicomweb:URL` and `export-sr --source/--to dicomweb:URL` do the same from the command line, with the
credentials from CXRDET_DICOMWEB_AUTH and never in their output."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from data_prep.datasets import describe
from detection.cli import main

ORTHANC = shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).is_file()), None)
PLUGIN = next((p for p in ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                           "/usr/lib/orthanc/plugins/libOrthancDicomWeb.so") if Path(p).is_file()), None)
USER, SECRET = "cxrdet", "pacs-secret-7f3a9c"
COLS = ["x_min", "y_min", "x_max", "y_max"]

pytestmark = pytest.mark.skipif(ORTHANC is None or PLUGIN is None,
                                reason="Orthanc or its DICOMweb plugin is absent (Debian orthanc + orthanc-dicomweb: "
                                       "`make orthanc`)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """``http://127.0.0.1:PORT/dicom-web`` of a fresh Orthanc (basic auth USER:SECRET), stopped at the end."""
    import requests

    d = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    cfg = {"Name": "cxrdet-test", "StorageDirectory": str(d / "db"), "IndexDirectory": str(d / "db"),
           "HttpPort": port, "HttpBindAddress": "127.0.0.1", "RemoteAccessAllowed": False,
           "DicomServerEnabled": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: SECRET},
           "Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (d / "orthanc.json").write_text(json.dumps(cfg))
    log = open(d / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(d / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        for _ in range(150):
            try:
                if requests.get(f"http://127.0.0.1:{port}/system", auth=(USER, SECRET), timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"Orthanc exited with {proc.returncode}: {(d / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            pytest.fail("Orthanc did not answer within 15 s")
        yield f"http://127.0.0.1:{port}/dicom-web"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def phantoms(tmp_path, request):
    """2 phantom DICOMs of studies of their own (each test's seed differs: the server is shared)."""
    from data_prep.phantoms.synth import synth_vinbigdata

    synth_vinbigdata(tmp_path / "vin", n=2, n_test=0, size=96, seed=zlib.crc32(request.node.name.encode()) % 10_000)
    return tmp_path / "vin" / "train"


def _boxes(heads) -> pd.DataFrame:
    rows = []
    for k, (iid, h) in enumerate(sorted(heads.items())):
        rows.append({"image_id": iid, "class_id": 12, "class_name": "Pneumothorax", "x_min": 3.25 + k, "y_min": 4.5,
                     "x_max": int(h.Columns) - 2.125, "y_max": int(h.Rows) / 2 + 0.375, "score": 0.8125})
    return pd.DataFrame(rows)


def test_stow_qido_wado_round_trip_of_sources_and_reports(tmp_path, orthanc, phantoms, monkeypatch):
    from detection.pacs import dicomweb
    from detection.pacs.export_sr import export_sr, read_report

    monkeypatch.setenv(dicomweb.AUTH_ENV, f"{USER}:{SECRET}")
    vin = describe("vinbigdata")
    heads = {p.stem: pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(phantoms.iterdir())}
    assert dicomweb.store(orthanc, sorted(phantoms.iterdir())) == 2                    # STOW-RS the sources
    pred = _boxes(heads)
    res = export_sr(pred, phantoms, tmp_path / "sr", vin)
    assert dicomweb.store(orthanc, res.files) == 2                                      # STOW-RS the SRs
    dw = dicomweb.client(orthanc)
    for iid, h in heads.items():                                                        # QIDO-RS
        found = dw.search_for_instances(study_instance_uid=str(h.StudyInstanceUID))
        classes = sorted(x["00080016"]["Value"][0] for x in found)
        assert classes == sorted([str(h.SOPClassUID), "1.2.840.10008.5.1.4.1.1.88.34"])
        sr_item = next(x for x in found if x["00080016"]["Value"][0].startswith("1.2.840.10008.5.1.4.1.1.88."))
        ds = dw.retrieve_instance(str(h.StudyInstanceUID), sr_item["0020000E"]["Value"][0],      # WADO-RS
                                  sr_item["00080018"]["Value"][0])
        got = read_report(ds, vin)
        want = pred[pred.image_id == iid]
        assert got["sop_instance_uid"].tolist() == [str(h.SOPInstanceUID)]
        assert got["class_id"].tolist() == want["class_id"].tolist()
        assert np.abs(got[COLS + ["score"]].to_numpy() - want[COLS + ["score"]].to_numpy()).max() < 1e-3
    # no credentials: refused, one line naming the status, never a traceback
    monkeypatch.delenv(dicomweb.AUTH_ENV)
    with pytest.raises(ValueError, match="HTTP 401"):
        dicomweb.search_instances(orthanc)


def test_command_line_round_trip_keeps_the_secret_out_of_the_output(tmp_path, orthanc, phantoms, monkeypatch, capfd,
                                                                     fake_models, caplog):
    """predict --source dicomweb:URL (image_id = SOP Instance UID), export-sr --source/--to dicomweb:URL,
    then the SRs on the server hold the predicted boxes; the password is in no output or log line."""
    import logging

    from detection.pacs import dicomweb
    from detection.pacs.export_sr import read_report

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(dicomweb.AUTH_ENV, f"{USER}:{SECRET}")
    dicomweb.store(orthanc, sorted(phantoms.iterdir()))
    heads = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in phantoms.iterdir()}
    studies = sorted({str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in heads.values()})
    url = f"dicomweb:{orthanc}"
    pred = tmp_path / "pred.csv"
    assert main(["predict", "--weights", str(tmp_path / "fake.pt"), "--source", url, "--study", *studies,
                 "--out", str(pred), "--debug"]) == 0
    table = pd.read_csv(pred, dtype={"image_id": str})
    assert set(table["image_id"]) == set(heads)          # every image, named by its SOP Instance UID
    assert main(["export-sr", "--pred", str(pred), "--source", url, "--study", *studies, "--out", str(tmp_path / "sr"),
                 "--to", url, "--gsps", "--debug"]) == 0
    cap = capfd.readouterr()
    assert "stored 4 file(s)" in cap.out
    found = dicomweb.search_instances(orthanc, studies)
    srs = [i for i in found if i["sop_class"] == "1.2.840.10008.5.1.4.1.1.88.34"]
    assert len(srs) == 2 and sum(i["sop_class"] == "1.2.840.10008.5.1.4.1.1.11.1" for i in found) == 2
    dw = dicomweb.client(orthanc)
    vin = describe("vinbigdata")
    back = pd.concat([read_report(dw.retrieve_instance(i["study"], i["series"], i["sop"]), vin) for i in srs])
    back = back.rename(columns={"sop_instance_uid": "image_id"}).sort_values("image_id").reset_index(drop=True)
    want = table.sort_values("image_id").reset_index(drop=True)
    assert back["image_id"].tolist() == want["image_id"].tolist()
    assert np.abs(back[COLS + ["score"]].to_numpy() - want[COLS + ["score"]].to_numpy()).max() < 1e-3
    assert SECRET not in cap.out + cap.err + caplog.text
    # a wrong password: one line, exit 2, the password not echoed
    monkeypatch.setenv(dicomweb.AUTH_ENV, f"{USER}:wrong-{SECRET}")
    assert main(["export-sr", "--pred", str(pred), "--source", url, "--out", str(tmp_path / "sr2")]) == 2
    cap = capfd.readouterr()
    assert "HTTP 401" in cap.err and len(cap.err.strip().splitlines()) == 1 and SECRET not in cap.out + cap.err
