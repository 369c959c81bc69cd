"""data_prep.core.boxes: format round trips, PNG frames, hand-computed conversions, validation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.core import boxes as bx

HW = [(3000, 2500), (1024, 1024), (2048, 3072), (7, 1999)]


def _random_boxes(rng, h, w, n=50):
    x = np.sort(rng.uniform(0, w, (n, 2)), 1)
    y = np.sort(rng.uniform(0, h, (n, 2)), 1)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


@pytest.mark.parametrize("h, w", HW)
@pytest.mark.parametrize("fmt", ["xywh", "yolo", "norm_xyxy"])
def test_format_round_trips(h, w, fmt):
    b = _random_boxes(np.random.default_rng(h + w), h, w)
    if fmt == "xywh":
        back = bx.xywh_to_xyxy(bx.xyxy_to_xywh(b))
    elif fmt == "yolo":
        y = bx.xyxy_to_yolo(b, h, w)
        assert (y >= 0).all() and (y <= 1).all()
        back = bx.yolo_to_xyxy(y, h, w)
    else:
        back = bx.denormalize_xyxy(bx.normalize_xyxy(b, h, w), h, w)
    np.testing.assert_allclose(back, b, atol=1e-6)


@pytest.mark.parametrize("h, w", HW)
@pytest.mark.parametrize("keep_ratio, letterbox", [(False, False), (True, False), (True, True)])
def test_frame_round_trips_within_one_pixel(h, w, keep_ratio, letterbox):
    b = _random_boxes(np.random.default_rng(1), h, w)
    f = bx.frame_for(h, w, 512, keep_ratio=keep_ratio, letterbox=letterbox)
    p = bx.to_frame(b, f)
    assert (p >= -1e-9).all() and (p[:, [0, 2]] <= f.frame_w + 1e-9).all() and (p[:, [1, 3]] <= f.frame_h + 1e-9).all()
    back = bx.from_frame(p, f, clip_hw=(h, w))
    assert np.abs(back - b).max() < 1.0
    # a box rounded to whole PNG pixels still maps back within one PNG pixel's worth of original pixels
    back_r = bx.from_frame(np.round(p), f, clip_hw=(h, w))
    assert (np.abs(back_r - b) <= 0.5 / np.array([f.sx, f.sy, f.sx, f.sy]) + 1e-9).all()


def test_hand_computed_values():
    b = np.array([[100.0, 200.0, 300.0, 600.0]])  # in a 1000 (h) x 2000 (w) image
    np.testing.assert_array_equal(bx.xyxy_to_xywh(b), [[100, 200, 200, 400]])
    np.testing.assert_allclose(bx.xyxy_to_yolo(b, 1000, 2000), [[0.1, 0.4, 0.1, 0.4]])
    np.testing.assert_allclose(bx.normalize_xyxy(b, 1000, 2000), [[0.05, 0.2, 0.15, 0.6]])
    np.testing.assert_array_equal(bx.normalize_xyxy([[-10, 0, 2100, 1000]], 1000, 2000), [[0, 0, 1, 1]])
    assert bx.keep_ratio_size(1000, 2000, 512) == (256, 512)
    sq = bx.frame_for(1000, 2000, 512)
    np.testing.assert_allclose(bx.to_frame(b, sq), [[25.6, 102.4, 76.8, 307.2]])
    lb = bx.frame_for(1000, 2000, 512, keep_ratio=True, letterbox=True)
    assert (lb.pad_top, lb.pad_left, lb.frame_h, lb.frame_w) == (128.0, 0.0, 512, 512)
    np.testing.assert_allclose(bx.to_frame(b, lb), [[25.6, 128 + 51.2, 76.8, 128 + 153.6]])
    # per-row sizes broadcast
    two = bx.normalize_xyxy([[10, 10, 20, 20], [10, 10, 20, 20]], np.array([100, 200]), np.array([50, 20]))
    np.testing.assert_allclose(two, [[0.2, 0.1, 0.4, 0.2], [0.5, 0.05, 1.0, 0.1]])


def test_tables_and_validation():
    t = bx.make_boxes(["a", "b"], [1, 2], ["x", "y"], [[0, 0, 5, 5], [1, 1, 2, 3]], rater=["R1", "R2"], n_raters=[2, 1])
    assert list(t.columns) == bx.BOX_COLUMNS + ["n_raters"] and t["score"].tolist() == [1.0, 1.0]
    images = bx.as_image_table(pd.DataFrame({"image_id": ["a", "b"], "height": [10, 10], "width": [4, 10]}))
    assert images["patient_id"].tolist() == ["a", "b"] and images["path"].tolist() == ["", ""]
    bx.validate_boxes(t.iloc[1:], images)
    with pytest.raises(ValueError, match=r"row 0: box \[0.0, 0.0, 5.0, 5.0\] outside image 'a' of height x width 10 x 4"):
        bx.validate_boxes(t, images)
    bad = t.copy()
    bad.loc[1, "y_max"] = 0.5
    with pytest.raises(ValueError, match="row 1: y_max 0.5 < y_min 1.0"):
        bx.validate_boxes(bad)
    with pytest.raises(ValueError, match="missing column"):
        bx.as_box_table(t.drop(columns=["x_min"]))
    assert len(bx.empty_boxes(["n_raters"]).columns) == len(bx.BOX_COLUMNS) + 1


# ----------------------------------------------------------------------------- IoU
def test_iou_by_hand_and_broadcast():
    a = np.array([0.0, 0.0, 10.0, 10.0])
    assert bx.iou(a, [5.0, 5.0, 15.0, 15.0]) == pytest.approx(25 / 175)
    assert bx.iou(a, a) == 1.0
    assert bx.iou(a, [10.0, 0.0, 20.0, 10.0]) == 0.0            # touching edges: no overlap
    assert bx.iou(a, [2.0, 2.0, 2.0, 8.0]) == 0.0               # zero-area box: 0, not NaN
    assert bx.iou([1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]) == 0.0   # union 0
    m = bx.iou(np.array([a, [5.0, 0.0, 15.0, 10.0]])[:, None, :], np.array([a, [0.0, 0.0, 5.0, 10.0]])[None])
    assert m.shape == (2, 2) and m == pytest.approx(np.array([[1.0, 0.5], [1 / 3, 0.0]]))


def test_iou_equals_ensemble_boxes_and_torchvision_on_random_boxes():
    import torch
    from ensemble_boxes.ensemble_boxes_wbf import find_matching_box_fast
    from torchvision.ops import box_iou

    rng = np.random.default_rng(3)
    for k in range(20):
        lo = rng.random((50, 2))
        b = np.concatenate([lo, lo + rng.random((50, 2)) * 0.5], 1)
        new = np.concatenate([[0, 1, 1, 1], b[k] + rng.normal(0, 0.05, 4)])
        rows = np.concatenate([np.zeros((50, 4)), b], 1)      # label 0, then coordinates at [4:]
        # ensemble-boxes' own IoU (the one its WBF uses): the best match is bit-equal
        j, best = find_matching_box_fast(rows, new, -1.0)
        ours = bx.iou(b, new[4:])
        assert j == int(np.argmax(ours)) and best == ours[j]
    ref = box_iou(torch.from_numpy(b), torch.from_numpy(b)).numpy()
    assert np.allclose(bx.iou(b[:, None, :], b[None]), ref, rtol=0, atol=1e-12)


def test_letterbox_pads_the_short_side_of_tall_and_wide_images():
    # tall 2000 x 1000 image -> 512 x 256 content, padded 128 px left and right
    tall = bx.frame_for(2000, 1000, 512, keep_ratio=True, letterbox=True)
    assert (tall.sy, tall.sx, tall.pad_top, tall.pad_left, tall.frame_h, tall.frame_w) == (0.256, 0.256, 0.0, 128.0, 512, 512)
    np.testing.assert_allclose(bx.to_frame([[100, 200, 300, 600]], tall), [[128 + 25.6, 51.2, 128 + 76.8, 153.6]])
    # odd remainders: 700 x 1000 -> 358 x 512 content, (512 - 358) / 2 = 77 px on top
    odd = bx.frame_for(700, 1000, 512, keep_ratio=True, letterbox=True)
    assert (odd.pad_top, odd.pad_left) == (77.0, 0.0) and bx.keep_ratio_size(700, 1000, 512) == (358, 512)
    np.testing.assert_allclose(bx.from_frame([[128 + 25.6, 51.2, 128 + 76.8, 153.6]], tall), [[100, 200, 300, 600]])


@pytest.mark.parametrize("dtype", ["int64", "float32"])
def test_conversions_compute_in_float64_whatever_the_input_dtype(dtype):
    # float32 predictions (a torch model's) or integer labels: the results are float64 and equal the
    # float64 computation on the same values (no float32 rounding, no integer division)
    b = np.array([[101, 203, 307, 611], [3, 5, 7, 9]]).astype(dtype)
    b64 = b.astype("float64")
    h, w = 1021, 997
    y64 = np.stack([(b64[:, 0] + b64[:, 2]) / 2 / w, (b64[:, 1] + b64[:, 3]) / 2 / h,
                    (b64[:, 2] - b64[:, 0]) / w, (b64[:, 3] - b64[:, 1]) / h], 1)
    cases = [
        (bx.xyxy_to_xywh(b), np.c_[b64[:, :2], b64[:, 2:] - b64[:, :2]]),
        (bx.xywh_to_xyxy(b), np.c_[b64[:, :2], b64[:, :2] + b64[:, 2:]]),
        (bx.xyxy_to_yolo(b, h, w), y64),
        (bx.normalize_xyxy(b, h, w, clip=False), b64 / [w, h, w, h]),
        (bx.denormalize_xyxy(b, h, w), b64 * [w, h, w, h]),
    ]
    for got, want in cases:
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
    yo = y64.astype(dtype) if dtype == "float32" else y64
    want = np.stack([(yo[:, 0] - yo[:, 2] / 2) * w, (yo[:, 1] - yo[:, 3] / 2) * h,
                     (yo[:, 0] + yo[:, 2] / 2) * w, (yo[:, 1] + yo[:, 3] / 2) * h], 1).astype("float64")
    got = bx.yolo_to_xyxy(yo, h, w)
    assert got.dtype == np.float64
    if dtype == "float32":  # computed from the float32 values widened to float64, not in float32
        y = yo.astype("float64")
        np.testing.assert_array_equal(got, np.stack([(y[:, 0] - y[:, 2] / 2) * w, (y[:, 1] - y[:, 3] / 2) * h,
                                                     (y[:, 0] + y[:, 2] / 2) * w, (y[:, 1] + y[:, 3] / 2) * h], 1))
    else:
        np.testing.assert_array_equal(got, want)


def test_from_frame_clips_to_the_image_on_both_ends():
    # a letterboxed 1000 x 2000 image: 128 px of padding on top; boxes reaching into the padding or
    # past the right edge come back clipped to [0, w] x [0, h], unclipped without clip_hw
    lb = bx.frame_for(1000, 2000, 512, keep_ratio=True, letterbox=True)
    png = [[-10.0, 100.0, 520.0, 300.0]]
    np.testing.assert_allclose(bx.from_frame(png, lb), [[-39.0625, -109.375, 2031.25, 671.875]])
    np.testing.assert_allclose(bx.from_frame(png, lb, clip_hw=(1000, 2000)), [[0.0, 0.0, 2000.0, 671.875]])


def test_keep_ratio_size_keeps_at_least_one_pixel_and_normalize_can_skip_the_clip():
    """A side that rounds to 0 px (1000 x 10 at 50: 0.5 px) stays 1 px; 1.5 px rounds to 2.
    normalize_xyxy divides by (w, h, w, h) and clips to [0, 1] unless clip=False."""
    assert bx.keep_ratio_size(1000, 10, 50) == (50, 1)
    assert bx.keep_ratio_size(10, 1000, 50) == (1, 50)
    assert bx.keep_ratio_size(1000, 30, 50) == (50, 2)
    b = [[-10, 20, 110, 40]]
    np.testing.assert_allclose(bx.normalize_xyxy(b, 50, 100, clip=False), [[-0.1, 0.4, 1.1, 0.8]])
    np.testing.assert_allclose(bx.normalize_xyxy(b, 50, 100), [[0.0, 0.4, 1.0, 0.8]])
