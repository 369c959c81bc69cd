"""cv -> tune -> submission (issue 25 items 2-3), fast: the fold models are stand-ins (training
patched out, a fake detector and classifier per fold whose scores and probabilities name their
fold), so every file cv writes can be checked against what it must equal:

* ``oof_raw.csv`` (inference only, ``fold``), ``oof_probs.csv`` (each image's probabilities from
  its OWN fold's classifier, ``fold``), ``oof.csv`` = ``cxrdet postprocess`` of those two;
* ``test_raw.csv`` (the fold models fused by WBF), ``test_probs.csv`` (mean of the fold
  classifiers), ``submission.csv`` = submit(postprocess(test_raw, test_probs, config));
* ``cxrdet tune --cv DIR`` needs no other flag, and postprocess with tuned.yaml scored by
  evaluate equals tuned.json's ``after``; ``cv --tune`` writes the submission with the tuned keys;
* post-processing (the 2-class filter among it) runs exactly once on every path.

The same with real training on phantoms: test_cv.py (slow).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

import detection.competition.postprocess as PP
from data_prep.core.boxes import BOX_COLUMNS, make_boxes
from data_prep.datasets import describe
from detection.cli import main


class _FoldDetector:
    """One class-0 box around the bright pixels (score 0.9 - 0.1 k) and one class-1 false positive
    in the corner (score 0.3): fold k's detector."""

    def __init__(self, k: int, fake_result, shift: int = 0):
        self.k, self.fake_result, self.shift = k, fake_result, shift
        self.names = {0: "Aortic enlargement", 1: "Atelectasis"}

    def predict(self, imgs, **kw):
        out = []
        for im in imgs:
            ys, xs = np.nonzero(im > 180)
            b, c, s = [[0, 0, 10, 12]], [1], [0.3]
            if len(xs):
                d = self.shift   # another model ("b_..." weights): its box a few pixels off, scored lower
                b = [[xs.min() + d, ys.min(), xs.max() + 1 + d, ys.max() + 1]] + b
                c, s = [0] + c, [0.9 - 0.1 * self.k - 0.2 * (d > 0)] + s
            out.append(self.fake_result(b, s, c))
        return out


class _FoldClassifier:
    """p(abnormal) = 0.6 + 0.01 k with bright pixels, else 0.05 + 0.01 k: fold k's classifier."""

    def __init__(self, k: int):
        self.k, self.names = k, {0: "abnormal", 1: "normal"}

    def predict(self, imgs, **kw):
        import torch

        res = []
        for im in imgs:
            p = (0.6 if (im > 180).any() else 0.05) + 0.01 * self.k
            res.append(SimpleNamespace(probs=SimpleNamespace(data=torch.tensor([p, 1 - p]))))
        return res


@pytest.fixture
def fake_cv(tmp_path, make_prep, fake_result, monkeypatch):
    """A prep folder of 9 images in 3 folds, 3 test PNGs with a sample submission, training patched
    out (fold k's weights are ``w/fold<k>.pt`` / ``.cls``), and the fake models above."""
    import detection.competition.cv as CV
    import detection.engine.predict as P
    import detection.engine.predict_models as PM

    prep = make_prep(tmp_path / "prep", n=9, k=3)
    wdir = tmp_path / "w"
    wdir.mkdir()
    for k in range(3):
        (wdir / f"fold{k}.pt").write_bytes(b"det%d" % k)
        (wdir / f"fold{k}.cls").write_bytes(b"cls%d" % k)
    trained = []

    def train_model(kind, cfg, prep_, record, force=False, callbacks=None, precheck=None):
        k = int(cfg["fold"])
        if precheck is not None and kind == "det":
            precheck(prep_ / "yolo" / f"fold{k}" / "data.yaml")
        trained.append((kind, k, cfg["name"]))
        stem = cfg["name"] or f"fold{k}"   # several models: <model name>_fold<k>
        if not (wdir / f"{stem}.pt").exists():   # "trained" once: a rerun finds the same file
            (wdir / f"{stem}.pt").write_bytes(stem.encode())
        return wdir / f"{stem}.{'pt' if kind == 'det' else 'cls'}", "trained", 0.0

    def load(weights, imgsz, batch, task="detect", onnx=False):
        k = int(Path(weights).stem[-1])
        m = (_FoldClassifier(k) if str(weights).endswith(".cls") else
             _FoldDetector(k, fake_result, shift=3 if Path(weights).name.startswith("b_") else 0))
        return P.Loaded(m, str(weights), imgsz, batch)

    monkeypatch.setattr(CV, "train_model", train_model)
    monkeypatch.setattr(CV, "trained_on", lambda w: prep / "yolo" / f"fold{int(Path(w).stem[-1])}" / "data.yaml")
    monkeypatch.setattr(PM, "load_model", load)
    test = tmp_path / "test"
    test.mkdir()
    for i in (0, 1, 2):  # img000 is normal (every 3rd), img001/img002 hold a bright square
        shutil.copy(prep / "images" / f"img00{i}.png", test / f"t{i}.png")
    sample = tmp_path / "sample_submission.csv"
    pd.DataFrame({"image_id": ["t0", "t1", "t2"], "PredictionString": "14 1 0 0 1 1"}).to_csv(sample, index=False)
    calls = []
    apply = PP.apply

    def counted(table, *a, **kw):  # every post-processing of a table goes through here
        calls.append(table.copy())
        return apply(table, *a, **kw)

    monkeypatch.setattr(PP, "apply", counted)
    return SimpleNamespace(prep=prep, out=prep / "cv", test=test, sample=sample, trained=trained, calls=calls,
                           tmp=tmp_path)


def _cli(f, *extra):
    return main(["cv", "--config", "vinbigdata", "--prep", str(f.prep), "--with-cls", "--test", str(f.test), "--sample",
                 str(f.sample), "device=cpu", "workers=0", "imgsz=64", "cls_imgsz=32", *extra])


def _pred(path):
    from data_prep.datasets import describe
    from detection.competition.submission import read_predictions

    return read_predictions(path, describe("vinbigdata"))


def _read(path):
    return pd.read_csv(path, dtype={"image_id": str, "class_name": str, "rater": str}, keep_default_na=False)


def _postprocess_cli(tmp, raw, probs, meta, out, *extra):
    args = ["postprocess", "--pred", str(raw), "--cls-probs", str(probs), "--out", str(out), *extra]
    assert main(args + (["--meta", str(meta)] if meta else [])) == 0
    return _read(out)


def test_cv_writes_raw_tables_and_postprocesses_them_once(fake_cv, capsys):
    f = fake_cv
    assert _cli(f) == 0
    printed = capsys.readouterr().out
    folds = pd.read_csv(f.prep / "folds.csv", dtype={"image_id": str})
    fold_of = dict(zip(folds.image_id, folds.fold))
    # oof_raw.csv: inference only: every raw box (the 0.3 false positive too), no "No finding" row, fold k's scores
    raw = _read(f.out / "oof_raw.csv")
    assert (raw["fold"] == raw["image_id"].map(fold_of)).all() and set(raw.image_id) == set(folds.image_id)
    assert 14 not in set(raw.class_id) and np.allclose(raw[raw.class_id == 1].score, 0.3)
    hit = raw[raw.class_id == 0]
    assert len(hit) == 6 and np.allclose(hit.score, 0.9 - 0.1 * hit["fold"])  # each image by its own fold's model
    # oof_probs.csv: image_id, abnormal, fold; each image's p from its own fold's classifier
    probs = pd.read_csv(f.out / "oof_probs.csv", dtype={"image_id": str})
    assert list(probs.columns) == ["image_id", "abnormal", "fold"] and len(probs) == 9
    assert (probs["fold"] == probs["image_id"].map(fold_of)).all()
    bright = probs.image_id.isin(set(hit.image_id))
    assert np.allclose(probs.abnormal, np.where(bright, 0.6, 0.05) + 0.01 * probs["fold"])
    # oof.csv = cxrdet postprocess of those two files (+ fold on every row, the filter's rows too)
    oof = _read(f.out / "oof.csv")
    pp = _postprocess_cli(f.tmp, f.out / "oof_raw.csv", f.out / "oof_probs.csv", f.prep / "images.csv", f.tmp / "pp.csv")
    pd.testing.assert_frame_equal(oof[BOX_COLUMNS], pp[BOX_COLUMNS])
    assert (oof["fold"] == oof["image_id"].map(fold_of)).all()
    assert set(oof[oof.class_id == 14].image_id) == set(folds.image_id)  # the filter ran: p < 0.95 everywhere
    # test_raw.csv: the 3 fold models fused by WBF (avg of 0.9, 0.8, 0.7), inference only
    t_raw = _read(f.out / "test_raw.csv")
    assert 14 not in set(t_raw.class_id)
    assert np.allclose(t_raw[t_raw.class_id == 0].score, 0.8) and set(t_raw[t_raw.class_id == 0].image_id) == {"t1", "t2"}
    t_probs = pd.read_csv(f.out / "test_probs.csv", dtype={"image_id": str}).set_index("image_id")
    assert t_probs.abnormal.to_dict() == pytest.approx({"t0": 0.06, "t1": 0.61, "t2": 0.61})  # mean of folds 0-2
    # submission.csv = submit(postprocess(test_raw, test_probs, config)), done here independently
    from detection.competition.submission import submit

    pp_test = _postprocess_cli(f.tmp, f.out / "test_raw.csv", f.out / "test_probs.csv", f.out / "test_meta.csv",
                               f.tmp / "pp_test.csv")
    submit(pp_test, f.sample, "vinbigdata", f.tmp / "sub.csv")
    assert (f.out / "submission.csv").read_bytes() == (f.tmp / "sub.csv").read_bytes()
    # post-processing ran exactly twice in cv (oof.csv, the submission), each time on a raw table
    cv_calls = f.calls[:2]
    assert len(f.calls) == 4  # + the two `cxrdet postprocess` runs of this test
    assert [len(c) for c in cv_calls] == [len(raw), len(t_raw)] and all(14 not in set(c.class_id) for c in cv_calls)
    cv = json.loads((f.out / "cv.json").read_text())
    assert cv["files"] == {"oof_raw": "oof_raw.csv", "oof_probs": "oof_probs.csv", "oof": "oof.csv"}
    assert cv["inputs"]["folds"] == str(f.prep / "folds.csv") and cv["config"]["cls_low"] == 0.08
    assert "oof_raw.csv (inference only)" in printed and "config's post-processing keys" in printed


def test_rerun_reuses_the_raw_predictions_and_only_postprocesses_again(fake_cv, capsys):
    f = fake_cv
    assert _cli(f) == 0
    names = ["oof_raw.csv", "oof_probs.csv", "oof.csv", "test_raw.csv", "test_probs.csv", "submission.csv"]
    before = {n: (f.out / n).read_bytes() for n in names}
    capsys.readouterr()
    assert _cli(f) == 0  # a second run: the same bytes, predictions reused
    assert capsys.readouterr().out.count("prediction reused") == 3
    assert {n: (f.out / n).read_bytes() for n in names} == before
    # another filter band is post-processing only: inference reused, oof.csv and the submission change
    assert _cli(f, "cls_low=0.63") == 0
    out = capsys.readouterr().out
    assert out.count("prediction reused") == 3 and "(reused, 3 fold model(s)" in out
    after = {n: (f.out / n).read_bytes() for n in names}
    assert [n for n in names if after[n] != before[n]] == ["oof.csv", "submission.csv"]
    oof = _read(f.out / "oof.csv")
    assert set(oof.image_id[oof.class_id == 0]) == set()  # every p (at most 0.62) below cls_low: called normal
    # without --with-cls, a stale oof_probs.csv / test_probs.csv is not left to be mistaken for this run's
    assert main(["cv", "--config", "vinbigdata", "--prep", str(f.prep), "--test", str(f.test), "--sample", str(f.sample),
                 "device=cpu", "workers=0"]) == 0
    assert not (f.out / "oof_probs.csv").exists() and not (f.out / "test_probs.csv").exists()
    assert json.loads((f.out / "cv.json").read_text())["files"]["oof_probs"] is None


def _evaluate_folds(prep, pred, tmp):
    j = tmp / "e.json"
    assert main(["evaluate", "--truth", str(prep / "fused_boxes.csv"), "--meta", str(prep / "images.csv"),
                 "--pred", str(pred), "--folds", str(prep / "folds.csv"), "--json", str(j)]) == 0
    return json.loads(j.read_text())["mAP"]


def test_cv_tune_then_tune_cv_alone_and_the_submission_with_the_tuned_keys(fake_cv, capsys):
    f = fake_cv
    assert _cli(f, "--tune", "--trials", "6") == 0
    printed = capsys.readouterr().out
    res = json.loads((f.out / "tuned.json").read_text())
    tuned = yaml.safe_load((f.out / "tuned.yaml").read_text())
    assert list(res) == ["metric", "before", "after", "params", "trials", "nested"] and res["trials"] == 6
    assert set(res["params"]) == {"box_scale", "cls_low", "cls_high"}  # the 2-class filter band is tuned
    assert f"the tuned keys of {f.out / 'tuned.yaml'}: {json.dumps(res['params'])}" in printed
    # postprocess(oof_raw, oof_probs) with tuned.yaml, scored by evaluate = tuned.json's after
    pp = f.tmp / "pp_tuned.csv"
    _postprocess_cli(f.tmp, f.out / "oof_raw.csv", f.out / "oof_probs.csv", f.prep / "images.csv", pp,
                     "--config", str(f.out / "tuned.yaml"))
    assert abs(_evaluate_folds(f.prep, pp, f.tmp) - res["after"]) <= 1e-9
    # the submission is the tuned keys applied once to test_raw + test_probs
    from detection.competition.submission import submit

    calls = len(f.calls)
    final = PP.postprocess_files([f.out / "test_raw.csv"], f.out / "test_probs.csv",
                                 {**yaml.safe_load(Path(f.prep / "cv" / "tuned.yaml").read_text()),
                                  "dataset": "vinbigdata", "classes": None}, f.out / "test_meta.csv")
    submit(final, f.sample, "vinbigdata", f.tmp / "sub.csv")
    assert (f.out / "submission.csv").read_bytes() == (f.tmp / "sub.csv").read_bytes()
    assert len(f.calls) == calls + 1
    # `cxrdet tune --cv DIR` alone, no other flag: the same result (same seed, same trials)
    (f.out / "tuned.json").rename(f.tmp / "first.json")
    assert main(["tune", "--cv", str(f.out), "--trials", "6"]) == 0
    assert json.loads((f.out / "tuned.json").read_text()) == res
    assert yaml.safe_load((f.out / "tuned.yaml").read_text()) == tuned
    assert f"--pred {f.out / 'oof_raw.csv'} --cls-probs {f.out / 'oof_probs.csv'}" in capsys.readouterr().out


def test_tune_cv_flags_are_one_line_errors(fake_cv, capsys, tmp_path):
    assert main(["tune", "--cv", str(tmp_path / "nope")]) == 2
    assert "no cv.json" in capsys.readouterr().err and not (tmp_path / "nope").exists()
    assert main(["tune", "--cv", str(tmp_path), "--pred", "x.csv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--pred: not with --cv" in err
    assert main(["tune", "--pred", "x.csv"]) == 2
    assert "--truth --folds --out: required (or --cv DIR" in capsys.readouterr().err
    assert main(["cv", "--config", "vinbigdata", "--prep", str(fake_cv.prep), "--trials", "3"]) == 2
    assert "--trials: only with --tune" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the 2-class filter, once
def _hand_made(d: Path):
    """test_raw (one box on each of 3 images), a hand-made probability table, their sizes."""
    d.mkdir(parents=True, exist_ok=True)
    raw = make_boxes(["a", "a", "b", "c"], [0, 1, 0, 3], ["Aortic enlargement", "Atelectasis", "Aortic enlargement",
                     "Cardiomegaly"], np.array([[10, 10, 50, 60], [70, 20, 90, 40], [5, 5, 40, 40], [30, 30, 80, 90]],
                                               "float64"), score=[0.8, 0.4, 0.7, 0.9])
    raw.to_csv(d / "test_raw.csv", index=False)
    pd.DataFrame({"image_id": ["a", "b", "c"], "abnormal": [0.05, 0.5, 0.99]}).to_csv(d / "test_probs.csv", index=False)
    pd.DataFrame({"image_id": ["a", "b", "c"], "height": 100, "width": 100}).to_csv(d / "test_meta.csv", index=False)
    pd.DataFrame({"image_id": ["a", "b", "c"], "PredictionString": "14 1 0 0 1 1"}).to_csv(d / "sample.csv", index=False)
    return {"test_raw": d / "test_raw.csv", "test_probs": d / "test_probs.csv", "test_meta": d / "test_meta.csv"}


def test_the_submission_applies_the_filter_once_on_a_hand_made_probability_table(tmp_path):
    """cv's submission writer = the tuned keys applied once to the raw table; applying the config's
    keys first (as predict-then-tune would) gives another submission, so a second pass is seen."""
    from data_prep.core.config import load_config
    from detection.competition.cv import write_test_submission
    from detection.competition.submission import submit

    d = tmp_path / "cv"
    res = _hand_made(d)
    config = load_config(None, {"cls_low": 0.08, "cls_high": 0.95})
    tuned = {**config, "cls_low": 0.03, "cls_high": 0.6}
    sub = write_test_submission(tuned, res, d / "sample.csv", d)
    raw, probs = _read(res["test_raw"]), PP.read_probs(res["test_probs"])
    sizes = PP.image_sizes(res["test_meta"])
    once = PP.postprocess([raw], probs, tuned, (14, "No finding"), sizes)
    twice = PP.postprocess([PP.postprocess([raw], probs, config, (14, "No finding"), sizes)], probs, tuned,
                           (14, "No finding"), sizes)
    # by hand, once: a (p 0.05 >= 0.03) keeps its 2 boxes + "No finding" 0.95; b keeps its box + 0.5; c boxes only
    assert sorted(zip(once.image_id, once.class_id, once.score.round(2))) == [
        ("a", 0, 0.8), ("a", 1, 0.4), ("a", 14, 0.95), ("b", 0, 0.7), ("b", 14, 0.5), ("c", 3, 0.9)]
    assert not once.reset_index(drop=True).equals(twice.reset_index(drop=True))  # a lost its boxes in pass 1
    submit(once, d / "sample.csv", "vinbigdata", tmp_path / "once.csv")
    submit(twice, d / "sample.csv", "vinbigdata", tmp_path / "twice.csv")
    assert sub.read_bytes() == (tmp_path / "once.csv").read_bytes() != (tmp_path / "twice.csv").read_bytes()


def test_the_filters_rows_carry_a_per_image_column_or_it_is_left_out(tmp_path):
    """oof_raw.csv's ``fold`` reaches the "No finding" rows postprocess adds (evaluate reads it as an
    integer); when an image the filter writes a row for has no raw box, nothing can say its fold:
    the column is left out rather than left blank."""
    raw = make_boxes(["a", "b"], [0, 0], ["Aortic enlargement"] * 2, np.array([[1, 1, 5, 5], [2, 2, 6, 6]], "float64"),
                     score=[0.9, 0.8]).assign(fold=[0, 1])
    probs = pd.DataFrame({"image_id": ["a", "b"], "abnormal": [0.5, 0.01]})
    out = PP.apply(raw, probs, {"cls_low": 0.08, "cls_high": 0.95}, describe("vinbigdata").normal)
    assert sorted(zip(out.image_id, out.class_id, out.fold)) == [("a", 0, 0), ("a", 14, 0), ("b", 14, 1)]
    probs = pd.concat([probs, pd.DataFrame({"image_id": ["c"], "abnormal": [0.3]})], ignore_index=True)
    out = PP.apply(raw, probs, {"cls_low": 0.08, "cls_high": 0.95}, describe("vinbigdata").normal)
    assert "fold" not in out and sorted(zip(out.image_id, out.class_id)) == [("a", 0), ("a", 14), ("b", 14), ("c", 14)]


# ----------------------------------------------------------------------------- several models (issue 26 item 3)
def test_cv_of_several_models_writes_each_models_oof_and_their_ensemble(fake_cv, capsys):
    f = fake_cv
    models = "models=[{name: a, model: a.yaml}, {name: b, model: b.yaml, epochs: 3}]"
    assert _cli(f, models) == 0
    printed = capsys.readouterr().out
    # each model on each fold (run folders <name>_fold<k>), one classifier per fold
    assert sorted(f.trained) == sorted([("det", k, f"{m}_fold{k}") for m in "ab" for k in range(3)]
                                       + [("cls", k, None) for k in range(3)])
    folds = pd.read_csv(f.prep / "folds.csv", dtype={"image_id": str})
    fold_of = dict(zip(folds.image_id, folds.fold))
    a, b = (_pred(f.out / "models" / m / "oof_raw.csv") for m in "ab")
    assert np.allclose(a[a.class_id == 0].score, 0.9 - 0.1 * a[a.class_id == 0]["fold"])
    assert np.allclose(b[b.class_id == 0].score, 0.7 - 0.1 * b[b.class_id == 0]["fold"])
    # DIR/oof_raw.csv = the WBF of the two (the ens_* keys at their defaults), each row with its image's fold
    fused = _read(f.out / "oof_raw.csv")
    ref = PP.ensemble([a, b], PP.image_sizes(f.prep / "images.csv"), 0.55, 0.0001, "avg", None)
    pd.testing.assert_frame_equal(fused[BOX_COLUMNS].reset_index(drop=True), ref[BOX_COLUMNS].reset_index(drop=True),
                                  check_dtype=False)
    assert (fused["fold"] == fused["image_id"].map(fold_of)).all()
    hit = fused[fused.class_id == 0]
    assert np.allclose(hit.score, (0.9 + 0.7) / 2 - 0.1 * hit["fold"])  # avg of the two models' boxes
    # cv.json: each model's OOF score (= evaluate of its oof.csv) and the ensemble's (= cv's oof score)
    cv = json.loads((f.out / "cv.json").read_text())
    assert [m["name"] for m in cv["models"]] == ["a", "b", "ensemble"]
    for m in cv["models"][:2]:
        assert m["score"] == _evaluate_folds(f.prep, f.out / m["oof"], f.tmp)
    assert cv["models"][2]["score"] == cv["oof"]["score"] == _evaluate_folds(f.prep, f.out / "oof.csv", f.tmp)
    assert cv["models"][2]["members"] == ["a", "b"] and cv["models"][2]["ens_iou"] == 0.55
    assert cv["files"]["model_oof_raw"] == ["models/a/oof_raw.csv", "models/b/oof_raw.csv"]
    assert "OOF vinbigdata" in printed and "x 2 models fused by WBF" in printed
    # test: each model's fold ensemble, their WBF, and the submission = postprocess of the per-model tables once
    ta, tb = (_pred(f.out / "models" / m / "test_raw.csv") for m in "ab")
    t_fused = _read(f.out / "test_raw.csv")
    t_ref = PP.ensemble([ta, tb], PP.image_sizes(f.out / "test_meta.csv"), 0.55, 0.0001, "avg", None)
    pd.testing.assert_frame_equal(t_fused[BOX_COLUMNS], t_ref[BOX_COLUMNS], check_dtype=False)
    from detection.competition.submission import submit

    pp = PP.postprocess_files([f.out / "models" / "a" / "test_raw.csv", f.out / "models" / "b" / "test_raw.csv"],
                              f.out / "test_probs.csv", {**PP.defaults(), "dataset": "vinbigdata", "classes": None},
                              f.out / "test_meta.csv")
    submit(pp, f.sample, "vinbigdata", f.tmp / "sub.csv")
    assert (f.out / "submission.csv").read_bytes() == (f.tmp / "sub.csv").read_bytes()
    # tune --cv searches the ensemble keys on the two models' tables; `after` = postprocess + evaluate
    assert main(["tune", "--cv", str(f.out), "--trials", "8", "--no-nested"]) == 0
    res = json.loads((f.out / "tuned.json").read_text())
    assert {"ens_iou", "ens_skip", "ens_conf_type", "ens_weights"} <= set(res["params"])
    pp = f.tmp / "pp.csv"
    assert main(["postprocess", "--pred", str(f.out / "models" / "a" / "oof_raw.csv"),
                 str(f.out / "models" / "b" / "oof_raw.csv"), "--cls-probs", str(f.out / "oof_probs.csv"),
                 "--meta", str(f.prep / "images.csv"), "--config", str(f.out / "tuned.yaml"), "--out", str(pp)]) == 0
    assert abs(_evaluate_folds(f.prep, pp, f.tmp) - res["after"]) <= 1e-9
    # a rerun reuses every (fold, model)
    capsys.readouterr()
    assert _cli(f, models) == 0
    assert capsys.readouterr().out.count("prediction reused") == 6


def test_models_with_the_wrong_number_of_ens_weights_is_one_line(fake_cv, capsys):
    rc = _cli(fake_cv, "models=[{name: a, model: a.yaml}, {name: b, model: b.yaml}]", "ens_weights=[1, 2, 3]")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "3 weight(s) for the 2 model(s) of `models:`" in err


@pytest.mark.slow   # trains 2 models x 2 folds (+ 2 classifiers) for real (~1-2 min)
def test_cv_of_two_real_models_on_phantoms(make_prep, tiny_cfg, tmp_path):
    from detection.competition.cv import cross_validate

    prep = make_prep(tmp_path / "prep", n=8, png=64, k=2)
    cfg = tiny_cfg(tmp_path, imgsz=64, cls_epochs=1, cls_imgsz=32,
                   models=[{"name": "small", "model": "yolo11n.yaml"},
                           {"name": "big", "model": "yolo11n.yaml", "imgsz": 96, "seed": 1}])
    res = cross_validate(cfg, prep, with_cls=True)
    out = prep / "cv"
    for name in ("small", "big"):
        for k in (0, 1):
            assert (tmp_path / "runs" / f"{name}_fold{k}" / "weights" / "best.pt").is_file()
        raw = pd.read_csv(out / "models" / name / "oof_raw.csv", dtype={"image_id": str})
        assert set(raw["fold"]) <= {0, 1}
    assert (tmp_path / "runs" / "vinbigdata_fold0_cls").is_dir()       # one classifier per fold, the config's name
    assert [m["name"] for m in res["models"]] == ["small", "big", "ensemble"]
    for m in res["models"]:
        assert m["score"] == _evaluate_folds(prep, out / m["oof"], tmp_path)
    assert res["oof"]["n_images"] == 8 and (out / "oof_probs.csv").is_file()


def test_cv_tune_of_several_models_applies_the_tuned_ensemble_keys_to_the_test_tables(fake_cv, capsys):
    f = fake_cv
    assert _cli(f, "models=[{name: a, model: a.yaml}, {name: b, model: b.yaml}]", "--tune", "--trials", "6") == 0
    tuned = yaml.safe_load((f.out / "tuned.yaml").read_text())
    res = json.loads((f.out / "tuned.json").read_text())
    assert {"ens_iou", "ens_skip", "ens_conf_type", "ens_weights"} <= set(res["params"])
    from detection.competition.submission import submit

    final = PP.postprocess_files([f.out / "models" / m / "test_raw.csv" for m in "ab"], f.out / "test_probs.csv",
                                 {**tuned, "dataset": "vinbigdata", "classes": None}, f.out / "test_meta.csv")
    submit(final, f.sample, "vinbigdata", f.tmp / "sub.csv")
    assert (f.out / "submission.csv").read_bytes() == (f.tmp / "sub.csv").read_bytes()
    assert "x 2 models fused by WBF" in capsys.readouterr().out
