"""data_prep.labels.folds: multilabel-stratified, patient-grouped, seeded k-folds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.labels.folds import fold_summary, label_matrix, make_folds


def realistic_tables(n_patients=500, seed=0):
    """A VinBigData-like table: ~70% normal images, 10 classes from common (Aortic enlargement-like
    20%) to rare (~1.5%), several classes per abnormal image, 1-4 images per patient."""
    rng = np.random.default_rng(seed)
    freq = np.array([0.65, 0.5, 0.45, 0.3, 0.25, 0.15, 0.1, 0.08, 0.06, 0.05])  # among abnormal images
    images, rows = [], []
    for p in range(n_patients):
        for j in range(rng.integers(1, 5)):
            iid = f"p{p:04d}_{j}"
            images.append((iid, 1000, 800, "", f"P{p:04d}"))
            if rng.random() < 0.3:
                classes = np.flatnonzero(rng.random(len(freq)) < freq)
                if len(classes) == 0:
                    classes = [int(rng.integers(len(freq)))]
                for c in classes:
                    for _ in range(rng.integers(1, 3)):           # 1-2 boxes of that class
                        rows.append((iid, int(c), f"c{c}", 10.0, 10.0, 50.0, 60.0, 1.0, "R1"))
    img = pd.DataFrame(images, columns=["image_id", "height", "width", "path", "patient_id"])
    box = pd.DataFrame(rows, columns=["image_id", "class_id", "class_name", "x_min", "y_min", "x_max",
                                      "y_max", "score", "rater"])
    return img, box


@pytest.fixture(scope="module")
def tables():
    return realistic_tables()


@pytest.fixture(scope="module")
def folds(tables):
    images, boxes = tables
    return make_folds(images, boxes, k=5, seed=42)


def test_every_image_once_and_k_nonempty_folds(tables, folds):
    images, _ = tables
    assert list(folds.columns) == ["image_id", "fold"]
    assert len(folds) == len(images)
    assert folds["image_id"].is_unique
    assert set(folds["image_id"]) == set(images["image_id"])
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]
    sizes = folds["fold"].value_counts()
    # patients of 1-4 images: fold sizes within 15% of n/k
    assert (abs(sizes - len(images) / 5) < 0.15 * len(images) / 5).all(), sizes.tolist()


def test_no_patient_in_two_folds(tables, folds):
    images, _ = tables
    m = folds.merge(images[["image_id", "patient_id"]], on="image_id")
    assert m.groupby("patient_id")["fold"].nunique().max() == 1
    assert m["patient_id"].nunique() == 500


def test_class_proportions_close_to_global(tables, folds):
    images, boxes = tables
    s = fold_summary(folds, images, boxes)
    glob = s.loc["all"].drop("n_images")
    per_fold = s.drop(index="all").drop(columns="n_images")
    # every label present in every fold, and each fold's share within 3 points of the global one
    # (or within 30% of it for the rare labels)
    hot, _ = label_matrix(images, boxes)
    assert len(glob) == 11 and glob["normal"] > 0.6
    dev = (per_fold - glob).abs()
    tol = np.maximum(0.03, 0.3 * glob)
    assert (dev <= tol).all().all(), (dev / glob).round(3)
    counts = hot.groupby(folds.set_index("image_id")["fold"].reindex(hot.index).to_numpy()).sum()
    assert (counts > 0).all().all()


def test_stratification_beats_random_on_rare_labels(tables, folds):
    """Iterative stratification keeps rare labels far closer to global than a random patient split."""
    images, boxes = tables
    s = fold_summary(folds, images, boxes)
    dev_strat = (s.drop(index="all").drop(columns="n_images") - s.loc["all"].drop("n_images")).abs().max().max()
    rng = np.random.default_rng(1)
    pats = images["patient_id"].unique()
    rf = dict(zip(pats, rng.permutation(np.arange(len(pats)) % 5)))
    rnd = pd.DataFrame({"image_id": images["image_id"], "fold": images["patient_id"].map(rf)})
    r = fold_summary(rnd, images, boxes)
    dev_rand = (r.drop(index="all").drop(columns="n_images") - r.loc["all"].drop("n_images")).abs().max().max()
    assert dev_strat < dev_rand


def test_seeded_reproducible_and_order_independent(tables, folds):
    images, boxes = tables
    again = make_folds(images.sample(frac=1, random_state=3), boxes.sample(frac=1, random_state=4), k=5, seed=42)
    pd.testing.assert_frame_equal(folds, again)
    other = make_folds(images, boxes, k=5, seed=7)
    assert (other["fold"].to_numpy() != folds["fold"].to_numpy()).mean() > 0.3


def test_singleton_groups_without_patient_column():
    # 10 images, no patient_id: each image its own group; 2 classes + normal
    images = pd.DataFrame({"image_id": [f"i{i}" for i in range(10)], "height": 100, "width": 100})
    boxes = pd.DataFrame({"image_id": ["i0", "i1", "i2", "i3", "i4", "i5"], "class_id": [0, 0, 0, 0, 1, 1]})
    f = make_folds(images, boxes, k=2, seed=0)
    assert len(f) == 10 and f["fold"].value_counts().tolist() == [5, 5]
    m = f.set_index("image_id")["fold"]
    assert sorted(m[["i0", "i1", "i2", "i3"]].value_counts().tolist()) == [2, 2]   # class 0 split 2/2
    assert sorted(m[["i4", "i5"]].tolist()) == [0, 1]                              # class 1 split 1/1
    assert sorted(m[[f"i{i}" for i in range(6, 10)]].value_counts().tolist()) == [2, 2]  # normals 2/2


def test_single_class_dataset_rsna_like():
    # RSNA-like: one class + normal; a one-label matrix must still work
    images = pd.DataFrame({"image_id": [f"r{i}" for i in range(20)], "height": 1024, "width": 1024})
    boxes = pd.DataFrame({"image_id": [f"r{i}" for i in range(8)], "class_id": 0})
    f = make_folds(images, boxes, k=4, seed=1)
    pos = f[f["image_id"].isin([f"r{i}" for i in range(8)])]
    assert pos["fold"].value_counts().tolist() == [2, 2, 2, 2]
    assert f["fold"].value_counts().tolist() == [5, 5, 5, 5]
    # only normals: still k folds
    f0 = make_folds(images, boxes.iloc[:0], k=4, seed=1)
    assert f0["fold"].value_counts().tolist() == [5, 5, 5, 5]


def test_errors_name_the_problem():
    images = pd.DataFrame({"image_id": ["a", "b", "c"], "height": 10, "width": 10, "patient_id": ["p", "p", "q"]})
    boxes = pd.DataFrame({"image_id": ["a"], "class_id": [0]})
    with pytest.raises(ValueError, match="2 patients for k = 3"):
        make_folds(images, boxes, k=3)
    with pytest.raises(ValueError, match="at least 2 folds"):
        make_folds(images, boxes, k=1)
    with pytest.raises(ValueError, match="'zz' is not in the image table"):
        make_folds(images, pd.DataFrame({"image_id": ["zz"], "class_id": [0]}), k=2)
    with pytest.raises(ValueError, match="'a' appears twice"):
        make_folds(pd.concat([images, images.iloc[:1]]), boxes, k=2)


def test_patient_label_is_the_union_of_its_images(tables, folds):
    """A patient counts as having a class if ANY of its images has it (and as normal if any image is
    normal). Stratifying on that union spreads the patients of every rarer class evenly: at most 2
    apart between folds (measured: <= 1 here; labelling a patient by all() of its images gives 4-7)."""
    images, boxes = tables
    m = images.merge(folds, on="image_id")
    per = boxes.merge(m[["image_id", "patient_id", "fold"]], on="image_id").drop_duplicates(["patient_id", "class_id"])
    counts = pd.crosstab(per["class_id"], per["fold"])
    rare = counts.loc[counts.sum(axis=1) < counts.sum(axis=1).max()]       # all but the most common class
    assert len(rare) == 9 and int((rare.max(axis=1) - rare.min(axis=1)).max()) <= 2
    normal = m[~m["image_id"].isin(boxes["image_id"])].drop_duplicates("patient_id")["fold"].value_counts()
    assert len(normal) == 5 and normal.max() - normal.min() <= 2
    # and a patient with one normal and one abnormal image is one group, in one fold
    two = pd.DataFrame({"image_id": ["n", "a"] + [f"s{i}" for i in range(8)], "patient_id": ["P", "P"] + [f"S{i}" for i in range(8)]})
    b = pd.DataFrame({"image_id": ["a"], "class_id": [3]})
    f = make_folds(two, b, k=3, seed=0).set_index("image_id")["fold"]
    assert f["n"] == f["a"]


def reference_folds(images, boxes, k, seed):
    """make_folds' documented algorithm written out here: an image's group is its patient_id (missing
    or "": the image itself); a group's labels are the union of its images' classes, plus "normal"
    when one of its images has no box; groups in sorted order, label columns sorted classes then
    normal; iterstrat's MultilabelStratifiedKFold(k, shuffle=True, random_state=seed) splits them."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    ids = sorted(str(i) for i in images["image_id"])
    pat = dict(zip(images["image_id"].astype(str), images["patient_id"]))
    group = {i: pat[i] if isinstance(pat[i], str) and pat[i] != "" else i for i in ids}
    classes = sorted(set(int(c) for c in boxes["class_id"]))
    of_image = {i: set() for i in ids}
    for i, c in zip(boxes["image_id"].astype(str), boxes["class_id"]):
        of_image[i].add(int(c))
    groups = sorted(set(group.values()))
    y = np.zeros((len(groups), len(classes) + 1), bool)
    for i in ids:
        g = groups.index(group[i])
        for c in of_image[i]:
            y[g, classes.index(c)] = True
        y[g, -1] |= not of_image[i]
    y = y[:, y.any(axis=0)]
    if y.shape[1] < 2:
        y = np.concatenate([y, np.zeros((len(y), 2 - y.shape[1]), bool)], axis=1)
    fold = {}
    mskf = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, test) in enumerate(mskf.split(np.zeros((len(groups), 1)), y)):
        fold.update({groups[t]: f for t in test})
    return pd.DataFrame({"image_id": ids, "fold": [fold[group[i]] for i in ids]})


def test_folds_equal_the_documented_algorithm_and_the_defaults(tables, folds):
    images, boxes = tables
    pd.testing.assert_frame_equal(folds, reference_folds(images, boxes, 5, 42), check_dtype=False)
    assert folds["fold"].dtype == np.int64
    pd.testing.assert_frame_equal(make_folds(images, boxes), folds)   # defaults: k = 5, seed = 42


def test_images_without_a_patient_are_their_own_group():
    # a, b, c: patient missing; d, e: patient ""; f, g: one patient -> 6 groups, exactly k = 6 folds
    images = pd.DataFrame({"image_id": list("gfedcba"), "patient_id": ["P", "P", "", "", np.nan, None, np.nan]})
    boxes = pd.DataFrame({"image_id": ["a", "f"], "class_id": [1, 2]})
    f = make_folds(images, boxes, k=6, seed=3)
    pd.testing.assert_frame_equal(f, reference_folds(images, boxes, 6, 3), check_dtype=False)
    m = f.set_index("image_id")["fold"]
    assert m["f"] == m["g"] and len(set(m[list("abcdef")])) == 6      # one group per fold


def test_integer_ids_and_a_repeated_index():
    # ids read as integers, and an image table concatenated from two files (its index repeats)
    part = pd.DataFrame({"image_id": [3, 1, 2], "patient_id": ["", "q", "q"]})
    images = pd.concat([part, part.assign(image_id=[13, 11, 12], patient_id=["r", "", "r"])])
    boxes = pd.DataFrame({"image_id": [1, 11], "class_id": [0, 0]})
    f = make_folds(images, boxes, k=2, seed=0)
    assert f["image_id"].tolist() == ["1", "11", "12", "13", "2", "3"]     # strings, sorted as strings
    pd.testing.assert_frame_equal(f, reference_folds(images.astype({"image_id": str}), boxes, 2, 0), check_dtype=False)
    m = f.set_index("image_id")["fold"]
    assert m["1"] == m["2"] and m["12"] == m["13"]


def test_fold_summary_by_hand_whatever_the_folds_row_order():
    images = pd.DataFrame({"image_id": list("abcd")})
    boxes = pd.DataFrame({"image_id": ["a", "b", "c", "a"], "class_id": [0, 0, 1, 0]})
    folds = pd.DataFrame({"image_id": list("dcba"), "fold": [1, 0, 1, 0]})   # a, c: fold 0; b, d: fold 1
    s = fold_summary(folds, images, boxes, class_names={0: "x", 1: "y"})
    assert list(s.columns) == ["n_images", "x", "y", "normal"] and list(s.index) == [0, 1, "all"]
    assert s["n_images"].tolist() == [2, 2, 4]
    np.testing.assert_allclose(s[["x", "y", "normal"]].to_numpy(float), [[0.5, 0.5, 0.0], [0.5, 0.0, 0.5],
                                                                         [0.5, 0.25, 0.25]])


def test_label_matrix_columns_are_the_integer_class_ids_and_the_index_is_image_id():
    """One bool column per class_id present (ints, also when the table holds them as strings),
    then "normal"; rows in the image table's order, index named image_id; fold_summary's columns
    (written to CSV by users) read 0, 2, normal."""
    images = pd.DataFrame({"image_id": ["x", "y", "z"]})
    boxes = pd.DataFrame({"image_id": ["y", "x", "y"], "class_id": [2, 0, 0]})
    hot, cols = label_matrix(images, boxes)
    assert hot.index.name == "image_id" and hot.index.tolist() == ["x", "y", "z"]
    assert [str(c) for c in cols] == ["0", "2", "normal"]
    assert hot.to_numpy().tolist() == [[True, False, False], [True, True, False], [False, False, True]]
    folds = pd.DataFrame({"image_id": ["x", "y", "z"], "fold": [0, 1, 1]})
    s = fold_summary(folds, images, boxes)
    assert [str(c) for c in s.columns] == ["n_images", "0", "2", "normal"]
    hot_str, _ = label_matrix(images, boxes.assign(class_id=boxes["class_id"].astype(str)))
    assert [str(c) for c in hot_str.columns] == ["0", "2", "normal"]
