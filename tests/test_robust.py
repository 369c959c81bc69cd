"""Issue 10: nothing a user feeds the CLI loses data or shows a traceback.

Every test feeds one kind of bad input through ``cxrdet STAGE`` (``detection.cli.main``) and checks
what a user would: the exit status, ONE stderr line ``cxrdet STAGE: error: <where>: <what>``, the
files left on disk (inputs unchanged, no half-written or hidden staged file), and the warnings.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import detection.engine.predict as P
import detection.engine.predict_batch as PB
import detection.engine.predict_models as PM
from data_prep.core.atomic import LOCK, atomic_path, folder_lock, safe_name, write_csv
from data_prep.core.boxes import make_boxes
from detection.cli import main
from cli_errors import one_error


REPO = Path(__file__).resolve().parents[1]
VIN_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"


# ----------------------------------------------------------------------------- helpers


def patch_bytes(path: Path, old: bytes, new: bytes) -> None:
    b = path.read_bytes()
    assert b.count(old) == 1, old
    path.write_bytes(b.replace(old, new))


def bright_square(h=64, w=80, seed=0) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, 800, (h, w))
    a[10:30, 20:50] = 4000
    return a


@pytest.fixture
def dicom_folder(write_dicom):
    """``dicom_folder(root, ids=("d0", "d1", "d2")) -> root``: one bright-square DICOM per id."""
    def make(root: Path, ids=("d0", "d1", "d2")) -> Path:
        for k, i in enumerate(ids):
            write_dicom(root / f"{i}.dcm", bright_square(seed=k))
        return root
    return make


def sample_csv(path: Path, ids) -> Path:
    pd.DataFrame({"image_id": list(ids), "PredictionString": "14 1 0 0 1 1"}).to_csv(path, index=False)
    return path


def unknown_vr(path: Path, tag: bytes, vr: bytes) -> None:
    """Make element ``tag`` (4 little-endian bytes) carry the unknown VR 'ZZ' (explicit VR LE)."""
    patch_bytes(path, tag + vr, tag + b"ZZ")


# ============================================================================= 1. nothing lost
def test_predict_goes_on_past_an_unparsable_dicom_header(tmp_path, fake_models, capsys, dicom_folder):
    src = dicom_folder(tmp_path / "dcm")
    unknown_vr(src / "d1.dcm", b"\x28\x00\x10\x00", b"US")   # Rows: pydicom NotImplementedError
    out = tmp_path / "p.csv"
    rc = main(["predict", "--weights", "a.pt", "--source", str(src), "--out", str(out), "size=64"])
    assert rc == 1
    printed = capsys.readouterr().out
    assert "1 failed" in printed
    failed = [l for l in printed.splitlines() if l.strip().startswith("failed:")]
    assert len(failed) == 1 and "d1.dcm" in failed[0] and "Unknown Value Representation" in failed[0]
    assert sorted(pd.read_csv(out)["image_id"]) == ["d0", "d2"]


def test_predict_goes_on_past_any_exception_of_one_image(bright_box_detector, tmp_path, fake_models, monkeypatch,
                                                         dicom_folder, write_dicom):
    src = dicom_folder(tmp_path / "dcm", ("d0", "d1", "d2", "d3"))
    real = P.load_image

    def load(row, *a, **k):
        if row.image_id == "d2":
            raise NotImplementedError("some decoder gap")
        return real(row, *a, **k)

    class Flaky(bright_box_detector):   # fails a whole batch that holds d3's image (it has 66 rows)
        def predict(self, imgs, **kw):
            if any(im.shape[0] == 66 for im in imgs):
                raise RuntimeError("device-side assert")
            return super().predict(imgs, **kw)

    write_dicom(src / "d3.dcm", bright_square(h=66))
    monkeypatch.setattr(PB, "load_image", load)
    monkeypatch.setattr(PM, "load_model", lambda w, imgsz, batch, task="detect", onnx=False:
                        P.Loaded(Flaky(), str(w), imgsz, batch))
    errors: list[str] = []
    out = P.predict("a.pt", src, size=None, errors=errors)
    assert sorted(out.image_id) == ["d0", "d1"]
    assert len(errors) == 2
    assert "d2.dcm: NotImplementedError: some decoder gap" in errors[0]
    assert "d3.dcm: prediction failed: RuntimeError: device-side assert" in errors[1]


def _png_folder(root: Path, ids=("a", "b")) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in ids:
        im = np.full((48, 40), 60, np.uint8)
        im[5:20, 5:20] = 220
        cv2.imwrite(str(root / f"{i}.png"), im)
    pd.DataFrame({"image_id": list(ids), "height": 96, "width": 80, "png_height": 48,
                  "png_width": 40}).to_csv(root / "meta.csv", index=False)
    return root


def test_show_never_writes_over_its_source(tmp_path, capsys):
    src = _png_folder(tmp_path / "png")
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    rc = main(["show", "--source", str(src), "--image", "a", "--out", str(src)])
    assert rc == 2
    assert "is the input" in one_error(capsys, "show")
    rc = main(["show", "--source", str(src), "--image", "../png/a", "--image", "b", "--out", str(tmp_path / "o")])
    assert rc == 1   # the path-like id fails, the other is drawn
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["b.png"]
    # a path-like id cannot name a file outside the output folder either
    assert [safe_name(s) for s in ("../png/a", "a/b", "..", ".hidden", "x\\y", "ok.1", "")] == \
        ["__png_a", "a_b", "_", "_hidden", "x_y", "ok.1", "_"]


def test_submit_refuses_a_table_without_score(tmp_path, capsys):
    sample = sample_csv(tmp_path / "s.csv", ["a", "b"])
    pred = make_boxes(["a"], [3], ["Cardiomegaly"], [[1, 2, 30, 40]], score=[0.25])
    pred.rename(columns={"score": "confidence"}).to_csv(tmp_path / "p.csv", index=False)
    out = tmp_path / "sub.csv"
    rc = main(["submit", "--format", "vinbigdata", "--pred", str(tmp_path / "p.csv"), "--sample", str(sample),
               "--out", str(out)])
    assert rc == 2
    line = one_error(capsys, "submit")
    assert f"{tmp_path / 'p.csv'}: missing column(s) ['score']" in line and "'confidence'" in line
    assert not out.exists() and not list(tmp_path.glob(".sub.csv*"))
    from detection.competition.submission import write_submission
    with pytest.raises(ValueError, match="no 'score' column"):
        write_submission(pred.drop(columns="score"), sample, "vinbigdata", out)


def _convert_cli(src, dst, size=48):
    return [sys.executable, "-m", "detection.cli", "convert", str(src), str(dst), "--size", str(size),
            "--workers", "1"]


def test_convert_lock_names_the_holder_and_stale_locks_are_taken_over(tmp_path, capsys, dicom_folder):
    src = dicom_folder(tmp_path / "dcm", ("d0", "d1"))
    dst = tmp_path / "png"
    with folder_lock(dst, "another convert"):
        assert main(["convert", str(src), str(dst), "--size", "48"]) == 2
        line = one_error(capsys, "convert")
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in line and "another convert" in line
        assert not list(dst.glob("*.png"))
    assert not (dst / LOCK).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (dst / LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                        "started": "2026-01-01 00:00:00", "what": "killed convert"}))
    assert main(["convert", str(src), str(dst), "--size", "48"]) == 0
    assert not (dst / LOCK).exists()
    assert sorted(pd.read_csv(dst / "meta.csv")["image_id"]) == ["d0", "d1"]


def test_two_concurrent_converts_into_one_folder_lose_no_meta_row(tmp_path, dicom_folder):
    a = dicom_folder(tmp_path / "a", [f"a{i}" for i in range(6)])
    b = dicom_folder(tmp_path / "b", [f"b{i}" for i in range(6)])
    dst = tmp_path / "png"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(_convert_cli(s, dst), cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for s in (a, b)]
    res = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for (rc, err), s in zip(res, (a, b)):
        assert rc in (0, 2), err
        if rc == 2:   # the loser is told who holds the folder, and converts once the holder is done
            assert "in use by another run" in err and "pid " in err and "Traceback" not in err
            assert subprocess.run(_convert_cli(s, dst), cwd=REPO, env=env).returncode == 0
    pngs = sorted(p.stem for p in dst.glob("*.png"))
    assert pngs == sorted([f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)])
    assert sorted(pd.read_csv(dst / "meta.csv", dtype={"image_id": str})["image_id"]) == pngs
    assert not (dst / LOCK).exists()


# ============================================================================= 2. one line, status 2
@pytest.fixture
def vin_files(tmp_path):
    labels = tmp_path / "train.csv"
    labels.write_text(VIN_HEADER + "a,Cardiomegaly,3,R1,10,10,50,50\na,Cardiomegaly,3,R2,14,14,54,54\n"
                      "b,No finding,14,R1,,,,\n")
    meta = tmp_path / "meta.csv"
    meta.write_text("image_id,dim0,dim1\na,100,200\nb,300,300\n")
    sample = sample_csv(tmp_path / "sample.csv", ["a", "b"])
    pred = tmp_path / "pred.csv"
    make_boxes(["a"], [3], ["Cardiomegaly"], [[12, 12, 52, 52]], score=[0.7]).to_csv(pred, index=False)
    return {"labels": labels, "meta": meta, "sample": sample, "pred": pred, "dir": tmp_path}


def _out_cases(d: Path):
    f = d / "afile.txt"
    f.write_text("x")
    return {"a folder": (d, "is a folder; expected an output file"),
            "under a file": (f / "x.csv", "afile.txt is a file; expected a folder there")}


@pytest.mark.parametrize("case", ["a folder", "under a file"])
def test_output_paths_that_cannot_be_written(vin_files, capsys, case):
    d = vin_files["dir"]
    out, words = _out_cases(d)[case]
    v = {k: str(p) for k, p in vin_files.items()}
    runs = {
        "fuse": ["fuse", "--dataset", "vinbigdata", "--labels", v["labels"], "--meta", v["meta"], "--out", str(out)],
        "submit": ["submit", "--format", "vinbigdata", "--pred", v["pred"], "--sample", v["sample"],
                   "--out", str(out)],
        "evaluate": ["evaluate", "--metric", "vinbigdata", "--truth", v["labels"], "--meta", v["meta"],
                     "--pred", v["pred"], "--json", str(out)],
    }
    for stage, argv in runs.items():
        assert main(argv) == 2, stage
        assert words in one_error(capsys, stage)
    # folders asked for where a file is
    assert main(["convert", str(d), str(d / "afile.txt")]) == 2
    assert "afile.txt: is a file; expected an output folder" in one_error(capsys, "convert")
    assert main(["evaluate", "--metric", "vinbigdata", "--truth", v["labels"], "--meta", v["meta"],
                 "--pred", v["pred"], "--plots", str(d / "afile.txt")]) == 2
    assert "is a file; expected an output folder" in one_error(capsys, "evaluate")
    assert main(["validate-submission", "--format", "vinbigdata", "--sample", v["sample"], str(d)]) == 2
    assert "is a folder; expected a submission CSV" in one_error(capsys, "validate-submission")


@pytest.mark.parametrize("content", ["random", "text", "empty", "zip", "pickle"])
def test_model_files_that_are_not_models(tmp_path, capsys, content):
    import torch
    import zipfile

    _png_folder(tmp_path / "png")
    for suffix in (".pt", ".onnx"):
        p = tmp_path / f"m{suffix}"
        if content == "random":
            p.write_bytes(np.random.default_rng(1).bytes(3000))
        elif content == "text":
            p.write_text("these are not weights\n")
        elif content == "empty":
            p.write_bytes(b"")
        elif content == "zip":
            with zipfile.ZipFile(p, "w") as z:
                z.writestr("model/readme.txt", "hello")
        else:
            torch.save({"epoch": 3}, p)
        for flag in ("--weights", "--classifier"):
            argv = ["predict", "--source", str(tmp_path / "png"), "--out", str(tmp_path / "o.csv")]
            argv += ["--weights", str(p)] if flag == "--weights" else ["--weights", str(p), "--classifier", str(p)]
            assert main(argv) == 2, (suffix, flag)
            line = one_error(capsys, "predict")
            assert str(p) in line
            assert ("empty file (0 bytes)" if content == "empty" else "not a usable model") in line
    assert not (tmp_path / "o.csv").exists()


def _big_string(n: int, rng) -> str:
    x0 = rng.uniform(0, 90, n).round(1)
    y0 = rng.uniform(0, 90, n).round(1)
    return " ".join(f"{c} {s:.3f} {a:g} {b:g} {a + 5:g} {b + 5:g}"
                    for c, s, a, b in zip(rng.integers(0, 14, n), rng.uniform(0, 1, n), x0, y0))


def test_prediction_string_past_the_csv_field_limit(vin_files, capsys):
    rng = np.random.default_rng(0)
    d, v = vin_files["dir"], {k: str(p) for k, p in vin_files.items()}
    s = _big_string(5000, rng)
    assert len(s) > 131072
    sub = d / "big_sub.csv"
    sub.write_text(f"image_id,PredictionString\na,{s}\nb,14 1 0 0 1 1\n")
    assert main(["validate-submission", "--format", "vinbigdata", "--sample", v["sample"], "--meta", v["meta"],
                 str(sub)]) == 0
    assert "valid vinbigdata submission (2 images)" in capsys.readouterr().out
    assert main(["evaluate", "--metric", "vinbigdata", "--truth", v["labels"], "--meta", v["meta"],
                 "--pred", str(sub)]) == 0
    capsys.readouterr()
    xy = rng.uniform(0, 90, (5000, 2)).round(2)
    boxes = make_boxes(["a"] * 5000, rng.integers(0, 14, 5000), "x", np.c_[xy, xy + 7.25], score=rng.uniform(0, 1, 5000))
    boxes.to_csv(d / "bigpred.csv", index=False)
    out = d / "out" / "sub.csv"
    assert main(["submit", "--format", "vinbigdata", "--pred", str(d / "bigpred.csv"), "--sample", v["sample"],
                 "--meta", v["meta"], "--out", str(out)]) == 0
    assert len(out.read_text()) > 131072
    assert sorted(p.name for p in out.parent.iterdir()) == ["sub.csv"]   # no hidden staged file behind


def test_submit_staged_file_removed_when_the_self_check_crashes(vin_files, monkeypatch, capsys):
    import detection.competition.submission as S

    def boom(*a, **k):
        raise OSError(5, "Input/output error", "disk")
    monkeypatch.setattr(S, "validate_submission", boom)
    out = vin_files["dir"] / "o" / "sub.csv"
    assert main(["submit", "--format", "vinbigdata", "--pred", str(vin_files["pred"]), "--sample",
                 str(vin_files["sample"]), "--out", str(out)]) == 2
    one_error(capsys, "submit")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_submit_without_class_name_and_float_class_ids(vin_files, capsys):
    d = vin_files["dir"]
    (d / "p.csv").write_text("image_id,class_id,x_min,y_min,x_max,y_max,score\na,3.0,10,10,50,50,0.5\n")
    out = d / "sub.csv"
    argv = ["submit", "--format", "vinbigdata", "--pred", str(d / "p.csv"), "--sample", str(vin_files["sample"]),
            "--out", str(out)]
    assert main(argv) == 0
    assert out.read_text().splitlines()[1] == "a,3 0.5 10 10 50 50"
    (d / "p.csv").write_text("image_id,class_id,x_min,y_min,x_max,y_max,score\na,3.0,10,10,50,50,0.5\n"
                             "a,2.5,10,10,50,50,0.5\n")
    assert main(argv) == 2
    assert "p.csv line 3: class_id '2.5' is not an integer class id" in one_error(capsys, "submit")


@pytest.mark.parametrize("encoding, hint", [("utf-16", "UTF-16"), ("latin-1", "Latin-1")])
def test_non_utf8_inputs(vin_files, capsys, encoding, hint):
    d, v = vin_files["dir"], {k: str(p) for k, p in vin_files.items()}

    def recode(key: str) -> Path:
        text = vin_files[key].read_text().replace("Cardiomegaly", "Cardiomégaly").replace(",b,", ",bé,")
        if encoding == "latin-1" and "é" not in text:
            text = text.replace("\nb,", "\nbé,")
        bad = d / f"bad_{key}_{encoding}.csv"
        bad.write_bytes(text.encode(encoding))
        return bad

    runs = {
        "submit": (recode("pred"), ["submit", "--format", "vinbigdata", "--sample", v["sample"],
                                    "--out", str(d / "s.csv"), "--pred"]),
        "fuse": (recode("labels"), ["fuse", "--dataset", "vinbigdata", "--meta", v["meta"],
                                    "--out", str(d / "f.csv"), "--labels"]),
        "evaluate": (recode("pred"), ["evaluate", "--metric", "vinbigdata", "--truth", v["labels"],
                                      "--meta", v["meta"], "--pred"]),
        "validate-submission": (recode("sample"), ["validate-submission", "--format", "vinbigdata",
                                                   "--sample", v["sample"]]),
    }
    for stage, (bad, argv) in runs.items():
        assert "é".encode(encoding) in bad.read_bytes() or encoding == "utf-16"
        assert main(argv + [str(bad)]) == 2, stage
        line = one_error(capsys, stage)
        assert f"{bad}: not UTF-8 text" in line and hint in line and "expected a UTF-8 file" in line, line
    assert not (d / "s.csv").exists() and not (d / "f.csv").exists()


# ============================================================================= 3. oddities speak
def test_constant_image_and_garbage_header_fields_convert_with_a_warning(tmp_path, caplog, write_dicom):
    src = tmp_path / "dcm"
    write_dicom(src / "flat.dcm", np.full((40, 50), 700))
    write_dicom(src / "age.dcm", bright_square())
    unknown_vr(src / "age.dcm", b"\x10\x00\x10\x10", b"AS")            # PatientAge: unknown VR
    write_dicom(src / "spacing.dcm", bright_square())
    patch_bytes(src / "spacing.dcm", b"0.1\\0.1", b"ab\\cd  ")          # PixelSpacing: not numbers
    caplog.set_level(logging.WARNING)
    assert main(["convert", str(src), str(tmp_path / "png"), "--size", "32", "--workers", "1"]) == 0
    meta = pd.read_csv(tmp_path / "png" / "meta.csv", dtype=str).set_index("image_id")
    assert sorted(meta.index) == ["age", "flat", "spacing"]
    assert pd.isna(meta.loc["age", "PatientAge"]) and meta.loc["spacing", "PatientAge"] == "045Y"
    assert pd.isna(meta.loc["spacing", "PixelSpacing"]) and meta.loc["age", "PixelSpacing"] == "0.1|0.1"
    text = caplog.text
    assert "flat.dcm: constant image" in text
    assert "age.dcm: header field PatientAge unreadable (NotImplementedError" in text
    assert "spacing.dcm: header field PixelSpacing unreadable (ValueError" in text


@pytest.mark.parametrize("size", ["100000", "8", "0", "-5"])
def test_size_out_of_range_is_rejected_up_front(tmp_path, capsys, size, dicom_folder):
    src = dicom_folder(tmp_path / "dcm", ("d0",))
    assert main(["convert", str(src), str(tmp_path / "png"), "--size", size]) == 2
    assert f"--size: key 'size' = {int(size)}; expected an integer in [32, 8192]" in \
        one_error(capsys, "convert")  # the config merge's rule (data_prep/core/keys.py), before any file is read
    assert not (tmp_path / "png").exists()
    assert main(["convert", str(src), str(tmp_path / "png"), f"size={size}"]) == 2   # via the config too
    one_error(capsys, "convert")


def test_duplicate_label_rows_are_counted(tmp_path, caplog):
    from data_prep.datasets import vinbigdata

    row = "a,Cardiomegaly,3,R1,10,10,50,50\n"
    (tmp_path / "train.csv").write_text(VIN_HEADER + row + row + "a,Cardiomegaly,3,R2,14,14,54,54\n" + row)
    (tmp_path / "meta.csv").write_text("image_id,dim0,dim1\na,100,200\n")
    caplog.set_level(logging.WARNING)
    vinbigdata.load(tmp_path / "train.csv", tmp_path / "meta.csv")
    assert "train.csv: 2 duplicate row(s), identical to an earlier row in every column: train.csv line 3, " \
           "train.csv line 5" in caplog.text


def test_evaluate_warns_on_partial_refuses_no_coverage_and_rejects_bad_scores(vin_files, capsys, caplog):
    d, v = vin_files["dir"], {k: str(p) for k, p in vin_files.items()}
    base = ["evaluate", "--metric", "vinbigdata", "--truth", v["labels"], "--meta", v["meta"]]
    caplog.set_level(logging.WARNING)
    assert main(base + ["--pred", v["pred"]]) == 0       # box table with image a only: 1 of 2
    assert "predictions cover 1 of the 2 evaluated truth images; the other 1 count as predicted empty" in caplog.text
    assert "--folds folds.csv --fold K" in caplog.text
    caplog.clear()
    make_boxes(["zz"], [3], ["Cardiomegaly"], [[1, 1, 5, 5]], score=[0.5]).to_csv(d / "other.csv", index=False)
    capsys.readouterr()
    assert main(base + ["--pred", str(d / "other.csv")]) == 2   # none covered: an error (issue 30), not a 0.0
    assert "no prediction matches any of the 2 evaluated truth image(s)" in one_error(capsys, "evaluate")
    make_boxes(["a", "a"], [3, 3], "Cardiomegaly", [[1, 1, 5, 5]] * 2, score=[0.5, 1.5]).to_csv(d / "hi.csv",
                                                                                               index=False)
    capsys.readouterr()
    assert main(base + ["--pred", str(d / "hi.csv")]) == 2
    assert "hi.csv: score 1.5 of image 'a' is outside [0, 1]" in one_error(capsys, "evaluate")


def test_validate_without_meta_says_bounds_unchecked(vin_files, capsys):
    v = {k: str(p) for k, p in vin_files.items()}
    assert main(["validate-submission", "--format", "vinbigdata", "--sample", v["sample"], v["sample"]]) == 0
    assert "box bounds were not checked" in capsys.readouterr().out
    assert main(["validate-submission", "--format", "vinbigdata", "--sample", v["sample"], "--meta", v["meta"],
                 v["sample"]]) == 0
    assert "not checked" not in capsys.readouterr().out


def test_stale_hidden_temps_are_cleaned_on_the_next_run(tmp_path, dicom_folder):
    src = dicom_folder(tmp_path / "dcm", ("d0",))
    dst = tmp_path / "png"
    dst.mkdir()
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    stale = [dst / f".meta.csv.{dead}.k2j4h.tmp", dst / ".meta.csv.q8w7e6r5.tmp", dst / f".errors.csv.{dead}.x.tmp"]
    live = dst / f".meta.csv.{os.getpid()}.abc.tmp"      # a live writer's temp is left alone
    for p in stale + [live]:
        p.write_text("half")
    assert main(["convert", str(src), str(dst), "--size", "32"]) == 0
    assert [p for p in stale if p.exists()] == [] and live.exists()
    # the same for any atomic write
    other = tmp_path / "t"
    other.mkdir()
    (other / f".x.csv.{dead}.zz.tmp").write_text("half")
    (other / f".x.csv.bak.{dead}.zz.tmp").write_text("another target's temp")
    write_csv(pd.DataFrame({"a": [1]}), other / "x.csv")
    assert sorted(p.name for p in other.iterdir()) == [f".x.csv.bak.{dead}.zz.tmp", "x.csv"]
    with pytest.raises(RuntimeError):
        with atomic_path(other / "y.csv") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert not (other / "y.csv").exists() and not list(other.glob(".y.csv*"))


def test_predict_checks_its_output_and_size_before_loading_anything(tmp_path, capsys):
    src = _png_folder(tmp_path / "png")
    base = ["predict", "--weights", str(tmp_path / "none.pt"), "--source", str(src)]
    assert main(base + ["--out", str(tmp_path)]) == 2
    assert "is a folder; expected an output file path" in one_error(capsys, "predict")
    assert main(base + ["--out", str(src / "meta.csv"), "--meta", str(src / "meta.csv")]) == 2
    assert "is the input" in one_error(capsys, "predict")
    assert main(base + ["--out", str(tmp_path / "p.csv"), "size=100000"]) == 2
    assert "key=value: key 'size' = 100000; expected an integer in [32, 8192]" in one_error(capsys, "predict")
    assert main(base + ["--out", str(tmp_path / "p.csv")]) == 2   # and then the missing weights, by name
    assert "none.pt" in one_error(capsys, "predict")


def test_table_cells_that_are_not_numbers_and_json_that_is_not_json(vin_files, capsys, tmp_path):
    from data_prep.core.errors import InputError, reading

    d, v = vin_files["dir"], {k: str(p) for k, p in vin_files.items()}
    (d / "p.csv").write_text("image_id,class_id,class_name,x_min,y_min,x_max,y_max,score\n"
                             "a,3,Cardiomegaly,10,10,50,50,0.5\na,3,Cardiomegaly,ten,10,50,50,0.5\n")
    assert main(["evaluate", "--metric", "vinbigdata", "--truth", v["labels"], "--meta", v["meta"],
                 "--pred", str(d / "p.csv")]) == 2
    assert "p.csv line 3: x_min 'ten' is not a finite number; expected a finite number (1 such row(s))" in \
        one_error(capsys, "evaluate")
    (tmp_path / "b.json").write_text('{"mAP": 0.3,')
    with pytest.raises(InputError, match=r"b.json: not valid JSON \(Expecting property name .* line 1"):
        with reading(tmp_path / "b.json", "baseline JSON"):
            json.loads((tmp_path / "b.json").read_text())
