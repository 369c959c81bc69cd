"""Issue 30, item 4: tables must agree with each other (data_prep/core/tables.py: one function per
contract, used by every stage). Probabilities, folds and prediction tables covering none of the
images they are applied to: an error; part: a warning with the counts. Folds: integers, one per
image; ``--folds/--fold`` and ``fold=K`` the same in every stage (the rater baseline and
evaluate-cls included). Class ids outside the dataset: an error naming file, line and value.
NIH patient ids read as text.

Each case of the third bad-input sweep for this item is one test (or one parametrized case)."""
from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from data_prep.core import tables
from data_prep.datasets import nih, vinbigdata
from data_prep.core.errors import InputError
from detection.cli import main
from cli_errors import one_error

C0, C3 = vinbigdata.CLASSES[0], vinbigdata.CLASSES[3]
N, NF = vinbigdata.NORMAL_ID, vinbigdata.NORMAL_NAME


def _write(path, text: str):
    path.write_text(text)
    return path


PRED = f"""image_id,class_id,class_name,x_min,y_min,x_max,y_max,score
a,0,{C0},10,10,50,50,0.9
b,3,{C3},20,20,60,60,0.6
c,0,{C0},30,30,70,70,0.5
"""
TRUTH = f"""image_id,class_id,class_name,x_min,y_min,x_max,y_max
a,0,{C0},10,10,50,50
b,3,{C3},20,20,60,60
c,0,{C0},30,30,70,70
"""
META = "image_id,height,width\na,100,100\nb,100,100\nc,100,100\nd,100,100\n"


@pytest.fixture()
def d(tmp_path):
    _write(tmp_path / "pred.csv", PRED)
    _write(tmp_path / "truth.csv", TRUTH)
    _write(tmp_path / "meta.csv", META)
    _write(tmp_path / "folds.csv", "image_id,fold\na,0\nb,0\nc,1\nd,1\n")
    return tmp_path


# ----------------------------------------------------------------------------- the shared contract
def test_coverage_none_is_an_error_part_a_warning_with_counts(caplog):
    with pytest.raises(InputError, match=r"p.csv: probabilities for none of the 2 predicted images \(e.g. 'a'"):
        tables.coverage(["x", "y"], ["a", "b"], "p.csv", "probabilities", "predicted images", "left unfiltered")
    caplog.set_level(logging.WARNING)
    assert tables.coverage(["a", "x"], ["a", "b", "c"], "p.csv", "probabilities", "predicted images",
                           "left unfiltered") == {"a"}
    assert "p.csv: probabilities for 1 of 3 predicted images; 2 without: left unfiltered" in caplog.text


# ----------------------------------------------------------------------------- probabilities (postprocess, tune)
def test_postprocess_probabilities_of_another_split_is_an_error(d, capsys):
    _write(d / "probs.csv", "image_id,abnormal\nx,0.01\ny,0.02\n")
    assert main(["postprocess", "--pred", str(d / "pred.csv"), "--cls-probs", str(d / "probs.csv"),
                 "--out", str(d / "o.csv")]) == 2
    assert "probs.csv: probabilities for none of the 3 predicted images" in one_error(capsys, "postprocess")
    assert not (d / "o.csv").exists()


def test_postprocess_partial_probabilities_warn_and_never_invent_no_finding(d, caplog):
    # a: p 0.01 (< cls_low: normal only); b: no row (left unfiltered); c: p 0.99 (boxes only);
    # z, w: never predicted: no "No finding 1.0" row is made for them
    _write(d / "probs.csv", "image_id,abnormal\na,0.01\nc,0.99\nz,0.01\nw,0.02\n")
    caplog.set_level(logging.WARNING)
    assert main(["postprocess", "--pred", str(d / "pred.csv"), "--cls-probs", str(d / "probs.csv"),
                 "--out", str(d / "o.csv")]) == 0
    assert "probabilities for 2 of 3 predicted images; 1 without: left unfiltered" in caplog.text
    assert "2 row(s) for images no prediction table names: ignored" in caplog.text
    out = pd.read_csv(d / "o.csv", dtype={"image_id": str})
    assert [(r.image_id, r.class_id, r.score) for r in out.itertuples()] == [
        ("a", N, 1.0), ("b", 3, 0.6), ("c", 0, 0.5)]
    assert not {"z", "w"} & set(out["image_id"])


def test_tune_refuses_probabilities_of_another_split_before_any_trial(d, capsys, monkeypatch):
    import detection.competition.tune as T

    _write(d / "probs.csv", "image_id,abnormal\nx,0.01\n")
    monkeypatch.setattr(T, "search", lambda *a, **k: pytest.fail("a trial ran"))
    assert main(["tune", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "pred.csv"), "--cls-probs", str(d / "probs.csv"), "--folds", str(d / "folds.csv"),
                 "--out", str(d / "tuned.yaml")]) == 2
    assert "probabilities for none of the 3 predicted images" in one_error(capsys, "tune")


# ----------------------------------------------------------------------------- folds: integers, one per image
@pytest.mark.parametrize("text, message", [
    ("image_id,fold\na,0\nb,0.5\nc,1\n", r"folds.csv line 3: fold '0.5' is not an integer >= 0"),
    ("image_id,fold\na,0\nb,x\nc,1\n", r"folds.csv line 3: fold 'x' is not an integer >= 0"),
    ("image_id,fold\na,0\nb,-1\nc,1\n", r"folds.csv line 3: fold '-1' is not an integer >= 0"),
    ("image_id,fold\na,0\nb,\nc,1\n", r"folds.csv line 3: fold 'nan' is not an integer >= 0"),
    ("image_id,fold\na,0\nb,0\na,1\n", r"folds.csv lines 2 and 4: image 'a' is in fold 0 and in fold 1"),
    ("image_id,folds\na,0\n", r"folds.csv: no column 'fold'; expected image_id,fold"),
])
def test_bad_folds_are_one_line_errors_in_evaluate(d, capsys, text, message):
    _write(d / "folds.csv", text)
    assert main(["evaluate", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "pred.csv"), "--folds", str(d / "folds.csv")]) == 2
    line = one_error(capsys, "evaluate")
    assert pd.Series([line]).str.contains(message).all(), line


def test_a_fold_of_0_5_never_joins_fold_0(d):
    _write(d / "folds.csv", "image_id,fold\na,0\nb,0.5\n")
    with pytest.raises(InputError, match="fold '0.5'"):
        tables.fold_images(d / "folds.csv", 0)
    _write(d / "folds.csv", "image_id,fold\na,0\nb,1.0\na,0\n")   # 1.0 is 1; a repeated row counts once
    assert tables.fold_images(d / "folds.csv", 1) == ["b"] and tables.fold_images(d / "folds.csv", 0) == ["a"]


def test_a_prediction_table_fold_column_must_hold_integers(d, capsys):
    rows = PRED.strip().splitlines()
    _write(d / "oof.csv", "\n".join([rows[0] + ",fold", rows[1] + ",0", rows[2] + ",0.5", rows[3] + ",1"]) + "\n")
    assert main(["postprocess", "--pred", str(d / "oof.csv"), "--out", str(d / "o.csv")]) == 2
    assert "oof.csv line 3: fold '0.5' is not an integer >= 0" in one_error(capsys, "postprocess")


def test_folds_without_overlap_are_an_error_not_nan(d, capsys):
    _write(d / "folds.csv", "image_id,fold\nx,0\ny,1\n")
    assert main(["evaluate", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "pred.csv"), "--folds", str(d / "folds.csv")]) == 2
    assert "folds.csv: folds for none of the 4 truth images" in one_error(capsys, "evaluate")
    assert main(["evaluate", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "pred.csv"), "--folds", str(d / "folds.csv"), "--fold", "0"]) == 2
    assert "folds for none of the 4 truth images" in one_error(capsys, "evaluate")


def test_folds_covering_part_of_the_truth_warn_with_counts(d, caplog):
    _write(d / "folds.csv", "image_id,fold\na,0\nb,0\nc,1\n")   # d (normal) has no fold
    caplog.set_level(logging.WARNING)
    assert main(["evaluate", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "pred.csv"), "--folds", str(d / "folds.csv"), "--json", str(d / "m.json")]) == 0
    assert "folds.csv: folds for 3 of 4 truth images; 1 without: not evaluated" in caplog.text
    assert json.loads((d / "m.json").read_text())["n_images"] == 3


def test_predictions_covering_none_of_the_evaluated_images_are_an_error(d, capsys):
    _write(d / "other.csv", PRED.replace("a,", "x,").replace("b,", "y,").replace("c,", "z,"))
    assert main(["evaluate", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "other.csv")]) == 2
    assert "other.csv: no prediction matches any of the 4 evaluated truth image(s)" in one_error(capsys, "evaluate")


# ----------------------------------------------------------------------------- fold=K == --fold K everywhere
RAW = f"""image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max
a,{C0},0,R1,10,10,50,50
a,{C0},0,R2,12,12,52,52
b,{NF},{N},R1,,,,
b,{C0},0,R2,60,60,90,90
c,{C3},3,R1,20,20,80,80
c,{C3},3,R2,20,20,80,80
d,{NF},{N},R1,,,,
d,{NF},{N},R2,,,,
"""


def _baseline(d, capsys, *extra):
    out = d / "rb.json"
    rc = main(["evaluate", "--rater-baseline", "--truth", str(d / "raw.csv"), "--meta", str(d / "meta.csv"),
               "--min-images", "1", "--json", str(out), *extra])
    return rc, (json.loads(out.read_text()) if rc == 0 else one_error(capsys, "evaluate"))


def test_rater_baseline_honours_folds_and_fold_k_means_the_same(d, capsys):
    _write(d / "raw.csv", RAW)
    rc, every = _baseline(d, capsys)
    assert rc == 0 and {r["n_images"] for r in every["rater_baseline"]} == {4}
    rc, f1 = _baseline(d, capsys, "--folds", str(d / "folds.csv"), "--fold", "1")
    assert rc == 0 and {r["n_images"] for r in f1["rater_baseline"]} == {2} and f1["fold"] == 1
    rc, k1 = _baseline(d, capsys, "--folds", str(d / "folds.csv"), "fold=1")
    assert rc == 0 and k1 == f1
    # the same numbers as the baseline of a labels file holding fold 1's images only
    _write(d / "raw.csv", "\n".join(ln for ln in RAW.splitlines() if not ln.startswith(("a,", "b,"))) + "\n")
    rc, by_hand = _baseline(d, capsys)
    assert [r["mAP"] for r in by_hand["rater_baseline"]] == [r["mAP"] for r in f1["rater_baseline"]]
    _write(d / "raw.csv", RAW)
    rc, line = _baseline(d, capsys, "fold=1")
    assert rc == 2 and "--folds and --fold go together" in line
    _write(d / "f2.csv", "image_id,fold\nx,0\n")
    rc, line = _baseline(d, capsys, "--folds", str(d / "f2.csv"))
    assert rc == 2 and "folds for none of the 4 images of the labels" in line


def _cls_files(d):
    _write(d / "labels.csv", f"image_id,{C0},abnormal\na,1,1\nb,0,1\nc,1,1\nd,0,0\n")
    _write(d / "probs.csv", f"image_id,{C0},abnormal\na,0.9,0.8\nb,0.2,0.7\nc,0.6,0.9\nd,0.1,0.2\n")


def test_evaluate_cls_fold_k_is_fold_k_and_needs_folds(d, capsys):
    _cls_files(d)
    _write(d / "folds.csv", "image_id,fold\na,0\nb,0\nc,1\nd,1\n")
    base = ["evaluate-cls", "--labels", str(d / "labels.csv"), "--probs", str(d / "probs.csv"), "--n-boot", "10"]
    assert main(base + ["fold=1"]) == 2
    assert "--folds and --fold go together" in one_error(capsys, "evaluate-cls")
    assert main(base + ["--folds", str(d / "folds.csv"), "--fold", "1", "--json", str(d / "a.json")]) == 0
    assert main(base + ["--folds", str(d / "folds.csv"), "fold=1", "--json", str(d / "b.json")]) == 0
    a, b = (json.loads((d / f).read_text()) for f in ("a.json", "b.json"))
    assert a == b and a["n_images"] == 2
    assert main(base + ["--json", str(d / "c.json")]) == 0
    assert json.loads((d / "c.json").read_text())["n_images"] == 4


def test_evaluate_cls_probabilities_of_another_split_or_part(d, capsys, caplog):
    _cls_files(d)
    base = ["evaluate-cls", "--labels", str(d / "labels.csv"), "--n-boot", "10"]
    _write(d / "other.csv", f"image_id,{C0},abnormal\nx,0.9,0.8\n")
    assert main(base + ["--probs", str(d / "other.csv")]) == 2
    assert "other.csv: probabilities for none of the 4 labelled images" in one_error(capsys, "evaluate-cls")
    _write(d / "part.csv", f"image_id,{C0},abnormal\na,0.9,0.8\nd,0.1,0.2\nb,0.3,0.4\n")
    caplog.set_level(logging.WARNING)
    assert main(base + ["--probs", str(d / "part.csv")]) == 0
    assert "part.csv: probabilities for 3 of 4 labelled images; 1 without: not scored" in caplog.text


# ----------------------------------------------------------------------------- class ids outside the dataset
@pytest.mark.parametrize("cid", ["-1", "15", "99"])
def test_class_ids_outside_the_dataset_are_errors_naming_file_line_value(d, capsys, cid):
    _write(d / "bad.csv", PRED.replace(f"b,3,{C3}", f"b,{cid},{C3}"))
    want = f"bad.csv line 3: class_id {cid} is not a class of the dataset (15 classes); expected a class id from 0 to 14"
    assert main(["postprocess", "--pred", str(d / "bad.csv"), "--out", str(d / "o.csv")]) == 2
    assert want in one_error(capsys, "postprocess")
    assert main(["evaluate", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "bad.csv")]) == 2
    assert want in one_error(capsys, "evaluate")
    _write(d / "badtruth.csv", TRUTH.replace(f"b,3,{C3}", f"b,{cid},{C3}"))
    assert main(["evaluate", "--truth", str(d / "badtruth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "pred.csv")]) == 2
    assert want.replace("bad.csv", "badtruth.csv") in one_error(capsys, "evaluate")
    from detection.pictures.explore import load_explore_inputs

    with pytest.raises(InputError, match=want.replace("(", r"\(").replace(")", r"\)")):
        load_explore_inputs(d / "truth.csv", [d / "bad.csv"], d / "meta.csv")


def test_rsna_has_one_class(d, capsys):
    _write(d / "r.csv", "image_id,class_id,x_min,y_min,x_max,y_max,score\na,0,1,1,5,5,0.5\na,1,1,1,5,5,0.5\n")
    assert main(["postprocess", "--pred", str(d / "r.csv"), "--out", str(d / "o.csv"), "dataset=rsna"]) == 2
    assert "r.csv line 3: class_id 1 is not a class of the dataset (1 classes); expected a class id from 0 to 0" \
        in one_error(capsys, "postprocess")


# ----------------------------------------------------------------------------- NIH patient ids
NIH_BOX = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_001.png,Cardiomegaly,100,200,300,400\n"
NIH_HEAD = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
            "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n")


def test_nih_patient_1_5_is_not_patient_1(tmp_path):
    box = _write(tmp_path / "BBox_List_2017.csv", NIH_BOX)
    entry = _write(tmp_path / "Data_Entry_2017.csv", NIH_HEAD
                   + "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143\n"
                   + "00000001_001.png,Cardiomegaly,1,1.5,58,M,PA,2894,2729,0.143,0.143\n")
    with pytest.raises(ValueError, match=r"Data_Entry_2017.csv line 3: patient_id '1.5' is not an integer patient id"):
        nih.load(box, entry)
    _write(entry, NIH_HEAD + "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143\n"
           + "00000001_001.png,Cardiomegaly,1,0000001,58,M,PA,2894,2729,0.143,0.143\n"
           + "00000002_000.png,No Finding,0,12,58,M,PA,2894,2729,0.143,0.143\n")
    images, _ = nih.load(box, entry)
    assert images["patient_id"].tolist() == ["00000001", "00000001", "00000012"]


def test_explore_reads_folds_by_the_same_contract(d, caplog):
    from detection.pictures.explore import load_explore_inputs

    _write(d / "other.csv", "image_id,fold\nx,0\ny,1\n")
    with pytest.raises(InputError, match="other.csv: folds for none of the 4 truth images"):
        load_explore_inputs(d / "truth.csv", [d / "pred.csv"], d / "meta.csv", d / "other.csv", 0)
    _write(d / "half.csv", "image_id,fold\na,0\nc,1\n")
    caplog.set_level(logging.WARNING)
    images, truth, _, _ = load_explore_inputs(d / "truth.csv", [d / "pred.csv"], d / "meta.csv", d / "half.csv", 1)
    assert images["image_id"].tolist() == ["c"] and truth["image_id"].tolist() == ["c"]
    assert "half.csv: folds for 2 of 4 truth images; 2 without: not evaluated" in caplog.text


def test_a_table_without_a_single_box_is_a_warning_not_an_error(d, caplog):
    """A model that found nothing (a 1-epoch cv fold, a strict threshold) writes a table with no
    row: it names no image, so it contradicts none; every image scores as predicted empty."""
    import logging

    _write(d / "empty.csv", PRED.splitlines()[0] + "\n")
    caplog.set_level(logging.WARNING)
    assert main(["evaluate", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred",
                 str(d / "empty.csv"), "--json", str(d / "m.json")]) == 0
    assert "empty.csv: the prediction table holds no box at all; all 4 evaluated image(s) count as predicted empty" \
        in caplog.text
    assert json.loads((d / "m.json").read_text())["mAP"] == 0.0
