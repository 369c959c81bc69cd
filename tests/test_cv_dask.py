"""``cxrdet cv --scheduler local|tcp://host:port``: each (fold, model) training is one Dask task
(issue 26 item 4); workers that declare a ``GPU`` resource take one task per GPU; the tables equal
the sequential run's."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

TV_FAST = "fasterrcnn_mobilenet_v3_large_320_fpn"
TV_LIMITS = {"rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 50, "rpn_pre_nms_top_n_train": 100,
             "rpn_post_nms_top_n_train": 50, "box_batch_size_per_image": 32}
_SPANS: list[tuple[float, float]] = []
_LOCK = threading.Lock()


def _hold(i: int, seconds: float = 0.4) -> int:
    """A task that records when it ran (in-process cluster: one clock)."""
    t0 = time.perf_counter()
    time.sleep(seconds)
    with _LOCK:
        _SPANS.append((t0, time.perf_counter()))
    return i


def _overlap(spans) -> bool:
    s = sorted(spans)
    return any(b[0] < a[1] for a, b in zip(s, s[1:]))


@pytest.mark.parametrize("gpu", [True, False])
def test_a_worker_with_one_gpu_takes_one_task_at_a_time(gpu):
    """One worker with 2 threads: declaring GPU=1 makes the tasks hold it one after the other;
    without the resource both threads run at once."""
    from distributed import Client, LocalCluster

    from data_prep.core.cluster import run_each, task_resources

    kw = {"resources": {"GPU": 1}} if gpu else {}
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None, **kw) as lc, \
            Client(lc) as client:
        res = task_resources(client)
        assert res == ({"GPU": 1} if gpu else None)
        _SPANS.clear()
        got = sorted(run_each(client, _hold, [(0,), (1,), (2,)], res))
    assert got == [(0, 0), (1, 1), (2, 2)] and len(_SPANS) == 3
    assert _overlap(_SPANS) is (not gpu)


def test_run_each_reraises_a_failed_task():
    from distributed import Client, LocalCluster

    from data_prep.core.cluster import run_each

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as lc, \
            Client(lc) as client:
        with pytest.raises(ZeroDivisionError):
            list(run_each(client, divmod, [(1, 1), (1, 0)]))


def test_cv_cli_takes_scheduler_and_workers():
    import argparse

    from detection.competition.cv import add_arguments_cv

    p = argparse.ArgumentParser()
    add_arguments_cv(p)
    a = p.parse_args(["--config", "vinbigdata", "--prep", "x", "--scheduler", "local", "--workers", "3"])
    assert a.scheduler == "local" and a.workers == 3


@pytest.mark.slow   # 2 folds x 2 models trained twice, and a LocalCluster whose workers import torch
def test_cv_on_a_local_cluster_equals_the_sequential_run(tmp_path, make_prep, tiny_cfg):
    """models: [yolo11n.yaml, tv:fasterrcnn_mobilenet_v3_large_320_fpn] x 2 folds = 4 tasks on 2 single-threaded worker
    processes on 127.0.0.1: every per-model and ensemble OOF table, every score and the run folders
    equal the sequential run's (same seeds; CPU training is deterministic)."""
    from detection.competition.cv import cross_validate

    prep = make_prep(tmp_path / "prep", n=8, png=64)
    models = [{"name": "yolo", "model": "yolo11n.yaml"}, {"name": "frcnn", "model": f"tv:{TV_FAST}", "tv_args": TV_LIMITS}]
    kw = dict(imgsz=64, batch=4, models=models, conf=0.001)
    a = cross_validate(tiny_cfg(tmp_path / "seq", **kw), prep, "0,1", out=tmp_path / "cv_seq")
    b = cross_validate(tiny_cfg(tmp_path / "dask", scheduler="local", workers=2, **kw), prep, "0,1",
                       out=tmp_path / "cv_dask")
    for rel in ["oof_raw.csv", "oof.csv", "models/yolo/oof_raw.csv", "models/frcnn/oof_raw.csv"]:
        x = pd.read_csv(tmp_path / "cv_seq" / rel, dtype={"image_id": str}, keep_default_na=False)
        y = pd.read_csv(tmp_path / "cv_dask" / rel, dtype={"image_id": str}, keep_default_na=False)
        assert len(x) > 0 and list(x.columns) == list(y.columns) and len(x) == len(y), rel
        assert x["image_id"].tolist() == y["image_id"].tolist() and x["class_id"].tolist() == y["class_id"].tolist()
        num = ["x_min", "y_min", "x_max", "y_max", "score"]
        np.testing.assert_allclose(y[num].to_numpy(float), x[num].to_numpy(float), atol=1e-4, err_msg=rel)
    assert b["oof"]["score"] == pytest.approx(a["oof"]["score"], abs=1e-9)
    assert [m["score"] for m in b["models"]] == pytest.approx([m["score"] for m in a["models"]], abs=1e-9)
    cvj = json.loads((tmp_path / "cv_dask" / "cv.json").read_text())
    runs = sorted(p.name for p in (tmp_path / "dask" / "runs").iterdir())
    assert runs == ["frcnn_fold0", "frcnn_fold1", "yolo_fold0", "yolo_fold1"]
    assert [f["fold"] for f in cvj["folds"]] == [0, 1]
