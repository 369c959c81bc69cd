"""Issue 28 item 3: one object owns the prepared folder's layout (data_prep/core/prepdir.py) and no
prepared file name is spelled anywhere else in data_prep/, detection/ or bench/."""
from __future__ import annotations

import ast
from pathlib import Path

from data_prep.core.prepdir import NAMES, PrepDir

REPO = Path(__file__).resolve().parents[1]
OWNER = REPO / "data_prep" / "core" / "prepdir.py"


def spelled(path: Path) -> list[tuple[int, str]]:
    """(line, name) of every string constant (f-string pieces included) that is a prepared file's
    name, or a path ending in one (``"yolo/fold0/data.yaml"``); docstrings and messages that merely
    mention a name are prose, not a path."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            v = node.value.strip()
            if v in NAMES or any(v.endswith("/" + n) for n in NAMES):
                out.append((node.lineno, v))
    return out


def test_no_prepared_file_name_outside_prepdir():
    bad = []
    for top in ("data_prep", "detection", "bench"):
        for p in sorted((REPO / top).rglob("*.py")):
            if p != OWNER:
                bad += [f"{p.relative_to(REPO)}:{line}: {v!r}" for line, v in spelled(p)]
    assert not bad, "prepared file names spelled outside data_prep/core/prepdir.py:\n" + "\n".join(bad)


def test_the_grep_sees_a_planted_name(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Reads folds.csv."""\nP = prep / "folds.csv"\nQ = f"{d}/yolo/fold{k}/data.yaml"\n')
    assert sorted(spelled(f)) == [(2, "folds.csv"), (3, "/data.yaml")]


def test_layout_paths(tmp_path):
    L = PrepDir(tmp_path)
    assert L.images == tmp_path / "images" and L.png("a") == tmp_path / "images" / "a.png"
    assert (L.meta, L.images_csv, L.boxes_csv) == (tmp_path / "meta.csv", tmp_path / "images.csv", tmp_path / "boxes.csv")
    assert (L.fused_boxes_csv, L.fused_csv, L.folds_csv) == (tmp_path / "fused_boxes.csv", tmp_path / "fused.csv",
                                                             tmp_path / "folds.csv")
    assert L.manifest == tmp_path / "prep.json"
    assert L.data_yaml(2) == tmp_path / "yolo" / "fold2" / "data.yaml"
    assert L.data_yaml(2, "variants") == tmp_path / "yolo" / "fold2" / "data_variants.yaml"
    assert L.train_list(1, "both") == tmp_path / "yolo" / "fold1" / "train_both.txt"
    assert L.val_list(0) == tmp_path / "yolo" / "fold0" / "val.txt"
    assert L.coco_json(3, "val") == tmp_path / "coco" / "fold3_val.json"
    assert L.coco_train(3, "variants") == tmp_path / "coco" / "fold3_train_variants.json"
    assert L.items_csv == tmp_path / "train_items" / "items.csv"
    assert L.extra_meta("nih") == tmp_path / "extra_nih_meta.csv"
    assert L.rel(L.data_yaml(0)) == "yolo/fold0/data.yaml"
    assert PrepDir(str(tmp_path)) == L and repr(L).startswith("PrepDir(")
