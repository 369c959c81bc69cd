"""Issue 28 item 2: the arrows between modules point one way.

The import graph is read from the source (every ``import``/``from ... import``, function-local ones
included, relative ones resolved), over data_prep/ and detection/:

* data_prep never imports detection;
* no module imports another module's ``_private`` name, nor reads one as ``module._name``;
* no import circle (KNOWN_CIRCLES / KNOWN_PRIVATE are empty: the prediction/training knot of
  issue 28 is untied; an entry may only be removed: a new circle, or a known one that grows,
  fails; a known one that disappears fails too, until it is removed from the list).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOPS = ("data_prep", "detection")

KNOWN_CIRCLES: list[set[str]] = []   # none left (issue 28 item 2)
KNOWN_PRIVATE: set[tuple[str, str, str]] = set()   # (importer, module, name)


def modules() -> dict[str, Path]:
    out = {}
    for top in TOPS:
        for p in (REPO / top).rglob("*.py"):
            parts = p.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def import_graph(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """``(edges, private)``: module -> the project modules it imports; (importer, module, name)
    for every ``_name`` taken from another module."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[tuple[str, str | None]] = []
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                targets = [(f"{base}.{a.name}", None) if f"{base}.{a.name}" in mods else (base, a.name)
                           for a in node.names]
            for target, attr in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                edges[name].add(target)
                if attr and attr.startswith("_") and not attr.startswith("__"):
                    private.append((name, target, attr))
        private += private_attributes(name, path, mods)
    return edges, private


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attribute accesses on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def private_attributes(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, str, str]]:
    """(importer, module, name) for every ``module._name`` read through an imported project module:
    ``import a.b as m; m._x``, ``from a import b; b._x`` and ``import a.b; a.b._x``."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    alias: dict[str, str] = {}          # local name -> project module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname and a.name in mods:
                    alias[a.asname] = a.name
                elif not a.asname:
                    alias.setdefault(a.name.split(".")[0], a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                if f"{base}.{a.name}" in mods:
                    alias[a.asname or a.name] = f"{base}.{a.name}"
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            continue
        chain = dotted(node.value)
        if chain is None:
            continue
        head, _, rest = chain.partition(".")
        if head not in alias:
            continue
        target = ".".join(filter(None, [alias[head], rest]))
        if target in mods and target != name:
            out.append((name, target, node.attr))
    return out


def circles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph(modules())


def test_the_checker_finds_a_planted_circle_and_private_import(tmp_path, monkeypatch):
    pkg = tmp_path / "data_prep"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from data_prep.b import _g\n")
    (pkg / "b.py").write_text("from . import a\n\ndef _g():\n    pass\n")
    (pkg / "c.py").write_text("import data_prep.a\nimport data_prep.b as bee\nfrom data_prep import a\n\n"
                              "x = (bee._g, a._h, data_prep.a._k, bee.__name__, bee.public)\n")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    edges, private = import_graph(modules())
    assert circles(edges) == [{"data_prep.a", "data_prep.b"}]
    assert sorted(private) == [("data_prep.a", "data_prep.b", "_g"), ("data_prep.c", "data_prep.a", "_h"),
                               ("data_prep.c", "data_prep.a", "_k"), ("data_prep.c", "data_prep.b", "_g")]
    assert edges["data_prep.c"] == {"data_prep.a", "data_prep.b"}


def test_data_prep_never_imports_detection(graph):
    edges, _ = graph
    bad = sorted((a, b) for a, bs in edges.items() for b in bs if a.startswith("data_prep") and b.startswith("detection"))
    assert not bad


def test_no_private_names_across_modules(graph):
    _, private = graph
    assert set(private) - KNOWN_PRIVATE == set(), "new imports of another module's _private name"
    assert KNOWN_PRIVATE - set(private) == set(), "gone: remove them from KNOWN_PRIVATE"


def test_no_import_circle(graph):
    edges, _ = graph
    found = circles(edges)
    new = [c for c in found if c not in KNOWN_CIRCLES]
    assert not new, f"import circles: {[sorted(c) for c in new]}"
    gone = [c for c in KNOWN_CIRCLES if c not in found]
    assert not gone, f"no longer circles (remove them from KNOWN_CIRCLES): {[sorted(c) for c in gone]}"


# ----------------------------------------------------------------------------- packages
def package_of(module: str) -> str:
    """``data_prep.core.config`` -> ``data_prep.core``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def declared_imports(pkg: str) -> set[str] | None:
    """The packages a sub-package says it may import: the ``May import:`` sentence of its
    ``__init__`` docstring (``data_prep`` alone = every data_prep package)."""
    import re

    init = REPO / pkg.replace(".", "/") / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    m = re.search(r"May import:(.*?)(?:\.\s|\.$)", doc, re.S)
    if m is None:
        return None
    return set(re.findall(r"\b(?:data_prep|detection)(?:\.\w+)?\b", m.group(1)))


def test_each_package_imports_only_what_its_docstring_declares(graph):
    """The tree tells the architecture: every sub-package of data_prep/ and detection/ opens with a
    docstring whose ``May import:`` sentence names the packages it may import; the import graph
    (function-local imports included) holds no other arrow."""
    edges, _ = graph
    subs = sorted({package_of(m) for m in edges if m.count(".") >= 2})
    assert subs, "no sub-packages"
    bad, undeclared = [], []
    for pkg in subs:
        allowed = declared_imports(pkg)
        if allowed is None:
            undeclared.append(pkg)
            continue
        for a, targets in edges.items():
            if package_of(a) != pkg:
                continue
            for b in targets:
                pb = package_of(b)
                if pb != pkg and pb not in allowed and pb.split(".")[0] not in allowed:
                    bad.append(f"{a} -> {b}")
    assert not undeclared, f"sub-packages without a 'May import:' sentence: {undeclared}"
    assert not bad, "imports a package's docstring does not allow:\n" + "\n".join(sorted(bad))


def test_the_package_check_sees_an_undeclared_arrow(tmp_path, monkeypatch):
    for pkg, doc in (("data_prep", ""), ("data_prep/core", "Core.\n\nMay import: data_prep.datasets.\n"),
                     ("data_prep/dicom", "Dicom.\n\nMay import: data_prep.core.\n")):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text(f'"""{doc}"""\n' if doc else "")
    (tmp_path / "data_prep/core/a.py").write_text("from data_prep.dicom import b\n")
    (tmp_path / "data_prep/dicom/b.py").write_text("from data_prep.core import a\n")
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    edges, _ = import_graph(modules())
    with pytest.raises(AssertionError, match="data_prep.core.a -> data_prep.dicom.b"):
        test_each_package_imports_only_what_its_docstring_declares((edges, []))
