"""convert and predict on a Dask cluster give the local path's outputs, byte for byte (PNGs,
meta.csv, errors.csv) and to 1e-4 (prediction tables), with the same resume and exit status.

One LocalCluster (2 single-threaded worker processes on 127.0.0.1, no dashboard) serves the
module; one test starts ``dask scheduler`` + ``dask worker`` as subprocesses, like a user would.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import detection.engine.predict as P
from data_prep.core.cluster import LOCAL_CONFIG, batch_size, batches, check_scheduler, dask_client
from detection.engine.predict_cluster import worker_loads
from data_prep.dicom.convert import ERRORS, META, convert_folder
from detection.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
XY = ["x_min", "y_min", "x_max", "y_max"]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster shared by the module; tests reach it by its tcp:// address."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


@pytest.fixture(scope="module")
def dicoms(tmp_path_factory, tfile, make_ds, save, ramp) -> Path:
    """Three good DICOMs (one without extension, one in a subfolder) + three bad files."""
    src = tmp_path_factory.mktemp("dicoms")
    (src / "sub").mkdir()
    shutil.copy(tfile("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(tfile("MR_small_RLE.dcm"), src / "sub" / "mr.dicom")
    shutil.copy(tfile("dicomdirtests/77654033/CR1/6154"), src / "sub" / "cr")
    (src / "zero.dcm").write_bytes(b"")
    data = open(tfile("CT_small.dcm"), "rb").read()
    (src / "truncated.dcm").write_bytes(data[: len(data) // 2])
    nopix = make_ds(ramp(4, 4))
    del nopix.PixelData
    save(nopix, src / "nopix.dcm")
    return src


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A 1-channel, 2-class yolo11n with its seeded initial weights (boxes at conf 0.001)."""
    import detection.models.runtime  # noqa: F401
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    m = DetectionModel("yolo11n.yaml", nc=2, ch=1, verbose=False)
    m.names = {0: "Aortic enlargement", 1: "Atelectasis"}
    path = tmp_path_factory.mktemp("w") / "untrained.pt"
    torch.save({"model": m, "train_args": {"imgsz": 128, "task": "detect"}}, path)
    return path


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> Path:
    """Five 128 px PNGs of 320 x 240 originals (meta.csv beside them) + one corrupt PNG."""
    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(1)
    meta = []
    for i in range(5):
        im = (rng.random((128, 128)) * 60).astype(np.uint8)
        im[20 + 10 * i:60 + 10 * i, 30:80] = 220
        cv2.imwrite(str(root / f"p{i}.png"), im)
        meta.append({"image_id": f"p{i}", "height": 320, "width": 240, "png_height": 128, "png_width": 128})
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    meta.append({"image_id": "broken", "height": 320, "width": 240, "png_height": 128, "png_width": 128})
    pd.DataFrame(meta).to_csv(root / "meta.csv", index=False)
    return root


def _same_convert_outputs(a: Path, b: Path) -> None:
    pa, pb = sorted(p.name for p in a.glob("*.png")), sorted(p.name for p in b.glob("*.png"))
    assert pa == pb == ["cr.png", "ct.png", "mr.png"]
    for name in pa:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / META).read_bytes() == (b / META).read_bytes()
    assert (a / ERRORS).read_bytes() == (b / ERRORS).read_bytes()
    assert not list(b.glob("*.tmp")) and not (b / "meta.partial.jsonl").exists()


PREDICT_KW = dict(imgsz=128, conf=0.001, max_det=8, batch=2, tta=True)


# ----------------------------------------------------------------------------- scheduler values
def test_check_scheduler_values_and_message():
    assert check_scheduler(None) is None and check_scheduler("null") is None and check_scheduler("") is None
    assert check_scheduler("local") == "local"
    assert check_scheduler("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    for bad in ("cluster", "127.0.0.1:8786", "tcp://host", "http://h:1"):
        with pytest.raises(ValueError, match=r"scheduler .*expected null .*'local'.*tcp://host:port"):
            check_scheduler(bad)


def test_cli_rejects_a_bad_scheduler_in_one_line(dicoms, tmp_path, capsys):
    assert main(["convert", str(dicoms), str(tmp_path / "o"), "--scheduler", "8786"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scheduler '8786'" in err[0] and "Traceback" not in err[0]


# ----------------------------------------------------------------------------- convert
def test_convert_on_cluster_equals_local_and_resumes(dicoms, tmp_path, cluster):
    addr = cluster.scheduler_info()["address"]
    local = convert_folder(dicoms, tmp_path / "local", size=64, workers=1, progress=False)
    dask = convert_folder(dicoms, tmp_path / "dask", size=64, scheduler=addr, progress=False)
    assert (dask.n_converted, dask.n_skipped) == (local.n_converted, local.n_skipped) == (3, 0)
    assert sorted(dask.errors) == sorted(local.errors) and len(local.errors) == 3
    _same_convert_outputs(tmp_path / "local", tmp_path / "dask")

    # resume on the cluster: a second run converts nothing; a lost PNG is made again, identically
    again = convert_folder(dicoms, tmp_path / "dask", size=64, scheduler=addr, progress=False)
    assert (again.n_converted, again.n_skipped, len(again.errors)) == (0, 3, 3)
    (tmp_path / "dask" / "mr.png").unlink()
    again = convert_folder(dicoms, tmp_path / "dask", size=64, scheduler=addr, progress=False)
    assert (again.n_converted, again.n_skipped) == (1, 2)
    _same_convert_outputs(tmp_path / "local", tmp_path / "dask")


def test_convert_relative_paths_name_files_as_given(dicoms, tmp_path, cluster, monkeypatch):
    """The workers get absolute paths; errors.csv still names files relative to where we ran."""
    monkeypatch.chdir(dicoms.parent)
    rel = Path(dicoms.name)
    convert_folder(rel, tmp_path / "local", size=32, workers=1, progress=False)
    convert_folder(rel, tmp_path / "dask", size=32, scheduler=cluster.scheduler_info()["address"], progress=False)
    _same_convert_outputs(tmp_path / "local", tmp_path / "dask")
    errs = pd.read_csv(tmp_path / "dask" / ERRORS)
    assert all(p.startswith(f"{rel}/") for p in errs["path"]) and not errs["error"].str.contains(str(dicoms)).any()


@pytest.mark.slow   # starts its own LocalCluster through the CLI
def test_cli_convert_with_a_local_cluster(dicoms, tmp_path, capsys, caplog):
    """``--scheduler local`` starts (and stops) its own LocalCluster: same files, exit status 1;
    Dask's INFO chatter of that cluster (connections, nannies, shutdown) is not shown."""
    import logging
    assert main(["convert", str(dicoms), str(tmp_path / "local"), "--size", "48", "--workers", "1"]) == 1
    with caplog.at_level(logging.INFO):
        assert main(["convert", str(dicoms), str(tmp_path / "dask"), "--size", "48", "--workers", "1",
                     "--scheduler", "local"]) == 1
    chatter = [r.getMessage() for r in caplog.records if r.name.startswith("distributed") and r.levelno < logging.WARNING]
    assert chatter == [] and any("Dask LocalCluster: 1 worker" in r.getMessage() for r in caplog.records)
    out = capsys.readouterr().out
    assert out.count("converted 3, skipped 0 (already done), errors 3") == 2
    _same_convert_outputs(tmp_path / "local", tmp_path / "dask")


def test_convert_batches_keep_a_row_or_an_error_per_file(dicoms, tmp_path, cluster, monkeypatch):
    """Three files per task: a bad file inside a batch gets its own error row and the rest of its
    batch is written, as on the local path."""
    import data_prep.core.cluster as C

    asked, sent = [], []
    monkeypatch.setattr(C, "batch_size", lambda n, threads, most=4: asked.append((n, threads)) or 3)
    real = C.run_unordered

    def spy(client, fn, items, in_flight=None):
        items = list(items)
        sent.append([[Path(t[0]).name for t in batch] for batch in items])
        yield from real(client, fn, items, in_flight)

    monkeypatch.setattr(C, "run_unordered", spy)
    local = convert_folder(dicoms, tmp_path / "local", size=64, workers=1, progress=False)
    dask = convert_folder(dicoms, tmp_path / "dask", size=64, scheduler=cluster.scheduler_info()["address"],
                          progress=False)
    assert asked == [(6, 2)]
    assert sent == [[["ct.dcm", "nopix.dcm", "truncated.dcm"], ["zero.dcm", "cr", "mr.dicom"]]]   # good + bad in each
    assert (dask.n_converted, len(dask.errors)) == (local.n_converted, len(local.errors)) == (3, 3)
    assert sorted(dask.errors) == sorted(local.errors)
    _same_convert_outputs(tmp_path / "local", tmp_path / "dask")


def test_batch_sizes_and_cuts():
    assert batch_size(200, 2) == 4          # 200 // 32 = 6, at most 4
    assert batch_size(64, 2) == 2 and batch_size(63, 2) == 1 and batch_size(6, 2) == 1
    assert batch_size(0, 2) == 1 and batch_size(100, 0) == 4 and batch_size(10_000, 8, most=16) == 16
    assert batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert batches([], 3) == [] and batches([1, 2], 0) == [[1], [2]]


@pytest.mark.slow   # starts its own LocalCluster
def test_local_cluster_listens_on_loopback_only_and_leaves_8787_alone(monkeypatch):
    """scheduler=local: every listening socket of the client and its workers is on 127.0.0.1, the
    scheduler's HTTP routes do not try port 8787 (taken here), and the workers run with
    LOCAL_CONFIG (no stack sampling; one OpenMP thread but glibc's own trim threshold)."""
    import socket
    import warnings

    import dask
    import psutil

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)   # left here by an earlier LocalCluster's nanny
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 8787))
        blocker.listen()
    except OSError:                 # already taken by someone else: just as good
        pass
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with dask_client("local", 1) as client:
                procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
                listening = [c.laddr for p in procs for c in p.net_connections("inet")
                             if c.status == psutil.CONN_LISTEN and c.laddr.port != 8787]
                settings = client.run(lambda: {k: dask.config.get(k) for k in LOCAL_CONFIG})
                env = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")})
        assert len(listening) >= 3     # scheduler (comm + HTTP), nanny, worker
        assert {a.ip for a in listening} == {"127.0.0.1"}
        assert not [str(w.message) for w in caught if "8787" in str(w.message)]
        assert list(settings.values()) == [LOCAL_CONFIG]
        assert list(env.values()) == [{"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}]
    finally:
        blocker.close()


# ----------------------------------------------------------------------------- predict
@pytest.mark.slow   # loads torch models in every worker
def test_predict_on_cluster_equals_local_model_loaded_once_per_worker(pngs, model, cluster):
    addr = cluster.scheduler_info()["address"]
    e_local, e_dask = [], []
    a = P.predict(model, pngs, errors=e_local, **PREDICT_KW)
    before = sum(cluster.run(worker_loads).values())
    b = P.predict(model, pngs, errors=e_dask, scheduler=addr, **PREDICT_KW)
    assert len(a) == len(b) >= 5 and a.image_id.nunique() == 5
    assert a.image_id.tolist() == b.image_id.tolist() and a.class_id.tolist() == b.class_id.tolist()
    np.testing.assert_allclose(b.score, a.score, atol=1e-4)
    np.testing.assert_allclose(b[XY], a[XY], atol=1e-4)
    assert e_dask == e_local and len(e_local) == 1 and e_local[0].startswith(str(pngs / "broken.png"))

    # 3 batches of 2 on 2 workers: each worker loaded the model at most once; a second run of the
    # same weights loads nothing
    loads = cluster.run(worker_loads)
    assert 1 <= sum(loads.values()) - before <= 2
    P.predict(model, pngs, scheduler=addr, **PREDICT_KW)
    assert cluster.run(worker_loads) == loads


@pytest.mark.slow   # loads torch models in every worker
def test_predict_multilabel_classifier_on_cluster_equals_local(pngs, model, cluster, tmp_path):
    """A multi-label classifier (timm checkpoint): the cluster gives the local probabilities table
    (attrs["cls_probs"]) and the same fused boxes."""
    from detection.engine.classifier import ABNORMAL, FORMAT, build_model

    labels = ["Aortic enlargement", "Atelectasis", ABNORMAL]
    torch.manual_seed(0)
    m = build_model("test_resnet", len(labels))
    torch.save({"format": FORMAT, "arch": "test_resnet", "labels": labels, "imgsz": 32, "in_chans": 1, "mean": 0.5,
                "std": 0.25, "state_dict": m.state_dict(), "epoch": 0, "val_auc": 0.5, "per_label_auc": {}},
               tmp_path / "ml.pt")
    kw = dict(PREDICT_KW, classifier=tmp_path / "ml.pt", cls_low=0.0, cls_high=1.0, normal=(14, "No finding"),
              post={"cls_fusion": "multiply", "alpha": 1.0})
    e_local, e_dask = [], []
    a = P.predict(model, pngs, errors=e_local, **kw)
    b = P.predict(model, pngs, errors=e_dask, scheduler=cluster.scheduler_info()["address"], **kw)
    pa, pb = a.attrs["cls_probs"], b.attrs["cls_probs"]
    # issue 25's contract: image_id, abnormal, then one column per class
    assert list(pa.columns) == list(pb.columns) == ["image_id", ABNORMAL, *labels[:-1]]
    assert pa.image_id.tolist() == pb.image_id.tolist() == [f"p{i}" for i in range(5)]
    np.testing.assert_allclose(pb[labels].to_numpy(), pa[labels].to_numpy(), atol=1e-6)
    assert len(a) == len(b) > 5 and a.class_id.tolist() == b.class_id.tolist()
    np.testing.assert_allclose(b.score, a.score, atol=1e-4)
    np.testing.assert_allclose(b[XY], a[XY], atol=1e-4)
    assert e_dask == e_local and len(e_local) == 1


@pytest.mark.slow   # an ONNX export (~10 s CPU): in `make test-slow`
def test_predict_onnx_on_cluster_equals_local_onnx(pngs, model, cluster, tmp_path):
    w = tmp_path / "m.pt"
    shutil.copy(model, w)
    kw = {**PREDICT_KW, "tta": False, "onnx": True}
    a = P.predict(w, pngs, **kw)                                       # exports m_128.onnx beside m.pt
    mtime = (tmp_path / "m_128.onnx").stat().st_mtime_ns
    b = P.predict(w, pngs, scheduler=cluster.scheduler_info()["address"], **kw)
    assert (tmp_path / "m_128.onnx").stat().st_mtime_ns == mtime        # the workers did not export again
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(b.score, a.score, atol=1e-4)
    np.testing.assert_allclose(b[XY], a[XY], atol=1e-4)


# ----------------------------------------------------------------------------- dask scheduler / dask worker
def _dask_cmd() -> str:
    exe = Path(sys.executable).with_name("dask")
    if not exe.is_file():
        pytest.skip(f"no `dask` command beside {sys.executable}")
    return str(exe)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture()
def cli_cluster(tmp_path):
    """``dask scheduler`` + ``dask worker`` on 127.0.0.1, each in its own process group (one worker
    process: the module's LocalCluster already spreads work over two; each one imports torch)."""
    dask = _dask_cmd()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    sched_file = tmp_path / "scheduler.json"
    logs = [open(tmp_path / "scheduler.log", "wb"), open(tmp_path / "worker.log", "wb")]
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(sched_file)], env=env, start_new_session=True,
                              stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.is_file() and time.monotonic() < deadline and procs[0].poll() is None:
            time.sleep(0.2)
        assert sched_file.is_file(), (tmp_path / "scheduler.log").read_text()
        procs.append(subprocess.Popen([dask, "worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                                       "--nworkers", "1", "--nthreads", "1", "--no-dashboard"], env=env,
                                      start_new_session=True, stdout=logs[1], stderr=subprocess.STDOUT,
                                      cwd=tmp_path))
        addr = json.loads(sched_file.read_text())["address"]
        assert addr.startswith("tcp://127.0.0.1:")
        from distributed import Client

        with Client(addr, timeout="30s") as c:
            c.wait_for_workers(1, timeout=90)
            assert all(w.startswith("tcp://127.0.0.1:") for w in c.scheduler_info()["workers"])
        yield addr
    finally:
        for p in reversed(procs):
            _stop(p)
        for f in logs:
            f.close()


@pytest.mark.slow   # starts `dask scheduler` + `dask worker` processes
def test_dask_scheduler_and_worker_commands_give_the_local_outputs(cli_cluster, dicoms, pngs, model, tmp_path,
                                                                   capsys):
    rc_local = main(["convert", str(dicoms), str(tmp_path / "local"), "--size", "64", "--workers", "1"])
    rc_dask = main(["convert", str(dicoms), str(tmp_path / "dask"), "--size", "64", "--scheduler", cli_cluster])
    assert rc_local == rc_dask == 1
    _same_convert_outputs(tmp_path / "local", tmp_path / "dask")

    args = ["predict", "--weights", str(model), "--source", str(pngs), "--imgsz", "128", "--tta",
            "conf=0.001", "max_det=8", "batch=2"]
    assert main(args + ["--out", str(tmp_path / "local.csv")]) == 1        # broken.png: exit status 1
    assert main(args + ["--out", str(tmp_path / "dask.csv"), "--scheduler", cli_cluster]) == 1
    a, b = pd.read_csv(tmp_path / "local.csv"), pd.read_csv(tmp_path / "dask.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(b) >= 5
    assert a.image_id.tolist() == b.image_id.tolist()
    np.testing.assert_allclose(b[XY + ["score"]], a[XY + ["score"]], atol=1e-4)
    out = capsys.readouterr().out
    assert out.count("; 1 failed") == 2 and out.count(f"failed: {pngs / 'broken.png'}: ") == 2
