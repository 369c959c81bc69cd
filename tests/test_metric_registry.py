"""Issue 28 item 3: one metric registry (name -> scorer and summary) used by evaluate, tune, cv,
explore and report-eval; no stage picks the metric by comparing its name."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ref_metrics import boxes, random_case

from data_prep.core import keys
from detection.evaluation import image_metrics as IM
from detection.evaluation import metrics as M
from detection.evaluation import scoring
from detection.evaluation.evaluate_out import format_table
from detection.pictures.report_eval import score_names

REPO = Path(__file__).resolve().parents[1]


def test_registry_names_match_the_config_rule():
    assert scoring.METRICS is M.METRICS
    assert tuple(M.METRICS) == keys.METRICS   # the config key `metric` accepts exactly the registered names
    with pytest.raises(ValueError, match=r"metric 'x'; expected one of \['vinbigdata', 'rsna', 'coco'\]"):
        M.metric_named("x")


def test_registry_summaries():
    v, r, c = M.METRICS["vinbigdata"], M.METRICS["rsna"], M.METRICS["coco"]
    assert (v.head(0.4), c.head(0.5), r.head(0.4)) == ("mAP@0.4", "COCO AP@0.5", "RSNA score")
    assert v.describe(0.4) == "mAP@0.4 (VOC all-point)" and c.describe(0.5) == "AP@0.5 (COCO 101-point)"
    assert r.thresholds(0.4) == [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75] and v.thresholds(0.3) == [0.3]
    assert score_names("rsna") == ("RSNA score", "RSNA score") and score_names("coco") == ("AP", "mAP")
    assert (r.per_image, r.scores_normal, v.per_image, v.scores_normal) == (True, False, False, True)


@pytest.mark.parametrize("name", ["vinbigdata", "rsna", "coco"])
def test_each_scorer_is_what_evaluate_returns(name):
    truth, pred, ids = random_case(np.random.default_rng(5), n_img=12, n_cls=3)
    res = scoring.evaluate(truth, pred, ids, name, 0.5, normal_class=None)
    enc = M.encode(truth, pred, ids)
    assert res["metric"] == name
    assert res["mAP"] == M.METRICS[name].scorer(enc, 0.5)["mAP"] == M.score_encoded(enc, name, 0.5)
    want = {"vinbigdata": M.vinbigdata_map(truth, pred, ids, 0.5, normal_class=None)["mAP"],
            "coco": M.coco_map(truth, pred, ids, 0.5)["mAP"], "rsna": M.rsna_score(truth, pred, ids)["mAP"]}[name]
    assert res["mAP"] == want
    assert format_table(res).splitlines()[-1].startswith(M.METRICS[name].describe(0.5) + " over 12 images")


def test_pred_matches_by_each_rule():
    truth = boxes([("A", 0, 0, 0, 10, 10, 1.0)])
    pred = boxes([("A", 0, 0, 0, 10, 9, 0.9), ("A", 0, 0, 0, 10, 10, 0.8)])
    tp, match = IM.pred_matches(truth, pred, ["A"], "vinbigdata", 0.5)
    assert tp.tolist() == [1, 0] and match.tolist() == [0, -1]     # IoU 0.9: the first (higher score) wins
    tp, match = IM.pred_matches(truth, pred, ["A"], "rsna", 0.4)
    assert tp.tolist() == [255, 0] and match.tolist() == [0, -1]   # IoU 0.9 >= every threshold: 8 bits
    tp, _ = IM.pred_matches(truth, boxes([("A", 0, 0, 0, 10, 6, 0.9)]), ["A"], "rsna", 0.4)
    assert tp.tolist() == [0b1111]                                 # IoU 0.6 > 0.40 ... 0.55, not 0.60 (strict)


def test_no_stage_compares_the_metric_name():
    """`metric == "rsna"` and the like: the registry's fields say what differs."""
    bad = []
    pat = re.compile(r"""\bmetric\b[^\n]*(==|!=)\s*["'](vinbigdata|rsna|coco)["']|["'](vinbigdata|rsna|coco)["']\s*(==|!=)""")
    for top in ("detection", "bench"):
        for p in sorted((REPO / top).rglob("*.py")):
            for n, line in enumerate(p.read_text().splitlines(), 1):
                if pat.search(line):
                    bad.append(f"{p.relative_to(REPO)}:{n}: {line.strip()}")
    assert not bad, "\n".join(bad)
