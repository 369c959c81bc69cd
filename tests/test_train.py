"""Detector / classifier training: tiny real ultralytics runs on a prep-like folder built here.

The ``make_prep`` fixture (conftest.py; also used by test_predict.py and test_runtime.py) writes
the layout `cxrdet prep` produces: images/*.png (square PNG frame of 320 x 240 originals), labels/*.txt, meta.csv,
images.csv, fused_boxes.csv, folds.csv and yolo/fold<k>/{train.txt,val.txt,data.yaml}.
"""
from __future__ import annotations

import os

import pandas as pd
import pytest

# ----------------------------------------------------------------------------- no training needed
def test_resolve_model_refuses_downloads(tmp_path, monkeypatch):
    from detection.engine.train import resolve_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        resolve_model("yolo11n.pt")
    with pytest.raises(ValueError, match="expected a model YAML"):
        resolve_model("yolo11n.bin")
    assert resolve_model("yolo11n.yaml") == "yolo11n.yaml"
    (tmp_path / "local.pt").write_bytes(b"x")
    assert resolve_model("local.pt") == "local.pt"


def test_train_bare_pt_name_gives_clear_error_before_ultralytics(make_prep, tiny_cfg, tmp_path, monkeypatch):
    from detection.engine.train import train_detector

    monkeypatch.chdir(tmp_path)
    prep = make_prep(tmp_path / "prep", n=4)
    with pytest.raises(FileNotFoundError, match="Pretrained weights cannot be downloaded here"):
        train_detector(tiny_cfg(tmp_path, model="yolo11n.pt"), prep, 0)
    assert not (tmp_path / "runs").exists()


def test_cli_bare_pt_error_message(make_prep, tmp_path, monkeypatch, capsys):
    from detection.cli import main

    monkeypatch.chdir(tmp_path)
    prep = make_prep(tmp_path / "prep", n=4)
    rc = main(["train", "--config", "vinbigdata", "--prep", str(prep), "model=yolo11n.pt", "device=0"])
    assert rc == 2
    assert "cannot be downloaded" in capsys.readouterr().err


def test_device_override_stays_a_string():
    import argparse

    from data_prep.core.config import stage_config

    cfg = stage_config(argparse.Namespace(config=None, overrides=["device=0", "epochs=2"], fold=1))
    assert cfg["device"] == "0" and cfg["epochs"] == 2 and cfg["fold"] == 1
    cfg = stage_config(argparse.Namespace(config=None, overrides=["device=0,1"], fold=None))
    assert cfg["device"] == "0,1" and cfg["fold"] == 0


def test_missing_fold_yaml_is_named(make_prep, tiny_cfg, tmp_path):
    from detection.engine.train import train_detector

    prep = make_prep(tmp_path / "prep", n=4)
    with pytest.raises(FileNotFoundError, match="fold7"):
        train_detector(tiny_cfg(tmp_path), prep, 7)


def test_cls_dataset_split_and_labels(make_prep, tmp_path):
    from detection.engine.train import build_cls_dataset

    prep = make_prep(tmp_path / "prep", n=12)
    counts = build_cls_dataset(prep, 1, tmp_path / "cls")
    # normal = i % 3 == 0: 0, 3, 6, 9. fold 1 = odd i (val): 3, 9 normal; fold 0 (train): 0, 6 normal
    assert counts == {"train/normal": 2, "train/abnormal": 4, "val/normal": 2, "val/abnormal": 4}
    assert sorted(p.name for p in (tmp_path / "cls" / "train" / "normal").iterdir()) == ["img000.png", "img006.png"]
    assert sorted(p.name for p in (tmp_path / "cls" / "val" / "normal").iterdir()) == ["img003.png", "img009.png"]
    # a fold without normal images still gets both class folders (ultralytics needs them)
    pd.DataFrame({"image_id": [f"img{i:03d}" for i in range(12)], "fold": [int(i % 3 != 0) for i in range(12)]}) \
        .to_csv(prep / "folds.csv", index=False)
    counts = build_cls_dataset(prep, 1, tmp_path / "cls2")
    assert counts == {"train/normal": 4, "val/abnormal": 8}
    assert (tmp_path / "cls2" / "val" / "normal").is_dir() and (tmp_path / "cls2" / "train" / "abnormal").is_dir()
    a = tmp_path / "cls" / "train" / "abnormal" / "img002.png"
    assert a.read_bytes() == (prep / "images" / "img002.png").read_bytes()


# ----------------------------------------------------------------------------- real training
def test_train_detector_one_epoch_grayscale(prep_names, make_prep, tiny_cfg, tmp_path):
    """A real (tiny) ultralytics run: 1 epoch, 128 px, 1-channel, 12 images."""
    import torch

    from detection.engine.train import train_detector

    prep = make_prep(tmp_path / "prep", n=12)
    best = train_detector(tiny_cfg(tmp_path, name="det"), prep, 0)
    assert best == (tmp_path / "runs" / "det" / "weights" / "best.pt").resolve()
    ck = torch.load(best, map_location="cpu", weights_only=False)
    first_conv = next(m for m in ck["model"].modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1  # channels: 1 in data.yaml -> grayscale model
    names, _ = prep_names
    assert ck["model"].names == {0: names[0], 1: names[1]}
    res = pd.read_csv(best.parents[1] / "results.csv")
    assert len(res) == 1


def test_train_classifier_one_epoch(make_prep, tiny_cfg, tmp_path):
    from ultralytics import YOLO

    from detection.engine.train import train_classifier

    prep = make_prep(tmp_path / "prep", n=12)
    best = train_classifier(tiny_cfg(tmp_path, cls_epochs=1, cls_imgsz=64), prep, 0)
    assert best.parts[-3] == "vinbigdata_fold0_cls"
    assert (best.parents[1] / "cls_data" / "train" / "normal").is_dir()
    assert YOLO(str(best)).names == {0: "abnormal", 1: "normal"}


def test_resume_continues_a_killed_run(make_prep, tiny_cfg, tmp_path):
    """Kill after epoch 1 of 3 (exception in a callback), then resume=true finishes epochs 2-3."""
    from detection.engine.train import train_detector

    prep = make_prep(tmp_path / "prep", n=8)

    def kill(trainer):
        if trainer.epoch == 0:
            raise KeyboardInterrupt("simulated kill")

    cfg = tiny_cfg(tmp_path, name="r", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_detector(cfg, prep, 0, callbacks={"on_fit_epoch_end": kill})
    run = tmp_path / "runs" / "r"
    assert len(pd.read_csv(run / "results.csv")) == 1 and (run / "weights" / "last.pt").is_file()
    best = train_detector({**cfg, "resume": True}, prep, 0)
    res = pd.read_csv(run / "results.csv")
    assert res["epoch"].tolist() == [1, 2, 3]
    assert best.is_file()


def test_resume_without_checkpoint_is_explained(make_prep, tiny_cfg, tmp_path):
    from detection.engine.train import train_detector

    prep = make_prep(tmp_path / "prep", n=4)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_detector(tiny_cfg(tmp_path, name="none", resume=True), prep, 0)


def test_yolo_args_reach_ultralytics(make_prep, tiny_cfg, tmp_path):
    """yolo_args pass through to ultralytics as they are: an unknown one is ultralytics' error."""
    from detection.engine.train import train_detector

    prep = make_prep(tmp_path / "prep", n=4)
    with pytest.raises(SyntaxError, match="not_an_arg"):
        train_detector(tiny_cfg(tmp_path, yolo_args={"not_an_arg": 1}), prep, 0)
    assert os.path.isdir(prep)
