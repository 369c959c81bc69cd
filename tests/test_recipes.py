"""The winning training recipes as switches (issue 27): squarified training boxes, radiologist
variants, checkpoint ensembles, per-class gating. Tiny phantoms, hand-computed boxes."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep.core import boxes as bx
from data_prep.core.config import load_config
from data_prep.labels.export import write_coco, write_yolo

NAMES = ["Aortic enlargement", "Atelectasis"]


# ----------------------------------------------------------------------------- squarify
def test_squarify_hand_computed():
    """Image 100 high x 200 wide, R = 2: boxes longer than twice their short side grow about the
    centre to exactly 2:1, then clip to the image; the others are unchanged."""
    b = [[10, 10, 12, 30],       # thin (tall): w 2, h 20 -> w 10 about cx 11 -> 6..16
         [50, 40, 90, 44],       # wide: w 40, h 4 -> h 20 about cy 42 -> 32..52
         [0, 0, 2, 20],          # tall at the left border: -4..6 clipped to 0..6
         [100, 98, 160, 100],    # wide at the bottom border: h 30 about cy 99 -> 84..114 clipped to 84..100
         [20, 20, 30, 30],       # already square
         [0, 50, 20, 60]]        # exactly 2:1: not above the ratio, unchanged
    got = bx.squarify(b, 2, 100, 200)
    want = [[6, 10, 16, 30], [50, 32, 90, 52], [0, 0, 6, 20], [100, 84, 160, 100], [20, 20, 30, 30], [0, 50, 20, 60]]
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(bx.squarify([[10, 10, 12, 30]], 3), [[11 - 10 / 3, 10, 11 + 10 / 3, 30]])
    np.testing.assert_allclose(bx.squarify(b, None), np.asarray(b, float))       # off
    np.testing.assert_allclose(bx.squarify([[0, 0, 2, 20]], 2), [[-4, 0, 6, 20]])  # no size: not clipped
    with pytest.raises(ValueError, match="squarify ratio 0.5"):
        bx.squarify(b, 0.5)


def test_squarify_config_validated_at_the_merge():
    assert load_config(None, ["squarify=2"])["squarify"] == 2.0
    assert load_config(None)["squarify"] is None
    for bad in ("squarify=0.5", "squarify=wide", "squarify=true"):
        with pytest.raises(ValueError, match="squarify"):
            load_config(None, [bad])


def _dataset(out: Path):
    """3 images 100 x 200 (h x w) with PNGs in out/images, 3 folds (one image each); radiologists
    R1, R2 read a, R1 read b (normal), R2 read c.

    Fused truth: a: a tall box (ratio 10) and a square; c: a wide box at the border."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for iid, raters in (("a", "R1|R2"), ("b", "R1"), ("c", "R2")):
        png = out / "images" / f"{iid}.png"
        cv2.imwrite(str(png), np.full((32, 64), 100, np.uint8))
        rows.append((iid, 100, 200, str(png), f"P{iid}", 32, 64, raters))
    images = pd.DataFrame(rows, columns=["image_id", "height", "width", "path", "patient_id", "png_height",
                                         "png_width", "raters"])
    fused = bx.make_boxes(["a", "a", "c"], [0, 1, 1], [NAMES[0], NAMES[1], NAMES[1]],
                          [[10, 10, 12, 30], [40, 40, 60, 60], [100, 98, 160, 100]])
    raw = bx.make_boxes(["a", "a", "a", "c"], [0, 0, 1, 1], [NAMES[0], NAMES[0], NAMES[1], NAMES[1]],
                        [[10, 10, 12, 30], [9, 9, 13, 31], [40, 40, 60, 60], [100, 98, 160, 100]],
                        rater=["R1", "R2", "R2", "R2"])
    folds = pd.DataFrame({"image_id": ["a", "b", "c"], "fold": [0, 1, 2]})
    return images, fused, raw, folds


def _yolo(path: Path) -> np.ndarray:
    return np.loadtxt(path, ndmin=2) if path.stat().st_size else np.zeros((0, 5))


def _xyxy(lines: np.ndarray, h=100, w=200) -> np.ndarray:
    return bx.yolo_to_xyxy(lines[:, 1:], h, w)


def test_export_squarifies_training_labels_only(tmp_path):
    """squarify=2: the training items' labels are squarified, the truth (OUT/labels, val lists,
    the COCO val json) is the same as without squarify."""
    images, fused, _, folds = _dataset(tmp_path)
    plain = tmp_path / "plain"
    (plain / "images").mkdir(parents=True)
    for p in (tmp_path / "images").iterdir():
        (plain / "images" / p.name).symlink_to(p)
    write_yolo(images.assign(path=[str(plain / "images" / f"{i}.png") for i in images.image_id]), fused, folds,
               plain, NAMES)
    write_coco(images, fused, folds, plain, NAMES)
    res = write_yolo(images, fused, folds, tmp_path, NAMES, squarify=2)
    write_coco(images, fused, folds, tmp_path, NAMES, squarify=2)
    assert res["n_items"] == {"fused": 3}
    items = tmp_path / "train_items"
    # training labels: hand-computed squarified boxes (original pixels)
    np.testing.assert_allclose(_xyxy(_yolo(items / "labels" / "a.txt")), [[6, 10, 16, 30], [40, 40, 60, 60]], atol=1e-3)
    np.testing.assert_allclose(_xyxy(_yolo(items / "labels" / "c.txt")), [[100, 84, 160, 100]], atol=1e-3)
    assert (items / "labels" / "b.txt").read_text() == ""
    # the truth is untouched: labels, val lists, COCO val json equal to the plain export
    for i in "abc":
        assert (tmp_path / "labels" / f"{i}.txt").read_text() == (plain / "labels" / f"{i}.txt").read_text()
    np.testing.assert_allclose(_xyxy(_yolo(tmp_path / "labels" / "a.txt")), [[10, 10, 12, 30], [40, 40, 60, 60]],
                               atol=1e-3)
    for k in range(3):
        val = (tmp_path / "yolo" / f"fold{k}" / "val.txt").read_text().split()
        assert val == [str(tmp_path / "images" / f"{'abc'[k]}.png")]
        train = (tmp_path / "yolo" / f"fold{k}" / "train.txt").read_text().split()
        assert train == [str(items / "images" / f"{i}.png") for i in "abc" if i != "abc"[k]]
        assert all(Path(p).resolve() == (tmp_path / "images" / Path(p).name).resolve() for p in train)
        assert json.loads((tmp_path / "coco" / f"fold{k}_val.json").read_text()) == \
            json.loads((plain / "coco" / f"fold{k}_val.json").read_text())
    tr = json.loads((tmp_path / "coco" / "fold1_train.json").read_text())   # images a and c
    bbox = sorted(a["bbox"] for a in tr["annotations"])
    assert bbox == sorted([[6.0, 10.0, 10.0, 20.0], [40.0, 40.0, 20.0, 20.0], [100.0, 84.0, 60.0, 16.0]])
    # a re-export without squarify removes the training items again
    write_yolo(images, fused, folds, tmp_path, NAMES)
    assert not items.exists()
    assert (tmp_path / "yolo" / "fold0" / "train.txt").read_text().split() == \
        [str(tmp_path / "images" / f"{i}.png") for i in "bc"]


def test_prep_squarify_leaves_truth_and_rescores_nothing(tmp_path):
    """prep squarify=2 on VinBigData phantoms: fused_boxes.csv, labels/ and the val lists equal a
    prep without it; only the training lists point at the squarified items; the switch re-runs
    export alone."""
    from data_prep.prep import prep, read_table
    from data_prep.phantoms.synth import synth_vinbigdata

    data = tmp_path / "data"
    synth_vinbigdata(data, n=8, n_test=0, size=96, seed=5)
    args = ["folds=2", "size=64", "workers=1"]
    a = prep(load_config("vinbigdata", args), data, tmp_path / "a")
    b = prep(load_config("vinbigdata", args + ["squarify=2"]), data, tmp_path / "b")
    pd.testing.assert_frame_equal(read_table(tmp_path / "a" / "fused_boxes.csv"),
                                  read_table(tmp_path / "b" / "fused_boxes.csv"))
    for p in sorted((tmp_path / "a" / "labels").iterdir()):
        assert (tmp_path / "b" / "labels" / p.name).read_text() == p.read_text()
    for k in range(2):
        va = (tmp_path / "a" / "yolo" / f"fold{k}" / "val.txt").read_text().replace(str(tmp_path / "a"), "")
        vb = (tmp_path / "b" / "yolo" / f"fold{k}" / "val.txt").read_text().replace(str(tmp_path / "b"), "")
        assert va == vb
        tb = (tmp_path / "b" / "yolo" / f"fold{k}" / "train.txt").read_text().split()
        assert tb and all("/train_items/images/" in p for p in tb)
    # every training label is its truth squarified (computed here from fused_boxes.csv)
    fused, images = read_table(tmp_path / "b" / "fused_boxes.csv"), read_table(tmp_path / "b" / "images.csv")
    hw = images.set_index("image_id")
    n_grown = 0
    for iid, g in fused.groupby("image_id"):
        h, w = hw.loc[iid, ["height", "width"]]
        want = bx.squarify(np.clip(g[bx.COORDS].to_numpy(float), 0, [w, h, w, h]), 2, h, w)
        got = _xyxy(_yolo(tmp_path / "b" / "train_items" / "labels" / f"{iid}.txt"), h, w)
        np.testing.assert_allclose(np.sort(got, 0), np.sort(want, 0), atol=1e-3 * max(h, w))
        n_grown += int((np.abs(want - g[bx.COORDS].to_numpy(float)) > 1e-6).any(1).sum())
    assert n_grown > 0, "the phantoms hold no box above 2:1: the test would prove nothing"
    assert a["summary"]["boxes_fused"] == b["summary"]["boxes_fused"]
    c = prep(load_config("vinbigdata", args), data, tmp_path / "b")
    assert c["ran"] == ["export"] and not (tmp_path / "b" / "train_items").exists()


# ----------------------------------------------------------------------------- class gating
def _gate_table():
    from data_prep.core.boxes import make_boxes

    return make_boxes(["i1", "i1", "i1", "i2"], [0, 1, 2, 0], ["Aortic enlargement", "Atelectasis", "Calcification",
                                                            "Aortic enlargement"],
                      [[0, 0, 10, 10], [10, 10, 30, 30], [5, 5, 9, 9], [1, 1, 5, 5]], score=[0.8, 0.5, 0.4, 0.6])


@pytest.mark.parametrize("alpha, want", [
    (0.5, [0.8 * 0.5, 0.5 * 0.8, 0.4, 0.6]),                                      # shared: p ** 0.5
    ({"Aortic enlargement": 2, "Atelectasis": 0.5}, [0.8 * 0.0625, 0.5 * 0.8, 0.4, 0.6]),
    ({"Atelectasis": 1}, [0.8, 0.5 * 0.64, 0.4, 0.6]),                            # unnamed class: kept
    ({"1": 2.0}, [0.8, 0.5 * 0.64 ** 2, 0.4, 0.6]),                               # a class id works too
])
def test_class_gating_hand_computed(alpha, want):
    """score x p_class ** alpha_c: i1's Aortic enlargement p = 0.25, Atelectasis p = 0.64;
    Calcification has no column and i2 no row: both keep their scores."""
    from data_prep.datasets import describe
    from detection.competition.postprocess import apply

    probs = pd.DataFrame({"image_id": ["i1"], "abnormal": [0.9], "Aortic enlargement": [0.25], "Atelectasis": [0.64]})
    cfg = {"cls_fusion": "multiply", "alpha": alpha, "cls_low": 0.0, "cls_high": 0.0}
    out = apply(_gate_table(), probs, cfg, describe("vinbigdata").normal)   # no default normal class (6238a3c)
    got = out.set_index(["image_id", "class_name"])["score"]
    keys = [("i1", "Aortic enlargement"), ("i1", "Atelectasis"), ("i1", "Calcification"), ("i2", "Aortic enlargement")]
    np.testing.assert_allclose([got[k] for k in keys], want, rtol=1e-12)


def test_alpha_config_per_class_or_shared():
    assert load_config(None, ["alpha={Atelectasis: 0.5, Cardiomegaly: 2}"])["alpha"] == {"Atelectasis": 0.5,
                                                                                          "Cardiomegaly": 2.0}
    assert load_config(None, ["alpha=2"])["alpha"] == 2.0
    for bad in ("alpha=-1", "alpha=[1, 2]", "alpha={Atelectasis: -1}", "alpha=high"):
        with pytest.raises(ValueError, match="alpha"):
            load_config(None, [bad])


def test_tune_per_class_alpha_round_trip(tmp_path):
    """tune with alpha {per_class: true} on OOF probabilities writes one exponent per class with
    a column; postprocess --config tuned.yaml then evaluate gives tune's `after`."""
    import yaml

    from data_prep.core.boxes import make_boxes
    from detection.cli import main

    r = np.random.default_rng(0)
    names = ["Aortic enlargement", "Atelectasis", "Calcification"]
    ids = [f"img{i:02d}" for i in range(24)]
    t, p, probs = [], [], {"image_id": ids, "abnormal": [], names[0]: [], names[1]: []}
    for i, iid in enumerate(ids):
        probs["abnormal"].append(0.9)
        present = set()
        for _ in range(int(r.integers(0, 3))):
            c = int(r.integers(0, 3))
            x, y = r.uniform(0, 500, 2)
            b = [x, y, x + 100, y + 120]
            t.append((iid, c, b))
            present.add(c)
            p.append((iid, c, list(np.add(b, r.normal(0, 8, 4))), round(float(r.uniform(0.2, 0.9)), 2)))
        for _ in range(2):          # false positives the probabilities could gate away
            c = int(r.integers(0, 3))
            x, y = r.uniform(0, 600, 2)
            p.append((iid, c, [x, y, x + 90, y + 90], round(float(r.uniform(0.3, 0.95)), 2)))
        for c in (0, 1):
            probs[names[c]].append(float(r.uniform(0.6, 1.0) if c in present else r.uniform(0, 0.4)))
    make_boxes([x[0] for x in t], [x[1] for x in t], [names[x[1]] for x in t], [x[2] for x in t]).to_csv(
        tmp_path / "truth.csv", index=False)
    make_boxes([x[0] for x in p], [x[1] for x in p], [names[x[1]] for x in p], [x[2] for x in p],
               score=[x[3] for x in p]).to_csv(tmp_path / "oof.csv", index=False)
    pd.DataFrame({"image_id": ids, "height": 1000, "width": 1000}).to_csv(tmp_path / "meta.csv", index=False)
    pd.DataFrame({"image_id": ids, "fold": np.arange(24) % 2}).to_csv(tmp_path / "folds.csv", index=False)
    pd.DataFrame(probs).to_csv(tmp_path / "probs.csv", index=False)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"alpha": {"low": 0.0, "high": 2.0, "per_class": True}}))
    common = ["--truth", str(tmp_path / "truth.csv"), "--meta", str(tmp_path / "meta.csv")]
    assert main(["tune", *common, "--folds", str(tmp_path / "folds.csv"), "--pred", str(tmp_path / "oof.csv"),
                 "--cls-probs", str(tmp_path / "probs.csv"), "--space", str(tmp_path / "space.yaml"),
                 "--trials", "10", "--seed", "1", "--no-nested", "--out", str(tmp_path / "tuned.yaml"),
                 "cls_low=0", "cls_high=0"]) == 0
    res = json.loads((tmp_path / "tuned.json").read_text())
    tuned = yaml.safe_load((tmp_path / "tuned.yaml").read_text())
    assert tuned["cls_fusion"] == "multiply" and sorted(tuned["alpha"]) == names[:2]   # Calcification: no column
    assert res["after"] > res["before"]      # the phantom probabilities separate true from false boxes
    assert main(["postprocess", "--pred", str(tmp_path / "oof.csv"), "--cls-probs", str(tmp_path / "probs.csv"),
                 "--meta", str(tmp_path / "meta.csv"), "--config", str(tmp_path / "tuned.yaml"),
                 "--out", str(tmp_path / "final.csv")]) == 0
    assert main(["evaluate", *common, "--pred", str(tmp_path / "final.csv"), "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["mAP"] == pytest.approx(res["after"], abs=1e-9)


# ----------------------------------------------------------------------------- checkpoint ensembles
def test_keep_epochs_keeps_the_k_best_and_drops_the_fallen(tmp_path):
    """Scores 0.2, 0.5, 0.3, 0.5 with K = 2: after each epoch the files are the 2 best so far
    (ties: the earlier epoch first); members() orders them by competition.csv."""
    from detection.models import checkpoints as C

    run, scores, seen = tmp_path / "run", [], []
    for epoch, s in enumerate([0.2, 0.5, 0.3, 0.5], 1):
        scores.append({"epoch": epoch, "metric": "vinbigdata", "score": s})
        C.keep(run, epoch, scores, 2, lambda tmp, e=epoch: Path(tmp).write_text(f"weights of epoch {e}"))
        seen.append(sorted(C.kept_files(run)))
    assert seen == [[1], [1, 2], [2, 3], [2, 4]]
    assert (run / "weights" / "kept_epoch4.pt").read_text() == "weights of epoch 4"
    pd.DataFrame(scores).to_csv(run / "competition.csv", index=False)
    assert [p.name for p in C.members(run)] == ["kept_epoch2.pt", "kept_epoch4.pt"]
    assert [p.name for p in C.members(run, 1)] == ["kept_epoch2.pt"]
    assert C.keep(run, 5, scores, 0, lambda tmp: pytest.fail("k = 0 writes nothing")) == []
    assert C.expand([str(tmp_path / "x.pt"), run], 1) == [str(tmp_path / "x.pt"), str(run / "weights" / "kept_epoch2.pt")]
    with pytest.raises(ValueError, match="no kept epoch weights"):
        C.members(tmp_path)
    with pytest.raises(ValueError, match="keep_epochs"):
        C.check_k(-1, "keep_epochs")


def _wbf_reference(tables, sizes, iou, skip, conf_type="avg"):
    """ensemble-boxes' own WBF of several raw tables, image by image (boxes normalised by the size)."""
    from ensemble_boxes import weighted_boxes_fusion

    rows = []
    for iid, (h, w) in sizes.iterrows():
        bl, sl, ll = [], [], []
        for t in tables:
            g = t[t["image_id"] == iid]
            bl.append((g[bx.COORDS].to_numpy(float) / [w, h, w, h]).clip(0, 1))
            sl.append(g["score"].to_numpy(float))
            ll.append(g["class_id"].to_numpy(int))
        if not any(len(b) for b in bl):
            continue
        b, s, lab = weighted_boxes_fusion(bl, sl, ll, iou_thr=iou, skip_box_thr=skip, conf_type=conf_type)
        for bb, ss, cc in zip(b, s, lab):
            rows.append((iid, int(cc), *(np.asarray(bb) * [w, h, w, h]), float(ss)))
    return pd.DataFrame(rows, columns=["image_id", "class_id", *bx.COORDS, "score"])


def _same_boxes(got: pd.DataFrame, want: pd.DataFrame):
    cols = ["image_id", "class_id", *bx.COORDS, "score"]
    g = got[cols].sort_values(cols, ignore_index=True)
    w = want[cols].sort_values(cols, ignore_index=True)
    assert len(g) == len(w) > 0
    pd.testing.assert_frame_equal(g, w, check_dtype=False, atol=1e-6, rtol=0)


def test_predict_run_dir_is_the_wbf_of_its_kept_epochs(make_prep, fake_result, monkeypatch, tmp_path):
    """predict --weights RUN_DIR = ensemble-boxes' WBF of its kept epochs' predictions (fake models:
    each epoch's boxes shifted and scored differently); ckpt_ensemble: 2 takes the 2 best."""
    import detection.engine.predict as P
    import detection.engine.predict_models as PM
    from detection.engine.predict import infer

    class Shifted:
        names = dict(enumerate(NAMES))

        def __init__(self, d):
            self.d = d

        def predict(self, imgs, **kw):
            d = self.d
            return [fake_result([[10 + d, 12 + d, 50 + d, 60 + d], [70, 70 + 2 * d, 100, 110]],
                                [0.9 - 0.1 * d, 0.3 + 0.05 * d], [0, 1]) for _ in imgs]

    def load(weights, imgsz, batch, task="detect", onnx=False):
        return P.Loaded(Shifted(int(Path(weights).stem.replace("kept_epoch", ""))), str(weights), imgsz, batch)

    monkeypatch.setattr(PM, "load_model", load)
    prep = make_prep(tmp_path / "prep", n=4)
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    for e in (1, 3, 4):
        (run / "weights" / f"kept_epoch{e}.pt").write_text("x")
    pd.DataFrame({"epoch": [1, 2, 3, 4], "metric": "vinbigdata", "score": [0.4, 0.1, 0.6, 0.5]}).to_csv(
        run / "competition.csv", index=False)
    src, meta = prep / "yolo" / "fold0" / "val.txt", prep / "images.csv"
    cfg = load_config(None, ["ens_iou=0.5", "ens_skip=0.0001"])
    members = [infer(run / "weights" / f"kept_epoch{e}.pt", src, meta, cfg) for e in (3, 4, 1)]
    ens = infer(run, src, meta, cfg)
    sizes = ens.sizes
    _same_boxes(ens.raw, _wbf_reference([m.raw for m in members], sizes, 0.5, 0.0001))
    two = infer(run, src, meta, {**cfg, "ckpt_ensemble": 2})
    _same_boxes(two.raw, _wbf_reference([m.raw for m in members[:2]], sizes, 0.5, 0.0001))
    assert not np.allclose(two.raw["x_min"].sort_values(), ens.raw["x_min"].sort_values())


@pytest.mark.slow   # 3 tiny epochs, then a 2-fold cv of 2 epochs (~60 s)
def test_keep_epochs_real_training_and_cv_ckpt_ensemble(make_prep, tiny_cfg, tmp_path, monkeypatch):
    """A real YOLO run with keep_epochs 2 (scores 0.2, 0.5, 0.3 planted after the real scoring)
    keeps epochs 2 and 3 as loadable weights; predict --weights RUN_DIR equals ensemble-boxes' WBF
    of those two's predictions; cv with ckpt_ensemble 2 writes that OOF score beside the best epoch's."""
    from detection.engine import epoch_score as E
    from detection.competition.cv import cross_validate
    from detection.evaluation.evaluate import evaluate_files
    from detection.engine.predict import infer
    from detection.engine.train import train_detector

    seen, real = [], E.FoldScore.score

    def fake(self, raw):
        seen.append(real(self, raw))
        return [0.2, 0.5, 0.3][(len(seen) - 1) % 3]

    monkeypatch.setattr(E.FoldScore, "score", fake)
    prep = make_prep(tmp_path / "prep", n=8)
    cfg = tiny_cfg(tmp_path, name="k", epochs=3, keep_epochs=2, imgsz=64)
    best = train_detector(cfg, prep, 0)
    run = best.parents[1]
    assert sorted(p.name for p in (run / "weights").glob("kept_epoch*.pt")) == ["kept_epoch2.pt", "kept_epoch3.pt"]
    src, meta = prep / "yolo" / "fold0" / "val.txt", prep / "images.csv"
    pc = {**cfg, "conf": 0.0001, "ens_iou": 0.55, "ens_skip": 0.0}
    m = [infer(run / "weights" / f"kept_epoch{e}.pt", src, meta, pc) for e in (2, 3)]
    ens = infer(run, src, meta, pc)
    _same_boxes(ens.raw, _wbf_reference([x.raw for x in m], ens.sizes, 0.55, 0.0))

    seen.clear()
    cvc = tiny_cfg(tmp_path, name="cvk", epochs=2, keep_epochs=2, ckpt_ensemble=2, imgsz=64)
    res = cross_validate(cvc, prep)
    ck = json.loads((prep / "cv" / "cv.json").read_text())["ckpt_ensemble"]
    assert ck["k"] == 2 and [len(f["members"]) for f in ck["folds"]] == [2, 2]
    again = evaluate_files(prep / "fused_boxes.csv", prep / "cv" / "oof_ckpt.csv", prep / "images.csv",
                           prep / "folds.csv", None, "vinbigdata", 0.4)
    assert ck["score"] == pytest.approx(again["mAP"], abs=1e-12) and "score" in res["oof"]


# ----------------------------------------------------------------------------- radiologist variants
def _items(folder: Path) -> dict:
    return {r.item: (r.image_id, r.rater) for r in pd.read_csv(folder / "train_items" / "items.csv", dtype=str,
                                                                 keep_default_na=False).itertuples()}


def test_variant_items_carry_each_radiologists_boxes(tmp_path):
    """a read by R1 (a tall box) and R2 (a shifted tall box + a square), b by R1 (normal: a
    background item), c by R2: one item each, with that radiologist's boxes; the held-out image's
    variants are in no training list; val lists and labels/ stay the fused truth."""
    from data_prep.labels.export import item_image_ids

    images, fused, raw, folds = _dataset(tmp_path)
    res = write_yolo(images, fused, folds, tmp_path, NAMES, rater_boxes=raw)
    write_coco(images, fused, folds, tmp_path, NAMES, rater_boxes=raw)
    assert res["n_items"] == {"variants": 4}
    assert _items(tmp_path) == {"a~R1": ("a", "R1"), "a~R2": ("a", "R2"), "b~R1": ("b", "R1"), "c~R2": ("c", "R2")}
    lab = tmp_path / "train_items" / "labels"
    want = {"a~R1": [[0, 10, 10, 12, 30]], "a~R2": [[0, 9, 9, 13, 31], [1, 40, 40, 60, 60]], "b~R1": [],
            "c~R2": [[1, 100, 98, 160, 100]]}
    for item, boxes in want.items():
        got = _yolo(lab / f"{item}.txt")
        np.testing.assert_allclose(np.c_[got[:, :1], _xyxy(got)] if len(got) else np.zeros((0, 5)),
                                   np.asarray(boxes, float).reshape(-1, 5), atol=1e-3)
    for k, held in enumerate("abc"):
        d = tmp_path / "yolo" / f"fold{k}"
        var = (d / "train_variants.txt").read_text().split()
        assert sorted(Path(p).stem for p in var) == sorted(i for i in want if not i.startswith(held))
        assert held not in item_image_ids(var) and set(item_image_ids(var)) == set("abc") - {held}
        both = (d / "train_both.txt").read_text().split()
        assert both == (d / "train.txt").read_text().split() + var
        assert (d / "val.txt").read_text().split() == [str(tmp_path / "images" / f"{held}.png")]
        for name, lst in (("data_variants.yaml", "train_variants.txt"), ("data_both.yaml", "train_both.txt")):
            y = __import__("yaml").safe_load((d / name).read_text())
            assert y["train"] == lst and y["val"] == "val.txt"
        cj = json.loads((tmp_path / "coco" / f"fold{k}_train_variants.json").read_text())
        assert sorted(im["file_name"] for im in cj["images"]) == sorted(i for i in want if not i.startswith(held))
        assert {Path(im["png_file"]).stem for im in cj["images"]} == set("abc") - {held}
    assert (lab.parent / "images" / "a~R2.png").resolve() == (tmp_path / "images" / "a.png").resolve()
    for i in "abc":                                  # the truth as without variants
        assert _yolo(tmp_path / "labels" / f"{i}.txt").shape[0] == int((fused["image_id"] == i).sum())
    # include_normal false: the normal reading b~R1 is no background item
    write_yolo(images, fused, folds, tmp_path, NAMES, include_normal=False, rater_boxes=raw)
    assert [Path(p).stem for p in (tmp_path / "yolo" / "fold0" / "train_variants.txt").read_text().split()] == ["c~R2"]


def test_train_labels_config_validated():
    assert load_config(None, ["train_labels=both"])["train_labels"] == "both"
    with pytest.raises(ValueError, match="train_labels"):
        load_config(None, ["train_labels=fused_only"])


@pytest.fixture(scope="module")
def vin_variants(tmp_path_factory):
    """VinBigData phantoms prepped with train_labels=variants, radiologists R8 and R10 only."""
    from data_prep.prep import prep
    from data_prep.phantoms.synth import synth_vinbigdata

    root = tmp_path_factory.mktemp("variants")
    synth_vinbigdata(root / "data", n=12, n_test=0, size=96, seed=3)
    args = ["folds=3", "size=64", "workers=1", "raters=[R8, R10]"]
    fused = prep(load_config("vinbigdata", args), root / "data", root / "fused")
    var = prep(load_config("vinbigdata", args + ["train_labels=variants"]), root / "data", root / "var")
    return root, fused, var


def test_prep_variants_equal_each_radiologists_boxes(vin_variants):
    from data_prep.labels.export import item_image_ids
    from data_prep.prep import read_table
    from data_prep.labels.raters import readers

    root, _, _ = vin_variants
    out = root / "var"
    images, boxes = read_table(out / "images.csv"), read_table(out / "boxes.csv")
    assert set(boxes["rater"]) <= {"R8", "R10"}
    items = _items(out)
    pairs = {(r.image_id, r.rater) for r in readers(images, boxes).itertuples()}
    assert set(items.values()) == pairs and len(items) == len(pairs) > len(images)
    hw = images.set_index("image_id")
    n_boxes = 0
    for item, (iid, rater) in items.items():
        h, w = hw.loc[iid, ["height", "width"]]
        mine = boxes[(boxes["image_id"] == iid) & (boxes["rater"] == rater)]
        got = _yolo(out / "train_items" / "labels" / f"{item}.txt")
        want = np.c_[mine["class_id"].to_numpy(float), np.clip(mine[bx.COORDS].to_numpy(float), 0, [w, h, w, h])]
        key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
        np.testing.assert_allclose(key(np.c_[got[:, :1], _xyxy(got, h, w)]) if len(got) else np.zeros((0, 5)),
                                   key(want) if len(want) else np.zeros((0, 5)), atol=1e-3 * max(h, w))
        n_boxes += len(mine)
    assert n_boxes == len(boxes)
    folds = read_table(out / "folds.csv")
    for k in range(3):
        held = set(folds.loc[folds["fold"] == k, "image_id"])
        for name in ("train.txt", "train_variants.txt", "train_both.txt"):
            ids = item_image_ids((out / "yolo" / f"fold{k}" / name).read_text().split())
            assert ids and not held & set(ids), (k, name)
        va = (root / "fused" / "yolo" / f"fold{k}" / "val.txt").read_text().replace(str(root / "fused"), "")
        assert (out / "yolo" / f"fold{k}" / "val.txt").read_text().replace(str(out), "") == va


def test_cv_leak_check_covers_variants(vin_variants, tmp_path):
    """A variant of a held-out image planted in fold 0's variant list is caught by cv's leak check
    (as its image), before and after training."""
    import shutil

    from data_prep.prep import read_table
    from detection.competition.cv import check_leaks, training_ids

    root, _, _ = vin_variants
    out = tmp_path / "var"
    shutil.copytree(root / "var", out, symlinks=True)
    d = out / "yolo" / "fold0"
    for f in d.iterdir():   # the lists name the copied folder
        f.write_text(f.read_text().replace(str(root / "var"), str(out)))
    folds, images = read_table(out / "folds.csv"), read_table(out / "images.csv")
    held = folds.loc[folds["fold"] == 0, "image_id"].tolist()
    check_leaks(training_ids(d / "data_variants.yaml"), held, images, "fold 0")   # clean as written
    leak = next(p for p in (out / "train_items" / "images").iterdir() if p.stem.split("~")[0] == held[0])
    with open(d / "train_variants.txt", "a") as f:
        f.write(f"{leak}\n")
    with pytest.raises(ValueError, match=rf"leak: fold 0 trained on 1 image\(s\).*{held[0]} \(held out\)"):
        check_leaks(training_ids(d / "data_variants.yaml"), held, images, "fold 0")


@pytest.mark.slow   # three 1-epoch trainings at 32 px (~40 s)
def test_fine_tune_on_variants_from_init_and_cv_leak_checks_init(vin_variants, tiny_cfg, tmp_path):
    """train fused (fold 0 and fold 1), then fine-tune fold 0 on the variants from init: the run
    starts from the init weights and records data_variants.yaml; cv refuses an init trained on the
    held-out fold (fold 1's model saw fold 0) and runs with the fold's own."""
    import torch

    from detection.competition.cv import cross_validate
    from detection.engine.train import train_detector, trained_on

    root, _, _ = vin_variants
    prep = root / "var"
    base = dict(imgsz=32, batch=4, folds=3, dataset="vinbigdata", test_dir=None)
    best = {k: train_detector(tiny_cfg(tmp_path, name=f"fused{k}", **base), prep, k) for k in (0, 1)}
    start = {}

    def grab(trainer):
        start["w"] = next(iter(trainer.model.state_dict().values())).detach().float().clone()

    ft = train_detector(tiny_cfg(tmp_path, name="ft", train_labels="variants", init=str(best[0]), **base), prep, 0,
                        callbacks={"on_pretrain_routine_end": grab})
    init_w = next(iter(torch.load(best[0], map_location="cpu", weights_only=False)["model"].state_dict().values()))
    torch.testing.assert_close(start["w"], init_w.float())
    assert trained_on(ft).endswith("data_variants.yaml")
    assert (ft.parents[1] / "competition.csv").is_file()
    leaky = tiny_cfg(tmp_path, name="cvft", train_labels="variants", init=str(best[1]), **base)
    with pytest.raises(ValueError, match="init checkpoint"):
        cross_validate(leaky, prep, "0", out=tmp_path / "cv_leaky")
    own = tiny_cfg(tmp_path, name="cvft", train_labels="variants", conf=0.0, max_det=5,   # 1 epoch: boxes to score
                   init=str(tmp_path / "runs" / "fused{fold}" / "weights" / "best.pt"), **base)
    res = cross_validate(own, prep, "0", out=tmp_path / "cv")
    assert res["folds"][0]["data"].endswith("data_variants.yaml") and res["folds"][0]["n_train"] > 8


def test_variants_training_validates_on_the_fused_truth(vin_variants, tmp_path):
    """A train_labels=variants run reads data_variants.yaml, whose val list is the fold's images
    (labels/ = fused truth), and its per-epoch score reads the fused truth of that fold."""
    import yaml

    from data_prep.prep import read_table
    from detection.engine.epoch_score import FoldScore
    from detection.engine.train import fold_data

    root, _, _ = vin_variants
    prep = root / "var"
    cfg = load_config("vinbigdata", ["train_labels=variants", "folds=3", f"project={tmp_path}"])
    data = fold_data(prep, 1, cfg)
    assert data.name == "data_variants.yaml"
    d = yaml.safe_load(data.read_text())
    val = (data.parent / d["val"]).read_text().split()
    folds, fused = read_table(prep / "folds.csv"), read_table(prep / "fused_boxes.csv")
    held = sorted(folds.loc[folds["fold"] == 1, "image_id"])
    assert sorted(Path(p).stem for p in val) == held and all("/train_items/" not in p for p in val)
    sc = FoldScore(cfg, prep, 1, tmp_path / "run")
    assert sorted(sc.ids) == held
    pd.testing.assert_frame_equal(sc.truth[bx.COORDS].reset_index(drop=True),
                                  fused[fused["image_id"].isin(held)][bx.COORDS].reset_index(drop=True))
    with pytest.raises(FileNotFoundError, match="train_labels=both"):
        fold_data(root / "fused", 1, {**cfg, "train_labels": "both"})
