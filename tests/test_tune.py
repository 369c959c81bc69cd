"""cxrdet tune: postprocess --config tuned.yaml + evaluate reproduce `after` exactly; the nested
estimate; grid vs TPE; seeded; the arrays scorer equals evaluate on folds."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

import detection.competition.postprocess as PP
import detection.competition.tune as T
from data_prep.core.boxes import make_boxes
from data_prep.datasets.vinbigdata import CLASSES
from detection.cli import main


def _data(tmp_path, n=40, k=4, seed=0, rsna=False):
    """Truth box table + meta (a third of the images normal), folds, noisy OOF predictions with
    false positives and ties, and a probabilities table (abnormal + per-class columns)."""
    r = np.random.default_rng(seed)
    ids = [f"img{i:03d}" for i in range(n)]
    names = ["Lung Opacity"] if rsna else list(CLASSES)
    t_rows, p_rows = [], []
    probs = {"image_id": ids, "abnormal": [], **{nm: [] for nm in names[:3]}}
    for i, iid in enumerate(ids):
        normal = i % 3 == 0
        probs["abnormal"].append(float(np.clip(r.normal(0.15 if normal else 0.8, 0.2), 0, 1)))
        for nm in names[:3]:
            probs[nm].append(float(r.uniform()))
        for _ in range(0 if normal else int(r.integers(1, 4))):
            c = int(r.integers(0, min(3, len(names))))
            x0, y0 = r.uniform(0, 600, 2)
            b = np.array([x0, y0, x0 + r.uniform(40, 300), y0 + r.uniform(40, 300)])
            t_rows.append((iid, c, b))
            if r.uniform() < 0.8:  # found, a bit off and a bit large
                p_rows.append((iid, c, b * 1.0 + r.normal(0, 15, 4) + [-10, -10, 10, 10], round(r.uniform(0.3, 1), 2)))
        for _ in range(int(r.integers(0, 4))):  # false positives, scores on a coarse grid (ties)
            x0, y0 = r.uniform(0, 700, 2)
            p_rows.append((iid, int(r.integers(0, min(3, len(names)))), np.array([x0, y0, x0 + 80, y0 + 90]),
                           round(r.uniform(0.05, 0.6), 1)))
    tb = make_boxes([x[0] for x in t_rows], [x[1] for x in t_rows], [names[x[1]] for x in t_rows],
                    np.array([x[2] for x in t_rows]))
    pb = make_boxes([x[0] for x in p_rows], [x[1] for x in p_rows], [names[x[1]] for x in p_rows],
                    np.clip(np.array([x[2] for x in p_rows]), 0, 1000), score=[x[3] for x in p_rows])
    tb.to_csv(tmp_path / "truth.csv", index=False)
    pb.to_csv(tmp_path / "oof.csv", index=False)
    pd.DataFrame({"image_id": ids, "height": 1000, "width": 1000}).to_csv(tmp_path / "meta.csv", index=False)
    pd.DataFrame({"image_id": ids, "fold": np.arange(n) % k}).to_csv(tmp_path / "folds.csv", index=False)
    pd.DataFrame(probs).to_csv(tmp_path / "probs.csv", index=False)
    return tmp_path


def _evaluate(tmp_path, pred, extra=()):
    out = tmp_path / f"eval_{pred.stem}.json"
    assert main(["evaluate", "--truth", str(tmp_path / "truth.csv"), "--meta", str(tmp_path / "meta.csv"),
                 "--pred", str(pred), "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())["mAP"]


@pytest.mark.parametrize("metric", ["vinbigdata", "rsna", "coco"])
def test_postprocess_with_tuned_yaml_then_evaluate_reproduces_after(tmp_path, metric):
    d = _data(tmp_path, rsna=metric == "rsna")
    space = {"box_scale": {"low": 0.8, "high": 1.1}, "cls_low": {"low": 0.0, "high": 0.5},
             "cls_high": {"low": 0.5, "high": 1.0}, "score_thr": {"low": 0.0, "high": 0.5}, "top_k": [0, 2, 3],
             "alpha": {"low": 0.0, "high": 2.0}}
    (d / "space.yaml").write_text(yaml.safe_dump(space))
    common = ["--truth", str(d / "truth.csv"), "--meta", str(d / "meta.csv"), "--folds", str(d / "folds.csv")]
    rc = main(["tune", *common, "--pred", str(d / "oof.csv"), "--cls-probs", str(d / "probs.csv"),
               "--metric", metric, "--space", str(d / "space.yaml"), "--trials", "12", "--seed", "3",
               "--out", str(d / "tuned.yaml")])
    assert rc == 0
    res = json.loads((d / "tuned.json").read_text())
    assert list(res) == ["metric", "before", "after", "params", "trials", "nested"]
    assert list(res["nested"]) == ["per_fold", "mean"] and len(res["nested"]["per_fold"]) == 4
    assert res["nested"]["mean"] == pytest.approx(np.mean(res["nested"]["per_fold"]))
    assert res["trials"] == 12 and res["metric"] == metric and res["after"] >= res["before"] - 1e-12
    tuned = yaml.safe_load((d / "tuned.yaml").read_text())
    assert list(tuned) == list(PP.POST_KEYS)
    assert all(tuned[k] == pytest.approx(v) for k, v in res["params"].items())
    # before = evaluate on the predictions as given
    assert res["before"] == pytest.approx(_evaluate(d, d / "oof.csv", ["--metric", metric]), abs=1e-12)
    # after = postprocess --config tuned.yaml, then evaluate
    assert main(["postprocess", "--pred", str(d / "oof.csv"), "--cls-probs", str(d / "probs.csv"), "--meta",
                 str(d / "meta.csv"), "--config", str(d / "tuned.yaml"), "--out", str(d / "final.csv"),
                 *(["dataset=rsna"] if metric == "rsna" else [])]) == 0  # RSNA has no "No finding" rows
    assert abs(_evaluate(d, d / "final.csv", ["--metric", metric]) - res["after"]) <= 1e-9


def test_arrays_scorer_equals_evaluate_per_fold_and_search_is_seeded(tmp_path):
    d = _data(tmp_path, seed=1)
    prob = T.load_problem(d / "truth.csv", [d / "oof.csv"], d / "folds.csv", "vinbigdata", d / "probs.csv",
                          d / "meta.csv", PP.defaults())
    cfg = dict(prob.base, box_scale=0.9, cls_low=0.2, cls_high=0.7)
    out = PP.postprocess([pd.read_csv(d / "oof.csv", dtype={"image_id": str, "rater": str})],
                         PP.read_probs(d / "probs.csv"), cfg, (14, "No finding"), PP.image_sizes(d / "meta.csv"))
    out.to_csv(d / "pp.csv", index=False)
    for k in range(4):
        sub = prob.scorer.subset(prob.folds == k)
        got = prob.score(cfg, sub)
        exp = _evaluate(d, d / "pp.csv", ["--folds", str(d / "folds.csv"), "--fold", str(k)])
        assert abs(got - exp) <= 1e-12
    space = {"box_scale": {"low": 0.8, "high": 1.1}, "cls_low": {"low": 0.0, "high": 0.3}}
    a = T.search(prob, space, trials=8, seed=5)
    b = T.search(prob, space, trials=8, seed=5)
    assert a == b and a[2] == 8


def test_small_discrete_space_is_a_full_grid(tmp_path):
    d = _data(tmp_path, seed=2)
    prob = T.load_problem(d / "truth.csv", [d / "oof.csv"], d / "folds.csv", "vinbigdata", None, d / "meta.csv")
    space = {"box_scale": [0.9, 1.0, 1.1], "top_k_per_class": [0, 1]}
    params, best, n = T.search(prob, space, trials=50, seed=0)
    assert n == 6
    scores = {(s, k): prob.score(T._cfg_with(prob.base, {"box_scale": s, "top_k_per_class": k}))
              for s in (0.9, 1.0, 1.1) for k in (0, 1)}
    assert best == max(scores.values()) and scores[(params["box_scale"], params["top_k_per_class"])] == best


def test_several_tables_are_tuned_through_the_wbf_cache(tmp_path):
    d = _data(tmp_path, seed=3)
    oof = pd.read_csv(d / "oof.csv")
    shifted = oof.assign(x_min=oof.x_min + 5, x_max=oof.x_max + 5, score=(oof.score * 0.9).round(3))
    shifted.to_csv(d / "oof2.csv", index=False)
    prob = T.load_problem(d / "truth.csv", [d / "oof.csv", d / "oof2.csv"], d / "folds.csv", "vinbigdata", None,
                          d / "meta.csv")
    space = T.default_space("vinbigdata", 2, False, False)
    assert set(space) == {"box_scale", "ens_iou", "ens_skip", "ens_conf_type", "ens_weights"}
    assert space["ens_weights"] == [None, [2.0, 1.0], [1.0, 2.0]]
    space = {"ens_iou": [0.3, 0.6], "ens_conf_type": ["avg", "max"], "box_scale": [0.9, 1.0]}
    res = T.tune(prob, space, trials=10, seed=0, nested=False)
    assert res["trials"] == 8  # the full grid
    # WBF once per (iou, conf_type), + once at the config's keys (before)
    assert len(prob._cache) == 5 and res["nested"] == {"per_fold": [], "mean": None}
    T.write_outputs(res, d / "tuned.yaml")
    assert main(["postprocess", "--pred", str(d / "oof.csv"), str(d / "oof2.csv"), "--meta", str(d / "meta.csv"),
                 "--config", str(d / "tuned.yaml"), "--out", str(d / "final.csv")]) == 0
    assert abs(_evaluate(d, d / "final.csv") - res["after"]) <= 1e-9


def test_bad_space_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="'box_scal' is not a post-processing key"):
        T.check_space({"box_scal": [1.0]})
    with pytest.raises(ValueError, match="expected \\[choices\\] or"):
        T.check_space({"box_scale": 0.9})


def test_single_fold_has_no_nested_estimate(tmp_path):
    d = _data(tmp_path, n=12, seed=4)
    pd.DataFrame({"image_id": [f"img{i:03d}" for i in range(12)], "fold": 0}).to_csv(d / "folds.csv", index=False)
    prob = T.load_problem(d / "truth.csv", [d / "oof.csv"], d / "folds.csv", "vinbigdata", None, d / "meta.csv")
    res = T.tune(prob, {"box_scale": [0.9, 1.0]}, trials=5, seed=0)
    assert res["trials"] == 2 and res["nested"] == {"per_fold": [], "mean": None}
    assert "nested -" in T.summary(res)


def test_several_tables_before_is_their_wbf_and_blocks_keep_the_ensemble_keys(tmp_path):
    """``before`` of several tables = evaluate of their WBF at the config's keys (the table
    ensemble() writes, in its row order), taken from the trials' cache; with ``ens_every`` the
    ensemble keys change only every few trials (one WBF per block), the other keys every trial."""
    d = _data(tmp_path, seed=5)
    oof = pd.read_csv(d / "oof.csv")
    oof.assign(x_min=oof.x_min + 4, score=(oof.score * 0.8).round(2)).iloc[::-1].to_csv(d / "oof2.csv", index=False)
    prob = T.load_problem(d / "truth.csv", [d / "oof.csv", d / "oof2.csv"], d / "folds.csv", "vinbigdata", None,
                          d / "meta.csv", PP.defaults())
    fused = PP.ensemble([pd.read_csv(d / f, dtype={"image_id": str}) for f in ("oof.csv", "oof2.csv")],
                        PP.image_sizes(d / "meta.csv"), 0.55, 0.0001, "avg", None)
    fused.to_csv(d / "fused.csv", index=False)
    res = T.tune(prob, {"box_scale": [1.0]}, trials=1, seed=0, nested=False)
    assert res["before"] == pytest.approx(_evaluate(d, d / "fused.csv"), abs=1e-12)
    space = {"ens_iou": [0.3, 0.4, 0.5, 0.6], "ens_conf_type": ["avg", "max"], "box_scale": {"low": 0.8, "high": 1.2}}
    seen = []
    score = prob.score
    prob.score = lambda cfg, scorer=None: seen.append((cfg["ens_iou"], cfg["ens_conf_type"], cfg["box_scale"])) or \
        score(cfg, scorer)
    params, best, n = T.search(prob, space, trials=12, seed=1, ens_every=4)
    assert n == 12 and len(seen) == 12
    for b in range(3):   # one ensemble key set per block of 4 trials, box_scale sampled every trial
        assert len({s[:2] for s in seen[4 * b:4 * b + 4]}) == 1
    assert len({s[2] for s in seen}) == 12 and (params["ens_iou"], params["ens_conf_type"]) in {s[:2] for s in seen}
    assert T.search(prob, space, trials=12, seed=1, ens_every=4) == (params, best, n)   # seeded
