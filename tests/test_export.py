"""data_prep.labels.export: YOLO labels/lists/data.yaml and COCO json from the canonical tables."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from data_prep.core import boxes as bx
from data_prep.labels.export import label_path_for, write_coco, write_yolo

NAMES = ["Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly"]


def make_dataset(out: Path, keep_ratio=True, size=64):
    """4 images (1000 x 800 and 600 x 900 originals), PNGs in out/images at ``size`` px, 2 folds.

    a: two boxes (one sticks out of the image by 10 px: clipped); b: one box; c, d: normal."""
    sizes = {"a": (1000, 800), "b": (600, 900), "c": (1000, 800), "d": (600, 900)}
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for iid, (h, w) in sizes.items():
        fh, fw = bx.keep_ratio_size(h, w, size) if keep_ratio else (size, size)
        png = out / "images" / f"{iid}.png"
        cv2.imwrite(str(png), np.full((fh, fw), 128, np.uint8))
        rows.append((iid, h, w, str(png), f"P{iid}", fh, fw))
    images = pd.DataFrame(rows, columns=["image_id", "height", "width", "path", "patient_id",
                                         "png_height", "png_width"])
    boxes = bx.make_boxes(["a", "a", "b"], [3, 0, 1], [NAMES[3], NAMES[0], NAMES[1]],
                          [[100, 200, 300, 600], [700, 900, 850, 1010], [90, 60, 450, 300]])
    folds = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "fold": [0, 1, 1, 0]})
    return images, boxes, folds


def read_labels(path: Path) -> np.ndarray:
    return np.loadtxt(path, ndmin=2) if path.stat().st_size else np.zeros((0, 5))


def test_yolo_label_numbers(tmp_path):
    images, boxes, folds = make_dataset(tmp_path)
    res = write_yolo(images, boxes, folds, tmp_path, NAMES)
    assert res["n_labels"] == 4 and res["n_dropped"] == 0
    # image a, 1000 high x 800 wide: box 100,200,300,600 -> cx 200/800, cy 400/1000, w 200/800, h 400/1000
    # box 700,900,850,1010 clipped to 700,900,800,1000 -> cx 750/800, cy 950/1000, w 100/800, h 100/1000
    assert (tmp_path / "labels" / "a.txt").read_text() == (
        "3 0.250000 0.400000 0.250000 0.400000\n0 0.937500 0.950000 0.125000 0.100000\n")
    # image b, 600 x 900: box 90,60,450,300 -> cx 270/900, cy 180/600, w 360/900, h 240/600
    assert (tmp_path / "labels" / "b.txt").read_text() == "1 0.300000 0.300000 0.400000 0.400000\n"
    for iid in "cd":                                   # normal images: empty label = background
        assert (tmp_path / "labels" / f"{iid}.txt").read_text() == ""
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["a.txt", "b.txt", "c.txt", "d.txt"]


@pytest.mark.parametrize("keep_ratio", [True, False])
def test_yolo_normalised_equals_png_frame(tmp_path, keep_ratio):
    """The label computed from ORIGINAL pixels equals the box mapped into the PNG (to_frame) and
    normalised by the PNG's own size, for keep-ratio (410 x 512 / 512 x 341 PNGs) and square."""
    images, boxes, folds = make_dataset(tmp_path, keep_ratio=keep_ratio, size=512)
    write_yolo(images, boxes, folds, tmp_path, NAMES)
    for iid, (h, w) in (("a", (1000, 800)), ("b", (600, 900))):
        png_h, png_w = cv2.imread(str(tmp_path / "images" / f"{iid}.png"), cv2.IMREAD_GRAYSCALE).shape
        assert (png_h, png_w) == ((bx.keep_ratio_size(h, w, 512) if keep_ratio else (512, 512)))
        frame = bx.frame_for(h, w, 512, keep_ratio=keep_ratio)
        assert (frame.frame_h, frame.frame_w) == (png_h, png_w)
        sel = boxes[boxes["image_id"] == iid]
        xyxy = np.clip(sel[bx.COORDS].to_numpy(), 0, [w, h, w, h])
        expected = bx.xyxy_to_yolo(bx.to_frame(xyxy, frame), png_h, png_w)
        got = read_labels(tmp_path / "labels" / f"{iid}.txt")
        np.testing.assert_array_equal(got[:, 0], sel["class_id"].to_numpy())
        np.testing.assert_allclose(got[:, 1:], expected, atol=1e-6)


def test_yolo_lists_and_data_yaml(tmp_path):
    images, boxes, folds = make_dataset(tmp_path)
    res = write_yolo(images, boxes, folds, tmp_path, NAMES)
    img = {i: str((tmp_path / "images" / f"{i}.png").resolve()) for i in "abcd"}
    f0, f1 = tmp_path / "yolo" / "fold0", tmp_path / "yolo" / "fold1"
    assert res["data_yaml"] == [f0 / "data.yaml", f1 / "data.yaml"]
    assert (f0 / "val.txt").read_text().splitlines() == [img["a"], img["d"]]
    assert (f0 / "train.txt").read_text().splitlines() == [img["b"], img["c"]]
    assert (f1 / "val.txt").read_text().splitlines() == [img["b"], img["c"]]
    assert (f1 / "train.txt").read_text().splitlines() == [img["a"], img["d"]]
    data = yaml.safe_load((f0 / "data.yaml").read_text())
    assert data == {"path": str(f0.resolve()), "train": "train.txt", "val": "val.txt", "nc": 4,
                    "names": {0: "Aortic enlargement", 1: "Atelectasis", 2: "Calcification", 3: "Cardiomegaly"}}
    for p in img.values():                      # ultralytics' /images/ -> /labels/ rule finds our files
        assert Path(label_path_for(p)).is_file()

    # without normal images: train lists lose c and d, val lists keep whole folds
    write_yolo(images, boxes, folds, tmp_path, NAMES, include_normal=False, channels=1)
    assert (f0 / "train.txt").read_text().splitlines() == [img["b"]]
    assert (f1 / "train.txt").read_text().splitlines() == [img["a"]]
    assert (f1 / "val.txt").read_text().splitlines() == [img["b"], img["c"]]
    assert yaml.safe_load((f1 / "data.yaml").read_text())["channels"] == 1


def test_reexport_replaces_stale_files(tmp_path):
    images, boxes, folds = make_dataset(tmp_path)
    write_yolo(images, boxes, folds, tmp_path, NAMES)
    write_coco(images, boxes, folds, tmp_path, NAMES)
    (tmp_path / "labels.cache").write_text("stale")
    keep = images["image_id"] != "d"
    one_fold = pd.DataFrame({"image_id": ["a", "b", "c"], "fold": [0, 1, 0]})
    write_yolo(images[keep], boxes, one_fold, tmp_path, NAMES)
    write_coco(images[keep], boxes, one_fold, tmp_path, NAMES)
    assert not (tmp_path / "labels" / "d.txt").exists()
    assert not (tmp_path / "labels.cache").exists()
    assert sorted(p.name for p in (tmp_path / "yolo").iterdir()) == ["fold0", "fold1"]
    assert sorted(p.name for p in (tmp_path / "coco").iterdir()) == [
        "fold0_train.json", "fold0_val.json", "fold1_train.json", "fold1_val.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def ultralytics_offline(tmp_path_factory):
    if "ultralytics" not in __import__("sys").modules:
        os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("yolo_cfg")))
    import detection.models.runtime  # noqa: F401  (offline env + fonts before ultralytics)
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset, img2label_paths
    return check_det_dataset, YOLODataset, img2label_paths


@pytest.mark.parametrize("channels", [3, 1])
def test_ultralytics_accepts_data_yaml_and_reads_our_labels(tmp_path, ultralytics_offline, channels):
    check_det_dataset, YOLODataset, img2label_paths = ultralytics_offline
    images, boxes, folds = make_dataset(tmp_path)
    write_yolo(images, boxes, folds, tmp_path, NAMES, channels=channels)
    data = check_det_dataset(str(tmp_path / "yolo" / "fold1" / "data.yaml"))
    assert data["nc"] == 4 and data["names"][3] == "Cardiomegaly" and data["channels"] == channels
    assert data["train"] == str((tmp_path / "yolo" / "fold1" / "train.txt").resolve())
    paths = [str((tmp_path / "images" / f"{i}.png").resolve()) for i in "abcd"]
    assert img2label_paths(paths) == [label_path_for(p) for p in paths]
    # the trainer's dataset finds a's two labels, in our numbers
    ds = YOLODataset(img_path=data["train"], data=data, task="detect", imgsz=64, augment=False)
    assert [Path(lb["im_file"]).stem for lb in ds.labels] == ["a", "d"]
    a = ds.labels[0]
    np.testing.assert_array_equal(a["cls"].ravel(), [3, 0])
    np.testing.assert_allclose(a["bboxes"], [[0.25, 0.4, 0.25, 0.4], [0.9375, 0.95, 0.125, 0.1]], atol=1e-6)
    assert len(ds.labels[1]["cls"]) == 0                  # d: background image


def test_coco_loads_and_round_trips(tmp_path):
    from pycocotools.coco import COCO

    images, boxes, folds = make_dataset(tmp_path)
    written = write_coco(images, boxes, folds, tmp_path, NAMES)
    assert [p.name for p in written] == ["fold0_train.json", "fold0_val.json", "fold1_train.json", "fold1_val.json"]
    seen = {}
    for path in written:
        coco = COCO(str(path))
        assert sorted(coco.getCatIds()) == [0, 1, 2, 3]
        assert coco.loadCats(3)[0]["name"] == "Cardiomegaly"
        for im in coco.dataset["images"]:
            seen.setdefault(im["file_name"], im["id"])
            assert seen[im["file_name"]] == im["id"]     # same image, same id in every file
            row = images.set_index("image_id").loc[im["file_name"]]
            assert (im["height"], im["width"]) == (row["height"], row["width"])   # ORIGINAL size
            assert (im["png_height"], im["png_width"]) == (row["png_height"], row["png_width"])
            assert im["png_file"] == str(Path(row["path"]).resolve())
            anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
            truth = boxes[boxes["image_id"] == im["file_name"]]
            assert len(anns) == len(truth)
            if anns:
                xyxy = bx.xywh_to_xyxy([a["bbox"] for a in anns])
                want = np.clip(truth[bx.COORDS].to_numpy(), 0, [row["width"], row["height"]] * 2)
                np.testing.assert_allclose(xyxy, want, atol=1.0)
                assert [a["category_id"] for a in anns] == truth["class_id"].tolist()
                for a in anns:
                    assert a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], abs=0.01)
    assert seen == {"a": 1, "b": 2, "c": 3, "d": 4}
    val0 = json.loads((tmp_path / "coco" / "fold0_val.json").read_text())
    assert [im["file_name"] for im in val0["images"]] == ["a", "d"]
    assert len(val0["annotations"]) == 2
    # include_normal=False drops c (fold 1) from fold 0's train set only
    write_coco(images, boxes, folds, tmp_path, NAMES, include_normal=False)
    tr0 = json.loads((tmp_path / "coco" / "fold0_train.json").read_text())
    assert [im["file_name"] for im in tr0["images"]] == ["b"]


def test_export_errors(tmp_path):
    images, boxes, folds = make_dataset(tmp_path)
    with pytest.raises(ValueError, match="image 'd' has no fold"):
        write_yolo(images, boxes, folds.iloc[:3], tmp_path, NAMES)
    with pytest.raises(ValueError, match="class_id 3 .* has no name"):
        write_coco(images, boxes, folds, tmp_path, NAMES[:3])
    elsewhere = images.assign(path=images["path"].str.replace("/images/", "/pngs/"))
    with pytest.raises(ValueError, match="would have its labels read from"):
        write_yolo(elsewhere, boxes, folds, tmp_path, NAMES)
    with pytest.raises(ValueError, match="channels = 2"):
        write_yolo(images, boxes, folds, tmp_path, NAMES, channels=2)


def test_box_clipped_to_zero_area_is_dropped_and_counted(tmp_path):
    """A box lying outside its image (clipped to zero width) must not reach the YOLO labels."""
    images, boxes, folds = make_dataset(tmp_path)
    outside = bx.make_boxes(["b"], [2], [NAMES[2]], [[905, 100, 950, 200]])      # b is 900 px wide
    res = write_yolo(images, pd.concat([boxes, outside], ignore_index=True), folds, tmp_path, NAMES)
    assert res["n_dropped"] == 1
    assert (tmp_path / "labels" / "b.txt").read_text() == "1 0.300000 0.300000 0.400000 0.400000\n"
    lab = read_labels(tmp_path / "labels" / "b.txt")
    assert (lab[:, 3] > 0).all() and (lab[:, 4] > 0).all()


def test_coco_json_by_hand(tmp_path):
    """The whole fold-0 COCO files of a small case, written out by hand: ids 1-based and stable,
    boxes clipped to the image, bbox and area rounded to 3 decimals, png sizes only where known,
    normal images in train by default, info/licenses/categories as COCO loaders expect."""
    (tmp_path / "images").mkdir()
    images = pd.DataFrame({"image_id": ["b", "a", "n"], "height": [100, 50, 80], "width": [200, 60, 80],
                           "path": [str(tmp_path / "images" / f"{i}.png") for i in "ban"],
                           "png_height": [64.0, np.nan, 64.0], "png_width": [128.0, np.nan, 64.0]})
    boxes = bx.make_boxes(["a", "b", "a"], [1, 0, 0], ["y", "x", "x"],
                          [[1.23456, 2.5, 10.0, 20.0], [150.0, 90.0, 250.0, 120.0], [0.0, 0.0, 5.5, 3.3333]])
    folds = pd.DataFrame({"image_id": ["a", "b", "n"], "fold": [0, 1, 1]})
    write_coco(images, boxes, folds, tmp_path, ["x", "y"])
    val0 = json.loads((tmp_path / "coco" / "fold0_val.json").read_text())
    train0 = json.loads((tmp_path / "coco" / "fold0_train.json").read_text())
    cats = [{"id": 0, "name": "x", "supercategory": "finding"}, {"id": 1, "name": "y", "supercategory": "finding"}]
    png = str(tmp_path / "images")
    assert val0 == {
        "info": {"description": "cxrdet fold 0 val", "version": "1.0"}, "licenses": [],
        "images": [{"id": 1, "file_name": "a", "height": 50, "width": 60, "png_file": f"{png}/a.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1.235, 2.5, 8.765, 17.5], "area": 153.395,
             "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 0, "bbox": [0.0, 0.0, 5.5, 3.333], "area": 18.333,
             "iscrowd": 0}],
        "categories": cats}
    assert train0 == {
        "info": {"description": "cxrdet fold 0 train", "version": "1.0"}, "licenses": [],
        "images": [{"id": 2, "file_name": "b", "height": 100, "width": 200, "png_file": f"{png}/b.png",
                    "png_height": 64, "png_width": 128},
                   {"id": 3, "file_name": "n", "height": 80, "width": 80, "png_file": f"{png}/n.png",
                    "png_height": 64, "png_width": 64}],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 0, "bbox": [150.0, 90.0, 50.0, 10.0],
                         "area": 500.0, "iscrowd": 0}],
        "categories": cats}
    write_coco(images, boxes, folds, tmp_path, ["x", "y"], include_normal=False)
    train0 = json.loads((tmp_path / "coco" / "fold0_train.json").read_text())
    assert [im["file_name"] for im in train0["images"]] == ["b"]


def test_label_paths_equal_ultralytics_for_tricky_names(ultralytics_offline):
    from ultralytics.data.utils import img2label_paths

    paths = ["/d/images/x/images/a.b.png", "/d/images.v2/images/c.png", "/d/images/images/e.tar.png"]
    assert [label_path_for(p) for p in paths] == img2label_paths(paths) == [
        "/d/images/x/labels/a.b.txt", "/d/images.v2/labels/c.txt", "/d/images/labels/e.tar.txt"]


def test_yolo_files_by_hand_clipping_order_and_names(tmp_path, monkeypatch):
    """Relative PNG paths become absolute in the lists; a box outside the image is clipped at 0 and
    at the image size before normalising; data.yaml keeps its key order and non-ASCII names as text."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    images = pd.DataFrame({"image_id": ["a", "b"], "height": [100, 100], "width": [200, 200],
                           "path": ["images/a.png", "images/b.png"]})
    boxes = bx.make_boxes(["a", "a"], [0, 1], ["Épanchement", "x"], [[-20, -10, 100, 50], [0.5, 99.5, 250, 130]])
    folds = pd.DataFrame({"image_id": ["a", "b"], "fold": [0, 1]})
    res = write_yolo(images, boxes, folds, ".", ["Épanchement", "x"])
    assert res["labels"] == tmp_path / "labels" and res["n_labels"] == 2 and res["n_dropped"] == 0
    # box 1 -> x 0..100, y 0..50; box 2 -> y 99.5..100 clipped: 0.5 px high, kept; x 0.5..200
    assert (tmp_path / "labels" / "a.txt").read_text() == (
        "0 0.250000 0.250000 0.500000 0.500000\n1 0.501250 0.997500 0.997500 0.005000\n")
    assert (tmp_path / "yolo" / "fold1" / "train.txt").read_text() == f"{tmp_path}/images/a.png\n"
    text = (tmp_path / "yolo" / "fold0" / "data.yaml").read_text()
    assert [ln.split(":")[0] for ln in text.splitlines()[1:6]] == ["path", "train", "val", "nc", "names"]
    assert "0: Épanchement" in text and yaml.safe_load(text)["names"] == {0: "Épanchement", 1: "x"}


def test_yolo_lines_and_coco_dict_keep_the_table_order(tmp_path):
    """yolo_lines is indexed like the box table and gives None for a box of zero height or width;
    coco_dict lists annotations by image_id and, within an image, in box-table order (40 boxes,
    two images interleaved), bbox rounded to 3 decimals; images without png_height/png_width
    columns get no png sizes; the description defaults to ""."""
    from data_prep.labels.export import coco_dict, yolo_lines

    images = pd.DataFrame({"image_id": ["b", "a"], "height": [100, 200], "width": [50, 80],
                           "path": [str(tmp_path / "b.png"), str(tmp_path / "a.png")]})
    xyxy = [[10, 20, 30, 20], [0, 0, 50, 100], [8, 20.12345, 40, 60], [5, 1, 5, 9]]
    boxes = bx.make_boxes(["b", "a", "b", "a"], [1, 0, 2, 0], [NAMES[1], NAMES[0], NAMES[2], NAMES[0]], xyxy)
    boxes.index = [10, 11, 12, 13]
    lines = yolo_lines(boxes, images)
    assert lines.index.tolist() == [10, 11, 12, 13] and lines.dtype == object
    assert lines[10] is None and lines[13] is None
    assert lines[11] == "0 0.312500 0.250000 0.625000 0.500000"
    d = coco_dict(images, boxes, dict(enumerate(NAMES)), {"a": 1, "b": 2})
    assert d["info"]["description"] == ""
    assert all(set(r) == {"id", "file_name", "height", "width", "png_file"} for r in d["images"])
    assert [a["bbox"][1] for a in d["annotations"]] == [0.0, 1.0, 20.0, 20.123]

    many = bx.make_boxes(["b", "a"] * 20, [0] * 40, [NAMES[0]] * 40, [[i, 1, i + 5, 9] for i in range(40)])
    anns = coco_dict(images, many, dict(enumerate(NAMES)), {"a": 1, "b": 2})["annotations"]
    assert [a["bbox"][0] for a in anns] == list(range(1, 40, 2)) + list(range(0, 40, 2))
    assert [a["id"] for a in anns] == list(range(1, 41))


def test_the_first_png_outside_the_export_folder_is_named(tmp_path):
    images, boxes, folds = make_dataset(tmp_path)
    elsewhere = images.assign(path=images["path"].str.replace("/images/", "/pngs/"))
    with pytest.raises(ValueError, match=r"^export: image 'a': PNG .*pngs.a\.png would have its labels"):
        write_yolo(elsewhere, boxes, folds, tmp_path, NAMES)
