"""Issue 30, item 3: every key validated once, at the config merge (data_prep/core/keys.py); the same
rules for tune's search spaces and for what tune writes; an anchor bomb refused at once.

Each case of the third bad-input sweep for these items is one test (or one parametrized case)."""
from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import yaml

import detection.competition.postprocess as PP
import detection.competition.tune as T
from data_prep.core import keys
from data_prep.core.config import DEFAULT, load_config
from data_prep.core.errors import InputError
from detection.cli import main
from cli_errors import one_error


# ----------------------------------------------------------------------------- the rule table
def test_every_default_key_has_a_rule_and_every_shipped_config_passes():
    defaults = yaml.safe_load(DEFAULT.read_text())
    assert set(keys.RULES) == set(defaults)            # every key of default.yaml, nothing else
    for name in ("vinbigdata", "rsna", "nih", "phantom", "phantom_multilabel", "rsna_phantom", None):
        load_config(name)                              # the shipped configs pass their own rules


def test_choices_are_the_modules_own_constants():
    from data_prep.dicom import convert
    from data_prep.core import cluster
    from data_prep.labels import fusion
    from data_prep.dicom import voi
    from data_prep.datasets import DATASETS
    from detection.engine import classifier
    from detection.engine import epoch_score

    assert keys.DATASETS == tuple(DATASETS) and keys.FUSIONS == fusion.METHODS
    assert keys.CONF_TYPES == fusion.CONF_TYPES == PP.CONF_TYPES and keys.CLS_FUSIONS == PP.FUSIONS
    assert (keys.VOI_MODES, keys.STRETCH_MODES) == (voi.VOI_MODES, voi.STRETCH_MODES)
    assert keys.SELECT_BY == epoch_score.SELECT_BY and keys.CLS_IMAGES == classifier.CLS_IMAGES
    assert (keys.RULES["size"].lo, keys.RULES["size"].hi) == convert.SIZE_RANGE
    assert cluster.LOCAL == "local"


@pytest.mark.parametrize("item, message", [
    ("box_scale=.nan", "key 'box_scale' = nan; expected a finite number in (0, 10]"),
    ("box_scale=.inf", "key 'box_scale' = inf; expected a finite number in (0, 10]"),
    ("box_scale=-0.5", "key 'box_scale' = -0.5; expected a finite number in (0, 10]"),
    ("box_scale=0", "key 'box_scale' = 0.0; expected a finite number in (0, 10]"),
    ("box_scale=", "key 'box_scale' = None; expected a finite number in (0, 10]"),
    ("ens_weights=[1, -1]", "key 'ens_weights': item -1 is not a finite number in [0, 1000]"),
    ("ens_weights=[0, 0]", "at least one > 0"),
    ("ens_weights=[1, .inf]", "key 'ens_weights': item inf is not a finite number"),
    ("score_thr=2", "key 'score_thr' = 2.0; expected a finite number in [0, 1]"),
    ("ens_skip=2", "key 'ens_skip' = 2.0; expected a finite number in [0, 1)"),
    ("iou_thr=.nan", "key 'iou_thr' = nan; expected a finite number in (0, 1]"),
    ("iou_thr=0", "key 'iou_thr' = 0.0; expected a finite number in (0, 1]"),
    ("class_thr={Aortic enlargment: 0.3}", "key 'class_thr': key 'Aortic enlargment' is not a class name of the "
                                           "dataset (did you mean 'Aortic enlargement'?); expected class names of "
                                           "dataset 'vinbigdata': Aortic enlargement, Atelectasis"),
    ("class_thr={Nodule/Mass: 1.5}", "key 'class_thr': Nodule/Mass: 1.5 is not a finite number in [0, 1]"),
    ("cls_low=0.9|cls_high=0.5", "key 'cls_low' = 0.9 > cls_high 0.5; expected 0 <= low <= high <= 1"),
    ("cls_lr=.nan", "key 'cls_lr' = nan; expected a finite number in (0, 1]"),
    ("cls_lr=-0.001", "key 'cls_lr' = -0.001; expected a finite number in (0, 1]"),
    ("cls_imgsz=0", "key 'cls_imgsz' = 0; expected an integer in [16, 16384]"),
    ("batch=0", "key 'batch' = 0; expected an integer in [1, 100000] or -1"),
    ("top_k=-1", "key 'top_k' = -1; expected an integer in [0, 100000]"),
    ("alpha=.inf", "key 'alpha' = inf; expected a finite number in [0, 100] or a mapping"),
    ("alpha={Cardiomegally: 1.0}", "key 'alpha' = {'Cardiomegally': 1.0}; expected a finite number in [0, 100] or "
                                   "a mapping of a class name of the dataset -> a finite number in [0, 100]"),
    ("squarify=.inf", "key 'squarify' = inf; expected null or a finite number in [1, 100]"),
    ("min_box_size=-3", "key 'min_box_size' = -3.0; expected a finite number in [0, 1e+06]"),
    ("conf=1.5", "key 'conf' = 1.5; expected a finite number in [0, 1]"),
    ("fusion_iou=.nan", "key 'fusion_iou' = nan; expected a finite number in (0, 1]"),
    ("rater_weights={R8: -2}", "key 'rater_weights': R8: -2 is not a finite number in (0, 1000]"),
    ("cls_fusion=mul", "key 'cls_fusion' = 'mul'; expected one of none | multiply"),
    ("metric=map", "key 'metric' = 'map'; expected one of vinbigdata | rsna | coco"),
    ("voi=windows", "key 'voi' = 'windows'; expected one of auto | window | lut | none"),
    ("window_index=-1", "key 'window_index' = -1; expected an integer in [0, 1000]"),
    ("device=gpu", "key 'device' = 'gpu'; expected auto, cpu, mps, a GPU number (0) or numbers (0,1)"),
    ("seed=-1", "key 'seed' = -1; expected an integer in [0, 4294967295]"),
    ("folds=1", "key 'folds' = 1; expected an integer in [2, 1000]"),
    ("channels=2", "key 'channels' = 2; expected one of 1 | 3"),
    ("cls_pos_weight=[1, -1]", "key 'cls_pos_weight' = [1, -1]; expected null or one of auto | none or a list"),
    ("classes=[a, a]", "key 'classes' = ['a', 'a']; expected null or a list of 1 to 1000 item(s)"),
    ("dataset=coco", "key 'dataset' = 'coco'; expected one of vinbigdata | rsna | nih"),
    ("scheduler=http://h:1", "key 'scheduler': scheduler 'http://h:1': expected null"),
])
def test_a_bad_value_is_one_line_naming_the_key_the_value_and_what_was_expected(item, message):
    with pytest.raises(InputError) as e:
        load_config(overrides=item.split("|"))
    assert str(e.value).startswith("key=value: ") and message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_the_message_names_the_layer_that_set_the_key(tmp_path):
    (tmp_path / "c.yaml").write_text("box_scale: .inf\n")
    with pytest.raises(InputError, match=r"c.yaml: key 'box_scale' = inf; expected"):
        load_config(str(tmp_path / "c.yaml"))
    with pytest.raises(InputError, match=r"^--iou: key 'iou_thr' = nan"):
        load_config(flags={"iou_thr": float("nan")})
    # class names follow the dataset (and `classes`): RSNA's one class, a renamed list
    assert load_config(overrides=["dataset=rsna", "class_thr={Lung Opacity: 0.2}"])["class_thr"] == {
        "Lung Opacity": 0.2}
    with pytest.raises(InputError, match="expected class names of dataset 'rsna': Lung Opacity"):
        load_config(overrides=["dataset=rsna", "class_thr={Nodule/Mass: 0.2}"])
    assert load_config(overrides=["classes=[a, b]", "class_thr={b: 0.5, 0: 0.1}"])["class_thr"] == {"b": 0.5, 0: 0.1}


def test_good_values_still_pass():
    cfg = load_config(overrides=["box_scale=0.875", "ens_weights=[2, 1]", "score_thr=1", "class_thr={14: 0.5}",
                                 "batch=-1", "cls_pos_weight=auto", "device=0,1", "scheduler=tcp://10.0.0.1:8786",
                                 "raters=R8,R10", "yolo_args={lr0: 0.01, mosaic: 0.0}", "fold=4"])
    assert cfg["box_scale"] == 0.875 and cfg["ens_weights"] == [2, 1] and cfg["batch"] == -1


# ----------------------------------------------------------------------------- YAML size limits
def _bomb(levels=9, width=10) -> str:
    lines = ["  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "yolo_args:\n" + "\n".join(lines) + "\n"   # 10**9 strings, inside a valid dict key


def test_an_anchor_bomb_inside_a_valid_key_is_refused_at_once(tmp_path, capsys):
    (tmp_path / "bomb.yaml").write_text(_bomb())
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"bomb.yaml: more than 100,000 values once its aliases"):
        load_config(str(tmp_path / "bomb.yaml"))
    assert time.perf_counter() - t0 < 0.5
    t0 = time.perf_counter()
    assert main(["postprocess", "--pred", str(tmp_path / "p.csv"), "--config", str(tmp_path / "bomb.yaml"),
                 "--out", str(tmp_path / "o.csv")]) == 2
    assert "an alias/anchor bomb?" in one_error(capsys, "postprocess") and time.perf_counter() - t0 < 5
    inline = "{" + _bomb().split("\n", 1)[1].replace("\n", ", ").strip(", ").replace("  ", "") + "}"
    with pytest.raises(InputError, match=r"key=value: more than 100,000 values"):
        load_config(overrides=[f"yolo_args={inline}"])


def test_deep_nesting_and_huge_documents_are_refused(tmp_path):
    with pytest.raises(InputError, match="nested more than 32 levels deep"):
        load_config(overrides=["tv_args={a: " + "[" * 40 + "]" * 40 + "}"])
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (keys.MAX_BYTES + 10) + "\nepochs: 2\n")
    with pytest.raises(InputError, match=r"big.yaml: 1,048,\d+ bytes; expected a config file of at most 1,048,576"):
        load_config(str(big))


# ----------------------------------------------------------------------------- postprocess / evaluate at the CLI
def _tables(tmp_path):
    pd.DataFrame({"image_id": ["a", "a", "b"], "class_id": [0, 3, 0], "x_min": [10.0, 20, 30],
                  "y_min": [10.0, 20, 30], "x_max": [50.0, 60, 70], "y_max": [50.0, 60, 70],
                  "score": [0.9, 0.5, 0.4]}).to_csv(tmp_path / "p.csv", index=False)
    return tmp_path / "p.csv"


@pytest.mark.parametrize("item", ["box_scale=.nan", "box_scale=.inf", "ens_weights=[1,-1]", "score_thr=2",
                                  "ens_skip=2", "class_thr={Cardiomegally: 0.5}"])
def test_postprocess_refuses_each_bad_key_in_one_line_and_writes_nothing(tmp_path, capsys, item):
    p = _tables(tmp_path)
    assert main(["postprocess", "--pred", str(p), "--out", str(tmp_path / "o.csv"), item]) == 2
    assert f"key '{item.split('=')[0]}'" in one_error(capsys, "postprocess")
    assert not (tmp_path / "o.csv").exists()


def test_ens_weights_must_have_one_weight_per_table(tmp_path, capsys):
    p = _tables(tmp_path)
    assert main(["postprocess", "--pred", str(p), "--out", str(tmp_path / "o.csv"), "ens_weights=[1, 2]"]) == 2
    assert "ens_weights [1, 2]: 2 weight(s) for 1 table(s)" in one_error(capsys, "postprocess")
    assert main(["postprocess", "--pred", str(p), str(p), "--out", str(tmp_path / "o.csv"), "ens_weights=[1, 2]"]) == 0


def test_evaluate_refuses_a_nan_iou_instead_of_printing_map_at_nan(tmp_path, capsys):
    p = _tables(tmp_path)
    assert main(["evaluate", "--truth", str(p), "--pred", str(p), "iou_thr=.nan"]) == 2
    line = one_error(capsys, "evaluate")
    assert "key 'iou_thr' = nan; expected a finite number in (0, 1]" in line
    assert main(["evaluate", "--truth", str(p), "--pred", str(p), "--iou", "nan"]) == 2
    assert "--iou: key 'iou_thr' = nan" in one_error(capsys, "evaluate")


def test_post_config_applies_the_same_rules_to_settings_handed_in_directly():
    with pytest.raises(InputError, match="post-processing settings: key 'box_scale' = -1"):
        PP.post_config({**PP.defaults(), "box_scale": -1})
    with pytest.raises(InputError, match="key 'ens_weights'"):
        PP.post_config({**PP.defaults(), "ens_weights": [1, float("nan")]})


# ----------------------------------------------------------------------------- tune's spaces and outputs
@pytest.mark.parametrize("space, message", [
    ({"box_scale": {"low": 0.0, "high": 1.2, "log": True}}, "key 'box_scale' = 0.0; expected a finite number in (0, 10]"),
    ({"alpha": {"low": 0.0, "high": 2.0, "log": True}}, "key 'alpha': a log range from 0.0; expected low > 0"),
    ({"score_thr": {"low": 0.0, "high": 0.5, "step": 0}}, "key 'score_thr': step 0; expected a number > 0"),
    ({"top_k": {"low": 0, "high": 4, "step": 0}}, "key 'top_k': step 0; expected an integer > 0"),
    ({"box_scale": {"low": "a", "high": 1.2}}, "key 'box_scale': low 'a' is str; expected a number"),
    ({"box_scale": {"low": 0.8, "high": "1.2"}}, "key 'box_scale': high '1.2' is str; expected a number"),
    ({"top_k": {"low": 0, "high": 2.5}}, "key 'top_k': high 2.5 is float; expected an integer"),
    ({"box_scale": ["0.9", 1.0]}, "key 'box_scale' = '0.9' (str; expected float)"),
    ({"top_k": [1, 2.5]}, "key 'top_k' = 2.5 (float; expected int)"),
    ({"ens_weights": [[1, -1]]}, "key 'ens_weights' = [1, -1]; expected null or a list"),
    ({"ens_weights": [1, 2]}, "key 'ens_weights' = 1; expected null or a list"),
    ({"box_scale": {"low": -1.0, "high": 1.2}}, "key 'box_scale' = -1.0; expected a finite number in (0, 10]"),
    ({"score_thr": {"low": 0.5, "high": 2.0}}, "key 'score_thr' = 2.0; expected a finite number in [0, 1]"),
    ({"ens_skip": [0.0, 2.0]}, "key 'ens_skip' = 2.0; expected a finite number in [0, 1)"),
    ({"class_thr": [{"Cardiomegaly": 0.3}, {"Cardiomegally": 0.3}]}, "key 'class_thr' = {'Cardiomegally': 0.3}"),
    ({"cls_fusion": {"low": 0, "high": 1}}, "key 'cls_fusion'"),
    ({"box_scale": {"low": 1.2, "high": 0.8}}, "low 1.2 > high 0.8"),
    ({"box_scale": {"low": 0.8, "high": 1.2, "log": "yes"}}, "key 'box_scale': log 'yes'; expected true or false"),
    ([{"box_scale": 1}], "a list; expected a mapping of post-processing key"),
])
def test_a_bad_search_space_is_one_line_before_any_trial(tmp_path, capsys, monkeypatch, space, message):
    with pytest.raises(InputError) as e:
        T.check_space(space, "space.yaml", {"dataset": "vinbigdata"})
    assert message in str(e.value) and str(e.value).startswith("space.yaml"), str(e.value)
    # at the CLI: one line, exit 2, no optuna trial started and nothing written
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    p = _tables(tmp_path)
    pd.DataFrame({"image_id": ["a", "b"], "fold": [0, 1]}).to_csv(tmp_path / "folds.csv", index=False)
    monkeypatch.setattr(T, "search", lambda *a, **k: pytest.fail("a trial ran"))
    assert main(["tune", "--truth", str(p), "--pred", str(p), "--folds", str(tmp_path / "folds.csv"),
                 "--space", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "tuned.yaml")]) == 2
    assert message in one_error(capsys, "tune")
    assert not (tmp_path / "tuned.yaml").exists()


def test_malformed_space_yaml_is_one_line(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text("box_scale: {low: 0.8, high: [\n")
    p = _tables(tmp_path)
    pd.DataFrame({"image_id": ["a", "b"], "fold": [0, 1]}).to_csv(tmp_path / "folds.csv", index=False)
    assert main(["tune", "--truth", str(p), "--pred", str(p), "--folds", str(tmp_path / "folds.csv"),
                 "--space", str(tmp_path / "space.yaml"), "--out", str(tmp_path / "tuned.yaml")]) == 2
    assert "space.yaml: not valid YAML" in one_error(capsys, "tune")


def test_default_spaces_pass_the_rules():
    for metric in ("vinbigdata", "rsna", "coco"):
        T.check_space(T.default_space(metric, 2, True, True), "default", {"dataset": "vinbigdata"})


def _tune_data(d, n=24, k=3):
    """Truth with one box per abnormal image, predictions a bit off plus false positives."""
    r = np.random.default_rng(0)
    ids = [f"i{j:02d}" for j in range(n)]
    truth, pred = [], []
    for j, iid in enumerate(ids):
        if j % 3:
            b = np.r_[r.uniform(0, 500, 2), 0, 0]
            b[2:] = b[:2] + r.uniform(50, 200, 2)
            truth.append((iid, j % 2, *b, 1.0))
            pred.append((iid, j % 2, *(b + r.normal(0, 8, 4)), round(float(r.uniform(0.4, 1)), 2)))
        pred.append((iid, 1, 600.0, 600.0, 700.0, 690.0, round(float(r.uniform(0.05, 0.5)), 2)))
    cols = ["image_id", "class_id", "x_min", "y_min", "x_max", "y_max", "score"]
    pd.DataFrame(truth, columns=cols).to_csv(d / "truth.csv", index=False)
    pd.DataFrame(pred, columns=cols).to_csv(d / "oof.csv", index=False)
    pd.DataFrame({"image_id": ids, "height": 1000, "width": 1000}).to_csv(d / "meta.csv", index=False)
    pd.DataFrame({"image_id": ids, "fold": np.arange(n) % k}).to_csv(d / "folds.csv", index=False)
    return d


def test_tuned_yaml_passes_the_merge_and_tune_refuses_to_write_a_rejected_key(tmp_path):
    d = _tune_data(tmp_path)
    (d / "space.yaml").write_text(yaml.safe_dump({"box_scale": {"low": 0.5, "high": 1.5}, "score_thr": [0.0, 0.2],
                                                  "top_k": {"low": 0, "high": 3}}))
    assert main(["tune", "--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--pred", str(d / "oof.csv"),
                 "--folds", str(d / "folds.csv"), "--space", str(d / "space.yaml"), "--trials", "6",
                 "--no-nested", "--out", str(d / "tuned.yaml")]) == 0
    cfg = load_config(str(d / "tuned.yaml"))          # the merge accepts every key tune wrote
    params = json.loads((d / "tuned.json").read_text())["params"]
    assert cfg["box_scale"] == pytest.approx(params["box_scale"]) and 0.5 <= cfg["box_scale"] <= 1.5
    assert isinstance(cfg["top_k"], int)
    res = {"metric": "vinbigdata", "before": 0.1, "after": 0.2, "trials": 1, "params": {},
           "nested": {"per_fold": [], "mean": None}, "config": {**PP.defaults(), "box_scale": -0.5}}
    with pytest.raises(InputError, match="tune result box_scale: key 'box_scale' = -0.5"):
        T.write_outputs(res, d / "bad.yaml")
    assert not (d / "bad.yaml").exists()


def test_tune_never_scores_an_inverted_box():
    """box_scale > 0 (the only way the steps change a box) keeps every box x_max >= x_min."""
    a = PP.to_arrays(pd.DataFrame({"image_id": ["a"], "class_id": [0], "class_name": ["x"], "x_min": [10.0],
                                   "y_min": [10.0], "x_max": [30.0], "y_max": [40.0], "score": [0.5]}))
    for s in (1e-6, 0.5, 1.0, 10.0):
        _, box, _, _, _ = PP.apply_arrays(a, {**PP.defaults(), "box_scale": s})
        assert (box[:, 2] >= box[:, 0]).all() and (box[:, 3] >= box[:, 1]).all()
    np.testing.assert_allclose(box[0], [0.0, 0.0, 120.0, 175.0])  # centre (20, 25), half sides x10, clipped at 0
