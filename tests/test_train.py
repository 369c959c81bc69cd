"""Detector / classifier training: tiny real ultralytics runs on a prep-like folder built here.

``make_prep`` (also used by test_predict.py and test_runtime.py) writes the layout `cxrdet prep`
produces: images/*.png (square PNG frame of 320 x 240 originals), labels/*.txt, meta.csv,
images.csv, fused_boxes.csv, folds.csv and yolo/fold<k>/{train.txt,val.txt,data.yaml}.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from data_prep.boxes import from_frame, make_boxes, xyxy_to_yolo

ORIG_HW = (320, 240)  # original (height, width) of every fixture image
NAMES = ["Aortic enlargement", "Atelectasis"]


def make_prep(root: Path, n: int = 12, png: int = 128, channels: int = 1, k: int = 2, seed: int = 0) -> Path:
    """A prep output folder with ``n`` images: every 3rd image is normal, others hold one bright
    square of class ``i % 2`` (class 1 squares are hollow). Returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    h, w = ORIG_HW
    meta, boxes, folds = [], [], []
    for i in range(n):
        iid = f"img{i:03d}"
        im = (rng.random((png, png)) * 50).astype(np.uint8)
        lines = []
        if i % 3:
            c = i % 2
            s = int(rng.integers(png // 6, png // 3))
            x, y = (int(v) for v in rng.integers(4, png - s - 4, 2))
            im[y:y + s, x:x + s] = 230
            if c:
                im[y + 4:y + s - 4, x + 4:x + s - 4] = 60
            png_box = np.array([[x, y, x + s, y + s]], dtype="float64")
            orig = from_frame(png_box, _frame(png))
            boxes.append(make_boxes(iid, c, NAMES[c], orig))
            cx, cy, bw, bh = xyxy_to_yolo(png_box, png, png)[0]
            lines.append(f"{c} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        cv2.imwrite(str(root / "images" / f"{iid}.png"), im)
        (root / "labels" / f"{iid}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        meta.append({"image_id": iid, "height": h, "width": w, "png_height": png, "png_width": png})
        folds.append({"image_id": iid, "fold": i % k})
    meta = pd.DataFrame(meta)
    meta.to_csv(root / "meta.csv", index=False)
    it = meta[["image_id", "height", "width"]].assign(path=[str(root / "images" / f"{m}.png") for m in meta.image_id],
                                                     patient_id=meta.image_id)
    it.to_csv(root / "images.csv", index=False)
    pd.concat(boxes, ignore_index=True).to_csv(root / "fused_boxes.csv", index=False)
    folds = pd.DataFrame(folds)
    folds.to_csv(root / "folds.csv", index=False)
    for f in range(k):
        d = root / "yolo" / f"fold{f}"
        d.mkdir(parents=True)
        paths = {s: [str(root / "images" / f"{r.image_id}.png") for r in folds.itertuples() if (r.fold == f) == (s == "val")]
                 for s in ("train", "val")}
        for s, ps in paths.items():
            (d / f"{s}.txt").write_text("\n".join(ps) + "\n")
        data = {"path": str(d), "train": str(d / "train.txt"), "val": str(d / "val.txt"), "nc": len(NAMES),
                "names": dict(enumerate(NAMES))}
        if channels == 1:
            data["channels"] = 1
        (d / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def _frame(png: int):
    from data_prep.boxes import frame_for

    return frame_for(*ORIG_HW, png)


def tiny_cfg(tmp_path: Path, **kw) -> dict:
    """The default config with a tiny, fast training setup under ``tmp_path/runs``."""
    from data_prep.config import load_config

    ov = {"epochs": 1, "imgsz": 128, "batch": 4, "device": "cpu", "project": str(tmp_path / "runs"),
          "workers": 0, "folds": 2, "yolo_args": {"plots": False, "val": True, "mosaic": 0.0}, **kw}
    return load_config(None, ov)


# ----------------------------------------------------------------------------- no training needed
def test_resolve_model_refuses_downloads(tmp_path, monkeypatch):
    from detection.train import resolve_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        resolve_model("yolo11n.pt")
    with pytest.raises(ValueError, match="expected a model YAML"):
        resolve_model("yolo11n.bin")
    assert resolve_model("yolo11n.yaml") == "yolo11n.yaml"
    (tmp_path / "local.pt").write_bytes(b"x")
    assert resolve_model("local.pt") == "local.pt"


def test_train_bare_pt_name_gives_clear_error_before_ultralytics(tmp_path, monkeypatch):
    from detection.train import train_detector

    monkeypatch.chdir(tmp_path)
    prep = make_prep(tmp_path / "prep", n=4)
    with pytest.raises(FileNotFoundError, match="Pretrained weights cannot be downloaded here"):
        train_detector(tiny_cfg(tmp_path, model="yolo11n.pt"), prep, 0)
    assert not (tmp_path / "runs").exists()


def test_cli_bare_pt_error_message(tmp_path, monkeypatch, capsys):
    from detection.cli import main

    monkeypatch.chdir(tmp_path)
    prep = make_prep(tmp_path / "prep", n=4)
    rc = main(["train", "vinbigdata", "--prep", str(prep), "model=yolo11n.pt", "device=0"])
    assert rc == 2
    assert "cannot be downloaded" in capsys.readouterr().err


def test_device_override_stays_a_string():
    import argparse

    from detection.train import config_from_args

    cfg = config_from_args(argparse.Namespace(config=None, overrides=["device=0", "epochs=2"], fold=1))
    assert cfg["device"] == "0" and cfg["epochs"] == 2 and cfg["fold"] == 1
    cfg = config_from_args(argparse.Namespace(config=None, overrides=["device=0,1"], fold=None))
    assert cfg["device"] == "0,1" and cfg["fold"] == 0


def test_missing_fold_yaml_is_named(tmp_path):
    from detection.train import train_detector

    prep = make_prep(tmp_path / "prep", n=4)
    with pytest.raises(FileNotFoundError, match="fold7"):
        train_detector(tiny_cfg(tmp_path), prep, 7)


def test_cls_dataset_split_and_labels(tmp_path):
    from detection.train import build_cls_dataset

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
def test_train_detector_one_epoch_grayscale(tmp_path):
    """A real (tiny) ultralytics run: 1 epoch, 128 px, 1-channel, 12 images."""
    import torch

    from detection.train import train_detector

    prep = make_prep(tmp_path / "prep", n=12)
    best = train_detector(tiny_cfg(tmp_path, name="det"), prep, 0)
    assert best == (tmp_path / "runs" / "det" / "weights" / "best.pt").resolve()
    ck = torch.load(best, map_location="cpu", weights_only=False)
    first_conv = next(m for m in ck["model"].modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1  # channels: 1 in data.yaml -> grayscale model
    assert ck["model"].names == {0: NAMES[0], 1: NAMES[1]}
    res = pd.read_csv(best.parents[1] / "results.csv")
    assert len(res) == 1


def test_train_classifier_one_epoch(tmp_path):
    from ultralytics import YOLO

    from detection.train import train_classifier

    prep = make_prep(tmp_path / "prep", n=12)
    best = train_classifier(tiny_cfg(tmp_path, cls_epochs=1, cls_imgsz=64), prep, 0)
    assert best.parts[-3] == "vinbigdata_fold0_cls"
    assert (best.parents[1] / "cls_data" / "train" / "normal").is_dir()
    assert YOLO(str(best)).names == {0: "abnormal", 1: "normal"}


def test_resume_continues_a_killed_run(tmp_path):
    """Kill after epoch 1 of 3 (exception in a callback), then resume=true finishes epochs 2-3."""
    from detection.train import train_detector

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


def test_resume_without_checkpoint_is_explained(tmp_path):
    from detection.train import train_detector

    prep = make_prep(tmp_path / "prep", n=4)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_detector(tiny_cfg(tmp_path, name="none", resume=True), prep, 0)


def test_yolo_args_reach_ultralytics(tmp_path):
    """yolo_args pass through to ultralytics as they are: an unknown one is ultralytics' error."""
    from detection.train import train_detector

    prep = make_prep(tmp_path / "prep", n=4)
    with pytest.raises(SyntaxError, match="not_an_arg"):
        train_detector(tiny_cfg(tmp_path, yolo_args={"not_an_arg": 1}), prep, 0)
    assert os.path.isdir(prep)
