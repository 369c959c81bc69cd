"""Issue 30 (third sweep), item 1: no code runs from a model file by default.

A planted ``.pt`` whose pickle would create a file (``__reduce__`` -> ``open(marker, "w")``) is
handed to every loading path (predict --weights, predict --classifier, export, train model=,
cv model=, cv resuming from a planted last.pt, a tv: checkpoint, classify, cls_pretrained, a
multi-label resume): each refuses it with exit 2 and one line naming the file and
``trust_weights=true``, and the marker file is never created. With ``trust_weights=true`` a file
that needs more than tensors loads. The shipped weights and the checkpoints the project writes
load under the safe loader (a tiny training run predicts from its best.pt and resumes its last.pt).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detection.cli import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "weights").glob("*.pt"))


class _Evil:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(autouse=True)
def _safe_again():
    """Each test starts and ends with the default (nothing trusted) in this process."""
    from detection.models import safe_load

    safe_load.enforce(False)
    yield
    safe_load.enforce(False)


def _plant(path: Path, marker: Path, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Evil(marker), "epoch": 0, "train_args": {}, **extra}, path)
    assert not marker.exists()
    return path


def _pngs(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"im{i}.png"), np.full((64, 64), 40 * (i + 1), np.uint8))
    return folder


def _refused(capsys, rc: int, path: Path, marker: Path) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert not marker.exists(), "the planted pickle ran"
    line = err.splitlines()[-1]
    assert str(path) in line and "trust_weights=true" in line, line
    assert "internal error" not in err   # (pytest capture can add "--- Logging error ---" tracebacks of closed streams)
    return line


def test_predict_weights_refuses_a_planted_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "evil.pt", marker)
    rc = main(["predict", "--weights", str(evil), "--source", str(_pngs(tmp_path / "src")),
               "--out", str(tmp_path / "o.csv"), "device=cpu"])
    _refused(capsys, rc, evil, marker)


def test_predict_classifier_refuses_a_planted_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "evil_cls.pt", marker)
    rc = main(["predict", "--weights", str(REPO / "weights" / "vinbig_phantom_yolo11n.pt"), "--classifier", str(evil),
               "--source", str(_pngs(tmp_path / "src")), "--out", str(tmp_path / "o.csv"), "device=cpu"])
    _refused(capsys, rc, evil, marker)


def test_export_refuses_a_planted_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "evil.pt", marker)
    rc = main(["export", str(evil), "--out", str(tmp_path / "e.onnx")])
    _refused(capsys, rc, evil, marker)
    assert not (tmp_path / "e.onnx").exists()


def test_tv_checkpoint_refuses_a_planted_pickle(tmp_path, capsys):
    """A file marked as a tv: checkpoint goes through detection.models.tv's loader: refused too."""
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "evil_tv.pt", marker, cxrdet_family="tv", arch="fasterrcnn_mobilenet_v3_large_fpn",
                  names={0: "a"}, imgsz=64)
    from detection.models import tv

    assert tv.is_weights(evil)
    rc = main(["predict", "--weights", str(evil), "--source", str(_pngs(tmp_path / "src")),
               "--out", str(tmp_path / "o.csv"), "device=cpu"])
    _refused(capsys, rc, evil, marker)


def test_classify_refuses_a_planted_pickle(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "evil_ml.pt", marker, format="cxrdet-multilabel")
    rc = main(["classify", "--weights", str(evil), "--source", str(_pngs(tmp_path / "src")),
               "--out", str(tmp_path / "p.csv"), "device=cpu"])
    _refused(capsys, rc, evil, marker)


def test_train_and_cv_model_refuse_a_planted_pickle(make_prep, tmp_path, capsys):
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "evil.pt", marker)
    common = [f"model={evil}", "device=cpu", "epochs=1", "imgsz=64", f"project={tmp_path / 'runs'}", "workers=0"]
    rc = main(["train", "--config", "phantom", "--prep", str(prep), *common])
    _refused(capsys, rc, evil, marker)
    rc = main(["cv", "--config", "phantom", "--prep", str(prep), "folds=2", *common])
    _refused(capsys, rc, evil, marker)
    last = _plant(tmp_path / "runs" / "t" / "weights" / "last.pt", marker)   # train resume=true from it
    rc = main(["train", "--config", "phantom", "--prep", str(prep), "resume=true", "name=t", *common[1:]])
    _refused(capsys, rc, last, marker)


def test_train_cls_pretrained_and_multilabel_resume_refuse_a_planted_pickle(make_prep, tmp_path, capsys):
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    (prep / "boxes.csv").write_bytes((prep / "fused_boxes.csv").read_bytes())   # one rater's boxes
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "evil_sd.pt", marker)
    common = ["cls_task=multilabel", "cls_arch=resnet10t", "cls_epochs=1", "cls_imgsz=32", "device=cpu",
              f"project={tmp_path / 'runs'}", "workers=0", "name=ml"]
    rc = main(["train-cls", "--config", "phantom", "--prep", str(prep), f"cls_pretrained={evil}", *common])
    _refused(capsys, rc, evil, marker)
    last = _plant(tmp_path / "runs" / "ml" / "weights" / "last.pt", marker, format="cxrdet-multilabel")
    rc = main(["train-cls", "--config", "phantom", "--prep", str(prep), "resume=true", *common])
    _refused(capsys, rc, last, marker)


def test_cv_resuming_from_a_planted_last_pt_refuses_it(make_prep, tmp_path, capsys, monkeypatch):
    """A cv run killed in fold 0's training (its record says: not done, same settings), then a
    planted last.pt in the run folder: the rerun would resume from it; it refuses it instead."""
    import detection.engine.train as train_mod

    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    marker = tmp_path / "pwned"
    args = ["cv", "--config", "phantom", "--prep", str(prep), "folds=2", "--fold", "0", "device=cpu", "epochs=1", "imgsz=64",
            f"project={tmp_path / 'runs'}", "workers=0", "name=r"]
    planted = {}

    def killed(cfg, prep_dir, fold=None, callbacks=None):
        planted["last"] = _plant(train_mod.run_dir({**cfg, "fold": fold}) / "weights" / "last.pt", marker)
        raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(train_mod, "train_detector", killed)
    assert main(args) == 130
    capsys.readouterr()
    monkeypatch.undo()
    rc = main(args)
    _refused(capsys, rc, planted["last"], marker)


def test_trust_weights_true_loads_a_file_that_needs_more(tmp_path, capsys):
    """A real multi-label checkpoint with one extra pickled object (an argparse.Namespace, outside
    the weights-only allow-list) is refused by default and classifies with trust_weights=true."""
    ck = torch.load(REPO / "weights" / "vinbig_phantom_multilabel.pt", map_location="cpu", weights_only=True)
    ck["extra"] = argparse.Namespace(note="made elsewhere")
    w = tmp_path / "needs_more.pt"
    torch.save(ck, w)
    src = _pngs(tmp_path / "src")
    out = tmp_path / "p.csv"
    rc = main(["classify", "--weights", str(w), "--source", str(src), "--out", str(out), "device=cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "trust_weights=true" in err.splitlines()[-1] and not out.exists()
    rc = main(["classify", "--weights", str(w), "--source", str(src), "--out", str(out), "device=cpu",
               "trust_weights=true"])
    assert rc == 0, capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 3   # header + 2 images


def test_trust_weights_true_runs_the_pickle_it_was_told_to_trust(tmp_path, capsys):
    """The opt-in really switches the loader: the planted file's code runs (that is what trusting means)."""
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "evil.pt", marker)
    main(["export", str(evil), "--out", str(tmp_path / "e.onnx"), "trust_weights=true"])
    capsys.readouterr()
    assert marker.exists()


def test_trust_weights_is_a_typed_config_key(capsys):
    rc = main(["export", "x.pt", "trust_weights=maybe"])
    err = capsys.readouterr().err
    assert rc == 2 and "trust_weights" in err and "bool" in err


@pytest.mark.parametrize("w", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_weights_load_under_the_safe_loader(w):
    from detection.engine.classifier import is_multilabel, load_checkpoint
    from detection.models.runtime import ultralytics_checkpoint

    if is_multilabel(w):
        assert load_checkpoint(w)["labels"]
    else:
        ck = ultralytics_checkpoint(w)
        assert ck["model"] is not None


def test_shipped_detector_predicts_under_the_safe_loader(tmp_path, capsys):
    assert os.environ.get("ULTRALYTICS_SAFE_LOAD") == "1"
    out = tmp_path / "o.csv"
    rc = main(["predict", "--weights", str(REPO / "weights" / "vinbig_phantom_yolo11n.pt"),
               "--classifier", str(REPO / "weights" / "vinbig_phantom_cls.pt"),
               "--source", str(_pngs(tmp_path / "src")), "--out", str(out), "device=cpu"])
    assert rc == 0, capsys.readouterr().err
    assert out.is_file()


@pytest.mark.parametrize("bad,expect", [
    (b"", "empty file"),
    (b"\x00garbage" * 50, "not loadable"),
])
def test_damaged_weights_are_one_line(tmp_path, capsys, bad, expect):
    w = tmp_path / "bad.pt"
    w.write_bytes(bad)
    rc = main(["predict", "--weights", str(w), "--source", str(_pngs(tmp_path / "src")),
               "--out", str(tmp_path / "o.csv"), "device=cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and str(w) in err, err


def test_truncated_checkpoint_is_one_line_naming_the_file(tmp_path, capsys):
    src = (REPO / "weights" / "vinbig_phantom_yolo11n.pt").read_bytes()
    w = tmp_path / "cut.pt"
    w.write_bytes(src[: len(src) // 2])
    rc = main(["predict", "--weights", str(w), "--source", str(_pngs(tmp_path / "src")),
               "--out", str(tmp_path / "o.csv"), "device=cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(w) in err.splitlines()[-1] and "internal error" not in err, err


@pytest.mark.slow   # one tiny training (~15 s on 2 cores)
def test_checkpoints_the_project_writes_load_and_resume_under_the_safe_loader(make_prep, tmp_path, capsys):
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    common = ["--config", "phantom", "--prep", str(prep), "device=cpu", "epochs=2", "imgsz=64", "batch=4", "workers=0",
              f"project={tmp_path / 'runs'}", "name=t", 'yolo_args={"plots": false, "mosaic": 0.0}']
    assert main(["train", *common]) == 0, capsys.readouterr().err
    wdir = tmp_path / "runs" / "t" / "weights"
    for w in ("best.pt", "last.pt"):
        from detection.models.runtime import ultralytics_checkpoint

        assert ultralytics_checkpoint(wdir / w)["train_args"]["epochs"] == 2
        out = tmp_path / f"pred_{w}.csv"
        rc = main(["predict", "--weights", str(wdir / w), "--source", str(prep / "images"),
                   "--meta", str(prep / "meta.csv"), "--out", str(out), "device=cpu", "conf=0.0001"])
        assert rc == 0, capsys.readouterr().err
        assert out.is_file()


def test_init_refuses_a_planted_pickle_in_train_and_cv(make_prep, tmp_path, capsys):
    """``init=`` (the fine-tune stage's starting checkpoint; {fold} per fold in cv)."""
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "init_fold0.pt", marker)
    common = ["device=cpu", "epochs=1", "imgsz=64", f"project={tmp_path / 'runs'}", "workers=0"]
    rc = main(["train", "--config", "phantom", "--prep", str(prep), f"init={evil}", *common])
    _refused(capsys, rc, evil, marker)
    rc = main(["cv", "--config", "phantom", "--prep", str(prep), "--fold", "0", "folds=2",
               f"init={tmp_path / 'init_fold{fold}.pt'}", *common])
    _refused(capsys, rc, evil, marker)


def test_yolo_args_pretrained_refuses_a_planted_pickle(make_prep, tmp_path, capsys):
    """A .pt that ultralytics' trainer loads itself (yolo_args pretrained=): its safe mode refuses
    it (ULTRALYTICS_SAFE_LOAD) and the CLI says so in one line naming the file (exit 2)."""
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    marker = tmp_path / "pwned"
    evil = _plant(tmp_path / "pre.pt", marker)
    rc = main(["train", "--config", "phantom", "--prep", str(prep), "device=cpu", "epochs=1", "imgsz=64", "batch=2", "workers=0",
               f"project={tmp_path / 'runs'}", f'yolo_args={{"pretrained": "{evil}", "plots": false}}'])
    _refused(capsys, rc, evil, marker)
