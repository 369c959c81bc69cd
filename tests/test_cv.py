"""``cxrdet cv``: out-of-fold coverage, the fold of every row, the leak check, resume, cv.json's
score against ``cxrdet evaluate`` on oof.csv, and the fold-ensemble submission.

One module-scoped run (18 VinBigData phantoms, 3 folds, 1 epoch at 64 px, detector + 2-class
filter) is shared by most tests; the killed-training test uses its own tiny prep folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from detection.cli import main


OV = {"size": 96, "folds": 3, "workers": 0, "epochs": 1, "imgsz": 64, "batch": 8, "cls_epochs": 1,
      "cls_imgsz": 32, "yolo_args": {"plots": False, "mosaic": 0.0}}


def _cli_overrides(project: Path) -> list[str]:
    return [f"{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in OV.items()] + [f"project={project}"]


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    from data_prep.core.config import load_config
    from data_prep.prep import prep
    from data_prep.phantoms.synth import synth_vinbigdata
    from detection.competition.cv import cross_validate

    root = tmp_path_factory.mktemp("cv")
    synth_vinbigdata(root / "vin", n=18, n_test=3, size=256, seed=0)
    cfg = load_config("vinbigdata", {**OV, "project": str(root / "runs")})
    paths = prep(cfg, root / "vin", root / "prep")
    res = cross_validate(cfg, paths["out"], with_cls=True)
    out = root / "prep" / "cv"
    return {"root": root, "prep": root / "prep", "out": out, "res": res, "cfg": cfg,
            "cv": json.loads((out / "cv.json").read_text()),
            "oof": pd.read_csv(out / "oof.csv", dtype={"image_id": str}),
            "folds": pd.read_csv(root / "prep" / "folds.csv", dtype={"image_id": str})}


# ----------------------------------------------------------------------------- outputs of one run
@pytest.mark.slow   # shares one 3-fold cv run (~40 s alone)
def test_every_prepared_image_predicted_once_by_its_own_fold(cv_run):
    folds, oof, cv = cv_run["folds"], cv_run["oof"], cv_run["cv"]
    assert cv["oof"]["n_images"] == len(folds) == 18 and cv["missing"] == []
    fold_of = dict(zip(folds.image_id, folds.fold))
    assert (oof["fold"] == oof["image_id"].map(fold_of)).all()  # the fold of every row is its image's fold
    # the part records list every held-out image (boxes or not) exactly once
    listed = []
    for k in range(3):
        rec = json.loads((cv_run["out"] / "parts" / f"fold{k}.json").read_text())
        assert sorted(rec["images"]) == sorted(folds.image_id[folds.fold == k])
        listed += rec["images"]
    assert sorted(listed) == sorted(folds.image_id)
    # each image's boxes come from one model only: the part of its own fold
    for k in range(3):
        part = pd.read_csv(cv_run["out"] / "parts" / f"fold{k}.csv", dtype={"image_id": str})
        assert set(part.image_id) <= set(folds.image_id[folds.fold == k])
    raw = pd.read_csv(cv_run["out"] / "oof_raw.csv", dtype={"image_id": str})
    assert len(raw) == sum(len(pd.read_csv(cv_run["out"] / "parts" / f"fold{k}.csv")) for k in range(3))
    assert (raw["fold"] == raw["image_id"].map(fold_of)).all() and 14 not in set(raw.class_id)  # inference only
    probs = pd.read_csv(cv_run["out"] / "oof_probs.csv", dtype={"image_id": str})
    assert list(probs.columns) == ["image_id", "abnormal", "fold"] and sorted(probs.image_id) == sorted(folds.image_id)
    assert (probs["fold"] == probs["image_id"].map(fold_of)).all()
    # original pixels: inside each image
    im = pd.read_csv(cv_run["prep"] / "images.csv", dtype={"image_id": str}).set_index("image_id")
    boxes = oof[oof.class_id != 14]
    assert (boxes.x_max <= boxes.image_id.map(im.width) + 1e-6).all()
    assert (boxes.y_max <= boxes.image_id.map(im.height) + 1e-6).all()


@pytest.mark.slow   # shares one 3-fold cv run (~40 s alone)
def test_cv_json_layout(cv_run):
    cv, prep = cv_run["cv"], cv_run["prep"]
    assert set(cv) >= {"metric", "oof", "folds", "baseline"} and cv["metric"] == "vinbigdata"
    assert set(cv["oof"]) == {"score", "per_class", "n_images"}
    assert [f["fold"] for f in cv["folds"]] == [0, 1, 2]
    for f in cv["folds"]:
        assert f["n_val"] == 6 and f["n_train"] == 12
        assert f["data"] == str(prep / "yolo" / f"fold{f['fold']}" / "data.yaml")
        assert Path(f["weights"]).parts[-3:] == (f"vinbigdata_fold{f['fold']}", "weights", "best.pt")
        assert 0.0 <= f["score"] <= 1.0
    assert "No finding" in cv["oof"]["per_class"]



@pytest.mark.slow   # shares one 3-fold cv run (~40 s alone)
def test_baseline_is_the_radiologists_on_the_same_images(cv_run, tmp_path):
    base, data, prep = cv_run["cv"]["baseline"], cv_run["root"] / "vin", cv_run["prep"]
    assert base["n_images"] == 18 and base["min_images"] == 3 and base["raters"]
    j = tmp_path / "b.json"
    assert main(["evaluate", "--rater-baseline", "--truth", str(data / "train.csv"), "--meta",
                 str(prep / "images.csv"), "--min-images", "3", "--json", str(j)]) == 0
    same = {r["rater"]: r["mAP"] for r in json.loads(j.read_text())["rater_baseline"]}
    assert {r["rater"]: r["mAP"] for r in base["raters"]} == same
    # radiologists who never read an image with a finding score 1 by construction: not in the mean
    assert all(r["mAP"] == 1.0 for r in base["raters"] if r["n_abnormal"] == 0)
    read = [r["mAP"] for r in base["raters"] if r["n_abnormal"] > 0]
    assert read and base["mAP"] == pytest.approx(sum(read) / len(read))


@pytest.mark.slow   # shares one 3-fold cv run (~40 s alone)
def test_score_equals_cxrdet_evaluate_on_oof(cv_run, capsys, tmp_path):
    prep, out, cv = cv_run["prep"], cv_run["out"], cv_run["cv"]
    j = tmp_path / "m.json"
    rc = main(["evaluate", "--truth", str(prep / "fused_boxes.csv"), "--meta", str(prep / "images.csv"),
               "--pred", str(out / "oof.csv"), "--folds", str(prep / "folds.csv"), "--json", str(j)])
    assert rc == 0
    printed = capsys.readouterr().out
    m = json.loads(j.read_text())
    assert m["mAP"] == cv["oof"]["score"]
    assert [(f["fold"], f["score"]) for f in m["folds"]] == [(f["fold"], f["score"]) for f in cv["folds"]]
    # the per-fold table and the pooled line are printed
    assert "pooled" in printed and f"{cv['oof']['score']:.4f}" in printed
    for f in cv["folds"]:
        assert f"{f['score']:.4f}" in printed
    # the competition-form truth (fused.csv, VinBigData train.csv columns) gives the same number
    j2 = tmp_path / "m2.json"
    assert main(["evaluate", "--truth", str(prep / "fused.csv"), "--meta", str(prep / "meta.csv"), "--pred",
                 str(out / "oof.csv"), "--folds", str(prep / "folds.csv"), "--json", str(j2)]) == 0
    assert json.loads(j2.read_text())["mAP"] == pytest.approx(cv["oof"]["score"], abs=1e-12)
    # a fold's score alone: --fold K
    j3 = tmp_path / "m3.json"
    assert main(["evaluate", "--truth", str(prep / "fused_boxes.csv"), "--meta", str(prep / "images.csv"),
                 "--pred", str(out / "oof.csv"), "--folds", str(prep / "folds.csv"), "--fold", "1",
                 "--json", str(j3)]) == 0
    assert json.loads(j3.read_text())["mAP"] == cv["folds"][1]["score"]
    assert main(["evaluate", "--truth", str(prep / "fused_boxes.csv"), "--meta", str(prep / "images.csv"),
                 "--pred", str(out / "oof.csv"), "--folds", str(prep / "folds.csv"), "--fold", "0,2",
                 "--json", str(j3)]) == 0
    m3 = json.loads(j3.read_text())
    assert m3["n_images"] == 12 and [f["fold"] for f in m3["folds"]] == [0, 2]
    assert [f["score"] for f in m3["folds"]] == [cv["folds"][0]["score"], cv["folds"][2]["score"]]


@pytest.mark.slow   # shares one 3-fold cv run (~40 s alone)
def test_fold_ensemble_submission_is_valid(cv_run):
    from detection.competition.submission import validate_submission

    data, out = cv_run["root"] / "vin", cv_run["out"]
    sub = out / "submission.csv"
    assert validate_submission(sub, data / "sample_submission.csv", "vinbigdata") == []
    sample = pd.read_csv(data / "sample_submission.csv")
    assert pd.read_csv(sub).image_id.tolist() == sample.image_id.tolist()
    pred = pd.read_csv(out / "test_raw.csv", dtype={"image_id": str})
    assert set(pred.image_id) <= set(sample.image_id) and 14 not in set(pred.class_id)  # 1 epoch: may be empty
    assert list(pred.columns[:8]) == ["image_id", "class_id", "class_name", "x_min", "y_min", "x_max", "y_max", "score"]
    probs = pd.read_csv(out / "test_probs.csv", dtype={"image_id": str})
    assert sorted(probs.image_id) == sorted(sample.image_id)
    rec = json.loads((out / "parts" / "test.json").read_text())["fingerprint"]
    assert [w for w, _ in rec["weights"]] == [f["weights"] for f in cv_run["cv"]["folds"]]
    assert len(rec["classifiers"]) == 3


# ----------------------------------------------------------------------------- re-run, leaks
def _stamps(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in (out / "oof.csv", out / "cv.json", out / "test_raw.csv",
                                             out / "submission.csv", out / "oof_raw.csv", out / "oof_probs.csv",
                                             out / "test_probs.csv")}


@pytest.mark.slow   # shares one 3-fold cv run (~40 s alone)
def test_second_run_reuses_every_fold_and_rewrites_identical_files(cv_run, capsys):
    out, root = cv_run["out"], cv_run["root"]
    before = _stamps(out)
    weights = [Path(f["weights"]) for f in cv_run["cv"]["folds"]]
    results = {w: (w.parents[1] / "results.csv").stat().st_mtime_ns for w in weights}
    oof_mtime = (out / "oof.csv").stat().st_mtime_ns
    rc = main(["cv", "--config", "vinbigdata", "--prep", str(cv_run["prep"]), "--with-cls", *_cli_overrides(root / "runs")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("detector reused, classifier reused") == 3  # one progress line per fold
    assert "fold       n    score" in printed and "oof" in printed
    assert {w: (w.parents[1] / "results.csv").stat().st_mtime_ns for w in weights} == results  # nothing trained
    assert (out / "oof.csv").stat().st_mtime_ns != oof_mtime  # rewritten ...
    assert _stamps(out) == before                              # ... with identical bytes


@pytest.mark.slow   # shares one 3-fold cv run (~40 s alone)
def test_cv_tune_reuses_the_folds_and_after_is_what_evaluate_gives(cv_run, capsys, tmp_path):
    prep, out, root = cv_run["prep"], cv_run["out"], cv_run["root"]
    rc = main(["cv", "--config", "vinbigdata", "--prep", str(prep), "--with-cls", "--tune", "--trials", "5",
               *_cli_overrides(root / "runs")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("detector reused, classifier reused") == 3
    res = json.loads((out / "tuned.json").read_text())
    assert f"the tuned keys of {out / 'tuned.yaml'}: {json.dumps(res['params'])}" in printed
    assert main(["postprocess", "--pred", str(out / "oof_raw.csv"), "--cls-probs", str(out / "oof_probs.csv"),
                 "--meta", str(prep / "images.csv"), "--config", str(out / "tuned.yaml"),
                 "--out", str(tmp_path / "pp.csv")]) == 0
    j = tmp_path / "e.json"
    assert main(["evaluate", "--truth", str(prep / "fused_boxes.csv"), "--meta", str(prep / "images.csv"),
                 "--pred", str(tmp_path / "pp.csv"), "--folds", str(prep / "folds.csv"), "--json", str(j)]) == 0
    assert abs(json.loads(j.read_text())["mAP"] - res["after"]) <= 1e-9
    from detection.competition.submission import validate_submission

    assert validate_submission(out / "submission.csv", root / "vin" / "sample_submission.csv", "vinbigdata") == []
    # back to the config's keys (the module's other tests compare with the untuned run)
    assert main(["cv", "--config", "vinbigdata", "--prep", str(prep), "--with-cls", *_cli_overrides(root / "runs")]) == 0


def _run_with_train_txt(cv_run, text: str, capsys, keep_stamp: bool) -> tuple[int, str]:
    """Run the CLI cv with fold 0's train.txt replaced by ``text`` (size and mtime kept when
    ``keep_stamp``: the trained model is then reused), then restore the file and its mtime."""
    import os

    train_txt = cv_run["prep"] / "yolo" / "fold0" / "train.txt"
    original, st = train_txt.read_text(), train_txt.stat()
    try:
        train_txt.write_text(text)
        if keep_stamp:
            assert train_txt.stat().st_size == st.st_size
            os.utime(train_txt, ns=(st.st_atime_ns, st.st_mtime_ns))
        rc = main(["cv", "--config", "vinbigdata", "--prep", str(cv_run["prep"]), "--with-cls",
                   *_cli_overrides(cv_run["root"] / "runs")])
        return rc, capsys.readouterr().err
    finally:
        train_txt.write_text(original)
        os.utime(train_txt, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.slow   # shares one 3-fold cv run (~40 s alone)
def test_a_leaked_training_list_stops_the_run_naming_the_image(cv_run, capsys):
    prep, out, folds = cv_run["prep"], cv_run["out"], cv_run["folds"]
    held = folds.image_id[folds.fold == 0].iloc[2]
    lines = (prep / "yolo" / "fold0" / "train.txt").read_text().splitlines()
    oof_before, det = (out / "oof.csv").read_bytes(), Path(cv_run["cv"]["folds"][0]["weights"])
    det_stamp = det.stat().st_mtime_ns
    # 1. the list the REUSED fold-0 model recorded holds a held-out image (one line swapped, same
    #    size and mtime, so the model is not retrained): caught before predicting fold 0
    swapped = "\n".join([str(prep / "images" / f"{held}.png")] + lines[1:]) + "\n"
    rc, err = _run_with_train_txt(cv_run, swapped, capsys, keep_stamp=True)
    assert rc == 2 and "Traceback" not in err
    assert f"leak: fold 0's detector {det}" in err and f"{held} (held out)" in err
    assert det.stat().st_mtime_ns == det_stamp  # reused, not retrained
    # 2. a changed list is checked before any training starts
    rc, err = _run_with_train_txt(cv_run, "\n".join(lines + [str(prep / "images" / f"{held}.png")]) + "\n",
                                  capsys, keep_stamp=False)
    assert rc == 2 and "fold 0's training list" in err and f"{held} (held out)" in err
    assert det.stat().st_mtime_ns == det_stamp
    assert (out / "oof.csv").read_bytes() == oof_before  # the last whole oof.csv is left as it was


def test_patient_of_a_held_out_image_in_the_training_list_is_a_leak(make_prep, tmp_path):
    from detection.competition.cv import check_leaks
    from detection.engine.train import train_list, trained_on

    prep = make_prep(tmp_path / "prep", n=9, k=3)
    images = pd.read_csv(prep / "images.csv", dtype=str)
    held = ["img000", "img003", "img006"]  # fold 0 (i % 3)
    train = [p.stem for p in train_list(prep / "yolo" / "fold0" / "data.yaml")]
    assert sorted(train) == ["img001", "img002", "img004", "img005", "img007", "img008"]
    check_leaks(train, held, images, "fold 0")  # clean: no error
    images.loc[images.image_id == "img004", "patient_id"] = "img003"  # img004 is img003's patient
    with pytest.raises(ValueError, match=r"img004 \(patient img003 is held out\)"):
        check_leaks(train, held, images, "fold 0")
    # a model whose recorded data.yaml lists a held-out image
    leaked = tmp_path / "leaked"
    leaked.mkdir()
    (leaked / "train.txt").write_text((prep / "yolo" / "fold0" / "train.txt").read_text()
                                      + str(prep / "images" / "img006.png") + "\n")
    (leaked / "data.yaml").write_text(yaml.safe_dump({"path": str(leaked), "train": "train.txt", "val": "train.txt",
                                                      "nc": 2, "names": {0: "a", 1: "b"}}))
    torch.save({"train_args": {"data": str(leaked / "data.yaml")}}, tmp_path / "best.pt")
    ids = [p.stem for p in train_list(trained_on(tmp_path / "best.pt"))]
    with pytest.raises(ValueError, match=r"img006 \(held out\)"):
        check_leaks(ids, held, pd.read_csv(prep / "images.csv", dtype=str), "fold 0's detector")


def test_bad_fold_selection_is_one_line(make_prep, tmp_path, capsys):
    prep = make_prep(tmp_path / "prep", n=6, k=3)
    assert main(["cv", "--config", "vinbigdata", "--prep", str(prep), "--folds", "0,7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fold(s) [7]" in err and "[0, 1, 2]" in err


# ----------------------------------------------------------------------------- a killed run
@pytest.mark.slow   # trains twice (~25 s alone)
def test_killed_training_resumes_and_never_leaves_a_half_written_oof(make_prep, tiny_cfg, tmp_path):
    from detection.competition.cv import cross_validate

    prep = make_prep(tmp_path / "prep", n=9, png=64, k=3)
    cfg = tiny_cfg(tmp_path, epochs=2, imgsz=64, folds=3, yolo_args={"plots": False, "val": False, "mosaic": 0.0})

    def kill(trainer):
        if trainer.epoch == 0 and trainer.save_dir.name == "vinbigdata_fold1":
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        cross_validate(cfg, prep, "0,1", callbacks={"on_fit_epoch_end": kill})
    out = prep / "cv"
    assert (out / "parts" / "fold0.csv").is_file() and not (out / "oof.csv").exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    fold0 = (tmp_path / "runs" / "vinbigdata_fold0" / "results.csv").stat().st_mtime_ns
    run1 = tmp_path / "runs" / "vinbigdata_fold1"
    assert len(pd.read_csv(run1 / "results.csv")) == 1

    res = cross_validate(cfg, prep, "0,1")
    assert pd.read_csv(run1 / "results.csv")["epoch"].tolist() == [1, 2]  # resumed, not restarted
    assert (tmp_path / "runs" / "vinbigdata_fold0" / "results.csv").stat().st_mtime_ns == fold0
    oof = pd.read_csv(out / "oof.csv", dtype={"image_id": str})
    assert set(oof.fold) <= {0, 1} and res["oof"]["n_images"] == 6
    assert res["baseline"].get("note")  # no dataset folder in a bare prep: no radiologists
