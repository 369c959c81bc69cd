"""Issue 30 (third sweep), item 5: runs do not share state they did not ask to share.

* a run folder (``<project>/<name>``) is locked like an ``--out`` folder: a second train /
  train-cls / cv on the same run name, while another process holds it, stops at once (exit 2) with
  one line naming the holder; it does not wait;
* tune locks its ``--out`` (tuned.yaml + tuned.json come from one run);
* a cv run does not reuse or train over the run folders of another cv run (another --out) with
  different settings: one line naming the folder, the other run and the keys that differ.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from data_prep.core.errors import InputError
from detection.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def holder():
    """``hold(path, kind)``: another process holds ``folder_lock(path)`` (kind folder) or
    ``file_lock(path)`` (kind file) until the test ends; returns its pid."""
    procs = []

    def hold(path: Path, kind: str = "folder") -> int:
        fn = "folder_lock" if kind == "folder" else "file_lock"
        code = textwrap.dedent(f"""
            import sys, time
            from data_prep.core.atomic import {fn}
            with {fn}({str(path)!r}, "cxrdet other-run"):
                print("held", flush=True)
                time.sleep(120)
        """)
        p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p.pid

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def _held(capsys, rc: int, pid: int, where: Path) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    line = err.splitlines()[-1]
    assert str(where) in line and f"pid {pid}" in line and "cxrdet other-run" in line, line
    return line


def test_a_second_train_on_a_held_run_folder_stops_naming_the_holder(make_prep, tmp_path, capsys, holder):
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    run = tmp_path / "runs" / "t"
    pid = holder(run)
    rc = main(["train", "--config", "phantom", "--prep", str(prep), "device=cpu", "epochs=1", "imgsz=64", "workers=0",
               f"project={tmp_path / 'runs'}", "name=t"])
    _held(capsys, rc, pid, run)
    assert not (run / "weights").exists()


def test_train_cls_binary_and_multilabel_lock_their_run_folder(make_prep, tmp_path, capsys, holder):
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    run = tmp_path / "runs" / "c"
    pid = holder(run)
    for task in ("binary", "multilabel"):
        rc = main(["train-cls", "--config", "phantom", "--prep", str(prep), f"cls_task={task}", "device=cpu", "cls_epochs=1",
                   "cls_imgsz=32", "workers=0", f"project={tmp_path / 'runs'}", "name=c"])
        _held(capsys, rc, pid, run)
    assert not (run / "cls_data").exists() and not (run / "weights").exists()


def test_a_cv_on_a_held_run_folder_stops_naming_the_holder(make_prep, tmp_path, capsys, holder):
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    run = tmp_path / "runs" / "r_fold0"
    pid = holder(run)
    rc = main(["cv", "--config", "phantom", "--prep", str(prep), "--fold", "0", "folds=2", "device=cpu", "epochs=1", "imgsz=64",
               "workers=0", f"project={tmp_path / 'runs'}", "name=r"])
    _held(capsys, rc, pid, run)


def test_a_second_tune_on_the_same_out_stops_naming_the_holder(tmp_path, capsys, holder):
    out = tmp_path / "tuned.yaml"
    pid = holder(out, "file")
    rc = main(["tune", "--truth", str(tmp_path / "t.csv"), "--pred", str(tmp_path / "p.csv"),
               "--folds", str(tmp_path / "f.csv"), "--out", str(out)])
    _held(capsys, rc, pid, out)
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_the_run_lock_is_released_after_a_run(make_prep, tmp_path, capsys):
    """A finished (here: failed) run leaves no lock behind: the next run is not refused for it."""
    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    argv = ["train", "--config", "phantom", "--prep", str(prep), "model=missing.pt", f"project={tmp_path / 'runs'}", "name=t"]
    assert main(argv) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "t" / ".cxrdet.lock").exists()


def test_cv_does_not_train_over_another_cv_runs_folder_with_other_settings(make_prep, tiny_cfg, tmp_path, monkeypatch):
    import detection.engine.train as train_mod
    from detection.competition.cv import OWNER, train_model

    prep = make_prep(tmp_path / "prep", n=6, png=64, k=2)
    trained = []

    def fake_train(cfg, prep_dir, fold=None, callbacks=None):   # what training leaves: best.pt in the run folder
        best = train_mod.run_dir({**cfg, "fold": fold}) / "weights" / "best.pt"
        best.parent.mkdir(parents=True, exist_ok=True)
        best.write_bytes(f"epochs={cfg['epochs']}".encode())
        trained.append(cfg["epochs"])
        return best

    monkeypatch.setattr(train_mod, "train_detector", fake_train)
    a, b = (tmp_path / n / "parts" for n in ("cvA", "cvB"))
    for d in (a, b):
        d.mkdir(parents=True)
    cfg1 = {**tiny_cfg(tmp_path, name="r"), "fold": 0}
    cfg2 = {**cfg1, "epochs": 2}
    run = tmp_path / "runs" / "r"
    best, how, _ = train_model("det", cfg1, prep, a / "fold0.det.json")
    assert how == "trained" and (run / OWNER).is_file()
    with pytest.raises(InputError) as e:      # cv B, other settings, same run name
        train_model("det", cfg2, prep, b / "fold0.det.json")
    msg = str(e.value)
    assert str(run) in msg and str(a / "fold0.det.json") in msg and "epochs" in msg and "name=" in msg
    assert best.read_bytes() == b"epochs=1" and trained == [1]
    # cv A itself, settings changed: its own folder, trained again; cv B with A's settings may share it
    assert train_model("det", cfg2, prep, a / "fold0.det.json")[1] == "trained"
    assert train_model("det", cfg2, prep, b / "fold0.det.json")[1] == "trained"
    assert trained == [1, 2, 2]
    # the other run's record is gone (its --out deleted): the folder may be taken over
    (b / "fold0.det.json").unlink()
    assert train_model("det", cfg1, prep, a / "fold0.det.json")[1] == "trained"
