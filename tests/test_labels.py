"""Image-level label tables (data_prep/labels/image_level.py, `cxrdet labels`), checked against plain
per-row recomputations of each dataset's own file: real subsets always, the full files when
../shared/data is present."""
from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data_prep.datasets import nih, rsna, vinbigdata
from data_prep.labels.image_level import image_labels, labels_from_boxes, read_label_table
from detection.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "data_prep" / "data"


def _open(path: Path):
    return gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)


def _vin_expected(path: Path, vote: str) -> dict[str, dict[str, int]]:
    """Per image: label -> 0/1 recomputed row by row from train.csv."""
    raters, marked = defaultdict(set), defaultdict(lambda: defaultdict(set))
    with _open(path) as f:
        for r in csv.DictReader(f):
            raters[r["image_id"]].add(r["rad_id"])
            if int(r["class_id"]) != 14:
                marked[r["image_id"]][r["class_name"]].add(r["rad_id"])
    out = {}
    for iid, rs in raters.items():
        need = 1 if vote == "any" else len(rs) // 2 + 1
        row = {c: int(len(marked[iid][c]) >= need) for c in vinbigdata.CLASSES}
        anyone = set().union(*marked[iid].values()) if marked[iid] else set()
        row["abnormal"] = int(len(anyone) >= need)
        out[iid] = row
    return out


def _check_vin(table: pd.DataFrame, expected: dict) -> None:
    assert list(table.columns) == ["image_id", "patient_id", *vinbigdata.CLASSES, "abnormal"]
    assert len(table) == len(expected) and table["image_id"].is_unique
    got = table.set_index("image_id")
    want = pd.DataFrame.from_dict(expected, orient="index").loc[got.index, got.columns[1:]]
    assert (got[got.columns[1:]].to_numpy() == want.to_numpy()).all()
    assert (got["patient_id"] == got.index).all()


@pytest.mark.parametrize("vote", ["any", "majority"])
def test_vinbigdata_subset(vote):
    f = EMBEDDED / "vinbigdata_subset_train.csv"
    t = image_labels("vinbigdata", f, vote=vote)
    exp = _vin_expected(f, vote)
    _check_vin(t, exp)
    if vote == "majority":  # the majority vote really differs from "any" on these real rows
        any_t = image_labels("vinbigdata", f, vote="any")
        assert (t[vinbigdata.CLASSES].to_numpy() <= any_t[vinbigdata.CLASSES].to_numpy()).all()
        assert t[vinbigdata.CLASSES].to_numpy().sum() < any_t[vinbigdata.CLASSES].to_numpy().sum()


def _nih_expected(path: Path) -> pd.DataFrame:
    rows = []
    with _open(path) as f:
        for r in csv.reader(f):
            if r[0] == "Image Index":
                continue
            toks = r[1].split("|")
            rows.append({"image_id": r[0][:-4], "patient_id": f"{int(r[3]):08d}",
                         **{c: int(c in toks) for c in nih.IMAGE_LABELS}, "abnormal": int(toks != ["No Finding"])})
    return pd.DataFrame(rows)


def test_nih_subset(test_data):
    f = test_data / "nih_data_entry_subset.csv"
    t = image_labels("nih", f)
    exp = _nih_expected(f)
    assert list(t.columns) == ["image_id", "patient_id", *nih.IMAGE_LABELS, "abnormal"]
    pd.testing.assert_frame_equal(t, exp, check_dtype=False)
    assert t[nih.IMAGE_LABELS].sum().min() >= 1 and (t[nih.IMAGE_LABELS].sum(axis=1) > 1).any()
    assert t["abnormal"].sum() == len(t) - 10  # the subset has 10 "No Finding" rows


def test_nih_unknown_label_names_the_line(tmp_path, test_data):
    lines = (test_data / "nih_data_entry_subset.csv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "Cardiomegaly|Fracture", 1)
    bad = tmp_path / "entry.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"entry.csv line 4: Finding Labels .*'Fracture'"):
        image_labels("nih", bad)


def test_rsna_subset():
    lab, det = EMBEDDED / "rsna_subset_labels.csv", EMBEDDED / "rsna_subset_class_info.csv"
    t = image_labels("rsna", lab, det)
    raw, info = pd.read_csv(lab), pd.read_csv(det).drop_duplicates("patientId").set_index("patientId")["class"]
    pos = raw.groupby("patientId")["Target"].max()
    g = t.set_index("image_id")
    assert list(t.columns) == ["image_id", "patient_id", "Lung Opacity", "No Lung Opacity / Not Normal", "abnormal"]
    assert len(t) == raw["patientId"].nunique()
    assert (g["Lung Opacity"] == pos.loc[g.index]).all()
    cls = info.reindex(g.index)
    known = cls.notna().to_numpy()
    assert (g["No Lung Opacity / Not Normal"][known] == (cls[known] == "No Lung Opacity / Not Normal")).all()
    assert (g["abnormal"][known] == (cls[known] != "Normal")).all()
    # without the detailed file: Lung Opacity only, abnormal = Lung Opacity
    t2 = image_labels("rsna", lab)
    assert list(t2.columns) == ["image_id", "patient_id", "Lung Opacity", "abnormal"]
    assert (t2["abnormal"] == t2["Lung Opacity"]).all()


def test_rsna_missing_detailed_class_left_empty(tmp_path):
    det = pd.read_csv(EMBEDDED / "rsna_subset_class_info.csv")
    labels = pd.read_csv(EMBEDDED / "rsna_subset_labels.csv")
    neg = labels.loc[labels["Target"] == 0, "patientId"].iloc[0]
    posid = labels.loc[labels["Target"] == 1, "patientId"].iloc[0]
    det[~det["patientId"].isin([neg, posid])].to_csv(tmp_path / "det.csv", index=False)
    t = image_labels("rsna", EMBEDDED / "rsna_subset_labels.csv", tmp_path / "det.csv").set_index("image_id")
    assert pd.isna(t.at[neg, "No Lung Opacity / Not Normal"]) and pd.isna(t.at[neg, "abnormal"])
    assert pd.isna(t.at[posid, "No Lung Opacity / Not Normal"]) and t.at[posid, "abnormal"] == 1
    # the empty cells survive a write/read round trip as unknown (NaN), the rest as 0/1
    t.reset_index().to_csv(tmp_path / "l.csv", index=False)
    back = read_label_table(tmp_path / "l.csv").set_index("image_id")
    assert np.isnan(back.at[neg, "abnormal"]) and back.at[posid, "abnormal"] == 1.0
    assert back["Lung Opacity"].isin([0.0, 1.0]).all()


def test_labels_from_boxes_hand_case():
    images = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["p1", "p1", "p2"],
                           "raters": ["R1|R2|R3", "R1|R2|R3", "R1|R2|R3"]})
    boxes = pd.DataFrame({"image_id": ["a", "a", "a", "a", "b"], "class_name": ["X", "X", "X", "Y", "Y"],
                          "rater": ["R1", "R1", "R2", "R3", "R2"]})
    any_t = labels_from_boxes(images, boxes, ["X", "Y"], "any")
    assert any_t[["X", "Y", "abnormal"]].to_numpy().tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 0]]
    maj = labels_from_boxes(images, boxes, ["X", "Y"], "majority")  # X: R1, R2 of 3 -> yes; Y: 1 of 3 -> no
    assert maj[["X", "Y", "abnormal"]].to_numpy().tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0]]
    assert maj["patient_id"].tolist() == ["p1", "p1", "p2"]


def test_cli_writes_table_and_reports_bad_input(tmp_path, capsys):
    out = tmp_path / "image_labels.csv"
    assert cli(["labels", "vinbigdata", "--labels", str(EMBEDDED / "vinbigdata_subset_train.csv"),
                "--vote", "majority", "--out", str(out)]) == 0
    t = read_label_table(out)
    assert len(t) == 300 and list(t.columns)[-1] == "abnormal"
    assert cli(["labels", "rsna", "--labels", str(EMBEDDED / "rsna_subset_labels.csv"), "--vote", "majority",
                "--out", str(tmp_path / "x.csv")]) == 2
    assert "only VinBigData" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_readers_reject_bad_cells(tmp_path):
    (tmp_path / "l.csv").write_text("image_id,A,abnormal\ni1,1,1\ni2,2,1\n")
    with pytest.raises(ValueError, match=r"l.csv line 3: A 2 is not a label"):
        read_label_table(tmp_path / "l.csv")


# ----------------------------------------------------------------------------- the real files
def test_vinbigdata_real_file(shared_data):
    f = shared_data / "vinbigdata" / "train.csv.gz"
    t = image_labels("vinbigdata", f)
    assert len(t) == 15000 and t["abnormal"].sum() == 4394
    _check_vin(t, _vin_expected(f, "any"))


def test_nih_real_file(shared_data):
    f = shared_data / "nih" / "Data_Entry_2017.csv.gz"
    t = image_labels("nih", f)
    assert len(t) == 112120 and t["abnormal"].sum() == 112120 - 60361
    pd.testing.assert_frame_equal(t, _nih_expected(f), check_dtype=False)


def test_rsna_real_file(shared_data):
    d = shared_data / "rsna"
    t = image_labels("rsna", d / "stage_2_train_labels.csv.gz", d / "stage_2_detailed_class_info.csv.gz")
    assert len(t) == 26684 and t["Lung Opacity"].sum() == 6012
    assert int(t["No Lung Opacity / Not Normal"].isna().sum()) == 79  # the public copy lacks 79 patients
    info = pd.read_csv(d / "stage_2_detailed_class_info.csv.gz").drop_duplicates("patientId")
    assert int(t["No Lung Opacity / Not Normal"].sum()) == int((info["class"] == "No Lung Opacity / Not Normal").sum())
