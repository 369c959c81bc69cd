"""The prepared folder's layout: every file and folder ``cxrdet prep`` writes under OUT, named once.

:class:`PrepDir` is the one place a prepared file's name is spelled; prep writes through it and every
reader (cv, train, train-cls, epoch scoring, the demo, the benchmarks) finds its inputs through it
(a test greps the tree for these names outside this module)::

    OUT/images/<image_id>.png          the PNGs (convert or symlinks)       PrepDir.images, .png(id)
    OUT/meta.csv                       convert's per-PNG sizes (META)       PrepDir.meta
    OUT/extra_<name>_meta.csv          an extra dataset's PNG sizes         PrepDir.extra_meta(name)
    OUT/images.csv, boxes.csv          the image table, the raw box table   .images_csv, .boxes_csv
    OUT/fused_boxes.csv (+ fused.csv)  the truth (+ the competition layout) .fused_boxes_csv, .fused_csv
    OUT/folds.csv                      image_id, fold                       .folds_csv
    OUT/prep.json                      the manifest (steps, config, data)   .manifest
    OUT/labels/<image_id>.txt          YOLO labels                          .labels
    OUT/yolo/fold<k>/data.yaml, train.txt, val.txt (+ data_<kind>.yaml, train_<kind>.txt)
                                                                            .data_yaml(k, kind), ...
    OUT/coco/fold<k>_{train,val}.json (+ fold<k>_train_<kind>.json)      .coco_json(k, split), .coco_train(k, kind)
    OUT/train_items/{images,labels}/, items.csv   training items that are not the truth's .train_items
"""
from __future__ import annotations

import os
from pathlib import Path

META = "meta.csv"              # convert's per-PNG sizes: DST/meta.csv of `cxrdet convert`, OUT/meta.csv of prep
TRAIN_LABELS = ("fused", "variants", "both")
ITEMS = "train_items"          # OUT/train_items: training items whose labels are not the truth's
ITEMS_CSV = "items.csv"
IMAGES = "images"
VAL_LIST = "val.txt"            # OUT/yolo/fold<k>/val.txt: the fold's images (what every score reads)


def yaml_names(kind: str) -> tuple[str, str]:
    """(train list, data yaml) file names of a training-label kind in ``OUT/yolo/fold<k>``."""
    return ("train.txt", "data.yaml") if kind == "fused" else (f"train_{kind}.txt", f"data_{kind}.yaml")


def data_yaml_name(train_labels: str) -> str:
    """The data.yaml of ``OUT/yolo/fold<k>`` a training with ``train_labels`` reads."""
    if train_labels not in TRAIN_LABELS:
        raise ValueError(f"train_labels {train_labels!r}; expected one of {', '.join(TRAIN_LABELS)}")
    return yaml_names(train_labels)[1]


def coco_train_name(k: int, train_labels: str) -> str:
    """The COCO training json of fold ``k`` for ``train_labels`` (in ``OUT/coco``)."""
    data_yaml_name(train_labels)
    return f"fold{k}_train.json" if train_labels == "fused" else f"fold{k}_train_{train_labels}.json"


class PrepDir:
    """The layout of one prepared folder (``cxrdet prep --out OUT``): a path per file (module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"PrepDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    def __eq__(self, other) -> bool:
        return isinstance(other, PrepDir) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    # the stage outputs, in the order prep writes them
    images = property(lambda self: self.root / IMAGES, doc="OUT/images: the PNGs")
    meta = property(lambda self: self.root / META, doc="OUT/meta.csv: convert's per-PNG sizes")
    images_csv = property(lambda self: self.root / "images.csv", doc="OUT/images.csv: the image table")
    boxes_csv = property(lambda self: self.root / "boxes.csv", doc="OUT/boxes.csv: the raw box table")
    fused_boxes_csv = property(lambda self: self.root / "fused_boxes.csv", doc="OUT/fused_boxes.csv: the truth")
    fused_csv = property(lambda self: self.root / "fused.csv", doc="OUT/fused.csv: the truth, competition layout")
    folds_csv = property(lambda self: self.root / "folds.csv", doc="OUT/folds.csv: image_id, fold")
    manifest = property(lambda self: self.root / "prep.json", doc="OUT/prep.json: steps, config, data")
    labels = property(lambda self: self.root / "labels", doc="OUT/labels: YOLO label files")
    yolo = property(lambda self: self.root / "yolo", doc="OUT/yolo: one folder per fold")
    coco = property(lambda self: self.root / "coco", doc="OUT/coco: COCO json per fold")
    train_items = property(lambda self: self.root / ITEMS, doc="OUT/train_items: variant / squarified items")
    items_csv = property(lambda self: self.root / ITEMS / ITEMS_CSV, doc="OUT/train_items/items.csv")

    def png(self, image_id: str) -> Path:
        """``OUT/images/<image_id>.png``."""
        return self.images / f"{image_id}.png"

    def extra_meta(self, name: str) -> Path:
        """``OUT/extra_<name>_meta.csv``: the PNG sizes of extra dataset ``name``."""
        return self.root / f"extra_{name}_{META}"

    def yolo_fold(self, k: int) -> Path:
        return self.yolo / f"fold{k}"

    def data_yaml(self, k: int, train_labels: str = "fused") -> Path:
        """``OUT/yolo/fold<k>/data.yaml`` (``data_<kind>.yaml`` for variants / both)."""
        return self.yolo_fold(k) / data_yaml_name(train_labels)

    def train_list(self, k: int, train_labels: str = "fused") -> Path:
        return self.yolo_fold(k) / yaml_names(train_labels)[0]

    def val_list(self, k: int) -> Path:
        return self.yolo_fold(k) / VAL_LIST

    def coco_json(self, k: int, split: str) -> Path:
        """``OUT/coco/fold<k>_<split>.json`` (split: train, val)."""
        return self.coco / f"fold{k}_{split}.json"

    def coco_train(self, k: int, train_labels: str = "fused") -> Path:
        return self.coco / coco_train_name(k, train_labels)

    def rel(self, path: Path) -> str:
        """``path`` relative to OUT (the manifest's step outputs)."""
        return Path(path).relative_to(self.root).as_posix()


# file names a test keeps out of every other module (tests/test_prepdir.py)
NAMES = ("meta.csv", "images.csv", "boxes.csv", "fused_boxes.csv", "fused.csv", "folds.csv", "prep.json",
         "data.yaml", "train.txt", "val.txt", "train_items", "items.csv")
