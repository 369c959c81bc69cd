"""data_prep.prep: `cxrdet prep` end to end on tiny phantom datasets, step reuse, config checks."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from data_prep.core import boxes as bx
from data_prep.core.config import load_config
from data_prep.prep import prep, read_table
from detection.cli import main as cli

VIN_ARGS = ["folds=3", "size=64", "workers=1"]


@pytest.fixture(scope="module")
def vin_data(tmp_path_factory):
    """12 VinBigData phantoms (originals ~96 px on the long side), 3 radiologists per image."""
    from data_prep.phantoms.synth import synth_vinbigdata

    d = tmp_path_factory.mktemp("vin") / "data"
    res = synth_vinbigdata(d, n=12, n_test=2, size=96, seed=3)
    return d, res["train"]


@pytest.fixture(scope="module")
def vin_out(vin_data, tmp_path_factory):
    data, _ = vin_data
    out = tmp_path_factory.mktemp("vin_out") / "out"
    res = prep(load_config("vinbigdata", VIN_ARGS), data, out)
    return out, res


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*")) if p.is_file()}


def test_vinbigdata_outputs(vin_data, vin_out):
    data, truth_images = vin_data
    out, res = vin_out
    assert res["ran"] == ["convert", "load", "fuse", "folds", "export"]
    for name in ("meta.csv", "images.csv", "boxes.csv", "fused.csv", "fused_boxes.csv", "folds.csv", "prep.json"):
        assert (out / name).is_file(), name
    images = read_table(out / "images.csv")
    assert len(images) == 12 and sorted(p.name for p in (out / "images").glob("*.png")) == \
        sorted(f"{i}.png" for i in images["image_id"])
    # original sizes from the DICOMs, PNG sizes from the conversion (square 64)
    want = truth_images.set_index("image_id")[["height", "width"]]
    got = images.set_index("image_id")
    assert (got.loc[want.index, "height"] == want["height"]).all()
    assert (got.loc[want.index, "width"] == want["width"]).all()
    assert (images["png_height"] == 64).all() and (images["png_width"] == 64).all()
    assert all(Path(p) == out / "images" / f"{i}.png" for i, p in zip(images["image_id"], images["path"]))

    # raw boxes = the train.csv findings; fused = one box per WBF cluster
    raw = pd.read_csv(data / "train.csv", dtype={"image_id": str})
    boxes, fused = read_table(out / "boxes.csv"), read_table(out / "fused_boxes.csv")
    assert len(boxes) == int((raw["class_id"] != 14).sum())
    assert 0 < len(fused) < len(boxes) and (fused["n_raters"] >= 1).all()
    normal = set(images["image_id"]) - set(fused["image_id"])
    assert res["summary"]["normal"] == len(normal) and res["summary"]["images"] == 12
    assert res["summary"]["boxes_raw"] == len(boxes) and res["summary"]["boxes_fused"] == len(fused)

    # YOLO labels: one line per fused box, equal to the box mapped into the 64 px PNG, normalised
    for iid in images["image_id"]:
        text = (out / "labels" / f"{iid}.txt").read_text()
        f = fused[fused["image_id"] == iid]
        if iid in normal:
            assert text == ""
            continue
        lab = np.array([[float(v) for v in ln.split()] for ln in text.splitlines()])
        r = got.loc[iid]
        frame = bx.frame_for(int(r["height"]), int(r["width"]), 64)
        xyxy = np.clip(f[bx.COORDS].to_numpy(), 0, [r["width"], r["height"]] * 2)
        np.testing.assert_allclose(lab[:, 1:], bx.xyxy_to_yolo(bx.to_frame(xyxy, frame), 64, 64), atol=2e-6)
        np.testing.assert_array_equal(lab[:, 0], f["class_id"].to_numpy())

    # folds: every image once, 3 non-empty folds; YOLO lists and COCO follow them
    folds = read_table(out / "folds.csv")
    assert sorted(folds["image_id"]) == sorted(images["image_id"])
    assert sorted(folds["fold"].unique()) == [0, 1, 2] and res["summary"]["fold_sizes"] == \
        folds["fold"].value_counts().sort_index().tolist()
    for k in range(3):
        val = (out / "yolo" / f"fold{k}" / "val.txt").read_text().split()
        train = (out / "yolo" / f"fold{k}" / "train.txt").read_text().split()
        assert sorted(Path(p).stem for p in val) == sorted(folds.loc[folds["fold"] == k, "image_id"])
        assert len(train) + len(val) == 12 and not set(train) & set(val)
        data_yaml = yaml.safe_load((out / "yolo" / f"fold{k}" / "data.yaml").read_text())
        assert data_yaml["nc"] == 14 and data_yaml["names"][13] == "Pulmonary fibrosis"
        coco = json.loads((out / "coco" / f"fold{k}_val.json").read_text())
        assert len(coco["images"]) == len(val)
    assert res["data_yaml"] == [out / "yolo" / f"fold{k}" / "data.yaml" for k in range(3)]

    # fused.csv: competition form, one "No finding" row per normal image
    comp = pd.read_csv(out / "fused.csv", dtype={"image_id": str})
    assert sorted(comp.loc[comp["class_id"] == 14, "image_id"]) == sorted(normal)
    assert int((comp["class_id"] != 14).sum()) == len(fused)

    man = json.loads((out / "prep.json").read_text())
    assert list(man["steps"]) == ["convert", "load", "fuse", "folds", "export"]
    assert man["steps"]["fuse"]["fingerprint"]["fusion_iou"] == 0.4
    assert man["steps"]["convert"]["fingerprint"]["size"] == 64
    assert man["config"]["folds"] == 3 and man["counts"]["images"] == 12


def test_rerun_reuses_and_fusion_iou_redoes_only_later_steps(vin_data, tmp_path, caplog):
    data, _ = vin_data
    out = tmp_path / "out"
    prep(load_config("vinbigdata", VIN_ARGS), data, out)
    before = _mtimes(out)

    with caplog.at_level(logging.INFO, logger="data_prep.prep"):
        res = prep(load_config("vinbigdata", VIN_ARGS), data, out)
    assert res["ran"] == [] and res["reused"] == ["convert", "load", "fuse", "folds", "export"]
    for step in res["reused"]:
        assert f"reusing {step}" in caplog.text
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if k != "prep.json"} == {k: v for k, v in before.items() if k != "prep.json"}

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="data_prep.prep"):
        res = prep(load_config("vinbigdata", VIN_ARGS + ["fusion_iou=0.6"]), data, out)
    assert res["reused"] == ["convert", "load"] and res["ran"] == ["fuse", "folds", "export"]
    assert "running fuse (changed: fusion_iou)" in caplog.text
    changed = _mtimes(out)
    for k, v in before.items():
        if k.startswith("images/") or k in ("meta.csv", "images.csv", "boxes.csv"):
            assert changed[k] == v, f"{k} was rewritten"
    for k in ("fused_boxes.csv", "folds.csv", "yolo/fold0/data.yaml", "coco/fold0_val.json"):
        assert changed[k] != before[k], f"{k} was not rewritten"
    assert json.loads((out / "prep.json").read_text())["steps"]["fuse"]["fingerprint"]["fusion_iou"] == 0.6

    # a missing output makes its step (and only the later ones) run again
    shutil.rmtree(out / "coco")
    res = prep(load_config("vinbigdata", VIN_ARGS + ["fusion_iou=0.6"]), data, out)
    assert res["ran"] == ["export"] and (out / "coco" / "fold2_train.json").is_file()


def test_png_folder_used_as_is(vin_data, vin_out, tmp_path):
    """A folder of PNGs (Kaggle's resized sets) + image_id,dim0,dim1 meta: PNGs linked, not
    converted; original sizes from the meta; YOLO labels identical to the DICOM route's."""
    data, truth_images = vin_data
    out_dicom, _ = vin_out
    d = tmp_path / "data"
    (d / "train").mkdir(parents=True)
    for p in (out_dicom / "images").glob("*.png"):
        shutil.copy(p, d / "train" / p.name)
    shutil.copy(data / "train.csv", d / "train.csv")
    truth_images.rename(columns={"height": "dim0", "width": "dim1"})[["image_id", "dim0", "dim1"]] \
        .to_csv(d / "train_meta.csv", index=False)
    out = tmp_path / "out"
    res = prep(load_config("vinbigdata", VIN_ARGS + ["meta=train_meta.csv"]), d, out)
    man = json.loads((out / "prep.json").read_text())
    assert man["steps"]["convert"]["info"]["mode"] == "png"
    links = sorted((out / "images").glob("*.png"))
    assert len(links) == 12 and all(p.is_symlink() and p.resolve().parent == (d / "train").resolve() for p in links)
    images = read_table(out / "images.csv").set_index("image_id")
    want = truth_images.set_index("image_id")
    assert (images.loc[want.index, "height"] == want["height"]).all()
    assert (images.loc[want.index, "png_width"] == 64).all()
    for p in (out_dicom / "labels").glob("*.txt"):
        assert (out / "labels" / p.name).read_text() == p.read_text()
    assert res["summary"]["boxes_fused"] == len(read_table(out_dicom / "fused_boxes.csv"))


def test_rsna_end_to_end(tmp_path):
    from data_prep.phantoms.synth import synth_rsna

    d = tmp_path / "rsna"
    synth_rsna(d, n=10, n_test=2, seed=1)
    out = tmp_path / "out"
    res = prep(load_config("rsna", ["folds=2", "size=32", "workers=1"]), d, out)
    images, boxes = read_table(out / "images.csv"), read_table(out / "boxes.csv")
    lab = pd.read_csv(d / "stage_2_train_labels.csv")
    assert len(images) == 10 and (images["height"] == 1024).all() and (images["png_height"] == 32).all()
    assert len(boxes) == int(lab["Target"].sum()) and (boxes["class_id"] == 0).all()
    assert (images["patient_id"] == images["image_id"]).all()
    assert set(images["detailed_class"]) <= {"Lung Opacity", "Normal", "No Lung Opacity / Not Normal"}
    assert (images.loc[images["image_id"].isin(boxes["image_id"]), "detailed_class"] == "Lung Opacity").all()
    data_yaml = yaml.safe_load(res["data_yaml"][0].read_text())
    assert data_yaml["nc"] == 1 and data_yaml["names"] == {0: "Lung Opacity"}
    # fusion none: fused = raw boxes; YOLO numbers from the RSNA x,y,width,height in 1024 px
    fused = read_table(out / "fused_boxes.csv")
    assert len(fused) == len(boxes)
    row = lab[lab["Target"] == 1].iloc[0]
    line = (out / "labels" / f"{row['patientId']}.txt").read_text().splitlines()
    cx, cy = (row["x"] + row["width"] / 2) / 1024, (row["y"] + row["height"] / 2) / 1024
    want = f"0 {cx:.6f} {cy:.6f} {row['width'] / 1024:.6f} {row['height'] / 1024:.6f}"
    assert want in line


def test_unknown_config_key_rejected_with_valid_keys(vin_data, tmp_path, capsys):
    data, _ = vin_data
    rc = cli(["prep", "--config", "vinbigdata", "--data", str(data), "--out", str(tmp_path / "o"), "fusion_ioo=0.5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "unknown key 'fusion_ioo'" in err and "did you mean 'fusion_iou'" in err
    assert "Valid keys:" in err and "include_normal" in err and "fusion_conf_type" in err
    assert not (tmp_path / "o").exists()


def test_errors_name_the_missing_input(vin_data, tmp_path):
    data, _ = vin_data
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        prep(load_config("vinbigdata", VIN_ARGS + ["labels=nope.csv"]), data, tmp_path / "o1")
    with pytest.raises(FileNotFoundError, match=r"images folder .*/no_dir does not exist"):
        prep(load_config("vinbigdata", VIN_ARGS + ["images_dir=no_dir"]), data, tmp_path / "o2")
    with pytest.raises(ValueError, match=r"key 'export': item 'voc' is not one of yolo \| coco"):
        prep(load_config("vinbigdata", VIN_ARGS + ["export=[yolo,voc]"]), data, tmp_path / "o3")
    empty = tmp_path / "empty" / "train"
    empty.mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "empty" / "x.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match="no DICOM .* or PNG files in"):
        prep(load_config("vinbigdata", VIN_ARGS), tmp_path / "empty", tmp_path / "o4")


NIH_BOXES = """Image Index,Finding Label,Bbox [x,y,w,h],,,
00000001_000.png,Cardiomegaly,300,500,400,250
00000001_001.png,Effusion,600,600,200,150
00000002_000.png,Nodule,100,100,50,40
00000002_000.png,Mass,700,300,120,100
00000003_000.png,Atelectasis,200,400,150,80
00000003_002.png,Pneumothorax,650,100,250,300
00000004_000.png,Infiltrate,300,300,200,200
00000004_001.png,Pneumonia,980,980,100,100
"""
NIH_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def test_nih_png_folder_grouped_by_patient(tmp_path):
    """NIH: PNGs used as is (1024 px frame, written here at 64 px), boxes from BBox_List, patients
    from Data_Entry; unboxed images left out; no patient in two folds."""
    d = tmp_path / "nih"
    (d / "images").mkdir(parents=True)
    boxed = ["00000001_000", "00000001_001", "00000002_000", "00000003_000", "00000003_002",
             "00000004_000", "00000004_001"]
    unboxed = ["00000005_000", "00000001_002"]
    rows = [NIH_ENTRY_HEADER]
    for i in boxed + unboxed:
        cv2.imwrite(str(d / "images" / f"{i}.png"), np.full((64, 64), 100, np.uint8))
        rows.append(f"{i}.png,No Finding,0,{int(i[:8])},50,M,PA,2500,2048,0.143,0.143")
    (d / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    (d / "BBox_List_2017.csv").write_text(NIH_BOXES)
    out = tmp_path / "out"
    res = prep(load_config("nih", ["folds=2"]), d, out)
    images = read_table(out / "images.csv")
    assert sorted(images["image_id"]) == boxed
    assert (images["height"] == 1024).all() and (images["png_height"] == 64).all()
    folds = read_table(out / "folds.csv").merge(images[["image_id", "patient_id"]], on="image_id")
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1
    assert sorted(folds["fold"].unique()) == [0, 1]
    assert yaml.safe_load(res["data_yaml"][0].read_text())["names"][2] == "Effusion"
    # 00000002_000: Nodule (class 5) 100,100,50,40 and Mass (class 4) 700,300,120,100 in 1024 px
    assert sorted((out / "labels" / "00000002_000.txt").read_text().splitlines()) == sorted([
        f"5 {125 / 1024:.6f} {120 / 1024:.6f} {50 / 1024:.6f} {40 / 1024:.6f}",
        f"4 {760 / 1024:.6f} {350 / 1024:.6f} {120 / 1024:.6f} {100 / 1024:.6f}"])
    # 00000004_001: box 980,980,+100,+100 clipped by the loader to 1024 -> 980..1024
    assert (out / "labels" / "00000004_001.txt").read_text() == \
        f"6 {1002 / 1024:.6f} {1002 / 1024:.6f} {44 / 1024:.6f} {44 / 1024:.6f}\n"
    assert res["summary"]["repairs"]["outside_clipped"] == 1
    assert res["summary"]["normal"] == 0 and res["summary"]["boxes_fused"] == 8


def test_raters_subset_and_weights(vin_data, vin_out, tmp_path):
    """raters: [R8, R10] keeps their labels only and leaves out the 3 images neither read (counted,
    printed); rater_weights reaches the fusion; reuses convert, redoes load onward."""
    from data_prep.datasets import vinbigdata
    from data_prep.labels.fusion import fuse, select_raters

    data, _ = vin_data
    out_all, _ = vin_out
    out = tmp_path / "out"
    shutil.copytree(out_all, out, symlinks=True)
    args = VIN_ARGS + ["raters=[R8, R10]", "rater_weights={R8: 2}"]
    res = prep(load_config("vinbigdata", args), data, out)
    assert res["ran"] == ["load", "fuse", "folds", "export"]
    s = res["summary"]["raters"]
    assert s["raters"] == ["R8", "R10"] and s["images_left_out"] == 3 and s["images_kept"] == 9
    images, boxes = read_table(out / "images.csv"), read_table(out / "boxes.csv")
    assert len(images) == 9 and set(boxes["rater"]) <= {"R8", "R10"} and set(images["raters"]) == {"R10|R8"}
    assert len(read_table(out / "folds.csv")) == 9
    # fused_boxes.csv is the direct fusion of those radiologists' boxes with the weights
    im, bx = vinbigdata.load(data / "train.csv", out / "meta.csv")
    im, bx, _ = select_raters(im, bx, ["R8", "R10"])
    want = fuse(bx, im, weights={"R8": 2})
    got = read_table(out / "fused_boxes.csv")
    cols = ["image_id", "class_id", "x_min", "y_min", "x_max", "y_max", "score"]
    pd.testing.assert_frame_equal(got[cols].sort_values(cols, ignore_index=True),
                                  want[cols].sort_values(cols, ignore_index=True), check_dtype=False)
    assert cli(["prep", "--config", "vinbigdata", "--data", str(data), "--out", str(out)] + args) == 0


def _nih_folder(d: Path, png_size: int = 64) -> list[str]:
    """A tiny NIH-layout folder: images/*.png, BBox_List_2017.csv, Data_Entry_2017.csv."""
    (d / "images").mkdir(parents=True)
    boxed = ["00000001_000", "00000001_001", "00000002_000", "00000003_000", "00000003_002",
             "00000004_000", "00000004_001"]
    rows = [NIH_ENTRY_HEADER]
    for i in boxed + ["00000005_000"]:
        cv2.imwrite(str(d / "images" / f"{i}.png"), np.full((png_size, png_size), 100, np.uint8))
        rows.append(f"{i}.png,No Finding,0,{int(i[:8])},50,M,PA,2500,2048,0.143,0.143")
    (d / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    (d / "BBox_List_2017.csv").write_text(NIH_BOXES)
    return boxed


def test_extra_nih_merged_as_one_more_rater(vin_data, vin_out, tmp_path):
    """extra: [nih] on VinBigData phantoms: NIH's boxes under VinBigData classes (Effusion -> Pleural
    effusion, Mass and Nodule -> Nodule/Mass, Infiltrate -> Infiltration; the Pneumonia-only image
    00000004_001 dropped), rater NIH, NIH images at 1024 with their 64 px PNGs, patient ids
    prefixed by dataset, folds patient-disjoint, YOLO and COCO over both."""
    from data_prep.datasets import nih, vinbigdata

    data, _ = vin_data
    out_all, _ = vin_out
    nih_dir = tmp_path / "nih"
    _nih_folder(nih_dir)
    out = tmp_path / "out"
    shutil.copytree(out_all, out, symlinks=True)
    args = VIN_ARGS + ["extra=[nih]", f"extra_dirs={{nih: {nih_dir}}}"]
    res = prep(load_config("vinbigdata", args), data, out)
    assert res["ran"] == ["extra_nih", "load", "fuse", "folds", "export"]
    e = res["summary"]["extra"]["nih"]
    assert e["images"] == 6 and e["boxes"] == 7 and e["boxes_dropped"] == 1 and e["dropped_classes"] == {"Pneumonia": 1}
    assert e["patients"] == 4
    images, boxes = read_table(out / "images.csv"), read_table(out / "boxes.csv")
    n = images[images["dataset"] == "nih"].set_index("image_id")
    assert sorted(n.index) == ["00000001_000", "00000001_001", "00000002_000", "00000003_000", "00000003_002",
                               "00000004_000"]
    assert (n["height"] == 1024).all() and (n["width"] == 1024).all() and (n["png_height"] == 64).all()
    assert (n["raters"] == nih.RATER).all() and n.loc["00000001_001", "patient_id"] == "nih/00000001"
    v = images[images["dataset"] == "vinbigdata"]
    assert len(v) == 12 and v["patient_id"].str.startswith("vinbigdata/").all()
    assert all((out / "images" / f"{i}.png").resolve() == (nih_dir / "images" / f"{i}.png").resolve() for i in n.index)
    nb = boxes[boxes["rater"] == nih.RATER]
    cls = vinbigdata.CLASSES.index
    got = sorted(zip(nb["image_id"], nb["class_id"], nb["class_name"]))
    assert got == sorted([
        ("00000001_000", cls("Cardiomegaly"), "Cardiomegaly"), ("00000001_001", cls("Pleural effusion"), "Pleural effusion"),
        ("00000002_000", cls("Nodule/Mass"), "Nodule/Mass"), ("00000002_000", cls("Nodule/Mass"), "Nodule/Mass"),
        ("00000003_000", cls("Atelectasis"), "Atelectasis"), ("00000003_002", cls("Pneumothorax"), "Pneumothorax"),
        ("00000004_000", cls("Infiltration"), "Infiltration")])
    # folds: every patient in one fold, NIH images in the folds too
    folds = read_table(out / "folds.csv").merge(images[["image_id", "patient_id"]], on="image_id")
    assert len(folds) == 18 and folds.groupby("patient_id")["fold"].nunique().max() == 1
    # YOLO: NIH Effusion at 600,600 +200x150 in the 1024 frame -> Pleural effusion, normalised by 1024
    assert (out / "labels" / "00000001_001.txt").read_text() == (
        f"{cls('Pleural effusion')} {700 / 1024:.6f} {675 / 1024:.6f} {200 / 1024:.6f} {150 / 1024:.6f}\n")
    coco = {i: json.loads((out / "coco" / f"fold{i}_val.json").read_text()) for i in range(3)}
    coco_ids = {im["file_name"].split("/")[-1].removesuffix(".png") for c in coco.values() for im in c["images"]}
    assert set(n.index) <= coco_ids and set(v["image_id"]) <= coco_ids
    nih_im = [im for c in coco.values() for im in c["images"] if im["file_name"].startswith("00000002_000")][0]
    assert (nih_im["height"], nih_im["width"]) == (1024, 1024)          # boxes in the 1024 frame
    # NIH is one more rater for a subset too
    res = prep(load_config("vinbigdata", args + ["raters=[R8, NIH]"]), data, out)
    assert set(read_table(out / "boxes.csv")["rater"]) <= {"R8", "NIH"} and res["summary"]["raters"]["images_left_out"] == 3


def test_extra_errors(vin_data, tmp_path):
    data, _ = vin_data
    with pytest.raises(ValueError, match=r"extra: \[nih\] needs its folder: set extra_dirs"):
        prep(load_config("vinbigdata", VIN_ARGS + ["extra=[nih]"]), data, tmp_path / "o")
    with pytest.raises(ValueError, match="'rsna' cannot be merged into 'vinbigdata'"):
        prep(load_config("vinbigdata", VIN_ARGS + ["extra=[rsna]"]), data, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="extra_dirs.nih: folder .* does not exist"):
        prep(load_config("vinbigdata", VIN_ARGS + ["extra=[nih]", f"extra_dirs={{nih: {tmp_path / 'no'}}}"]),
             data, tmp_path / "o")
