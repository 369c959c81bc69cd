"""detection.models.runtime: ultralytics offline by construction. Real train + predict with sockets blocked."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest


REPO = Path(__file__).resolve().parents[1]
PROBE = ("import json, os, detection.models.runtime as r, ultralytics.utils as u, ultralytics.utils.checks as c;"
         "print(json.dumps({'dir': str(r.USER_DIR), 'env': os.environ['YOLO_CONFIG_DIR'], 'user': str(u.USER_CONFIG_DIR),"
         "'online': u.ONLINE, 'autoinstall': u.AUTOINSTALL, 'sync': u.SETTINGS['sync'],"
         "'fonts': sorted(p.name for p in u.USER_CONFIG_DIR.glob('Arial*')), 'font': str(c.check_font('Arial.ttf'))}))")


def _probe(env_extra: dict, drop=("YOLO_CONFIG_DIR", "CXRDET_CACHE", "YOLO_OFFLINE", "YOLO_AUTOINSTALL")) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_runtime_environment_in_a_fresh_process(tmp_path):
    """CXRDET_CACHE chooses the folder; a user's YOLO_CONFIG_DIR wins; fonts, offline, no autoinstall, no sync."""
    got = _probe({"CXRDET_CACHE": str(tmp_path / "cache"), "YOLO_CONFIG_DIR": str(tmp_path / "user")}, drop=(
        "CXRDET_CACHE", "YOLO_OFFLINE", "YOLO_AUTOINSTALL"))
    user = tmp_path / "user" / "Ultralytics"
    assert got["env"] == str(tmp_path / "user") and got["dir"] == got["user"] == str(user)
    assert got["fonts"] == ["Arial.Unicode.ttf", "Arial.ttf"] and got["font"] == str(user / "Arial.ttf")
    assert got["online"] is False and got["autoinstall"] is False and got["sync"] is False
    assert json.loads((user / "settings.json").read_text())["sync"] is False
    assert (user / "Arial.ttf").stat().st_size > 100_000  # a real TrueType file, not a placeholder
    assert not (tmp_path / "cache").exists()


def test_default_config_dir_follows_cxrdet_cache(tmp_path, monkeypatch):
    import detection.models.runtime as r

    monkeypatch.setenv("CXRDET_CACHE", str(tmp_path))
    assert r.default_config_dir() == tmp_path / "ultralytics"
    monkeypatch.delenv("CXRDET_CACHE")
    assert r.default_config_dir() == REPO / ".cache" / "ultralytics"
    r.install_fonts(tmp_path / "f")
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["Arial.Unicode.ttf", "Arial.ttf"]


@pytest.fixture
def no_network(monkeypatch):
    """Every connect / DNS look-up is recorded and refused."""
    attempts: list[str] = []

    def refuse(name):
        def f(*a, **k):
            attempts.append(f"{name}{a[1:] if name == 'connect' else a}")
            raise OSError(f"network blocked by test: {name}")
        return f

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    return attempts


def test_the_guard_sees_ultralytics_font_download(tmp_path, monkeypatch, no_network):
    """Without our font, ultralytics' check_font goes to the network: the guard records it."""
    import detection.models.runtime  # noqa: F401
    import ultralytics.utils.checks as checks

    from matplotlib import font_manager

    monkeypatch.setattr(checks, "USER_CONFIG_DIR", tmp_path)
    # check_font also looks in matplotlib's font list, where ultralytics registers our Arial.ttf once
    # anything in this process has plotted: hide those entries so the lookup falls through to a download.
    monkeypatch.setattr(font_manager.fontManager, "ttflist",
                        [f for f in font_manager.fontManager.ttflist if "Arial" not in f.fname])
    # check_font is lru-cached (under a ThreadingLocked wrapper): a training earlier in this process
    # has cached its answer
    fn = checks.check_font
    while not hasattr(fn, "cache_clear") and hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    cache_clear = getattr(fn, "cache_clear", lambda: None)
    cache_clear()
    try:
        checks.check_font("Arial.ttf")
    finally:
        cache_clear()  # do not leave the tmp_path answer behind for later tests
    assert no_network, "check_font made no network attempt: this guard would not catch one"


def test_train_and_predict_with_network_blocked(make_prep, tiny_cfg, tmp_path, no_network):
    """A real 1-epoch run (check_det_dataset calls check_font) and a TTA prediction: zero attempts."""
    import detection.models.runtime  # noqa: F401
    from data_prep.core.boxes import validate_boxes
    from detection.engine.predict import predict
    from detection.engine.train import train_detector

    prep = make_prep(tmp_path / "prep", n=8)
    cfg = tiny_cfg(tmp_path, name="offline")
    best = train_detector(cfg, prep, 1)
    assert best.is_file() and (best.parents[1] / "results.csv").is_file()
    out = predict(best, prep / "images", imgsz=128, conf=0.001, max_det=5, tta=True)
    images = pd.read_csv(prep / "images.csv", dtype={"image_id": str})
    validate_boxes(out, images)  # inside the 320 x 240 originals
    assert no_network == []
