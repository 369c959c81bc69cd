"""Issue 30 (third sweep), item 7: malformed YAML and corrupt model files are one-line errors (exit 2)
naming the file (and the line PyYAML marks), never an internal error; classify renders DICOMs with
the config's voi/window_index/stretch as predict and convert do, and checks them."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from detection.cli import main

REPO = Path(__file__).resolve().parents[1]
ML = REPO / "weights" / "vinbig_phantom_multilabel.pt"


def _one_line(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("cxrdet ")]
    assert len(lines) == 1 and "internal error" not in err, err
    return lines[0]


def _pngs(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"im{i}.png"), np.full((64, 64), 40 * (i + 1), np.uint8))
    return folder


# ----------------------------------------------------------------------------- YAML
YAML_FILES = {
    "parser": ("box_scale: [1, 2\n", "line 2"),
    "scanner": ("box_scale: 1\n  bad: : x\n", "line 2 column 6"),
    "constructor": ("box_scale: !!python/object/apply:os.system [touch pwned]\n", "line 1"),
    "composer": ("box_scale: *nope\n", "undefined alias"),
    "recursion": ("box_scale: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    "tab": ("box_scale:\t1\n\tfoo: 2\n", "line 1 column 11"),
}


@pytest.mark.parametrize("kind", sorted(YAML_FILES))
def test_malformed_config_file_is_one_line_with_file_and_line(kind, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text, expect = YAML_FILES[kind]
    cfg = tmp_path / f"{kind}.yaml"
    cfg.write_text(text)
    rc = main(["postprocess", "--pred", str(tmp_path / "p.csv"), "--config", str(cfg), "--out", str(tmp_path / "o.csv")])
    line = _one_line(capsys, rc)
    assert str(cfg) in line and expect in line and ("not valid YAML" in line or "nested too deeply" in line), line
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("kv,expect", [
    ("box_scale=[1", "line 1 column 3"),
    ("box_scale={a: b", "line 1 column 6"),
    ("box_scale=!!binary xx", "base64"),
    ("iou_thr=*a", "undefined alias"),
    ("box_scale=!!python/name:os.system", "constructor"),
    ("box_scale=" + "[" * 5000, "nested too deeply"),
    ("box_scale=", "expected a finite number"),
])
def test_malformed_key_value_is_one_line(kv, expect, tmp_path, capsys):
    rc = main(["postprocess", "--pred", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o.csv"), kv])
    line = _one_line(capsys, rc)
    assert expect in line and kv.split("=")[0] in line, line


# ----------------------------------------------------------------------------- model files
def test_random_bytes_onnx_for_classify_and_predict(tmp_path, capsys):
    w = tmp_path / "m.onnx"
    w.write_bytes(np.random.default_rng(0).bytes(4000))
    src = _pngs(tmp_path / "src")
    line = _one_line(capsys, main(["classify", "--weights", str(w), "--source", str(src), "--out", str(tmp_path / "p.csv")]))
    assert str(w) in line and "ONNX" in line
    line = _one_line(capsys, main(["predict", "--weights", str(w), "--source", str(src), "--out", str(tmp_path / "o.csv")]))
    assert str(w) in line


def test_truncated_multilabel_checkpoint_for_classify(tmp_path, capsys):
    w = tmp_path / "cut.pt"
    w.write_bytes(ML.read_bytes()[:5000])
    line = _one_line(capsys, main(["classify", "--weights", str(w), "--source", str(_pngs(tmp_path / "s")),
                                   "--out", str(tmp_path / "p.csv")]))
    assert str(w) in line and "expected a multi-label checkpoint" in line


@pytest.mark.parametrize("change", ["no labels", "no state_dict", "no imgsz", "wrong state_dict", "imgsz text"])
def test_checkpoint_missing_or_bad_keys_is_one_line(change, tmp_path, capsys):
    ck = torch.load(ML, map_location="cpu", weights_only=True)
    if change.startswith("no "):
        ck.pop(change[3:])
    elif change == "wrong state_dict":
        ck["state_dict"] = {"conv1.weight": torch.zeros(3, 3)}
    else:
        ck["imgsz"] = "big"
    w = tmp_path / "ck.pt"
    torch.save(ck, w)
    line = _one_line(capsys, main(["classify", "--weights", str(w), "--source", str(_pngs(tmp_path / "s")),
                                   "--out", str(tmp_path / "p.csv")]))
    assert str(w) in line
    if change.startswith("no "):
        assert change[3:] in line


def test_train_cls_with_a_corrupt_cls_pretrained_or_last_pt(make_prep, tmp_path, capsys):
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    (prep / "boxes.csv").write_bytes((prep / "fused_boxes.csv").read_bytes())
    common = ["--config", "phantom", "--prep", str(prep), "cls_task=multilabel", "cls_arch=resnet10t", "cls_epochs=1",
              "cls_imgsz=32", "device=cpu", "workers=0", f"project={tmp_path / 'runs'}", "name=ml"]
    bad = tmp_path / "pre.pt"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    line = _one_line(capsys, main(["train-cls", *common, f"cls_pretrained={bad}"]))
    assert str(bad) in line and "cls_pretrained" in line
    sd = tmp_path / "sd.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "not_a_layer": torch.zeros(1)}, sd)   # loads; fits nothing of resnet10t
    last = tmp_path / "runs" / "ml" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(ML.read_bytes()[:3000])
    line = _one_line(capsys, main(["train-cls", *common, "resume=true"]))
    assert str(last) in line
    ck = torch.load(ML, map_location="cpu", weights_only=True)   # a best.pt (no optimiser): cannot resume
    torch.save(ck, last)
    line = _one_line(capsys, main(["train-cls", *common, "resume=true"]))
    assert str(last) in line and "cannot resume" in line and "optimizer" in line


def test_binary_train_cls_resume_from_a_truncated_last_pt(make_prep, tmp_path, capsys):
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    last = tmp_path / "runs" / "b" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes((REPO / "weights" / "vinbig_phantom_cls.pt").read_bytes()[:4000])
    line = _one_line(capsys, main(["train-cls", "--config", "phantom", "--prep", str(prep), "resume=true", "device=cpu",
                                   f"project={tmp_path / 'runs'}", "name=b"]))
    assert str(last) in line


# ----------------------------------------------------------------------------- classify's DICOM options
@pytest.fixture
def dicoms(tmp_path, write_dicom):
    rng = np.random.default_rng(3)
    d = tmp_path / "dcm"
    for i in range(2):
        arr = (rng.random((96, 96)) * 1000).astype(np.uint16)
        arr[20:60, 30:70] = 900 - 300 * i
        write_dicom(d / f"d{i}.dcm", arr, WindowCenter=300 + 200 * i, WindowWidth=200)
    return d


@pytest.mark.parametrize("opts", [["voi=none"], ["voi=window", "stretch=window"], ["voi=window", "window_index=0"]])
def test_classify_renders_dicoms_as_convert_does(dicoms, tmp_path, capsys, opts):
    """classify on DICOMs with voi/window_index/stretch = classify on the PNGs `cxrdet convert`
    makes with the same options (the rendering predict uses); and the options change the result."""
    base = ["size=96"]
    out = tmp_path / "dcm.csv"
    assert main(["classify", "--weights", str(ML), "--source", str(dicoms), "--out", str(out), *base, *opts]) == 0
    png = tmp_path / "png"
    assert main(["convert", str(dicoms), str(png), *base, *opts]) == 0
    ref = tmp_path / "png.csv"
    assert main(["classify", "--weights", str(ML), "--source", str(png), "--out", str(ref), *base]) == 0
    capsys.readouterr()
    a = pd.read_csv(out).sort_values("image_id").reset_index(drop=True)
    b = pd.read_csv(ref).sort_values("image_id").reset_index(drop=True)
    assert list(a["image_id"]) == list(b["image_id"]) and len(a) == 2
    np.testing.assert_allclose(a.drop(columns="image_id").to_numpy(), b.drop(columns="image_id").to_numpy(), atol=1e-5)
    plain = tmp_path / "plain.csv"
    assert main(["classify", "--weights", str(ML), "--source", str(dicoms), "--out", str(plain), *base,
                 "voi=none" if opts[0] != "voi=none" else "voi=window", "stretch=window"]) == 0
    c = pd.read_csv(plain).sort_values("image_id").reset_index(drop=True)
    assert not np.allclose(a.drop(columns="image_id").to_numpy(), c.drop(columns="image_id").to_numpy(), atol=1e-4)


@pytest.mark.parametrize("bad", ["voi=sometimes", "window_index=-1", "stretch=log", "window_index=1.5"])
def test_classify_checks_the_dicom_options(bad, dicoms, tmp_path, capsys):
    rc = main(["classify", "--weights", str(ML), "--source", str(dicoms), "--out", str(tmp_path / "p.csv"), bad])
    line = _one_line(capsys, rc)
    assert bad.split("=")[0] in line
    assert not (tmp_path / "p.csv").exists()
