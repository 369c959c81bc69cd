"""data_prep.datasets: each loader's columns and counts, bad-row policy, real-file checks."""
from __future__ import annotations

import ast
import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.core import boxes as bx
from data_prep import datasets
from data_prep.core.boxes import BOX_COLUMNS, IMAGE_COLUMNS
from data_prep.datasets import nih, rsna, vinbigdata

VB_HEADER = "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n"
VB_ROWS = [
    "a,Cardiomegaly,3,R9,10,20,110,220",
    "a,Aortic enlargement,0,R10,5,5,25,25",
    "a,Cardiomegaly,3,R8,12,22,112,222",
    "b,No finding,14,R1,,,,",
    "b,No finding,14,R3,,,,",
    "b,No finding,14,R10,,,,",
    "c,Nodule/Mass,8,R9,1.5,2.5,3.5,4.5",
]


def _write(path, text):
    path.write_text(text)
    return path


def _vb(tmp_path, rows=VB_ROWS, name="train.csv"):
    return _write(tmp_path / name, VB_HEADER + "\n".join(rows) + "\n")


@pytest.fixture
def vb_meta(tmp_path):
    return _write(tmp_path / "meta.csv", "image_id,dim0,dim1\na,300,200\nb,1000,900\nc,50,60\nz,9,9\n")


# ----------------------------------------------------------------------------- VinBigData
def test_vinbigdata_tables(tmp_path, vb_meta):
    images, boxes = vinbigdata.load(_vb(tmp_path), vb_meta, images_dir=tmp_path / "png")
    assert list(images.columns[:5]) == IMAGE_COLUMNS and "raters" in images
    assert list(boxes.columns) == BOX_COLUMNS
    assert images["image_id"].tolist() == ["a", "b", "c"]  # z (meta only) is not a labelled image
    assert images["height"].tolist() == [300, 1000, 50] and images["width"].tolist() == [200, 900, 60]
    assert images["raters"].tolist() == ["R10|R8|R9", "R1|R10|R3", "R9"]
    assert images["patient_id"].tolist() == ["a", "b", "c"]
    assert images["path"].iloc[0] == str(tmp_path / "png" / "a.png")
    assert len(boxes) == 4 and set(boxes["image_id"]) == {"a", "c"}  # b is normal: no box rows
    np.testing.assert_array_equal(boxes.iloc[3][["x_min", "y_min", "x_max", "y_max"]].astype(float), [1.5, 2.5, 3.5, 4.5])
    assert boxes["rater"].tolist() == ["R9", "R10", "R8", "R9"] and (boxes["score"] == 1.0).all()
    assert boxes["class_name"].tolist() == ["Cardiomegaly", "Aortic enlargement", "Cardiomegaly", "Nodule/Mass"]
    assert boxes.attrs["repairs"] == {"outside_clipped": 0, "no_finding_box_ignored": 0, "no_meta_dropped": 0}
    assert len(vinbigdata.CLASSES) == 14 and vinbigdata.NORMAL_ID == 14 and vinbigdata.NORMAL_NAME == "No finding"


def test_vinbigdata_meta_forms(tmp_path):
    labels = _vb(tmp_path)
    convert_meta = _write(tmp_path / "m.csv", "image_id,height,width,png_height,png_width\n"
                          "a,300,200,512,512\nb,1000,900,512,512\nc,50,60,512,512\n")
    images, _ = vinbigdata.load(labels, convert_meta)
    assert images["png_height"].tolist() == [512] * 3 and images["height"].tolist() == [300, 1000, 50]
    images, boxes = vinbigdata.load(labels)  # no meta: sizes unknown (0), boxes unchecked
    assert (images[["height", "width"]] == 0).all().all() and len(boxes) == 4
    df = pd.read_csv(labels)
    images, boxes = datasets.load("vinbigdata", df, meta=convert_meta)
    assert len(images) == 3 and len(boxes) == 4


def _err(tmp_path, rows, match, meta=None):
    with pytest.raises(ValueError, match=match):
        vinbigdata.load(_vb(tmp_path, rows), meta)


def test_vinbigdata_bad_rows_raise(tmp_path, vb_meta):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rad_id'\]"):
        vinbigdata.load(_write(tmp_path / "x.csv", "image_id,class_name,class_id,x_min,y_min,x_max,y_max\n"))
    _err(tmp_path, VB_ROWS[:2] + ["a,Foo,15,R9,1,1,2,2"], r"train.csv line 4: class_id '?15'? is not a known class")
    _err(tmp_path, VB_ROWS[:1] + ["a,Atelectasis,3,R9,1,1,2,2"],
         r"line 3: class_name 'Atelectasis' does not match class_id 3; expected 'Cardiomegaly'")
    _err(tmp_path, ["a,Cardiomegaly,3,R9,10,20,,220"], r"line 2: x_max is empty on a 'Cardiomegaly' finding")
    _err(tmp_path, VB_ROWS[:3] + ["a,Cardiomegaly,3,R9,100,20,10,220"], r"line 5: x_max 10.0 < x_min 100.0")
    _err(tmp_path, ["a,Cardiomegaly,3,R9,10,20,x,220"], r"line 2: x_max 'x' is not a number")
    _err(tmp_path, ["a,Cardiomegaly,3,R9,250,20,260,30"], r"line 2: box .* lies outside its image", vb_meta)
    _err(tmp_path, ["q,Cardiomegaly,3,R9,1,1,2,2"], r"1 image\(s\) have no size in the meta table.*'q'", vb_meta)
    df = pd.DataFrame([["a", "Cardiomegaly", 3, "R9", 5, 5, 1, 9]], columns=VB_HEADER.strip().split(","), index=[41])
    with pytest.raises(ValueError, match="labels row 41: x_max 1.0 < x_min 5.0"):
        vinbigdata.load(df)


def test_vinbigdata_repairs_counted(tmp_path, vb_meta, caplog):
    rows = VB_ROWS + ["a,Cardiomegaly,3,R9,-3,20,205,220", "b,No finding,14,R2,0,0,1,1", "q,Nodule/Mass,8,R9,1,1,2,2"]
    with caplog.at_level(logging.WARNING):
        images, boxes = vinbigdata.load(_vb(tmp_path, rows), vb_meta, on_missing_meta="drop")
    assert boxes.attrs["repairs"] == {"outside_clipped": 1, "no_finding_box_ignored": 1, "no_meta_dropped": 1}
    np.testing.assert_array_equal(boxes.iloc[4][["x_min", "y_min", "x_max", "y_max"]].astype(float), [0, 20, 200, 220])
    assert "q" not in set(images["image_id"]) and len(boxes) == 5
    assert "train.csv line 9" in caplog.text and "train.csv line 10" in caplog.text


def test_vinbigdata_fused_csv_keeps_n_raters(tmp_path, vb_meta):
    p = _write(tmp_path / "fused.csv", VB_HEADER.strip() + ",n_raters\n"
               "a,Cardiomegaly,3,,11,21,111,221,2\nb,No finding,14,,,,,,3\n")
    images, boxes = vinbigdata.load(p, vb_meta)
    assert boxes["n_raters"].tolist() == [2] and boxes["rater"].tolist() == [""]
    assert images["raters"].tolist() == ["", ""]


def test_vinbigdata_real_subset(test_data):
    images, boxes = vinbigdata.load(test_data / "loaders_vinbig_train.csv", test_data / "loaders_vinbig_meta.csv")
    raw = pd.read_csv(test_data / "loaders_vinbig_train.csv")
    assert len(images) == raw.image_id.nunique() == 105
    assert len(boxes) == int((raw.class_id != 14).sum())
    assert (images["raters"].str.count(r"\|") == 2).all()
    assert (boxes["x_max"] <= images.set_index("image_id").loc[boxes.image_id, "width"].to_numpy()).all()


def test_vinbigdata_real_file(shared_data):
    d = shared_data / "vinbigdata"
    images, boxes = vinbigdata.load(d / "train.csv.gz", d / "train_meta.csv.gz")
    rows = len(pd.read_csv(d / "train.csv.gz", usecols=["image_id"]))
    assert rows == 67914 and len(images) == 15000
    assert int((~images.image_id.isin(boxes.image_id)).sum()) == 10606
    assert len(boxes) == rows - 3 * 10606  # every normal image has three "No finding" rows
    assert sum(boxes.attrs["repairs"].values()) == 0


# ----------------------------------------------------------------------------- RSNA
RS_LABELS = ("patientId,x,y,width,height,Target\n"
             "p1,,,,,0\n"
             "p2,264,152,213,379,1\n"
             "p2,562,152,256,453,1\n"
             "p3,,,,,0\n")


def test_rsna_tables(tmp_path):
    labels = _write(tmp_path / "labels.csv", RS_LABELS)
    detailed = _write(tmp_path / "d.csv", "patientId,class\np1,Normal\np2,Lung Opacity\np2,Lung Opacity\n")
    headers = _write(tmp_path / "h.csv", ",PatientID,PatientSex,PatientAge,ViewPosition\n0,p1,F,43,AP\n1,p2,M,48,PA\n2,p3,F,65,AP\n")
    images, boxes = rsna.load(labels, detailed=detailed, headers=headers)
    assert images["image_id"].tolist() == ["p1", "p2", "p3"] == images["patient_id"].tolist()
    assert (images[["height", "width"]] == 1024).all().all()
    assert images["detailed_class"].tolist() == ["Normal", "Lung Opacity", ""]
    assert images["ViewPosition"].tolist() == ["AP", "PA", "AP"] and images["PatientAge"].tolist() == [43, 48, 65]
    assert boxes.attrs["repairs"]["no_detailed_class"] == 1
    np.testing.assert_array_equal(boxes[["x_min", "y_min", "x_max", "y_max"]].to_numpy(),
                                  [[264, 152, 477, 531], [562, 152, 818, 605]])  # x + width, y + height
    assert boxes["class_id"].tolist() == [0, 0] and (boxes["class_name"] == "Lung Opacity").all()
    images, _ = datasets.load("rsna", labels, meta=_write(tmp_path / "m.csv", "image_id,dim0,dim1\np1,2000,1800\np2,1024,1024\np3,9,9\n"))
    assert images["height"].tolist() == [2000, 1024, 9]


def test_rsna_bad_rows(tmp_path):
    def err(text, match):
        with pytest.raises(ValueError, match=match):
            rsna.load(_write(tmp_path / "l.csv", text))
    head = "patientId,x,y,width,height,Target\n"
    err("patientId,x,y,width,Target\n", r"missing column\(s\) \['height'\]")
    err(head + "p1,,,,,0\np2,1,1,5,5,2\n", r"l.csv line 3: Target '?2'? is not a known class")
    err(head + "p2,1,1,,5,1\n", r"line 2: width is empty with Target 1")
    err(head + "p2,1,1,-5,5,1\n", r"line 2: width -5.0 is negative")
    err(head + "p2,1,1,5,5,1\np2,,,,,0\n", r"line 2: Target .* differs between rows of one patient")
    err(head + "p2,1100,1,5,5,1\n", r"line 2: box .* lies outside its image")
    images, boxes = rsna.load(_write(tmp_path / "ok.csv", head + "p1,1,1,5,5,0\np2,1000,1,50,5,1\n"))
    assert boxes.attrs["repairs"]["negative_box_ignored"] == 1 and boxes.attrs["repairs"]["outside_clipped"] == 1
    assert boxes["x_max"].tolist() == [1024.0] and len(boxes) == 1


def test_rsna_real_file(shared_data):
    d = shared_data / "rsna"
    images, boxes = rsna.load(d / "stage_2_train_labels.csv.gz", detailed=d / "stage_2_detailed_class_info.csv.gz",
                              headers=d / "stage_2_train_dicom_headers.csv.gz")
    assert len(images) == 26684 and boxes["image_id"].nunique() == 6012 and len(boxes) == 9555
    assert boxes.groupby("image_id").size().max() == 4
    assert boxes.attrs["repairs"]["no_detailed_class"] == 79 and (images["detailed_class"] == "").sum() == 79
    assert set(images["ViewPosition"]) == {"AP", "PA"}


# ----------------------------------------------------------------------------- NIH
NIH_BOX = ("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
           "00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661\n"
           "00000001_001.png,Cardiomegaly,100,200,300,400\n"
           "00000001_001.png,Infiltrate,1000,10,50,20\n")
NIH_ENTRY = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
             "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
             "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143\n"
             "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143\n"
             "00013118_008.png,Atelectasis|Effusion,8,13118,40,F,AP,2500,2048,0.168,0.168\n")


def test_nih_tables(tmp_path):
    box, entry = _write(tmp_path / "BBox_List_2017.csv", NIH_BOX), _write(tmp_path / "Data_Entry_2017.csv", NIH_ENTRY)
    images, boxes = nih.load(box, entry, images_dir="png")
    assert images["image_id"].tolist() == ["00000001_000", "00000001_001", "00013118_008"]
    assert (images[["height", "width"]] == 1024).all().all()  # the released PNG frame
    assert images["orig_width"].tolist() == [2682, 2894, 2500] and images["orig_height"].tolist() == [2749, 2729, 2048]
    assert images["patient_id"].tolist() == ["00000001", "00000001", "00013118"]
    assert images["labels"].tolist() == ["Cardiomegaly", "Cardiomegaly|Emphysema", "Atelectasis|Effusion"]
    assert images["path"].iloc[0] == "png/00000001_000.png"
    assert boxes["class_id"].tolist() == [0, 1, 3] and boxes["class_name"].tolist() == ["Atelectasis", "Cardiomegaly", "Infiltrate"]
    np.testing.assert_allclose(boxes.iloc[0][["x_min", "y_min", "x_max", "y_max"]].astype(float),
                               [225.084745762712, 547.019216763771, 225.084745762712 + 86.7796610169491,
                                547.019216763771 + 79.1864406779661])
    np.testing.assert_array_equal(boxes.iloc[2][["x_min", "x_max"]].astype(float), [1000, 1024])  # clipped
    assert boxes.attrs["repairs"] == {"outside_clipped": 1, "no_meta_dropped": 0}
    images2, boxes2 = nih.load(box)  # without Data_Entry: the boxed images only
    assert images2["image_id"].tolist() == ["00013118_008", "00000001_001"] and len(boxes2) == 3
    assert images2["patient_id"].tolist() == ["00013118", "00000001"]


def test_nih_bad_rows(tmp_path):
    entry = _write(tmp_path / "e.csv", NIH_ENTRY)

    def err(text, match, meta=None):
        with pytest.raises(ValueError, match=match):
            nih.load(_write(tmp_path / "b.csv", text), meta)
    head = NIH_BOX.splitlines()[0] + "\n"
    err("Image,Label,x,y,w,h\n", r"header .*expected 'Image Index,Finding Label,Bbox")
    err(head + "00000001_001.png,Infiltration,1,1,5,5\n", r"b.csv line 2: label 'Infiltration' is not a known class")
    err(head + "00000001_001.png,Mass,1,1,,5\n", r"line 2: w is empty")
    err(head + "00000001_001.png,Mass,1,1,5,-5\n", r"line 2: h -5.0 is negative")
    err(head + "00099999_001.png,Mass,1,1,5,5\n", r"not in the Data_Entry table.*00099999_001", entry)
    err(head + "00000001_001.png,Mass,2000,1,5,5\n", r"line 2: box .* lies outside")
    with pytest.raises(ValueError, match=r"missing column\(s\)"):
        nih.load(_write(tmp_path / "b2.csv", NIH_BOX), _write(tmp_path / "e2.csv", "Image Index,Patient ID\n"))


def test_nih_real_files(shared_data):
    d = shared_data / "nih"
    images, boxes = nih.load(d / "BBox_List_2017.csv.gz", d / "Data_Entry_2017.csv.gz")
    assert len(boxes) == 984 and boxes["class_name"].nunique() == 8 and len(images) == 112120
    assert sorted(boxes["class_name"].unique()) == nih.CLASSES
    assert images["orig_width"].notna().all() and images["labels"].str.len().gt(0).all()


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'coco'; expected one of \['nih', 'rsna', 'vinbigdata'\]"):
        datasets.load("coco", "x.csv")
    assert set(datasets.LOADERS) == {"vinbigdata", "rsna", "nih"}


# ----------------------------------------------------------------------------- descriptions
def test_descriptions_registered_beside_loaders():
    assert set(datasets.DATASETS) == set(datasets.LOADERS) == {"vinbigdata", "rsna", "nih"}
    for name, d in datasets.DATASETS.items():
        assert d.name == name and datasets.LOADERS[name] is d.load and datasets.describe(name) is d
        with pytest.raises(dataclasses.FrozenInstanceError):
            d.metric = "coco"
    vin, rs, nh = (datasets.describe(n) for n in ("vinbigdata", "rsna", "nih"))
    assert vin.normal == (14, "No finding") and vin.names[14] == "No finding" and len(vin.names) == 15
    assert vin.names[:14] == list(vinbigdata.CLASSES) and vin.has_raters and vin.submission.id_column == "image_id" and vin.submission.tokens == 6 and vin.submission.normal_row
    assert rs.normal is None and rs.names == ["Lung Opacity"] and rs.image_size == 1024 and rs.metric == "rsna"
    assert nh.boxed_only and not nh.size_meta and nh.submission is None and nh.names == nih.CLASSES
    # a config picks the description; its `classes` key replaces the names
    assert datasets.describe({"dataset": "rsna", "classes": None}) is rs
    assert datasets.describe({"dataset": "rsna", "classes": ["opacity"]}).names == ["opacity"]
    with pytest.raises(ValueError, match="unknown dataset 'x'.*nih"):
        datasets.describe("x")
    # findings(): the normal class rows go, nothing else
    b = bx.make_boxes(["a", "a", "b"], [0, 14, 14], ["x", "n", "n"], [[0, 0, 1, 1]] * 3)
    assert vin.findings(b)["class_id"].tolist() == [0] and len(rs.findings(b)) == 3


def test_describe_prep_reads_the_manifest(tmp_path):
    (tmp_path / "prep.json").write_text('{"config": {"dataset": "rsna"}}')
    assert datasets.describe_prep(tmp_path).name == "rsna"
    with pytest.raises(FileNotFoundError, match="prep.json"):
        datasets.describe_prep(tmp_path / "nope")


# strings and ids a dataset owns: spelled only in data_prep/datasets/ (docstrings and comments may
# mention them); a normal-class id may appear as a number where it is no class (bits, counts)
_ID_OK = {("data_prep/phantoms/phantom.py", "bits"), ("data_prep/phantoms/phantom.py", "range(14)"), ("bench/convert.py", "bits"),
          ("data_prep/report/plots.py", "figsize")}


def _literals(path: Path):
    """(line, value) of every str/int constant of a module that is not a docstring."""
    tree = ast.parse(path.read_text())
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docs and not isinstance(node.value, bool):
            yield node.lineno, node.value


def test_no_dataset_literal_outside_datasets(repo_root):
    names = {n for d in datasets.DATASETS.values() for n in d.names}
    ids = {d.normal_id for d in datasets.DATASETS.values() if d.normal}
    # a whole word (or phrase): "ILD" is a class, RUSAGE_CHILDREN is not
    word = re.compile(r"(?<!\w)(%s)(?!\w)" % "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)))
    bad = []
    for path in sorted(p for pkg in ("data_prep", "detection", "bench") for p in (repo_root / pkg).rglob("*.py")):
        rel = path.relative_to(repo_root).as_posix()
        if rel.startswith("data_prep/datasets/"):
            continue
        lines = path.read_text().splitlines()
        for line, v in _literals(path):
            if isinstance(v, str) and (word.search(v) or re.search(r"\b(%s) [\d.]+ 0 0 1 1" % "|".join(map(str, ids)), v)):
                bad.append(f"{rel}:{line}: {v!r}")
            elif isinstance(v, int) and v in ids and not any(rel == f and k in lines[line - 1] for f, k in _ID_OK):
                bad.append(f"{rel}:{line}: {lines[line - 1].strip()}")
    assert not bad, "dataset class ids/names spelled outside data_prep/datasets/:\n" + "\n".join(bad)
