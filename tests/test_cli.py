"""The CLI error boundary: one line and status 2 for a user's mistake, one line and status 1 for a
bug, the traceback only with --debug / CXRDET_DEBUG=1."""
from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest

from data_prep.core.config import parse_overrides
from data_prep.core.errors import InputError, check_output, reading, user_message
from detection import cli


@pytest.fixture
def fake_stage(monkeypatch):
    """A stage ``boom`` whose run raises whatever the test puts in ``raised``."""
    raised: list[BaseException] = []
    mod = types.ModuleType("fake_stage_mod")
    mod.add_arguments_boom = lambda p: p.add_argument("--x", default=None)

    def run_boom(args):
        if raised and callable(raised[0]):
            raised[0]()
        elif raised:
            raise raised[0]
        return 0

    mod.run_boom = run_boom
    monkeypatch.setitem(sys.modules, "fake_stage_mod", mod)
    monkeypatch.setitem(cli.COMMANDS, "boom", ("fake_stage_mod", "test stage"))
    monkeypatch.delenv("CXRDET_DEBUG", raising=False)
    return raised


def _err_lines(capsys) -> list[str]:
    return [l for l in capsys.readouterr().err.splitlines() if l.strip()]


@pytest.mark.parametrize("exc, status, words", [
    (InputError("labels.csv", "column 'x' missing; expected x"), 2, "labels.csv: column 'x' missing"),
    (lambda: parse_overrides(["epochs"]), 2, "argument 'epochs': expected key=value"),  # project's ValueError
    (lambda: np.zeros(3).reshape(2, 2), 1, "internal error ValueError: cannot reshape"),  # numpy's: a bug
    (ValueError("raised outside the project's packages"), 1, "internal error ValueError"),
    (IsADirectoryError(21, "Is a directory", "out/sub"), 2, "out/sub: is a folder; expected a file path"),
    (PermissionError(13, "Permission denied", "/ro/x.csv"), 2, "/ro/x.csv: permission denied"),
    (NotADirectoryError(20, "Not a directory", "f/x.csv"), 2, "f/x.csv: a part of this path is a file"),
    (OSError(28, "No space left on device", "big.png"), 2, "big.png: no space left"),
    (UnicodeDecodeError("utf-8", b"\xff\xfe", 0, 1, "invalid start byte"), 2, "not UTF-8"),
    (pd.errors.ParserError("Error tokenizing data. C error: Expected 2 fields in line 3, saw 5"), 2, "not a readable CSV"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (KeyError("image_id"), 1, "internal error KeyError"),
    (TypeError("unsupported operand"), 1, "--debug"),
])
def test_one_line_per_failure(fake_stage, capsys, exc, status, words):
    fake_stage.append(exc)
    assert cli.main(["boom"]) == status
    lines = _err_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("cxrdet boom: error: ")
    assert words in lines[0]
    assert "Traceback" not in lines[0]


def test_debug_flag_and_env_show_the_traceback(fake_stage, capsys, monkeypatch):
    fake_stage.append(KeyError("image_id"))
    assert cli.main(["boom", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "run_boom" in err
    assert err.strip().splitlines()[-1].startswith("cxrdet boom: error: internal error KeyError")
    monkeypatch.setenv("CXRDET_DEBUG", "1")
    assert cli.main(["boom"]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("CXRDET_DEBUG", "0")
    assert cli.main(["boom"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_debug_anywhere_on_the_line(fake_stage, capsys):
    fake_stage.append(KeyError("k"))
    assert cli.main(["--debug", "boom"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert cli.main(["boom", "--x", "1", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_warnings_are_one_line(fake_stage):
    import warnings

    seen = []
    mod = sys.modules["fake_stage_mod"]
    mod.run_boom = lambda args: seen.append(warnings.formatwarning("odd thing in a.png", UserWarning, "x.py", 3))
    assert cli.main(["boom"]) == 0
    assert cli.main(["boom", "--debug"]) == 0
    assert seen[0] == "warning: odd thing in a.png\n"
    assert "x.py:3" in seen[1]  # --debug keeps Python's own format
    assert "x.py" in warnings.formatwarning("m", UserWarning, "x.py", 3)  # restored after the run


def test_reading_names_the_file(tmp_path):
    utf16 = tmp_path / "u16.csv"
    utf16.write_text("image_id,score\na,0.5\n", encoding="utf-16")
    with pytest.raises(InputError, match=r"u16.csv: not UTF-8 text .*UTF-16.*expected a UTF-8 file"):
        with reading(utf16):
            pd.read_csv(utf16)
    latin = tmp_path / "l1.csv"
    latin.write_bytes("image_id,name\na,Rénal\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"l1.csv: not UTF-8 text \(byte 0xe9 .*Latin-1"):
        with reading(latin):
            pd.read_csv(latin)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"e.csv: is empty"):
        with reading(empty, "prediction table"):
            pd.read_csv(empty)
    with pytest.raises(InputError, match=r"is a folder; expected a prediction table"):
        with reading(tmp_path, "prediction table"):
            pd.read_csv(tmp_path)
    ragged = tmp_path / "r.csv"
    ragged.write_text("a,b\n1,2\n1,2,3,4\n")
    with pytest.raises(InputError, match=r"r.csv: not a readable CSV"):
        with reading(ragged):
            pd.read_csv(ragged)


def test_check_output(tmp_path):
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(InputError, match="is a folder; expected an output file"):
        check_output(tmp_path)
    with pytest.raises(InputError, match="is a file; expected an output folder"):
        check_output(f, folder=True)
    with pytest.raises(InputError, match="f.txt is a file; expected a folder there"):
        check_output(f / "sub" / "x.csv")
    assert check_output(tmp_path / "new" / "deeper" / "x.csv") == tmp_path / "new" / "deeper" / "x.csv"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        import os
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who may write anywhere")
        with pytest.raises(InputError, match="not writable"):
            check_output(ro / "x.csv")
    finally:
        ro.chmod(0o755)


def test_user_message_of_plain_oserror_without_file():
    assert user_message(OSError("socket closed")) == ("socket closed", 2)


@pytest.mark.parametrize("cmd, flag, says", [
    ("show", "--n", "(default: 16)"), ("show", "--show-conf", "(default: 0.3)"), ("show", "--iou", "(default: 0.4)"),
    ("report-eval", "--metric", "RSNA score"), ("report-eval", "--title", "(default: 'cxrdet evaluation')"),
    ("synth", "--seed", "(default: 0)"), ("demo", "--out", "(default: demo_out)"),
])
def test_help_states_defaults(cmd, flag, says, capsys):
    with pytest.raises(SystemExit):
        cli.main([cmd, "--help"])
    text = " ".join(capsys.readouterr().out.split())          # argparse wraps lines
    i = text.index(f" {flag} ")
    assert says in text[i:i + 400], text[i:i + 400]
