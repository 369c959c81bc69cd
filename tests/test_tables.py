"""data_prep.core.tables: one reader/writer per project table, dtype contracts, round trips."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.core import tables as T
from data_prep.core.boxes import BOX_COLUMNS, make_boxes
from data_prep.datasets import describe


def test_box_table_round_trip_keeps_ids_and_dtypes(tmp_path):
    b = make_boxes(["0012", "1e5", "nan"], [0, 3, 14], ["a", "b", "c"], [[0, 0, 1.25, 2], [1, 1, 3, 3], [0, 0, 1, 1]],
                   score=[0.5, 1.0, 0.25], rater=["", "R1", ""], n_raters=[1, 2, 3], fold=[0, 1, 1])
    T.write_boxes(b, tmp_path / "b.csv")
    got = T.read_boxes(tmp_path / "b.csv")
    assert got.columns.tolist() == BOX_COLUMNS + ["n_raters", "fold"]
    assert got["image_id"].tolist() == ["0012", "1e5", "nan"] and got["rater"].tolist() == ["", "R1", ""]
    assert got["class_id"].dtype == "int64" and got["fold"].dtype == "int64" and got["n_raters"].dtype == "int64"
    assert np.array_equal(got[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), b[["x_min", "y_min", "x_max", "y_max"]])
    assert T.read_predictions(tmp_path / "b.csv")["score"].tolist() == [0.5, 1.0, 0.25]


def test_box_table_without_names_or_score(tmp_path):
    (tmp_path / "t.csv").write_text("image_id,class_id,x_min,y_min,x_max,y_max\na,2,0,0,5,5\n")
    got = T.read_boxes(tmp_path / "t.csv")
    assert got["class_name"].tolist() == ["2"] and got["score"].tolist() == [1.0] and got["rater"].tolist() == [""]
    with pytest.raises(ValueError, match="no column 'score'"):
        T.read_predictions(tmp_path / "t.csv")
    (tmp_path / "x.csv").write_text("image_id,x_min\na,1\n")
    with pytest.raises(ValueError, match=r"x.csv: missing column\(s\) \['class_id'"):
        T.read_boxes(tmp_path / "x.csv")


def test_folds_and_fold_images(tmp_path):
    T.write_folds(pd.DataFrame({"image_id": ["007", "b", "c"], "fold": [1, 0, 1]}), tmp_path / "f.csv")
    f = T.read_folds(tmp_path / "f.csv")
    assert f["fold"].dtype == "int64" and f["image_id"].tolist() == ["007", "b", "c"]
    assert T.fold_images(tmp_path / "f.csv", 1) == ["007", "c"] and T.fold_images(f, 0) == ["b"]
    with pytest.raises(ValueError, match=r"fold 3 has no image; folds present \[0, 1\]"):
        T.fold_images(f, 3)


def test_probability_table_contract(tmp_path):
    p = pd.DataFrame({"abnormal": [0.25, 1.0], "image_id": ["01", "b"], "Nodule/Mass": [0.0, 0.5]})
    T.write_probs(p, tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "image_id,abnormal,Nodule/Mass"
    got = T.read_probs(tmp_path / "p.csv", ["abnormal"])
    assert got["image_id"].tolist() == ["01", "b"] and got["abnormal"].dtype == "float64"
    (tmp_path / "bad.csv").write_text("image_id,abnormal\na,0.5\nb,1.5\n")
    with pytest.raises(ValueError, match=r"bad.csv line 3: abnormal .1.5.; expected a probability in \[0, 1\]"):
        T.read_probs(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("image_id,abnormal\na,0.5\na,0.1\n")
    with pytest.raises(ValueError, match="dup.csv line 3: image_id 'a' is listed twice"):
        T.read_probs(tmp_path / "dup.csv")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['x'\]"):
        T.read_probs(tmp_path / "p.csv", ["x"])


def test_image_table_round_trip(tmp_path):
    im = pd.DataFrame({"image_id": ["00a"], "height": [10], "width": [20], "path": [""], "patient_id": ["007"],
                       "png_height": [5], "png_width": [10]})
    T.write_images(im, tmp_path / "images.csv")
    got = T.read_images(tmp_path / "images.csv")
    assert got.loc[0, "patient_id"] == "007" and got.loc[0, "path"] == "" and got["png_width"].dtype == "int64"


def test_read_truth_by_dataset(tmp_path, caplog):
    rs = describe("rsna")
    (tmp_path / "l.csv").write_text("patientId,x,y,width,height,Target\np1,0,0,10,10,1\np2,,,,,0\n")
    images, boxes, ds = T.read_truth(tmp_path / "l.csv", rs)
    assert ds is rs and images["image_id"].tolist() == ["p1", "p2"] and boxes["class_name"].tolist() == ["Lung Opacity"]
    # another dataset's labels file is read as that dataset, with a warning
    images, boxes, ds = T.read_truth(tmp_path / "l.csv", describe("vinbigdata"))
    assert ds is rs and "is a rsna labels file" in caplog.text
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="neither the vinbigdata labels layout"):
        T.read_truth(tmp_path / "x.csv", describe("vinbigdata"))
