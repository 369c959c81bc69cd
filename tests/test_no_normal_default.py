"""Issue 28 item 3: no function defaults to a dataset's normal class. The normal class comes from
the dataset description (``describe(cfg).normal`` / ``.normal_id``) at the caller, or is a required
argument: no default argument and no class-level (dataclass) default in data_prep/, detection/ or
bench/ is a normal-class expression."""
from __future__ import annotations

import ast
from pathlib import Path

from data_prep.datasets import DATASETS

REPO = Path(__file__).resolve().parents[1]
NORMAL_NAMES = {d.normal_name for d in DATASETS.values() if d.normal is not None}


def is_normal_expr(node: ast.AST) -> bool:
    """``describe(X).normal``, ``DATASETS[X].normal_id``, a ``*NORMAL*`` constant, or a literal
    holding a dataset's normal class name ("No finding")."""
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and n.attr in ("normal", "normal_id", "normal_name"):
            return True
        if isinstance(n, ast.Name) and "NORMAL" in n.id.upper():
            return True
        if isinstance(n, ast.Constant) and n.value in NORMAL_NAMES:
            return True
    return False


def normal_defaults(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                if is_normal_expr(d):
                    out.append(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{d.lineno}: "
                               f"{getattr(node, 'name', 'lambda')}(... = {ast.unparse(d)})")
        elif isinstance(node, ast.ClassDef):
            for st in node.body:
                value = st.value if isinstance(st, (ast.AnnAssign, ast.Assign)) else None
                if value is not None and is_normal_expr(value):
                    out.append(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{st.lineno}: "
                               f"{node.name}.{ast.unparse(st.targets[0] if isinstance(st, ast.Assign) else st.target)}"
                               f" = {ast.unparse(value)}")
    return out


def test_no_default_is_a_datasets_normal_class():
    bad = [line for top in ("data_prep", "detection", "bench") for p in sorted((REPO / top).rglob("*.py"))
           if "datasets" not in p.relative_to(REPO).parts for line in normal_defaults(p)]
    assert not bad, "defaults that are a dataset's normal class:\n" + "\n".join(bad)


def test_the_check_sees_planted_defaults(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from dataclasses import dataclass\n"
                 "_DEFAULT_NORMAL = describe('vinbigdata').normal\n"
                 "def a(t, normal_class=_DEFAULT_NORMAL): pass\n"
                 "def b(t, *, normal=describe(DEFAULT_DATASET).normal_id): pass\n"
                 "def c(t, nf=(14, 'No finding')): pass\n"
                 "def ok(t, normal_class=None, iou=0.4): pass\n"
                 "@dataclass\nclass S:\n    normal_class: int | None = DATASETS['x'].normal_id\n    iou: float = 0.4\n")
    found = normal_defaults(f)
    assert [x.split(":")[1] for x in found] == ["3", "4", "5", "9"], found
