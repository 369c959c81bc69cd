"""detection.competition.fast_wbf (every image at once, numba) = ensemble-boxes' weighted_boxes_fusion image by image:
boxes, scores, labels and their order, on inputs with tied scores, boxes outside [0, 1], swapped
and zero-area boxes, low scores, weights and every conf_type; and detection.competition.postprocess.ensemble's
fast path = its per-image loop (the same table)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("numba")

from data_prep.core.boxes import make_boxes  # noqa: E402
from detection.competition import postprocess as PP  # noqa: E402
from detection.competition.fast_wbf import CONF_TYPES, wbf_tables  # noqa: E402


def _inputs(rng, n_img=40, n_models=3, per=30, n_cls=4):
    """Per image and model: clustered boxes (a few objects, each seen by most models) + noise,
    scores on a coarse grid (many ties), a few boxes past the edges, swapped or of zero area."""
    rows = []
    for i in range(n_img):
        objs = rng.uniform(0, 0.8, (5, 2))
        for m in range(n_models):
            for _ in range(int(rng.integers(0, per))):
                o = objs[rng.integers(0, 5)]
                x0, y0 = o + rng.normal(0, 0.02, 2)
                b = [x0, y0, x0 + rng.uniform(0.05, 0.3), y0 + rng.uniform(0.05, 0.3)]
                r = rng.random()
                if r < 0.03:
                    b = [b[2], b[1], b[0], b[3]]          # swapped
                elif r < 0.05:
                    b[2] = b[0]                            # zero width
                elif r < 0.08:
                    b[2] += 0.5                            # past the right edge
                rows.append((i, m, b, round(float(rng.random()), 1), int(rng.integers(0, n_cls))))
    img = np.array([r[0] for r in rows], "int64")
    model = np.array([r[1] for r in rows], "int64")
    return img, model, np.array([r[2] for r in rows]), np.array([r[3] for r in rows]), np.array([r[4] for r in rows])


@pytest.mark.slow   # numba compiles the kernel once (~10 s on the shared 2 cores), then 12 cases x 40 images
@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("weights,skip,iou", [(None, 0.0, 0.55), ([2, 1, 1], 0.15, 0.4), ([1.5, 0.5, 1.0], 0.05, 0.7)])
def test_equals_ensemble_boxes_image_by_image(conf_type, weights, skip, iou):
    import warnings

    from ensemble_boxes import weighted_boxes_fusion

    img, model, box, score, label = _inputs(np.random.default_rng(hash((conf_type, skip)) % 2**32))
    got = wbf_tables(img, model, box, score, label, 3, weights, iou, skip, conf_type)
    n = 0
    for i in range(img.max() + 1):
        sel = [np.flatnonzero((img == i) & (model == m)) for m in range(3)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            b, s, lab = weighted_boxes_fusion([box[k] for k in sel], [score[k] for k in sel], [label[k] for k in sel],
                                              weights=weights, iou_thr=iou, skip_box_thr=skip, conf_type=conf_type)
        mine = got[0] == i
        assert np.array_equal(got[1][mine], b, equal_nan=True) and np.array_equal(got[2][mine], s, equal_nan=True), (i, conf_type)
        assert np.array_equal(got[3][mine], lab.astype("int64"))
        n += len(s)
    assert n == len(got[0]) > 100


@pytest.mark.slow   # compiles the kernel unless numba's cache has it
@pytest.mark.filterwarnings("ignore::UserWarning")   # ensemble-boxes' zero-area / swapped-box warnings
def test_postprocess_ensemble_fast_path_equals_its_loop(monkeypatch):
    rng = np.random.default_rng(7)
    img, model, box, score, label = _inputs(rng, n_img=30)
    sizes = pd.DataFrame({"height": rng.integers(500, 3000, 30), "width": rng.integers(500, 3000, 30)},
                         index=[f"im{i}" for i in range(30)])
    tables = []
    for m in range(3):
        k = model == m
        ids = np.array([f"im{i}" for i in img[k]])
        hw = sizes.loc[ids].to_numpy()
        t = make_boxes(ids, label[k], [f"c{c}" for c in label[k]], box[k] * hw[:, [1, 0, 1, 0]], score=score[k])
        tables.append(t.sample(frac=1.0, random_state=m).reset_index(drop=True))   # images interleaved
    for sz in (sizes, sizes.iloc[:20]):          # some images without a size: normalised by their boxes
        monkeypatch.setattr(PP, "FAST_WBF_MIN", 10**9)
        slow = PP.ensemble(tables, sz, 0.5, 0.05, "box_and_model_avg", [1, 2, 1])
        monkeypatch.setattr(PP, "FAST_WBF_MIN", 0)
        fast = PP.ensemble(tables, sz, 0.5, 0.05, "box_and_model_avg", [1, 2, 1])
        pd.testing.assert_frame_equal(fast, slow)


@pytest.mark.slow   # compiles the kernel unless numba's cache has it
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tune_fuses_big_tables_on_arrays_exactly_as_postprocess_ensemble(tmp_path, monkeypatch):
    """tune's fast path (prefilter per (weights, skip) kept, fusion straight into arrays) gives the
    arrays and the trial scores of ensemble() + to_arrays, for several ensemble key sets; a skip that
    drops the same boxes as another is one cache entry."""
    import detection.competition.tune as T

    rng = np.random.default_rng(3)
    img, model, box, score, label = _inputs(rng, n_img=30, n_cls=3)
    box = np.concatenate([np.minimum(box[:, :2], box[:, 2:]), np.maximum(box[:, :2], box[:, 2:])], 1)  # tables: x0 <= x1
    ids = [f"im{i:02d}" for i in range(30)]
    meta = pd.DataFrame({"image_id": ids, "height": 1000, "width": 800})
    meta.iloc[:25].to_csv(tmp_path / "meta.csv", index=False)   # 5 images without a size
    names = ["Aortic enlargement", "Atelectasis", "Calcification"]
    for m in range(3):
        k = model == m
        t = make_boxes(np.array(ids)[img[k]], label[k], [names[c] for c in label[k]], box[k] * [800, 1000, 800, 1000],
                       score=score[k])
        t.sample(frac=1.0, random_state=m).to_csv(tmp_path / f"m{m}.csv", index=False)
    truth = make_boxes(np.array(ids)[img[:60]], label[:60], [names[c] for c in label[:60]], box[:60] * [800, 1000, 800, 1000])
    truth.to_csv(tmp_path / "truth.csv", index=False)
    pd.DataFrame({"image_id": ids, "fold": np.arange(30) % 3}).to_csv(tmp_path / "folds.csv", index=False)
    pd.DataFrame({"image_id": ids, "abnormal": rng.random(30)}).to_csv(tmp_path / "probs.csv", index=False)

    def problem(fast_min):
        monkeypatch.setattr(PP, "FAST_WBF_MIN", fast_min)
        return T.load_problem(tmp_path / "truth.csv", [tmp_path / f"m{m}.csv" for m in range(3)], tmp_path / "folds.csv",
                              "vinbigdata", tmp_path / "probs.csv", tmp_path / "meta.csv", PP.defaults())

    slow, fast = problem(10**9), problem(0)
    for keys in ({"ens_iou": 0.55}, {"ens_iou": 0.4, "ens_conf_type": "max", "ens_weights": [2.0, 1.0, 1.0]},
                 {"ens_iou": 0.6, "ens_skip": 0.25, "ens_conf_type": "box_and_model_avg"},
                 {"ens_iou": 0.6, "ens_skip": 0.21, "ens_conf_type": "box_and_model_avg"},   # drops the same boxes
                 {"ens_iou": 0.5, "ens_conf_type": "absent_model_aware_avg", "box_scale": 0.9, "cls_low": 0.3}):
        cfg = T._cfg_with(slow.base, keys)
        monkeypatch.setattr(PP, "FAST_WBF_MIN", 10**9)
        a, s_slow = slow.arrays(cfg), slow.score(cfg)
        monkeypatch.setattr(PP, "FAST_WBF_MIN", 0)
        b, s_fast = fast.arrays(cfg), fast.score(cfg)
        for f in ("img", "cls", "box", "score", "hw"):
            assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), (keys, f)
        assert list(a.images) == list(b.images) and a.labels == b.labels
        np.testing.assert_array_equal(a.probs, b.probs)
        assert a.names == b.names
        assert s_fast == s_slow
    assert len(fast._cache) == 4 and len(slow._cache) == 5   # skips 0.21 and 0.25 drop the same boxes here
