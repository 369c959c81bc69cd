"""data_prep.atomic: a write either lands whole or leaves the old file and no temp file behind."""
import pandas as pd
import pytest

from data_prep.atomic import atomic_path, write_csv, write_text


def test_success_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "a.csv"
    write_csv(pd.DataFrame({"x": [1, 2]}), p)
    assert pd.read_csv(p)["x"].tolist() == [1, 2]
    write_text(p, "x\n3\n")
    assert p.read_text() == "x\n3\n"
    assert sorted(q.name for q in p.parent.iterdir()) == ["a.csv"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]


def test_written_file_has_the_usual_mode(tmp_path):
    import os
    p = write_text(tmp_path / "r.html", "<html></html>")
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
