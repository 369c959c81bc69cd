"""What the ``cxrdet convert`` process holds (issue 29 item 4: peak memory per worker <= 150 MB).

A pool worker is a fork of the convert process and starts with every module that process
imported; bench/convert.py measures the peaks. These tests check the causes that a subprocess can
see without timing anything: the command imports no pandas (the config check reads the dataset's
class names, through data_prep.datasets and pandas, only where a class_thr / alpha mapping names
classes), and the class names are still checked where one does.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_prep.core.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    code = ("import sys; from detection.cli import main; rc = main(sys.argv[1:]); "
            "print('MODULES', rc, sorted(m for m in ('pandas', 'torch', 'ultralytics', 'data_prep.datasets') "
            "if m in sys.modules))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          cwd=str(REPO), env={"PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


def _modules(out: subprocess.CompletedProcess) -> str:
    line = [s for s in out.stdout.splitlines() if s.startswith("MODULES")]
    assert line, out.stdout + out.stderr
    return line[-1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cxrdet_convert_imports_no_pandas(tmp_path, write_dicom, workers):
    """The whole command (argument parsing, config merge and check, convert, meta.csv): no pandas,
    torch, ultralytics or data_prep.datasets in the process, and the PNGs are written
    (64 px, keep ratio: 40 x 64 from a 200 x 320 image)."""
    src = tmp_path / "src"
    img = np.tile(np.arange(320, dtype=np.uint16) * 10, (200, 1))
    for i in range(3):
        write_dicom(src / f"im{i}.dcm", img + i)
    out = _run_cli(["convert", str(src), str(tmp_path / "out"), "--size", "64", "--keep-ratio",
                    "--workers", workers])
    assert _modules(out) == "MODULES 0 []", out.stderr
    import cv2

    png = cv2.imread(str(tmp_path / "out" / "im0.png"), cv2.IMREAD_UNCHANGED)
    assert png.shape == (40, 64) and png.dtype == np.uint8
    assert png[:, 0].max() == 0 and png[:, -1].min() == 255      # the ramp stretched to 0..255


def test_class_thr_mapping_still_checked_against_the_dataset(tmp_path):
    """Where class_thr names classes the names are read (data_prep.datasets) and a wrong one is
    refused with the dataset's names; an empty mapping needs none."""
    from data_prep.core.config import load_config

    cfg = load_config(None, {"class_thr": {"Aortic enlargement": 0.3}})
    assert cfg["class_thr"] == {"Aortic enlargement": 0.3}
    with pytest.raises(InputError, match="did you mean 'Aortic enlargement'"):
        load_config(None, {"class_thr": {"Aortic enlargment": 0.3}})
    assert load_config(None, {"alpha": {"Aortic enlargement": 2.0}})["alpha"] == {"Aortic enlargement": 2.0}
    with pytest.raises(InputError, match="key 'alpha' = .*a class name of the dataset"):
        load_config(None, {"alpha": {"No such class": 2.0}})
    assert load_config(None, {"class_thr": {}, "alpha": 1.5})["alpha"] == 1.5
