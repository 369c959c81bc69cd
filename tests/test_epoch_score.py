"""Training for the competition's metric (issue 25 item 4): device auto, the per-epoch score of the
validation fold in <run>/competition.csv, best.pt chosen by it, the closing line."""
from __future__ import annotations

import logging

import pandas as pd
import pytest


# ----------------------------------------------------------------------------- device
def test_device_auto_is_the_first_gpu_else_the_cpu_and_logged(monkeypatch, caplog):
    import torch

    from detection.models import devices

    monkeypatch.setattr(devices, "_said", set())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, "detection.models.devices"):
        assert devices.resolve_device("auto") == "cpu"
        assert devices.resolve_device(None) == "cpu"
    assert "device auto: cpu (torch sees no GPU)" in caplog.text
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with caplog.at_level(logging.INFO, "detection.models.devices"):
        assert devices.resolve_device("auto") == "0"
    assert "GPU 0 (the first of 2 torch sees)" in caplog.text
    assert devices.resolve_device("0,1") == "0,1" and devices.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match=r"device=2: torch sees 2 GPU\(s\) \(0\.\.1\) here"):
        devices.resolve_device("2")
    assert devices.resolve_device("cpu") == "cpu"


def test_default_config_device_is_auto():
    from data_prep.core.config import load_config

    assert load_config()["device"] == "auto" and load_config()["select_by"] == "competition"


def test_device_0_without_a_gpu_is_one_line_exit_2(make_prep, tmp_path, monkeypatch, capsys):
    import torch

    from detection.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    prep = make_prep(tmp_path / "prep", n=4)
    rc = main(["train", "--config", "vinbigdata", "--prep", str(prep), "device=0", "epochs=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0] == ("cxrdet train: error: device=0: torch sees no CUDA GPU here; expected device=cpu or "
                      "device=auto")
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- the score
def test_fold_score_is_cxrdet_evaluate_on_the_fold(make_prep, tiny_cfg, tmp_path, capsys):
    """The truth of fold 0 as predictions, half of its boxes moved away: the score FoldScore gives
    equals `cxrdet evaluate --folds --fold 0` on the same table written to disk."""
    from data_prep.core.tables import read_boxes
    from detection.cli import main
    from detection.engine.epoch_score import FoldScore

    prep = make_prep(tmp_path / "prep", n=12)
    sc = FoldScore(tiny_cfg(tmp_path), prep, 0, tmp_path / "run")
    assert sc.ids == [f"img{i:03d}" for i in range(0, 12, 2)] and len(sc.rows) == 6
    truth = read_boxes(prep / "fused_boxes.csv")
    raw = truth[truth["image_id"].isin(sc.ids)].reset_index(drop=True).assign(score=[0.9, 0.8, 0.7, 0.6])
    raw.loc[[1, 3], ["x_min", "x_max"]] += 100.0
    s = sc.score(raw)
    raw.to_csv(tmp_path / "raw.csv", index=False)
    assert main(["evaluate", "--truth", str(prep / "fused_boxes.csv"), "--meta", str(prep / "images.csv"),
                 "--pred", str(tmp_path / "raw.csv"), "--folds", str(prep / "folds.csv"), "--fold", "0",
                 "--json", str(tmp_path / "e.json")]) == 0
    import json

    assert s == pytest.approx(json.loads((tmp_path / "e.json").read_text())["mAP"], abs=1e-12)
    assert 0 < s < 1
    sc.record(1, s)
    sc.record(2, 0.25)
    df = pd.read_csv(tmp_path / "run" / "competition.csv")
    assert df.columns.tolist() == ["epoch", "metric", "score"] and df["epoch"].tolist() == [1, 2]
    assert df["metric"].tolist() == ["vinbigdata"] * 2
    sc.start(2)   # a run resumed at epoch 2 keeps epoch 1 only
    assert [r["epoch"] for r in sc.scores] == [1]


# ----------------------------------------------------------------------------- best.pt follows it
@pytest.mark.slow   # 3 tiny epochs twice (~40 s)
@pytest.mark.parametrize("select_by", ["competition", "fitness"])
def test_best_pt_is_the_epoch_with_the_highest_competition_score(make_prep, tiny_cfg, tmp_path, monkeypatch,
                                                                 select_by):
    """Scores 0.2, 0.5, 0.3 for epochs 1-3 (the model's own predictions are scored, then replaced by
    these): best.pt holds epoch 2 (the fitness saved with it is epoch 2's score; last.pt's is epoch
    3's); select_by fitness keeps ultralytics' choice, whatever the scores."""
    import torch

    from detection.engine import epoch_score as E
    from detection.engine.train import train_detector

    seen = []
    real = E.FoldScore.score

    def fake(self, raw):
        seen.append(real(self, raw))   # the in-memory model's raw table really is scored
        return [0.2, 0.5, 0.3][len(seen) - 1]

    monkeypatch.setattr(E.FoldScore, "score", fake)
    prep = make_prep(tmp_path / "prep", n=8)
    best = train_detector(tiny_cfg(tmp_path, name="s", epochs=3, select_by=select_by), prep, 0)
    run = best.parents[1]
    df = pd.read_csv(run / "competition.csv")
    assert df["epoch"].tolist() == [1, 2, 3] and df["score"].tolist() == [0.2, 0.5, 0.3]
    assert len(seen) == 3 and all(0 <= s <= 1 for s in seen)
    ck = torch.load(best, map_location="cpu", weights_only=False)
    last = torch.load(run / "weights" / "last.pt", map_location="cpu", weights_only=False)
    line = E.closing_line(best, select_by)
    if select_by == "competition":
        assert ck["train_metrics"]["fitness"] == 0.5 and last["train_metrics"]["fitness"] == 0.3
        assert line.endswith(f"epoch 2 of 3, vinbigdata 0.5000 on the validation fold (the best epoch; every "
                             f"epoch in {run / 'competition.csv'})") and line.startswith(str(best))
    else:
        assert ck["train_metrics"]["fitness"] not in (0.2, 0.5, 0.3)
        assert "select_by: fitness" in line and "epoch 2 of 3: 0.5000" in line
