"""data_prep.labels export and fusion, checked where a full mutation run found them unchecked:
the radiologist-variant COCO files read back against hand-computed original-pixel boxes (clipped
at the image border), the data.yaml header that says what each training list holds, the YOLO
numbers of variant items, and fusion's image table / competition CSV edges."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ref_fusion import _boxes, _images, assert_same, reference

from data_prep.core import boxes as bx
from data_prep.labels.export import write_coco, write_yolo
from data_prep.labels.fusion import fuse, write_competition_csv

NAMES = ["Aortic enlargement", "Atelectasis"]


def _dataset(out: Path):
    """a (100 high x 200 wide) and c (120 x 60) in fold 0, b (50 x 80) and d (40 x 40) in fold 1.

    Truth: a one box, b one box sticking out of the image (clipped to 70,40,80,50), c, d normal.
    Radiologists: a read by R1 (one box) and R2 (one box + one sticking out at the bottom right,
    clipped to 190,90,200,100); b by R1 (one box, clipped to 60,30,80,50); c by R2 (normal); d by
    nobody listed (no variant item)."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    sizes = {"a": (100, 200, "R1|R2"), "b": (50, 80, "R1"), "c": (120, 60, "R2"), "d": (40, 40, "")}
    rows = []
    for iid, (h, w, raters) in sizes.items():
        png = out / "images" / f"{iid}.png"
        png.write_bytes(b"")                     # the writers never open the pixels
        rows.append((iid, h, w, str(png), raters))
    images = pd.DataFrame(rows, columns=["image_id", "height", "width", "path", "raters"])
    fused = bx.make_boxes(["a", "b"], [0, 1], [NAMES[0], NAMES[1]], [[20, 10, 60, 50], [70, 40, 90, 60]])
    raw = bx.make_boxes(["a", "a", "a", "b"], [0, 0, 1, 1], [NAMES[0], NAMES[0], NAMES[1], NAMES[1]],
                        [[18, 8, 58, 48], [22, 12, 62, 52], [190, 90, 210, 110], [60, 30, 85, 55]],
                        rater=["R1", "R2", "R2", "R1"])
    folds = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "fold": [0, 1, 0, 1]})
    return images, fused, raw, folds


# ----------------------------------------------------------------------------- COCO with radiologist variants
def test_coco_variant_and_both_files_by_hand(tmp_path):
    """fold<k>_train_variants.json holds each variant item of the other folds with that
    radiologist's boxes (x, y, w, h in original pixels, clipped to the image, area = w * h);
    fold<k>_train_both.json the fused training images then the variant items. COCO ids: images
    1-4 by sorted image_id, then the items 5-8 in item order (a~R1, a~R2, b~R1, c~R2)."""
    images, fused, raw, folds = _dataset(tmp_path)
    written = write_coco(images, fused, folds, tmp_path, NAMES, rater_boxes=raw)
    coco = tmp_path / "coco"
    assert written == [coco / n for n in (
        "fold0_train.json", "fold0_val.json", "fold0_train_variants.json", "fold0_train_both.json",
        "fold1_train.json", "fold1_val.json", "fold1_train_variants.json", "fold1_train_both.json")]
    png = {i: str(tmp_path / "images" / f"{i}.png") for i in "abcd"}

    def read(name):
        d = json.loads((coco / name).read_text())
        ims = [(im["id"], im["file_name"], im["height"], im["width"], im["png_file"]) for im in d["images"]]
        anns = [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in d["annotations"]]
        return ims, anns

    # fold 0 trains on b and d; b's only variant is b~R1: its box 60,30,85,55 clipped to 60,30,80,50
    assert read("fold0_train_variants.json") == (
        [(7, "b~R1", 50, 80, png["b"])],
        [(1, 7, 1, [60.0, 30.0, 20.0, 20.0], 400.0, 0)])
    assert read("fold0_train_both.json") == (
        [(2, "b", 50, 80, png["b"]), (4, "d", 40, 40, png["d"]), (7, "b~R1", 50, 80, png["b"])],
        [(1, 2, 1, [70.0, 40.0, 10.0, 10.0], 100.0, 0),          # the truth 70,40,90,60 clipped to 80,50
         (2, 7, 1, [60.0, 30.0, 20.0, 20.0], 400.0, 0)])
    # fold 1 trains on a and c: a~R1, a~R2 (R2's second box clipped to 190,90,200,100), c~R2 (normal)
    variants = [(5, "a~R1", 100, 200, png["a"]), (6, "a~R2", 100, 200, png["a"]), (8, "c~R2", 120, 60, png["c"])]
    var_anns = [(5, 0, [18.0, 8.0, 40.0, 40.0], 1600.0), (6, 0, [22.0, 12.0, 40.0, 40.0], 1600.0),
                (6, 1, [190.0, 90.0, 10.0, 10.0], 100.0)]
    assert read("fold1_train_variants.json") == (
        variants, [(n, *a[:2], a[2], a[3], 0) for n, a in enumerate(var_anns, start=1)])
    assert read("fold1_train_both.json") == (
        [(1, "a", 100, 200, png["a"]), (3, "c", 120, 60, png["c"])] + variants,
        [(1, 1, 0, [20.0, 10.0, 40.0, 40.0], 1600.0, 0)]
        + [(n, *a[:2], a[2], a[3], 0) for n, a in enumerate(var_anns, start=2)])
    # the val files and the plain train files are the truth only
    assert read("fold1_val.json") == ([(2, "b", 50, 80, png["b"]), (4, "d", 40, 40, png["d"])],
                                      [(1, 2, 1, [70.0, 40.0, 10.0, 10.0], 100.0, 0)])
    assert read("fold1_train.json") == ([(1, "a", 100, 200, png["a"]), (3, "c", 120, 60, png["c"])],
                                        [(1, 1, 0, [20.0, 10.0, 40.0, 40.0], 1600.0, 0)])


def test_coco_variant_files_load_in_pycocotools(tmp_path):
    """pycocotools reads the variant file and gives each item its radiologist's boxes."""
    from pycocotools.coco import COCO

    images, fused, raw, folds = _dataset(tmp_path)
    write_coco(images, fused, folds, tmp_path, NAMES, rater_boxes=raw)
    c = COCO(str(tmp_path / "coco" / "fold1_train_both.json"))
    by_name = {im["file_name"]: im["id"] for im in c.dataset["images"]}
    boxes = {n: [a["bbox"] for a in c.loadAnns(c.getAnnIds(imgIds=[i]))] for n, i in by_name.items()}
    assert boxes == {"a": [[20.0, 10.0, 40.0, 40.0]], "c": [], "a~R1": [[18.0, 8.0, 40.0, 40.0]],
                     "a~R2": [[22.0, 12.0, 40.0, 40.0], [190.0, 90.0, 10.0, 10.0]], "c~R2": []}


# ----------------------------------------------------------------------------- YOLO with radiologist variants
def _header(path: Path) -> str:
    return path.read_text().splitlines()[0]


def test_data_yaml_header_says_what_each_training_list_holds(tmp_path):
    """The first line of each data.yaml counts the training list's entries and names them:
    images for the plain fused list, '<kind> training items' for variants, both, and the fused
    list once squarified (its entries are then items with their own labels)."""
    images, fused, raw, folds = _dataset(tmp_path)
    res = write_yolo(images, fused, folds, tmp_path, NAMES, rater_boxes=raw)
    assert res["n_items"] == {"variants": 4}
    f1 = tmp_path / "yolo" / "fold1"
    assert _header(f1 / "data.yaml") == "# cxrdet fold 1 of 2: train = other folds (2 images), val = fold 1 (2 images)"
    assert _header(f1 / "data_variants.yaml") == (
        "# cxrdet fold 1 of 2: train = other folds (3 variants training items), val = fold 1 (2 images)")
    assert _header(f1 / "data_both.yaml") == (
        "# cxrdet fold 1 of 2: train = other folds (5 both training items), val = fold 1 (2 images)")
    assert _header(tmp_path / "yolo" / "fold0" / "data_variants.yaml") == (
        "# cxrdet fold 0 of 2: train = other folds (1 variants training items), val = fold 0 (2 images)")

    write_yolo(images, fused, folds, tmp_path, NAMES, squarify=2.0, include_normal=False)
    assert _header(f1 / "data.yaml") == (
        "# cxrdet fold 1 of 2: train = other folds (1 fused training items), val = fold 1 (2 images)")
    assert not (f1 / "data_variants.yaml").exists()


def test_yolo_variant_labels_by_hand(tmp_path):
    """Each variant item's label file: its radiologist's boxes normalised by the ORIGINAL size,
    clipped at the image border; a normal reading is an empty file; the truth stays in labels/."""
    images, fused, raw, folds = _dataset(tmp_path)
    write_yolo(images, fused, folds, tmp_path, NAMES, rater_boxes=raw)
    lab = tmp_path / "train_items" / "labels"
    # a, 200 wide x 100 high: 22,12,62,52 -> cx 42/200, cy 32/100, w 40/200, h 40/100;
    # 190,90,210,110 clipped to 190,90,200,100 -> cx 195/200, cy 95/100, w 10/200, h 10/100
    assert (lab / "a~R2.txt").read_text() == "0 0.210000 0.320000 0.200000 0.400000\n1 0.975000 0.950000 0.050000 0.100000\n"
    assert (lab / "a~R1.txt").read_text() == "0 0.190000 0.280000 0.200000 0.400000\n"
    # b, 80 wide x 50 high: 60,30,85,55 clipped to 60,30,80,50 -> cx 70/80, cy 40/50, w 20/80, h 20/50
    assert (lab / "b~R1.txt").read_text() == "1 0.875000 0.800000 0.250000 0.400000\n"
    assert (lab / "c~R2.txt").read_text() == ""
    # the truth of b: 70,40,90,60 clipped to 70,40,80,50 -> cx 75/80, cy 45/50, w 10/80, h 10/50
    assert (tmp_path / "labels" / "b.txt").read_text() == "1 0.937500 0.900000 0.125000 0.200000\n"
    assert sorted(p.name for p in lab.iterdir()) == ["a~R1.txt", "a~R2.txt", "b~R1.txt", "c~R2.txt"]


# ----------------------------------------------------------------------------- fusion: image table and CSV edges
@pytest.mark.parametrize("method", ["wbf", "nms", "nmw", "none"])
def test_an_image_listed_twice_fuses_as_listed_once(method):
    """An image table that lists an image twice (two source files naming different PNGs) fuses
    as with one row for it: same boxes as ensemble-boxes, same n_raters."""
    once = _images([("a", 100, 100, "R1|R2"), ("b", 50, 50, "R1")])
    twice = pd.concat([once, once.iloc[:1].assign(path="elsewhere/a.png")], ignore_index=True)
    boxes = _boxes([("a", 0, "R1", 10, 10, 50, 50, 0.9), ("a", 0, "R2", 12, 12, 52, 52, 0.8),
                    ("b", 1, "R1", 5, 5, 25, 25, 0.7)])
    out = fuse(boxes, twice, method)
    pd.testing.assert_frame_equal(out, fuse(boxes, once, method))
    if method != "none":
        assert_same(out, reference(boxes, once, method))
    assert out.groupby("image_id")["n_raters"].max().to_dict() == ({"a": 1, "b": 1} if method == "none"
                                                                   else {"a": 2, "b": 1})


def test_bad_size_message_names_the_zero_sized_image_after_a_one_pixel_one():
    """A 1 x 1 image is a valid size; the message names the first image of size 0, even after it."""
    images = _images([("p", 1, 1, "R1"), ("z", 40, 0, "R1")])
    boxes = _boxes([("p", 0, "R1", 0, 0, 1, 1), ("z", 0, "R1", 1, 1, 5, 5)])
    with pytest.raises(ValueError, match=r"fuse: image 'z' has height x width 40 x 0; expected its size"):
        fuse(boxes, images)


def test_competition_csv_leaves_an_unknown_n_raters_empty(tmp_path):
    """A fused table whose n_raters is unknown for some boxes (NaN, e.g. fused boxes put together
    with boxes of a source that does not count raters) writes those as empty fields and the others
    as integers, as the normal rows do."""
    images = _images([("a", 100, 100, "R1|R2"), ("n", 50, 50, "R1")])
    fused = _boxes([("a", 3, "", 10, 10, 50, 60, 0.75), ("a", 5, "", 1, 2, 3, 4, 0.5)]).assign(n_raters=[2.0, np.nan])
    text = write_competition_csv(fused, images, tmp_path / "f.csv").read_text().splitlines()
    assert text[1:] == ["a,c3,3,,10.0,10.0,50.0,60.0,2", "a,c5,5,,1.0,2.0,3.0,4.0,", "n,No finding,14,,,,,,1"]
