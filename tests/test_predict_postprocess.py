"""predict = inference + postprocess: predict's output with default keys frozen before the steps
moved to detection/competition/postprocess.py, and predict running the postprocess keys (a config file too)."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import detection.competition.postprocess as PP
import detection.engine.predict as P
import detection.engine.predict_models as PM
from data_prep.core.boxes import COORDS
from data_prep.datasets import describe

NF = (14, "No finding")


def _cfg(**kw):
    return {**PP.defaults(), **kw}


def _res(xyxy, conf, cls):
    boxes = SimpleNamespace(xyxy=torch.tensor(np.asarray(xyxy, "float32").reshape(-1, 4)),
                            conf=torch.tensor(np.asarray(conf, "float32").reshape(-1)),
                            cls=torch.tensor(np.asarray(cls, "float32").reshape(-1)))
    return SimpleNamespace(boxes=boxes)


def _rng(im, salt):
    h = hashlib.sha256(np.ascontiguousarray(im).tobytes() + salt.encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


class ManyBoxDetector:
    """Fake detector: 0-6 boxes of 3 classes drawn from a hash of the image (and the weights name)."""
    names = {0: "Aortic enlargement", 1: "Atelectasis", 2: "Calcification"}

    def __init__(self, salt):
        self.salt = salt

    def predict(self, imgs, **kw):
        out = []
        for im in imgs:
            r = _rng(im, self.salt)
            h, w = im.shape[:2]
            n = int(r.integers(0, 7))
            c = r.uniform([0, 0], [w, h], (n, 2))
            s = r.uniform(4, 40, (n, 2))
            xyxy = np.clip(np.concatenate([c - s, c + s], 1), 0, [w, h, w, h])
            out.append(_res(xyxy, np.round(r.uniform(0.01, 0.99, n), 3), r.integers(0, 3, n)))
        return out


class BandClassifier:
    """Fake classifier: p(abnormal) from a hash of the image, on and around the filter's edges."""
    names = {0: "abnormal", 1: "normal"}

    def predict(self, imgs, **kw):
        res = []
        for im in imgs:
            pa = float(_rng(im, "cls").choice([0.02, 0.08, 0.3, 0.7, 0.95, 0.99]))
            res.append(SimpleNamespace(probs=SimpleNamespace(data=torch.tensor([pa, 1 - pa], dtype=torch.float32))))
        return res


@pytest.fixture
def many_box_models(monkeypatch, tmp_path):
    def load(weights, imgsz, batch, task="detect", onnx=False):
        w = str(weights)
        return P.Loaded(BandClassifier() if w.endswith(".cls") else ManyBoxDetector(w), w, imgsz, batch)

    monkeypatch.setattr(PM, "load_model", load)
    root = tmp_path / "png"
    root.mkdir()
    r = np.random.default_rng(3)
    meta = []
    for i in range(12):
        cv2.imwrite(str(root / f"im{i:02d}.png"), r.integers(0, 256, (64, 64), dtype=np.uint8))
        meta.append({"image_id": f"im{i:02d}", "height": 320, "width": 240, "png_height": 64, "png_width": 64})
    pd.DataFrame(meta).to_csv(root / "meta.csv", index=False)
    return root


GOLDEN = {  # frozen with predict.py as it was before the steps moved to postprocess.py
    "single": (["a.pt"], {}),
    "ensemble": (["a.pt", "b.pt"], {"tta": True, "classifier": "c.cls", "normal": describe("vinbigdata").normal}),
    "filter": (["a.pt"], {"classifier": "c.cls", "cls_low": 0.1, "cls_high": 0.9, "ens_iou": 0.4,
                          "normal": describe("vinbigdata").normal}),
}


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_predict_with_default_keys_is_unchanged(case, many_box_models, test_data):
    weights, kw = GOLDEN[case]
    got = P.predict(weights if len(weights) > 1 else weights[0], many_box_models, **kw)
    exp = pd.read_csv(test_data / f"predict_golden_{case}.csv", dtype={"image_id": str, "rater": str},
                      keep_default_na=False)
    assert len(got) > 10
    pd.testing.assert_frame_equal(got, exp, check_exact=True, check_dtype=False)
    # the same keys spelled out as the config's defaults change nothing either
    again = P.predict(weights if len(weights) > 1 else weights[0], many_box_models, post=PP.defaults(), **kw)
    pd.testing.assert_frame_equal(again, got, check_exact=True)


def test_predict_runs_the_postprocess_keys(many_box_models):
    raw = P.predict("a.pt", many_box_models)
    got = P.predict("a.pt", many_box_models, post=_cfg(box_scale=0.875, top_k=2, score_thr=0.2))
    exp = PP.apply(raw, None, _cfg(box_scale=0.875, top_k=2, score_thr=0.2), NF,
                   pd.DataFrame({"height": 320.0, "width": 240.0}, index=sorted(set(raw.image_id))))
    pd.testing.assert_frame_equal(got, exp, check_exact=True)
    assert len(got) < len(raw) and got.groupby("image_id").size().max() <= 2


def test_cli_predict_takes_tuned_yaml_as_config(tmp_path, many_box_models):
    from detection.cli import main

    (tmp_path / "tuned.yaml").write_text("box_scale: 0.875\ntop_k: 1\n")
    assert main(["predict", "--weights", "a.pt", "--source", str(many_box_models), "--out",
                 str(tmp_path / "raw.csv")]) == 0
    assert main(["predict", "--weights", "a.pt", "--source", str(many_box_models), "--config",
                 str(tmp_path / "tuned.yaml"), "--out", str(tmp_path / "tuned.csv")]) == 0
    raw = pd.read_csv(tmp_path / "raw.csv", dtype={"image_id": str, "rater": str}, keep_default_na=False)
    got = pd.read_csv(tmp_path / "tuned.csv", dtype={"image_id": str, "rater": str}, keep_default_na=False)
    exp = PP.apply(raw, None, _cfg(box_scale=0.875, top_k=1), NF,
                   pd.DataFrame({"height": 320.0, "width": 240.0}, index=sorted(set(raw.image_id))))
    assert got.groupby("image_id").size().max() == 1 and len(got) == raw["image_id"].nunique()
    np.testing.assert_allclose(got[COORDS + ["score"]].to_numpy(float), exp[COORDS + ["score"]].to_numpy(float),
                               rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- inference and post-processing apart
def test_cli_predict_raw_and_probs_then_postprocess_give_out_exactly(tmp_path, many_box_models):
    """predict --raw/--probs/--out with two weights, TTA, a classifier and non-default keys; then
    postprocess on those two files with the same config equals --out, byte for byte."""
    from detection.cli import main

    src = many_box_models
    (tmp_path / "c.yaml").write_text("cls_low: 0.1\ncls_high: 0.9\nscore_thr: 0.2\ntop_k: 3\nbox_scale: 0.9\n")
    raw, probs, out, again = (tmp_path / n for n in ("raw.csv", "probs.csv", "out.csv", "again.csv"))
    assert main(["predict", "--weights", "a.pt", "b.pt", "--source", str(src), "--classifier", "c.cls", "--tta",
                 "--config", str(tmp_path / "c.yaml"), "--raw", str(raw), "--probs", str(probs),
                 "--out", str(out)]) == 0
    assert main(["postprocess", "--pred", str(raw), "--cls-probs", str(probs), "--meta", str(src / "meta.csv"),
                 "--config", str(tmp_path / "c.yaml"), "--out", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()
    r, p, o = (pd.read_csv(f, dtype={"image_id": str}, keep_default_na=False) for f in (raw, probs, out))
    assert p.columns.tolist() == ["image_id", "abnormal"] and len(p) == 12
    assert (r["class_id"] != 14).all() and r["score"].min() < 0.2 <= o.loc[o["class_id"] != 14, "score"].min()
    assert (o["class_id"] == 14).any() and len(r) > len(o[o["class_id"] != 14])
    assert r.groupby("image_id").size().max() > 3 >= o[o["class_id"] != 14].groupby("image_id").size().max()
    # raw = inference only: the same file whatever the post-processing keys
    assert main(["predict", "--weights", "a.pt", "b.pt", "--source", str(src), "--classifier", "c.cls", "--tta",
                 "--raw", str(tmp_path / "raw2.csv"), "--out", str(tmp_path / "out2.csv")]) == 0
    assert (tmp_path / "raw2.csv").read_bytes() == raw.read_bytes()


def test_cli_predict_old_probs_flag_names_its_replacement(tmp_path, many_box_models, capsys):
    from detection.cli import main

    rc = main(["predict", "--weights", "a.pt", "--source", str(many_box_models), "--classifier", "c.cls",
               "--cls-probs-out", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["cxrdet predict: error: --cls-probs-out: replaced by --probs PATH (the same "
                               "probabilities table)"]
    assert not (tmp_path / "o.csv").exists()
