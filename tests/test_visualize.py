"""detection.pictures.visualize: pixels of the drawn overlays (image placed exactly, class colour on the
box edges, solid truth vs dashed predictions, legend swatches), the DICOM and PNG paths placing a
box on the same anatomy, gallery picking by hand-computed costs, and `cxrdet show` end to end."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep.core.boxes import make_boxes
from detection.pictures import visualize as V
from detection.cli import main

GREY = 128


def rgb(path) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert im is not None, path
    return im[:, :, ::-1]


def is_colour(px: np.ndarray, class_id: int, tol: int = 3) -> np.ndarray:
    """(..., 3) pixels -> bool: equal to the class colour within ``tol`` per channel."""
    return (np.abs(px.astype(int) - np.array(V.class_rgb(class_id))) <= tol).all(-1)


def write_png(folder, image_id, img):
    folder.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / f"{image_id}.png"), img)


# ----------------------------------------------------------------------------- colours
def _lab(rgb) -> np.ndarray:
    """sRGB (0-255) -> CIELAB (D65), by the CIE formulas (hand-written: no colour library here)."""
    c = np.asarray(rgb, float) / 255
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def test_lab_formula_on_known_values():
    assert np.allclose(_lab([255, 255, 255]), [100, 0, 0], atol=0.05)
    assert np.allclose(_lab([255, 0, 0]), [53.24, 80.09, 67.20], atol=0.05)      # sRGB red, published
    assert np.allclose(_lab([0, 0, 255]), [32.30, 79.19, -107.86], atol=0.05)


def test_one_palette_of_15_distinguishable_colours():
    from data_prep.dicom.palette import PALETTE, class_color

    cols = [V.class_rgb(c) for c in range(15)]
    assert V.class_color(0) == "#e6194b" and V.class_rgb(3) == (67, 99, 216)
    assert len(set(cols)) == 15 and V.class_rgb(15) == V.class_rgb(0)            # cycles
    assert V.class_color is class_color and list(PALETTE) == [V.class_color(c) for c in range(15)]
    lab = _lab(cols)
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1) + np.eye(15) * 1e9
    assert d.min() > 30, d.min()                           # the old pastel trio was 25.6 apart, ILD/Opacity 29
    chroma = np.hypot(lab[:, 1], lab[:, 2])
    assert chroma[:14].min() > 28, chroma                  # findings are coloured, none grey-looking
    assert chroma[14] < 5                                  # 14 (No finding) is the one grey
    old_trio = [9, 11, 13]                                 # Other lesion / Pleural thickening / Pulmonary fibrosis
    assert min(d[a, b] for a in old_trio for b in old_trio if a != b) > 40


def test_report_plots_use_the_same_palette():
    from data_prep.report.plots import _class_colors

    boxes = make_boxes(["a", "b"], [13, 5], ["Pulmonary fibrosis", "ILD"], [[0, 0, 1, 1]] * 2)
    cols = _class_colors(boxes, ["Pulmonary fibrosis", "ILD", "unlisted"])
    assert cols["Pulmonary fibrosis"] == V.class_color(13) and cols["ILD"] == V.class_color(5)
    assert cols["unlisted"] not in (V.class_color(13), V.class_color(5))


def test_text_colour_by_background_lightness():
    assert V.text_color(V.class_rgb(3)) == "white" and V.text_color(V.class_rgb(2)) == "black"   # blue / yellow
    assert V.text_color((0.1, 0.1, 0.4)) == "white" and V.text_color((1.0, 1.0, 0.6)) == "black"  # 0-1 floats


# ----------------------------------------------------------------------------- placement + edges
@pytest.mark.parametrize("hw", [(157, 211), (256, 256), (301, 199)])
def test_image_occupies_top_left_pixels_exactly(tmp_path, hw):
    h, w = hw
    img = np.random.default_rng(h).integers(0, 256, hw, dtype=np.uint8)
    write_png(tmp_path / "src", "a", img)
    out = V.render_image("a", tmp_path / "src", tmp_path / "o.png")
    o = rgb(out)
    assert o.shape[1] == w + V.LEGEND_PX and o.shape[0] >= h
    for ch in range(3):
        assert np.array_equal(o[:h, :w, ch], img)                  # grey levels, unresampled


@pytest.fixture
def drawn(tmp_path):
    """A 200x300 grey PNG of a 400x600 original (scale 0.5): truth class 4 at original
    (100, 80, 300, 240) -> PNG (50, 40, 150, 120); prediction class 7 at original
    (360, 200, 560, 360) -> PNG (180, 100, 280, 180)."""
    write_png(tmp_path / "src", "x", np.full((200, 300), GREY, np.uint8))
    images = pd.DataFrame({"image_id": ["x"], "height": [400], "width": [600]})
    truth = make_boxes("x", 4, "Consolidation", [[100, 80, 300, 240]])
    pred = make_boxes("x", 7, "Lung Opacity", [[360, 200, 560, 360]], score=0.87)
    out = V.render_image("x", tmp_path / "src", tmp_path / "x.png", images, truth, pred,
                         class_names={4: "Consolidation", 7: "Lung Opacity"})
    return rgb(out)


def test_truth_edge_has_class_colour_solid(drawn):
    o = drawn
    left = o[50:111, 50]                        # x = 50, rows inside the box's vertical span
    top = o[40, 60:141]
    right, bottom = o[50:111, 150], o[120, 60:141]
    for edge in (left, top, right, bottom):
        assert is_colour(edge, 4).all()         # solid: every pixel along the edge
    assert (o[80, 100] == GREY).all()           # not filled
    assert (o[80, 44] == GREY).all() and (o[80, 156] == GREY).all()   # lines ~3.5 px wide


def test_prediction_edge_dashed_in_class_colour(drawn):
    o = drawn
    left = is_colour(o[105:176, 180], 7)        # x = 180, inside the vertical span
    bottom = is_colour(o[180, 185:276], 7)
    for edge in (left, bottom):
        assert 0.3 < edge.mean() < 0.9, edge.mean()   # dashes and gaps
    assert (o[140, 230] == GREY).all()


def test_legend_swatches_and_names(drawn):
    legend = drawn[:, 300:]
    assert is_colour(legend, 4).sum() > 20 and is_colour(legend, 7).sum() > 20
    assert not is_colour(legend, 0).any()
    labels = [h.get_label() for h in V.legend_handles({4, 7}, {4: "Consolidation", 7: "Lung Opacity"}, ["R8"])]
    assert labels == ["4 Consolidation", "7 Lung Opacity", "truth (solid)", "prediction (dashed)",
                      "radiologist R8"]


def test_canvas_grows_for_a_tall_legend(tmp_path):
    write_png(tmp_path / "src", "s", np.full((60, 80), GREY, np.uint8))
    boxes = make_boxes("s", range(6), [f"c{i}" for i in range(6)], [[5 + 10 * i, 5, 10 + 10 * i, 50] for i in range(6)])
    names = [f"class {i}" for i in range(15)]          # a list by class id works like a dict
    assert V.names_dict(names)[5] == "class 5" and V.names_dict({"2": "x"}) == {2: "x"}
    o = rgb(V.render_image("s", tmp_path / "src", tmp_path / "s.png", None, boxes, class_names=names))
    assert o.shape[0] > 60 and (o[60:, :80] == 255).all()           # white below the image
    assert (o[:60, 0] == GREY).all()
    assert all(is_colour(o[:, 80:], c).sum() > 10 for c in range(6))


# ----------------------------------------------------------------------------- boxes that do not hide
def _one(tmp_path, truth=None, pred=None, name="o"):
    write_png(tmp_path / "src", "q", np.full((200, 300), GREY, np.uint8))
    images = pd.DataFrame({"image_id": ["q"], "height": [200], "width": [300]})
    return rgb(V.render_image("q", tmp_path / "src", tmp_path / f"{name}.png", images, truth, pred))


def test_coincident_truth_boxes_of_different_classes_all_visible_and_labelled(tmp_path):
    box = [100, 60, 200, 160]
    truth = make_boxes("q", [9, 11, 13], ["Other lesion", "Pleural thickening", "Pulmonary fibrosis"], [box] * 3)
    o = _one(tmp_path, truth)[:200, :300]
    for c in (9, 11, 13):                       # each outline has its own ring (inset), none hidden
        ring = is_colour(o[60:161, 100:201], c)
        assert ring.sum() > 250, (c, ring.sum())
    # the rings are nested: class 9 on the box edge, 11 and 13 further in along the middle row
    row = o[110, 95:150]
    first = {c: int(np.argmax(is_colour(row, c))) for c in (9, 11, 13)}
    assert first[9] < first[11] < first[13], first
    # truth boxes are labelled just above the box: class-coloured text on white (dark colour 9)
    assert V.text_color(V.class_rgb(9)) == "white"
    above = o[47:59, 102:160]
    assert is_colour(above, 9, tol=40).sum() > 30 and (above.astype(int).sum(-1) > 600).mean() > 0.4


def test_prediction_on_its_truth_box_stays_visible(tmp_path):
    box = [100, 60, 200, 160]
    truth = make_boxes("q", 4, "Consolidation", [box])
    alone = _one(tmp_path, truth, name="alone")
    both = _one(tmp_path, truth, make_boxes("q", 4, "Consolidation", [box], score=0.87), name="both")
    band_alone, band_both = alone[70:150, 95:106], both[70:150, 95:106]   # the left edge's line
    assert is_colour(alone[70:150, 100], 4).all()                  # solid truth
    assert not (band_alone.astype(int).sum(-1) < 60).any()
    black = (band_both.astype(int).sum(-1) < 60).any(1).mean()    # rows where the dash gaps show black
    assert 0.2 < black < 0.7 and is_colour(band_both, 4).any(1).all(), black


def test_labels_never_overlap_never_leave_the_image_and_count_the_dropped():
    import matplotlib.pyplot as plt

    h, w = 120, 160
    fig = plt.figure(figsize=(w / V.DPI, h / V.DPI), dpi=V.DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    n = 14                               # crowded, at the right edge (where "ening 0.58" was clipped)
    pred = make_boxes("q", list(range(n)), [f"Pleural thickening {i}" for i in range(n)],
                      [[130 + i % 3, 5 + i, 160, 40 + i] for i in range(n)],
                      score=[0.3 + 0.05 * i for i in range(n)])
    frame = V.Frame(1.0, 1.0, 0.0, 0.0, h, w)
    V.draw_on_axes(ax, np.full((h, w), GREY, np.uint8), frame, None, pred)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_bbox_patch().get_window_extent(r)) for t in ax.texts]
    plt.close(fig)
    notes = [t for t, _ in boxes if t.startswith("+")]
    labels = [(t, b) for t, b in boxes if not t.startswith("+")]
    assert len(notes) == 1 and int(notes[0].split()[0][1:]) == n - len(labels) > 0
    for _, b in boxes:                                  # inside the image, never clipped
        assert b.x0 >= -1 and b.y0 >= -1 and b.x1 <= w + 1 and b.y1 <= h + 1, b
    for i in range(len(boxes)):
        for j in range(i):
            a, b = boxes[i][1], boxes[j][1]
            assert a.x1 <= b.x0 + 0.5 or b.x1 <= a.x0 + 0.5 or a.y1 <= b.y0 + 0.5 or b.y1 <= a.y0 + 0.5, \
                (boxes[i][0], boxes[j][0])
    kept = sorted(float(t.split()[-1]) for t, _ in labels)      # the highest confidences keep their label
    assert kept == sorted(pred["score"].round(2))[-len(kept):]


# ----------------------------------------------------------------------------- DICOM vs PNG
@pytest.fixture(scope="module")
def vin(tmp_path_factory):
    """8 phantom DICOMs (longest side 300) + their 160 px square PNGs + meta.csv."""
    from data_prep.dicom.convert import convert_folder
    from data_prep.phantoms.synth import synth_vinbigdata

    d = tmp_path_factory.mktemp("vin")
    synth_vinbigdata(d / "vin", n=8, n_test=0, size=300, seed=5)
    convert_folder(d / "vin" / "train", d / "png", size=160, workers=1, progress=False)
    truth = pd.read_csv(d / "vin" / "train_truth.csv", dtype={"image_id": str})
    return {"dir": d, "dicom": d / "vin" / "train", "png": d / "png", "meta": d / "png" / "meta.csv",
            "train": d / "vin" / "train.csv", "truth_csv": d / "vin" / "train_truth.csv",
            "truth": truth[truth["class_id"] < 14]}


def edge_centre(mask: np.ndarray, axis: int) -> float:
    """Centre of the first run of lines (columns if axis=0) where a box edge runs: lines holding
    at least half the class-coloured pixels of the fullest line (the crossing edges hold few)."""
    counts = mask.sum(axis)
    hits = np.flatnonzero(counts >= max(8, counts.max() / 2))
    assert len(hits), "no edge found"
    run = hits[: np.argmax(np.diff(np.concatenate([hits, [10 ** 9]])) > 1) + 1]
    return float(run.mean())


def test_dicom_and_png_paths_put_box_on_same_anatomy(vin, tmp_path):
    meta = pd.read_csv(vin["meta"], dtype={"image_id": str})
    row = vin["truth"].iloc[0]
    iid, cid = row["image_id"], int(row["class_id"])
    truth = make_boxes(iid, cid, row["class_name"], [row[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float)])
    h, w = meta.set_index("image_id").loc[iid, ["height", "width"]]
    rel = {}
    crops = {}
    for kind in ("png", "dicom"):
        out = V.render_image(iid, vin[kind], tmp_path / f"{kind}.png", meta, truth)
        o = rgb(out)
        disp = V.load_display(iid, vin[kind], meta)[0]
        dh, dw = disp.shape
        if kind == "png":
            assert (dh, dw) == (160, 160)
        else:
            assert (dh, dw) == (h, w)          # shown at its own size (<= DICOM_DISPLAY, never upscaled)
        mask = is_colour(o[:dh, :dw], cid)
        rel[kind] = (edge_centre(mask, 0) / dw, edge_centre(mask, 1) / dh)
        expect = (row["x_min"] / w, row["y_min"] / h)
        assert np.allclose(rel[kind], expect, atol=0.015), (kind, rel, expect)
        x0, y0, x1, y1 = (np.array([row["x_min"], row["y_min"], row["x_max"], row["y_max"]]) * np.tile([dw / w, dh / h], 2))
        x0, y0, x1, y1 = np.round([x0, y0, x1, y1]).astype(int)
        mx, my = (x1 - x0) // 6, (y1 - y0) // 6           # inside the box, clear of the lines
        crops[kind] = cv2.resize(o[y0 + my:y1 - my, x0 + mx:x1 - mx, 0], (32, 32), interpolation=cv2.INTER_AREA)
    assert abs(rel["png"][0] - rel["dicom"][0]) < 0.015 and abs(rel["png"][1] - rel["dicom"][1]) < 0.015
    a, b = (crops[k].astype(float).ravel() for k in ("png", "dicom"))
    assert np.corrcoef(a, b)[0, 1] > 0.9                    # the same lesion inside the box


# ----------------------------------------------------------------------------- gallery picking
@pytest.fixture
def costs_case():
    """a: matched (.9) -> cost 0, tp 1; b: 2 truth, 1 matched, FP .8 -> 1 + .8 = 1.8;
    c: no truth, FP .5 -> 0.5; d: 1 truth missed, FP .2 below conf .3 ignored -> 1."""
    images = pd.DataFrame({"image_id": list("abcd"), "height": 100, "width": 100})
    truth = make_boxes(list("abbd"), [0, 0, 3, 0], ["A", "A", "C", "A"],
                       [[10, 10, 40, 40], [10, 10, 40, 40], [50, 50, 90, 90], [10, 10, 40, 40]])
    pred = make_boxes(list("abbcd"), [0, 0, 5, 0, 0], ["A", "A", "E", "A", "A"],
                      [[11, 10, 40, 41], [10, 10, 40, 40], [60, 0, 90, 20], [10, 10, 40, 40], [10, 10, 40, 40]],
                      score=[0.9, 0.7, 0.8, 0.5, 0.2])
    return images, truth, pred


def test_pick_worst_best_by_hand_costs(costs_case):
    images, truth, pred = costs_case
    ids, caps = V.pick_gallery("worst", images, truth, pred, n=16, conf=0.3, metric="vinbigdata", normal_class=14)
    assert ids == ["b", "d", "c"]                       # a costs nothing: not in the worst gallery
    assert caps["b"] == "b cost 1.80 (fn 1, fp 1, tp 1)"
    assert caps["c"] == "c cost 0.50 (fn 0, fp 1, tp 0)"
    assert V.pick_gallery("worst", images, truth, pred, n=2, conf=0.3, metric="vinbigdata", normal_class=14)[0] == ["b", "d"]
    best, _ = V.pick_gallery("best", images, truth, pred, n=2, conf=0.3, metric="vinbigdata", normal_class=14)
    assert best == ["a", "c"]                           # zero cost first, then the cheapest
    assert V.pick_gallery("worst", images, truth, pred, n=4, conf=0.1, metric="vinbigdata", normal_class=14)[0] == ["b", "c"]   # d's .2 box now a TP
    with pytest.raises(ValueError, match="needs both"):
        V.pick_gallery("worst", images, truth, None)


def test_pick_random_and_class(costs_case):
    images, truth, pred = costs_case
    r1, _ = V.pick_gallery("random", images, truth, pred, n=3, seed=1)
    assert len(r1) == 3 == len(set(r1)) and set(r1) <= set("abcd")
    assert r1 == V.pick_gallery("random", images, truth, pred, n=3, seed=1)[0]
    assert sorted(V.pick_gallery("random", images, None, None, n=9)[0]) == list("abcd")
    ids, caps = V.pick_gallery("class=a", images, truth, pred)          # case-insensitive name
    assert ids == ["a", "b", "d"] and caps["b"] == "b A x1"            # one box each: table order
    more = pd.concat([truth, truth[truth["image_id"] == "d"]])
    assert V.pick_gallery("class=A", images, more, pred, n=2) == (["d", "a"], {"d": "d A x2", "a": "a A x1"})
    assert V.pick_gallery("class=3", images, truth, pred)[0] == ["b"]
    assert V.pick_gallery("class=E", images, None, pred)[0] == ["b"]    # no truth: predictions
    with pytest.raises(ValueError, match=r"unknown class.*\['A', 'C'\]"):
        V.pick_gallery("class=Nodule", images, truth, pred)
    with pytest.raises(ValueError, match="expected worst, best, random"):
        V.pick_gallery("median", images, truth, pred)


# ----------------------------------------------------------------------------- CLI end to end
def test_cli_show_images_raters_and_galleries(vin, tmp_path, capsys):
    d = vin["dir"]
    truth = vin["truth"]
    iid = truth["image_id"].value_counts().index[0]
    # predictions: every truth box shifted a little (TP) + one confident FP of another class
    pred = truth.rename(columns={"rad_id": "rater"}).copy()
    pred[["x_min", "x_max"]] += 3
    pred["score"] = 0.8
    fp = pred.iloc[[0]].assign(class_id=3, class_name="Cardiomegaly", score=0.95, y_min=200.0, y_max=260.0)
    low = pred.iloc[[0]].assign(class_id=9, class_name="Other lesion", score=0.1)
    pd.concat([pred, fp, low]).drop(columns=["n_raters"]).to_csv(d / "pred.csv", index=False)
    out = tmp_path / "show"
    base = ["show", "--source", str(vin["png"]), "--meta", str(vin["meta"]), "--truth", str(vin["train"]),
            "--pred", str(d / "pred.csv"), "--out", str(out)]
    assert main(base + ["--image", iid, "--image", "nope"]) == 1     # one bad id: the rest still drawn
    plain = rgb(out / f"{iid}.png")
    assert main(base + ["--image", iid, "--raters"]) == 0
    rat = rgb(out / f"{iid}.png")
    assert "1 of 2 images failed" in capsys.readouterr().out
    cls = sorted(truth.loc[truth["image_id"] == iid, "class_id"].astype(int))
    img_px = slice(0, 160)
    for c in cls:                    # raw radiologist boxes add class-coloured pixels beside the fused box
        assert is_colour(rat[img_px, img_px], c).sum() > is_colour(plain[img_px, img_px], c).sum()
    assert not is_colour(plain[img_px, img_px], 9).any()           # below --conf: hidden
    for kind, n in (("worst", 16), ("random", 4), (f"class={truth['class_name'].iloc[0]}", 4)):
        assert main(base + ["--gallery", kind, "--n", str(n)]) == 0, kind
    worst = rgb(out / "gallery_worst.png")
    assert is_colour(worst, 3).sum() > 50                            # the FP's class is in the gallery
    rnd = rgb(out / "gallery_random.png")
    assert rnd.shape[1] == 2 * (320 + 8) + 8 + V.LEGEND_PX           # 4 images -> 2 x 2 grid
    cname = truth["class_name"].iloc[0].replace("/", "_").replace(" ", "_")
    assert (out / f"gallery_class_{cname}.png").is_file()
    # DICOM source, no meta needed
    assert main(["show", "--source", str(vin["dicom"]), "--truth", str(vin["truth_csv"]), "--image", iid,
                 "--out", str(tmp_path / "dcm")]) == 0
    assert any(is_colour(rgb(tmp_path / "dcm" / f"{iid}.png"), c).sum() > 50 for c in cls)


def test_cli_show_errors(vin, tmp_path, capsys):
    src = ["--source", str(vin["png"]), "--out", str(tmp_path)]
    assert main(["show", *src]) == 2
    assert "nothing to show" in capsys.readouterr().err
    assert main(["show", *src, "--image", "x", "--raters"]) == 2
    assert "--raters needs --rater-labels (or --truth)" in capsys.readouterr().err
    assert main(["show", *src, "--image", "x", "--raters", "--truth", str(vin["truth_csv"]),
                 "--meta", str(vin["meta"])]) == 2
    assert "not a raw VinBigData labels file" in capsys.readouterr().err


def test_cli_show_raters_selects_radiologists(vin, tmp_path, capsys):
    """--raters (config key raters) picks whose raw boxes are drawn, from --rater-labels or a raw --truth:
    the first release's bare --raters (all, from --truth) = --rater-labels train.csv; --raters R8 =
    a labels file holding R8's rows only; a radiologist who read nothing is a one-line error."""
    raw = pd.read_csv(vin["train"], dtype={"image_id": str, "rad_id": str})
    iid = raw[(raw["rad_id"] == "R8") & (raw["class_id"] < 14)]["image_id"].value_counts().index[0]
    assert raw.loc[(raw["image_id"] == iid) & (raw["class_id"] < 14), "rad_id"].nunique() > 1
    raw[raw["rad_id"] == "R8"].to_csv(tmp_path / "r8.csv", index=False)
    base = ["show", "--source", str(vin["png"]), "--meta", str(vin["meta"]), "--image", iid]

    def draw(name, *argv):
        assert main([*base, *argv, "--out", str(tmp_path / name)]) == 0
        return (tmp_path / name / f"{iid}.png").read_bytes()

    old = draw("old", "--truth", str(vin["train"]), "--raters")
    assert old == draw("labels", "--truth", str(vin["train"]), "--rater-labels", str(vin["train"]))
    assert old != draw("none", "--truth", str(vin["train"]))
    fused = ["--truth", str(vin["truth_csv"])]
    r8 = draw("r8", *fused, "--rater-labels", str(vin["train"]), "--raters", "R8")
    assert r8 == draw("r8_file", *fused, "--rater-labels", str(tmp_path / "r8.csv"))
    assert r8 != draw("all", *fused, "--rater-labels", str(vin["train"]))
    assert r8 == draw("r8_key", *fused, "--rater-labels", str(vin["train"]), "raters=[R8]")
    assert main([*base, *fused, "--rater-labels", str(vin["train"]), "--raters", "R99", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--raters R99 with --rater-labels" in err and "read no image" in err and "'R8'" in err


def test_cli_show_dicom_sizes_from_headers_and_worst_gallery_ranks_predicted(vin, tmp_path, caplog):
    caplog.set_level("INFO")
    truth = vin["truth"]
    iid = truth["image_id"].value_counts().index[0]
    # raw train.csv (three radiologists) from a DICOM folder: fused with sizes from the headers
    assert main(["show", "--source", str(vin["dicom"]), "--truth", str(vin["train"]), "--image", iid,
                 "--out", str(tmp_path / "raw")]) == 0
    o = rgb(tmp_path / "raw" / f"{iid}.png")
    assert all(is_colour(o, c).sum() > 50 for c in set(truth.loc[truth["image_id"] == iid, "class_id"]))
    # predictions on 2 of the 8 images: the worst gallery ranks those 2, not the never-predicted 6
    two = sorted(truth["image_id"].unique())[:2]
    pred = truth[truth["image_id"].isin(two)].drop(columns=["n_raters"], errors="ignore").assign(score=0.8)
    pred.iloc[[0]].assign(x_min=1.0, y_min=1.0, x_max=30.0, y_max=30.0, score=0.9).pipe(
        lambda fp: pd.concat([pred, fp])).to_csv(tmp_path / "pred.csv", index=False)
    base = ["show", "--source", str(vin["png"]), "--meta", str(vin["meta"]), "--truth", str(vin["truth_csv"]),
            "--pred", str(tmp_path / "pred.csv"), "--gallery", "worst", "--out", str(tmp_path / "g")]
    assert main(base) == 0
    assert "ranked among the 2 of 8 images with predictions" in caplog.text
    g = rgb(tmp_path / "g" / "gallery_worst.png")
    assert g.shape[1] == 1 * (320 + 8) + 8 + V.LEGEND_PX                # one costly image, not 8 misses
    # --folds/--fold like evaluate: rank that fold (a never-predicted normal image costs nothing)
    other = sorted(set(pd.read_csv(vin["meta"], dtype={"image_id": str})["image_id"]) - set(two))[0]
    pd.DataFrame({"image_id": [pred["image_id"].iloc[0], other], "fold": [0, 0]}).to_csv(tmp_path / "folds.csv", index=False)
    caplog.clear()
    assert main(base + ["--folds", str(tmp_path / "folds.csv"), "--fold", "0"]) == 0
    assert "ranked among fold 0 of folds.csv" in caplog.text
    assert rgb(tmp_path / "g" / "gallery_worst.png").shape[1] == 1 * (320 + 8) + 8 + V.LEGEND_PX
    assert main(base + ["--fold", "0"]) == 2                            # --fold without --folds


def test_radiologists_in_natural_order():
    import matplotlib.pyplot as plt

    raters = make_boxes("q", 1, "c", [[1, 1, 9, 9]] * 3, rater=["R10", "R8", "R9"])
    fig = plt.figure(figsize=(1, 1), dpi=V.DPI)
    _, ids = V.draw_on_axes(fig.add_axes((0, 0, 1, 1)), np.full((20, 20), GREY, np.uint8),
                            V.Frame(1.0, 1.0, 0.0, 0.0, 20, 20), raters=raters)
    plt.close(fig)
    assert ids == ["R8", "R9", "R10"]
