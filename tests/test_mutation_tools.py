"""tools/mutation_sync.py: what a resumed `make mutation` re-runs after the sources change."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sync_drops_stale_copies_and_the_verdicts_of_changed_modules(tmp_path, monkeypatch, capsys):
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["pkg"]\nonly_mutate = ["pkg/a.py"]\n')
    for name, text in (("a.py", "x = 1\n"), ("b.py", "y = 1\n"), ("c.py", "z = 1\n")):
        (tmp_path / "pkg").mkdir(exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
        (tmp_path / "mutants" / "pkg").mkdir(parents=True, exist_ok=True)
        (tmp_path / "mutants" / "pkg" / name).write_text(text)
    m = tmp_path / "mutants" / "pkg"
    (m / "a.py.meta").write_text("{}")
    (m / "a.py.spans").write_text("{}")
    (m / "a.py").write_text("x = 1  # mutated copy\n")
    old = (tmp_path / "pkg" / "a.py").stat().st_mtime - 100
    os.utime(m / "a.py", (old, old))                    # in scope: the source is newer than its copy
    (tmp_path / "pkg" / "b.py").write_text("y = 2\n")  # out of scope: the copy's content differs
    monkeypatch.chdir(tmp_path)
    assert _load("mutation_sync").main() == 0
    assert not (m / "a.py").exists() and not (m / "a.py.meta").exists() and not (m / "a.py.spans").exists()
    assert not (m / "b.py").exists() and (m / "c.py").read_text() == "z = 1\n"
    assert "2 changed source file(s) copied afresh: pkg/a.py, pkg/b.py" in capsys.readouterr().out
    # nothing changed since: nothing removed, nothing printed
    for name in ("a.py", "b.py"):
        (m / name).write_text((tmp_path / "pkg" / name).read_text())
    (m / "a.py.meta").write_text("{}")
    assert _load("mutation_sync").main() == 0
    assert (m / "a.py.meta").exists() and capsys.readouterr().out == ""
