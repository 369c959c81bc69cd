"""data_prep.core.atomic: a write either lands whole or leaves the old file and no temp file behind."""
import os
from pathlib import Path

import pandas as pd
import pytest

from data_prep.core.atomic import atomic_path, write_csv, write_text


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


# ----------------------------------------------------------------------------- a write that fails midway
def _half_then_fail(monkeypatch, owner, attr, kind):
    """Make ``owner.attr`` (a writer) write half of its output, then fail like a full disk."""
    real = getattr(owner, attr)

    def half(self, *args, **kwargs):
        if kind == "bytes":
            real(self, args[0][: len(args[0]) // 2])
        elif kind == "text":
            real(self, args[0][: len(args[0]) // 2])
        else:  # DataFrame.to_csv(path): the first half of its rows
            real(self.iloc[: len(self) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(owner, attr, half)


def _hidden(folder):
    return sorted(p.name for p in Path(folder).rglob(".*"))


@pytest.mark.parametrize("writer", ["write_csv", "write_text", "write_bytes", "copy_file"])
def test_each_writer_failing_midway_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch, writer):
    from data_prep.core import atomic

    p = tmp_path / "t.dat"
    p.write_text("old,content\n1,2\n")
    src = tmp_path / "src.txt"
    src.write_bytes(b"new bytes " * 100)
    if writer == "write_csv":
        _half_then_fail(monkeypatch, pd.DataFrame, "to_csv", "csv")
        call = lambda: atomic.write_csv(pd.DataFrame({"x": range(10)}), p)  # noqa: E731
    elif writer == "write_text":
        _half_then_fail(monkeypatch, Path, "write_text", "text")
        call = lambda: atomic.write_text(p, "new text " * 100)  # noqa: E731
    elif writer == "write_bytes":
        _half_then_fail(monkeypatch, Path, "write_bytes", "bytes")
        call = lambda: atomic.write_bytes(p, b"new bytes " * 100)  # noqa: E731
    else:
        def half_copy(a, b):
            Path(b).write_bytes(Path(a).read_bytes()[:50])
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(atomic.shutil, "copyfile", half_copy)
        call = lambda: atomic.copy_file(src, p)  # noqa: E731
    with pytest.raises(OSError, match="No space left"):
        call()
    assert p.read_text() == "old,content\n1,2\n"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["src.txt", "t.dat"]


def test_folder_swap_failing_midway_keeps_the_old_folder(tmp_path):
    from data_prep.core.atomic import atomic_folder

    with atomic_folder(tmp_path / "d") as d:
        (d / "a.txt").write_text("a1")
        (d / "b.txt").write_text("b1")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask        # the usual mode of a new folder
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "d") as d:
            (d / "a.txt").write_text("a2")
            raise RuntimeError("killed halfway through the folder")
    assert {p.name: p.read_text() for p in (tmp_path / "d").iterdir()} == {"a.txt": "a1", "b.txt": "b1"}
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    with atomic_folder(tmp_path / "d") as d:              # a finished one replaces the folder whole
        (d / "c.txt").write_text("c")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["c.txt"] and [p.name for p in tmp_path.iterdir()] == ["d"]


def test_convert_whose_png_writes_fail_midway_keeps_the_old_pngs(tmp_path, monkeypatch, make_ds, save, ramp):
    from data_prep.dicom.convert import convert_folder

    src = tmp_path / "dcm"
    src.mkdir()
    for i in range(3):
        save(make_ds(ramp(40, 60, 1000 + 500 * i)), src / f"im{i}.dcm")
    dst = tmp_path / "png"
    assert convert_folder(src, dst, size=32, workers=1, progress=False).errors == []
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    _half_then_fail(monkeypatch, Path, "write_bytes", "bytes")
    res = convert_folder(src, dst, size=48, workers=1, progress=False, overwrite=True)
    assert res.n_converted == 0 and len(res.errors) == 3 and "No space left" in res.errors[0][1]
    after = {p.name: p.read_bytes() for p in dst.iterdir() if p.suffix == ".png"}
    assert after == {k: v for k, v in before.items() if k.endswith(".png")}     # whole old PNGs, none cut
    assert _hidden(dst) == [] and not list(dst.glob("*.tmp"))
    monkeypatch.undo()
    assert convert_folder(src, dst, size=48, workers=1, progress=False).n_converted == 3


def test_export_failing_midway_keeps_the_old_yolo_folder(tmp_path, monkeypatch):
    import cv2
    import numpy as np
    import yaml

    from data_prep.core.boxes import make_boxes
    from data_prep.labels.export import write_yolo

    (tmp_path / "images").mkdir()
    rows = []
    for iid in "abcd":
        cv2.imwrite(str(tmp_path / "images" / f"{iid}.png"), np.zeros((8, 8), np.uint8))
        rows.append((iid, 100, 100, str(tmp_path / "images" / f"{iid}.png")))
    images = pd.DataFrame(rows, columns=["image_id", "height", "width", "path"])
    boxes = make_boxes(["a", "b"], [0, 1], ["x", "y"], [[10, 10, 50, 50], [20, 20, 60, 60]])
    write_yolo(images, boxes, pd.DataFrame({"image_id": list("abcd"), "fold": [0, 1, 2, 0]}), tmp_path, ["x", "y"])
    old = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in (tmp_path / "yolo").rglob("*") if p.is_file()}
    real, calls = yaml.safe_dump, []

    def dump_then_fail(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*a, **k)
    monkeypatch.setattr(yaml, "safe_dump", dump_then_fail)
    with pytest.raises(OSError):
        write_yolo(images, boxes, pd.DataFrame({"image_id": list("abcd"), "fold": [0, 1, 0, 1]}), tmp_path, ["x", "y"])
    assert {p.relative_to(tmp_path).as_posix(): p.read_bytes()
            for p in (tmp_path / "yolo").rglob("*") if p.is_file()} == old                # 3 folds, as before
    assert _hidden(tmp_path) == []


def test_submit_failing_midway_keeps_the_old_submission(tmp_path, monkeypatch, capsys):
    from data_prep.core.boxes import make_boxes
    from detection.cli import main

    pd.DataFrame({"image_id": ["a", "b"], "PredictionString": ""}).to_csv(tmp_path / "s.csv", index=False)
    make_boxes(["a"], [3], ["c"], [[1, 2, 30, 40]], score=[0.5]).to_csv(tmp_path / "p.csv", index=False)
    out = tmp_path / "o" / "sub.csv"
    args = ["submit", "--format", "vinbigdata", "--pred", str(tmp_path / "p.csv"), "--sample",
            str(tmp_path / "s.csv"), "--out", str(out)]
    assert main(args) == 0
    before = out.read_bytes()
    _half_then_fail(monkeypatch, pd.DataFrame, "to_csv", "csv")
    assert main(args) == 2 and "no space left" in capsys.readouterr().err
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["sub.csv"]


# ----------------------------------------------------------------------------- one module renames
def test_nothing_outside_atomic_renames_or_sets_the_umask(repo_root):
    """os.replace / os.rename / shutil.move / Path.rename / Path.replace / os.umask appear only in
    data_prep/core/atomic.py (a one-argument ``x.rename(y)``/``x.replace(y)`` with a non-literal
    argument is taken for Path's: DataFrame/Series renames name their columns or a literal)."""
    import ast

    bad = []
    for path in sorted(p for pkg in ("data_prep", "detection", "bench") for p in (repo_root / pkg).rglob("*.py")):
        rel = path.relative_to(repo_root).as_posix()
        if rel == "data_prep/core/atomic.py":
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                continue
            base, attr = ast.unparse(n.func.value), n.func.attr
            if (base == "os" and attr in ("replace", "rename", "renames", "umask")) or (base == "shutil" and attr == "move"):
                bad.append(f"{rel}:{n.lineno}: {ast.unparse(n)}")
            elif (attr in ("rename", "replace") and len(n.args) == 1 and not n.keywords
                  and not isinstance(n.args[0], ast.Constant)):
                bad.append(f"{rel}:{n.lineno}: {ast.unparse(n)}")
    assert not bad, "rename outside data_prep/core/atomic.py (use its helpers):\n" + "\n".join(bad)
