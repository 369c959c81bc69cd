"""data_prep.report.dataset_report: agreement numbers computed by hand, report files, PNG sanity, CLI."""
from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from data_prep.core.boxes import as_image_table, make_boxes
from data_prep.report.dataset_report import (box_area_fraction, class_counts, label_cooccurrence, make_report,
                              ordered_pair_iou, rater_agreement)

R3 = "R1|R2|R3"


def _images(ids, raters=R3, size=(100, 100), **extra):
    df = pd.DataFrame({"image_id": ids, "height": size[0], "width": size[1], **extra})
    if raters is not None:
        df["raters"] = raters
    return as_image_table(df)


def _boxes(rows):
    """rows: (image_id, class_id, rater, x0, y0, x1, y1)."""
    names = {0: "Aortic enlargement", 3: "Cardiomegaly", 8: "Nodule/Mass", 13: "Pulmonary fibrosis"}
    img, cid, rater, *xy = zip(*rows)
    return make_boxes(img, cid, [names[c] for c in cid], np.array(xy).T, rater=rater)


def _cell(cells, image_id, class_id):
    row = cells[(cells["image_id"] == image_id) & (cells["class_id"] == class_id)]
    assert len(row) == 1
    return row.iloc[0]


# ----------------------------------------------------------------------------- agreement numbers
def test_identical_boxes_agree_fully():
    boxes = _boxes([("a", 3, r, 10, 10, 50, 40) for r in ("R1", "R2", "R3")])
    cells, per_class = rater_agreement(boxes, _images(["a"]))
    c = _cell(cells, "a", 3)
    assert (c.n_readers, c.n_marked) == (3, 3)
    assert c.mean_iou == pytest.approx(1.0) and c.min_pair_iou == pytest.approx(1.0)
    assert bool(c.all_marked) and bool(c.all_agree)
    assert per_class.loc[0, "all_agree_pct"] == pytest.approx(100.0)


def test_half_overlapping_boxes_hand_computed():
    # R1 and R3 identical; R2 shifted by half a width: IoU = 50 / 150 = 1/3 with either
    boxes = _boxes([("a", 0, "R1", 0, 0, 10, 10), ("a", 0, "R2", 5, 0, 15, 10), ("a", 0, "R3", 0, 0, 10, 10)])
    o = ordered_pair_iou(boxes).set_index(["rater_a", "rater_b"])["iou"]
    assert len(o) == 6
    assert o[("R1", "R2")] == pytest.approx(1 / 3) and o[("R2", "R3")] == pytest.approx(1 / 3)
    assert o[("R1", "R3")] == pytest.approx(1.0)
    cells, _ = rater_agreement(boxes, _images(["a"]), iou_thr=0.4)
    c = _cell(cells, "a", 0)
    assert c.mean_iou == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert c.min_pair_iou == pytest.approx(1 / 3)
    assert bool(c.all_marked) and not bool(c.all_agree)  # every pair must reach 0.4
    cells, _ = rater_agreement(boxes, _images(["a"]), iou_thr=0.3)
    assert bool(_cell(cells, "a", 0).all_agree)


def test_two_of_three_raters_is_not_all_agree():
    boxes = _boxes([("a", 8, "R1", 0, 0, 20, 20), ("a", 8, "R2", 0, 0, 20, 20)])
    cells, per_class = rater_agreement(boxes, _images(["a"]))
    c = _cell(cells, "a", 8)
    assert (c.n_readers, c.n_marked) == (3, 2)  # R3 read the image (raters column) but drew nothing
    assert c.mean_iou == pytest.approx(1.0)
    assert not bool(c.all_marked) and not bool(c.all_agree)
    assert per_class.loc[0, "multi"] == 1 and per_class.loc[0, "single_pct"] == 0.0


def test_best_match_per_box_is_asymmetric():
    # R1 drew two boxes, R2 one that matches the first exactly, the second far away:
    # o(R1, R2) = (1 + 0) / 2, o(R2, R1) = 1; pair value 0.75
    boxes = _boxes([("a", 13, "R1", 0, 0, 10, 10), ("a", 13, "R1", 60, 60, 80, 80),
                    ("a", 13, "R2", 0, 0, 10, 10)])
    o = ordered_pair_iou(boxes).set_index(["rater_a", "rater_b"])["iou"]
    assert o[("R1", "R2")] == pytest.approx(0.5) and o[("R2", "R1")] == pytest.approx(1.0)
    cells, _ = rater_agreement(boxes, _images(["a"], raters="R1|R2"))
    c = _cell(cells, "a", 13)
    assert c.mean_iou == pytest.approx(0.75) and c.min_pair_iou == pytest.approx(0.75)
    assert bool(c.all_marked) and bool(c.all_agree)


def test_per_class_aggregates_and_single_rater_cells():
    boxes = _boxes([
        # image a, class 0: all three, identical -> agree
        ("a", 0, "R1", 0, 0, 10, 10), ("a", 0, "R2", 0, 0, 10, 10), ("a", 0, "R3", 0, 0, 10, 10),
        # image b, class 0: only R1 -> single, mean IoU undefined
        ("b", 0, "R1", 0, 0, 10, 10),
        # image c, class 0: R1, R2 half overlapping -> IoU 1/3, not all marked
        ("c", 0, "R1", 0, 0, 10, 10), ("c", 0, "R2", 5, 0, 15, 10),
        # unknown rater: ignored by the agreement
        ("c", 0, "", 0, 0, 10, 10),
    ])
    cells, per_class = rater_agreement(boxes, _images(["a", "b", "c"]))
    assert len(cells) == 3
    assert np.isnan(_cell(cells, "b", 0).mean_iou)
    row = per_class.iloc[0]
    assert (row.cells, row.multi) == (3, 2)
    assert row.mean_iou == pytest.approx((1.0 + 1 / 3) / 2)
    assert row.all_marked_pct == pytest.approx(100 / 3) and row.all_agree_pct == pytest.approx(100 / 3)
    assert row.single_pct == pytest.approx(100 / 3)


def test_readers_fall_back_to_box_raters_without_raters_column():
    boxes = _boxes([("a", 3, "R8", 0, 0, 10, 10), ("a", 3, "R9", 0, 0, 10, 10), ("a", 0, "R8", 0, 0, 5, 5)])
    cells, _ = rater_agreement(boxes, _images(["a"], raters=None))
    assert _cell(cells, "a", 3).n_readers == 2 and bool(_cell(cells, "a", 3).all_marked)
    assert not bool(_cell(cells, "a", 0).all_marked)


def test_counts_area_and_cooccurrence():
    boxes = _boxes([("a", 3, "R1", 0, 0, 10, 10), ("a", 3, "R2", 0, 0, 20, 5), ("b", 3, "R1", 0, 0, 50, 100),
                    ("b", 0, "R1", 0, 0, 1, 1)])
    cc = class_counts(boxes)
    assert cc["class_id"].tolist() == [0, 3] and cc["boxes"].tolist() == [1, 3] and cc["images"].tolist() == [1, 2]
    area = box_area_fraction(boxes, _images(["a", "b"], size=(100, 200)))
    assert area.tolist() == pytest.approx([100 / 20000, 100 / 20000, 5000 / 20000, 1 / 20000])
    co = label_cooccurrence(pd.Series(["A|B", "A", "No Finding", "B|C", "A|B|C"]))
    assert list(co.index) == ["A", "B", "C"]
    assert co.loc["A", "A"] == 3 and co.loc["B", "B"] == 3 and co.loc["C", "C"] == 2
    assert co.loc["A", "B"] == 2 and co.loc["B", "C"] == 2 and co.loc["A", "C"] == 1 == co.loc["C", "A"]


# ----------------------------------------------------------------------------- report files
def _check_report(out):
    md = (out / "report.md").read_text()
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert sorted(refs) == pngs and pngs, (refs, pngs)
    for name in pngs:
        im = Image.open(out / name)
        w, h = im.size
        assert 500 <= w <= 2500 and 200 <= h <= 2500, (name, im.size)
        px = np.asarray(im.convert("L"), dtype=float)
        assert px.std() > 10, f"{name} looks blank (std {px.std():.1f})"
        assert (px < 128).mean() > 0.005, f"{name} has almost no dark pixels"
    assert not list(out.glob(".*tmp")), "temp files left behind"
    return md, set(pngs)


def _vin_tables():
    ids = [f"img{i}" for i in range(6)]
    images = _images(ids, raters=["R1|R2|R3"] * 3 + ["R4|R5|R6"] * 3, size=(2000, 2500))
    rows = [(ids[0], 3, r, 500, 1000, 1500, 1500) for r in ("R1", "R2", "R3")]
    rows += [(ids[0], 8, "R1", 100, 100, 140, 150), (ids[0], 8, "R2", 120, 100, 160, 150)]
    rows += [(ids[1], 0, r, 1000, 500, 1300, 800) for r in ("R1", "R2")]
    rows += [(ids[2], 13, "R3", 200, 300, 900, 1200), (ids[2], 13, "R3", 1300, 300, 2000, 1200)]
    return images, _boxes(rows)  # ids 3..5 are normal


def test_vinbigdata_report(tmp_path):
    images, boxes = _vin_tables()
    out = tmp_path / "rep"
    path = make_report(images, boxes, "vinbigdata", out, source="train.csv")
    assert path == out / "report.md"
    md, pngs = _check_report(out)
    assert pngs == {"findings_per_class.png", "annotations_per_rater.png", "normal_vs_abnormal.png",
                    "boxes_per_image.png", "box_size_by_class.png", "rater_agreement.png", "rater_pairs.png"}
    assert "| images | 6 |" in md and "| normal (no box) | 3 (50.0%) |" in md and "| boxes | 9 |" in md
    assert "| raters | 6 (3 drew boxes) |" in md
    # 4 image-class findings: Cardiomegaly (all 3, IoU 1), Nodule (2 of 3), Aortic (2 of 3), fibrosis (1)
    assert "all readers marked the class in 25.0%" in md
    assert "only one reader marked it in 25.0%" in md
    # Nodule/Mass: boxes 40x50 shifted by 20 -> IoU 20*50 / (2*2000 - 1000) = 1/3
    assert re.search(r"\| 8 \| Nodule/Mass \| 1 \| 1 \| 0\.33 \| 0 \| 0 \| 0 \|", md)
    assert "R4, R5, R6" in md  # the raters who only read normal images


def test_rsna_report(tmp_path):
    ids = ["p1", "p2", "p3", "p4"]
    images = _images(ids, raters=None, size=(1024, 1024),
                     detailed_class=["Lung Opacity", "Normal", "No Lung Opacity / Not Normal", ""])
    boxes = make_boxes(["p1", "p1", "p4"], 0, "Lung Opacity",
                       [[100, 100, 300, 400], [600, 100, 800, 500], [200, 200, 400, 600]])
    md, pngs = _check_report(make_report(images, boxes, "rsna", tmp_path).parent)
    assert {"detailed_classes.png", "boxes_per_patient.png"} <= pngs
    assert "rater_agreement.png" not in pngs and "annotations_per_rater.png" not in pngs
    assert "2 of 4 patients have a box; 1 box: 1, 2 boxes: 1." in md
    assert re.search(r"(\*|; )Normal: 1 \(25\.0%\)", md) and "No Lung Opacity / Not Normal: 1 (25.0%)" in md
    assert "(missing): 1 (25.0%)" in md  # the loader's "" for a patient without a detailed class


def test_nih_report_and_stale_plots_removed(tmp_path):
    (tmp_path / "rater_agreement.png").write_bytes(b"stale plot of an earlier report")
    nih_images = _images(["x1", "x2", "x3", "x4"], raters=None, size=(1024, 1024),
                         labels=["Effusion|Infiltration", "Effusion|Infiltration|Mass", "No Finding", "Mass"])
    nih_boxes = make_boxes(["x1", "x2"], [2, 4], ["Effusion", "Mass"], [[10, 10, 110, 210], [500, 500, 550, 560]])
    md, pngs = _check_report(make_report(nih_images, nih_boxes, "nih", tmp_path).parent)
    assert "label_cooccurrence.png" in pngs and "rater_agreement.png" not in pngs
    assert "| normal (label 'No Finding') | 1 (25.0%) |" in md
    assert "most frequent pair: Effusion + Infiltration (2 images)" in md


# ----------------------------------------------------------------------------- CLI and real file
def test_cli_report_vinbigdata(tmp_path):
    from detection.cli import main  # a broken data_prep.datasets fails here, it is never a skip
    rows = ["image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max",
            "a,Cardiomegaly,3,R8,10,20,60,50", "a,Cardiomegaly,3,R9,10,20,60,50", "a,Cardiomegaly,3,R10,12,20,60,50",
            "b,No finding,14,R1,,,,", "b,No finding,14,R2,,,,", "b,No finding,14,R3,,,,"]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "meta.csv").write_text("image_id,dim0,dim1\na,100,120\nb,90,80\n")
    out = tmp_path / "rep"
    rc = main(["report", "--dataset", "vinbigdata", "--labels", str(tmp_path / "train.csv"),
               "--meta", str(tmp_path / "meta.csv"), "--out", str(out)])
    assert rc == 0
    md, pngs = _check_report(out)
    assert "| images | 2 |" in md and "| boxes | 3 |" in md and "rater_agreement.png" in pngs
    assert "all readers marked the class in 100.0%" in md
    assert main(["report", "--dataset", "vinbigdata", "--labels", str(tmp_path / "train.csv"),
                 "--out", str(out), "iou=0.5"]) == 2


def test_real_vinbigdata_agreement(shared_data):
    """The real train.csv (36k boxes): agreement runs in seconds; cells = distinct (image, class)."""
    df = pd.read_csv(shared_data / "vinbigdata" / "train.csv.gz")
    r = df.groupby("image_id")["rad_id"].agg(lambda s: "|".join(sorted(set(s))))
    images = _images(r.index, raters=r.to_numpy())
    b = df[df["class_id"] != 14]
    boxes = make_boxes(b["image_id"], b["class_id"], b["class_name"],
                       b[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), rater=b["rad_id"])
    t = time.process_time()
    cells, per_class = rater_agreement(boxes, images)
    assert time.process_time() - t < 5.0
    assert len(cells) == len(b.groupby(["image_id", "class_id"]))
    assert len(per_class) == 14 and set(cells["n_readers"]) == {3}
    assert cells["mean_iou"].dropna().between(0, 1).all()
    assert (cells["all_agree"] <= cells["all_marked"]).all()
    multi = cells["n_marked"] >= 2
    assert cells.loc[multi, "mean_iou"].notna().all() and cells.loc[~multi, "mean_iou"].isna().all()


def test_report_md_aligns_text_left_and_orders_radiologists_naturally(tmp_path):
    from data_prep.report.dataset_report import natural_key

    assert sorted(["R12", "R2", "R1", "R10", "R17", "R9", "Rx"], key=natural_key) == \
        ["R1", "R2", "R9", "R10", "R12", "R17", "Rx"]
    ids = [f"img{i}" for i in range(4)]
    images = _images(ids, raters=["R1|R2|R3", "R1|R2|R3", "R12|R2x|R10", "R17|R9|R11"], size=(2000, 2500))
    boxes = _boxes([(ids[0], 3, r, 500, 1000, 1500, 1500) for r in ("R1", "R2", "R3")])
    md, _ = _check_report(make_report(images, boxes, "vinbigdata", tmp_path / "rep").parent)
    assert "(R2x, R9, R10, R11, R12, R17)" in md          # the raters who only read normal images
    head = md[md.index("| class_id | class | boxes |"):].splitlines()[:3]
    assert head[1] == "|---:|---|---:|---:|---:|"           # class names left, numbers right
    assert head[2].startswith("| 3 | Cardiomegaly | 3 | 1 |")
