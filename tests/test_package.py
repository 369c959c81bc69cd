"""Issue 28 item 5: cxrdet installs anywhere.

The wheel (what ``pip install .`` installs) carries the configs and the shipped weights; run from a
folder outside the checkout, with the wheel ahead of the source tree on the path, it converts,
prepares and predicts with a bare weights name, and writes nothing into the installed package.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from data_prep.core import resources as R

REPO = Path(__file__).resolve().parents[1]


def test_version_flag(capsys):
    from detection import __version__
    from detection.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cxrdet {__version__}"
    assert main(["-V"]) == 0


def test_pyproject_lists_every_package_of_the_tree():
    """The package list is explicit (two of its packages are mapped folders): a new sub-package
    that is not listed would be missing from the wheel."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    tree = {".".join(p.parent.relative_to(REPO).parts) for top in ("data_prep", "detection")
            for p in (REPO / top).rglob("__init__.py")}
    assert tree <= listed, f"packages missing from pyproject.toml: {sorted(tree - listed)}"
    assert cfg["package-dir"] == {"data_prep.configs": "configs", "detection.weights": "weights"}


def test_resources_in_the_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("CXRDET_CONFIGS", raising=False)
    monkeypatch.delenv("CXRDET_CACHE", raising=False)
    assert R.in_checkout() and R.config_dir() == REPO / "configs" and R.weights_dir() == REPO / "weights"
    assert R.cache_dir() == REPO / ".cache"
    assert R.shipped_weight("vinbig_phantom_yolo11n.pt") == REPO / "weights" / "vinbig_phantom_yolo11n.pt"
    assert R.shipped_weight("weights/vinbig_phantom_yolo11n.pt") is None   # a path is the user's
    assert R.shipped_weight("nope.pt") is None
    # generated files: beside the user's own file; for a shipped file in the cache, never the package
    mine = tmp_path / "best.pt"
    assert R.beside_or_cache(mine, "best_512.onnx") == tmp_path / "best_512.onnx"
    shipped = REPO / "weights" / "vinbig_phantom_cls.pt"
    cached = R.beside_or_cache(shipped, "vinbig_phantom_cls_224.onnx")
    assert cached.parent == REPO / ".cache" / "generated" and cached.name.startswith("vinbig_phantom_cls_224_")
    assert cached.suffix == ".onnx"
    monkeypatch.setenv("CXRDET_CACHE", str(tmp_path / "c"))
    assert R.beside_or_cache(shipped, "x.onnx").parent == tmp_path / "c" / "generated"
    monkeypatch.chdir(tmp_path)
    assert R.export_destination(shipped, "y.onnx") == tmp_path / "y.onnx"
    assert R.export_destination(mine, "y.onnx") == tmp_path / "y.onnx"
    assert R.export_destination(tmp_path / "sub" / "w.pt", "w.onnx") == tmp_path / "sub" / "w.onnx"


def test_user_cache_when_installed(monkeypatch, tmp_path):
    monkeypatch.delenv("CXRDET_CACHE", raising=False)
    monkeypatch.setattr(R, "in_checkout", lambda: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert R.cache_dir() == tmp_path / "xdg" / "cxrdet"
    assert R.config_dir() == R.PACKAGE / "configs"
    assert R.weights_dir() == R.ROOT / "detection" / "weights"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "-w", str(out), str(REPO)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("cxrdet-*.whl")
    return whl


@pytest.mark.slow   # builds the wheel, then synth -> prep -> predict through it (~40 s)
def test_wheel_runs_outside_the_checkout(wheel, tmp_path):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for top in ("data_prep", "detection") for p in (REPO / top).rglob("*.py")}
    assert modules <= names, sorted(modules - names)[:5]
    assert {"data_prep/configs/default.yaml", "data_prep/configs/vinbigdata.yaml",
            "detection/weights/vinbig_phantom_yolo11n.pt", "detection/pictures/explore.html"} <= names

    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                        str(site), str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    before = {p: p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file()}
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CXRDET_CONFIGS", "CXRDET_CACHE", "YOLO_CONFIG_DIR")}
    env.update(PYTHONPATH=str(site), HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"),
               YOLO_OFFLINE="1")

    def cxrdet(*a):
        r = subprocess.run([sys.executable, "-m", "detection.cli", *a], cwd=work, env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, f"cxrdet {' '.join(a)}:\n{r.stderr[-3000:]}"
        return r.stdout

    where = subprocess.run([sys.executable, "-c", "import detection, data_prep.core.resources as r; "
                            "print(detection.__file__); print(r.in_checkout())"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120).stdout.split()
    assert Path(where[0]).is_relative_to(site) and where[1] == "False"
    assert cxrdet("--version").startswith("cxrdet ")
    cxrdet("synth", "vinbigdata", "data", "--n", "6", "--n-test", "2", "--size", "256", "--labels", "embedded")
    cxrdet("prep", "--config", "vinbigdata", "--data", "data", "--out", "prep", "size=128", "folds=2")
    cxrdet("predict", "--weights", "vinbig_phantom_yolo11n.pt", "--source", "prep/images", "--out", "preds.csv",
           "imgsz=128")
    preds = pd.read_csv(work / "preds.csv")
    assert list(preds.columns[:7]) == ["image_id", "class_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
    assert preds.image_id.nunique() >= 1
    # nothing was written into (or changed in) the installed package; the caches went to the user's
    after = {p: p.stat().st_mtime_ns for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert after == {p: t for p, t in before.items() if "__pycache__" not in p.parts}
    assert (tmp_path / "cache" / "cxrdet" / "ultralytics").is_dir()
    assert not (site / ".cache").exists()
