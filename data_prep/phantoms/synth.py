"""Synthetic DICOM phantoms in the exact VinBigData and RSNA competition layouts.

``cxrdet synth {vinbigdata,rsna} OUT [--n N] [--n-test M] [--size PX] [--seed K]
[--labels CSV|embedded --meta CSV]`` writes chest-like phantoms that a small YOLO can learn:

* background: body, two darker lung fields, mediastinum, heart, curved ribs, smooth gradients,
  low-frequency texture and pixel noise (float32 "display intensity", brighter = denser);
* one lesion per finding at its TRUE box, each VinBigData class with its own look (see
  :data:`LOOKS`), RSNA "Lung Opacity" a mottled consolidation cloud.

Pixels and DICOM writing live in :mod:`data_prep.phantoms.phantom`; this module does layouts and labels.

VinBigData layout (``OUT/``): ``train/<id>.dicom``, ``test/<id>.dicom``, ``train.csv``
(image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max in ORIGINAL pixels, three
radiologists per image, "No finding" rows with empty boxes), ``sample_submission.csv``.
Headers vary like the real files: MONOCHROME1/2 (MONOCHROME1 stores inverted values, so the
displayed image is the same), BitsStored 12/14/16, window centre/width, VOI LUT Sequence, none,
RescaleSlope/Intercept, JPEG 2000 lossless or explicit little endian.
RSNA layout: ``stage_2_train_images/<patientId>.dcm`` and ``stage_2_test_images/`` (1024x1024
8-bit MONOCHROME2 JPEG baseline), ``stage_2_train_labels.csv``,
``stage_2_detailed_class_info.csv``, ``stage_2_sample_submission.csv``.

Phantom-only extras (no such file exists in the competitions), for demos and tests:
``test_truth.csv`` / ``train_truth.csv`` (VinBigData: the TRUE lesion boxes in fused.csv format =
train.csv columns + ``n_raters``, ``rad_id`` empty, one "No finding" row per normal image) and
``stage_2_test_labels.csv`` (RSNA: test truth in the train-labels format).

Random mode: 70% normal images (exactly round(0.3 n) abnormal; three "No finding" rows from three
raters of R1-R17; abnormal images are read by R8/R9/R10 90% of the time, like the real file),
coordinates rounded to 0.1 px; abnormal images get
1-4 findings with classes drawn UNIFORMLY (balanced, so every class is learnable), each at a
class-typical place and size; every radiologist's box is the true box with ~4% jitter and a
radiologist misses a finding with p=0.15 (never all three, and each keeps at least one row).
RSNA random mode: 30% of patients positive with 1-4 boxes (mostly one per lung, real-like sizes);
negatives are "Normal" or "No Lung Opacity / Not Normal" (the latter with an UNLABELLED enlarged
heart, so "abnormal but no opacity" has pixels too). PatientAge is a bare number ("43") as in
the real RSNA files, not the DICOM AS form ("043Y"): pydicom warns when reading it.
``--labels`` mode: N real images sampled (stratified: the file's abnormal fraction is kept) with
their real sizes (``--meta`` image_id,dim0,dim1; for rsna ``--meta`` is the detailed class info), lesions drawn at the mean of the raters'
boxes (greedy IoU>0.2 clusters per class), the REAL per-rater rows written (scaled by ``--size``).
``--labels embedded`` uses the real-label subsets shipped in ``data_prep/data/``, made by::

    python -c "from data_prep.phantoms.synth import make_subset; make_subset('../shared/data')"

Everything is deterministic for a seed (byte-identical CSVs and pixel arrays).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_prep.phantoms.phantom import LOOKS, render, write_rsna_dicom, write_vin_dicom  # noqa: F401 (LOOKS re-exported)
from data_prep.core.atomic import write_csv
from data_prep.core.boxes import iou

from data_prep.datasets.rsna import DETAILED_CLASSES as RSNA_CLASSES
from data_prep.datasets.vinbigdata import CLASSES, NORMAL_ID, NORMAL_NAME

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
VIN_COLUMNS = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
RSNA_COLUMNS = ["patientId", "x", "y", "width", "height", "Target"]
COORDS = ["x_min", "y_min", "x_max", "y_max"]
# (height, width) of frequent real VinBigData originals
VIN_SIZES = [(2430, 1994), (3072, 3072), (2880, 2304), (2500, 2048), (2836, 2336),
             (3072, 2540), (3000, 3000), (3170, 2642), (3028, 2517), (2930, 2504)]
MAIN_RATERS, OTHER_RATERS = ["R8", "R9", "R10"], [f"R{i}" for i in range(1, 18) if i not in (8, 9, 10)]
NORMAL_FRAC, MISS_P, JITTER = 0.70, 0.15, 0.04


# ----------------------------------------------------------------------------- labels
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(iou(a, b))


def true_boxes(rows: pd.DataFrame) -> list[tuple[int, np.ndarray, int]]:
    """Findings of ONE image's rater rows (class_id < 14): per class, greedy clusters of boxes
    with IoU > 0.2 to the cluster mean -> [(class_id, mean xyxy (4,), n_raters)]."""
    out = []
    for cid, g in rows[rows["class_id"] < NORMAL_ID].groupby("class_id", sort=True):
        clusters: list[list] = []
        for b, rad in zip(g[COORDS].to_numpy(float), g["rad_id"].astype(str)):
            ious = [_iou(b, np.mean([x for x, _ in c], 0)) for c in clusters]
            k = int(np.argmax(ious)) if ious else -1
            if k >= 0 and ious[k] > 0.2:
                clusters[k].append((b, rad))
            else:
                clusters.append([(b, rad)])
        out += [(int(cid), np.mean([x for x, _ in c], 0), len({r for _, r in c})) for c in clusters]
    return out


def _truth_rows(image_id: str, findings) -> list[dict]:
    if not findings:
        return [dict(image_id=image_id, class_name=NORMAL_NAME, class_id=NORMAL_ID, rad_id="", n_raters=3)]
    return [dict(image_id=image_id, class_name=CLASSES[c], class_id=c, rad_id="", n_raters=k,
                 **dict(zip(COORDS, np.round(b, 1)))) for c, b, k in findings]


def _vin_frame(rows: list[dict], with_n: bool = False) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=VIN_COLUMNS + (["n_raters"] if with_n else []))
    df["class_id"] = df["class_id"].astype("int64")
    return df


_LUNG = "lung"
# class_id -> (cx spec, cy range, median w, median h) as fractions of the image
_GEOM = {0: ((0.5, 0.6), (0.25, 0.35), 0.12, 0.12), 1: (_LUNG, (0.3, 0.6), 0.2, 0.19),
         2: (_LUNG, (0.25, 0.65), 0.064, 0.065), 3: ((0.48, 0.56), (0.58, 0.66), 0.43, 0.14),
         4: (_LUNG, (0.3, 0.6), 0.18, 0.18), 5: (_LUNG, (0.3, 0.55), 0.22, 0.35),
         6: (_LUNG, (0.3, 0.6), 0.18, 0.18), 7: (_LUNG, (0.3, 0.6), 0.155, 0.14),
         8: (_LUNG, (0.25, 0.65), 0.04, 0.035), 9: (_LUNG, (0.25, 0.65), 0.115, 0.125),
         10: ("base", (0.68, 0.75), 0.09, 0.1), 11: ("base", (0.2, 0.3), 0.093, 0.053),
         12: ("upper", (0.3, 0.4), 0.27, 0.28), 13: (_LUNG, (0.3, 0.6), 0.118, 0.095)}


def _random_findings(h: int, w: int, rng: np.random.Generator) -> list[tuple[int, np.ndarray, int]]:
    """1-4 findings (uniform classes) at class-typical places, overlapping IoU <= 0.1."""
    out: list = []
    for cid in rng.choice(len(CLASSES), size=int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.2, 0.1])), replace=False):
        spec, cy_r, bw, bh = _GEOM[int(cid)]
        for _ in range(10):
            side = rng.choice([-1, 1])
            if spec == _LUNG:
                cx = 0.5 + side * rng.uniform(0.13, 0.3)
            elif spec == "base":
                cx = 0.5 + side * rng.uniform(0.18, 0.3)
            elif spec == "upper":
                cx = 0.5 + side * rng.uniform(0.2, 0.26)
            else:
                cx = rng.uniform(*spec)
            cy = rng.uniform(*cy_r)
            bw_, bh_ = bw * rng.uniform(0.75, 1.3) * w, bh * rng.uniform(0.75, 1.3) * h
            x0, y0 = np.clip(cx * w - bw_ / 2, 0, w - bw_), np.clip(cy * h - bh_ / 2, 0, h - bh_)
            box = np.round([x0, y0, x0 + bw_, y0 + bh_], 1)
            if all(_iou(box, b) <= 0.1 for _, b, _ in out):
                out.append((int(cid), box, 0))
                break
    return out


def _rater_rows(image_id: str, findings, h: int, w: int, rng: np.random.Generator) -> tuple[list, list]:
    """Per-radiologist train.csv rows for random findings; returns (rows, findings with n_raters)."""
    raters = list(MAIN_RATERS) if (findings and rng.random() < 0.9) or rng.random() < 0.25 else \
        list(rng.choice(OTHER_RATERS, 3, replace=False))
    if not findings:
        return [dict(image_id=image_id, class_name=NORMAL_NAME, class_id=NORMAL_ID, rad_id=r) for r in raters], []
    keep = rng.random((len(findings), 3)) >= MISS_P
    keep[~keep.any(1), int(rng.integers(3))] = True       # every finding seen by someone
    for j in range(3):
        if not keep[:, j].any():
            keep[int(rng.integers(len(findings))), j] = True  # every rater marks something
    rows, out = [], []
    for i, (c, b, _) in enumerate(findings):
        bw, bh = b[2] - b[0], b[3] - b[1]
        for j in np.flatnonzero(keep[i]):
            jit = b + rng.normal(0, JITTER, 4) * [bw, bh, bw, bh]
            x0, x1 = np.clip(np.sort(jit[[0, 2]]), 0, w)
            y0, y1 = np.clip(np.sort(jit[[1, 3]]), 0, h)
            rows.append(dict(image_id=image_id, class_name=CLASSES[c], class_id=c, rad_id=raters[j],
                             x_min=round(x0, 1), y_min=round(y0, 1), x_max=round(x1, 1), y_max=round(y1, 1)))
        out.append((c, b, int(keep[i].sum())))
    return rows, out


def _read_csv(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_id": str, "patientId": str, "rad_id": str})


def _stratified(ids_ab: list, ids_no: list, n: int, frac: float, rng) -> list:
    k = min(len(ids_ab), int(round(n * frac)))
    k = max(k, n - len(ids_no))
    if k > len(ids_ab) or n > len(ids_ab) + len(ids_no):
        raise ValueError(f"--labels: asked for {n} images but the file has only "
                         f"{len(ids_ab)} abnormal + {len(ids_no)} normal left")
    pick = list(rng.choice(ids_ab, k, replace=False)) + list(rng.choice(ids_no, n - k, replace=False))
    return [pick[i] for i in rng.permutation(len(pick))]


def _split_real(abnormal: pd.Series, n: int, n_test: int, rng) -> tuple[list, list]:
    """Disjoint train / test id lists sampled from real ids (``abnormal``: id -> bool, sorted by id),
    each keeping the file's abnormal fraction (see :func:`_stratified`)."""
    ids_ab, ids_no = list(abnormal.index[abnormal]), list(abnormal.index[~abnormal])
    frac = len(ids_ab) / max(1, len(abnormal))
    train = _stratified(ids_ab, ids_no, n, frac, rng)
    chosen = set(train)
    test = _stratified([i for i in ids_ab if i not in chosen], [i for i in ids_no if i not in chosen],
                       n_test, frac, rng)
    return train, test


def _resolve(labels, meta, names: tuple[str, str]) -> tuple:
    if labels is not None and str(labels) == "embedded":
        return DATA_DIR / names[0], DATA_DIR / names[1]
    return labels, meta


# ----------------------------------------------------------------------------- VinBigData
def synth_vinbigdata(out, n: int = 60, n_test: int | None = None, size: int | None = None, seed: int = 0,
                     labels=None, meta=None) -> dict:
    """Write ``n`` train + ``n_test`` (default ``max(2, n // 5)``) phantom DICOMs in the VinBigData
    layout under ``out``. ``size`` scales originals to longest side ~``size`` px (aspect kept).
    ``labels``/``meta``: real train.csv / image_id,dim0,dim1 (or ``labels="embedded"``) to
    draw real images' boxes. Returns {"train": image table, "test": image table} (DataFrames
    image_id,height,width,path + header flavour)."""
    out = Path(out)
    n_test = max(2, n // 5) if n_test is None else n_test
    rng = np.random.default_rng(seed)
    labels, meta = _resolve(labels, meta, ("vinbigdata_subset_train.csv", "vinbigdata_subset_meta.csv"))
    plans = _vin_plans_real(labels, meta, n, n_test, size, rng) if labels is not None else \
        _vin_plans_random(n, n_test, size, rng)
    result = {}
    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
        rows, truth, images = [], [], []
        for k, (image_id, h, w, rrows, findings) in enumerate(tqdm(plans[split], desc=f"synth {split}",
                                                                     leave=False)):
            irng = np.random.default_rng([seed, 7, k, split == "test"])
            img = render(h, w, [(c, b) for c, b, _ in findings], irng)
            path = out / split / f"{image_id}.dicom"
            flav = write_vin_dicom(path, img, image_id, irng, 0.139 * max(VIN_SIZES[0]) / max(h, w))
            rows += rrows
            truth += _truth_rows(image_id, findings)
            images.append(dict(image_id=image_id, height=h, width=w, path=str(path), **flav))
        if split == "train":
            write_csv(_vin_frame(rows), out / "train.csv")
        else:
            sub = pd.DataFrame({"image_id": [i["image_id"] for i in images], "PredictionString": f"{NORMAL_ID} 1 0 0 1 1"})
            write_csv(sub, out / "sample_submission.csv")
        write_csv(_vin_frame(truth, with_n=True), out / f"{split}_truth.csv")
        result[split] = pd.DataFrame(images)
    log.info("wrote %d train + %d test VinBigData phantoms to %s", n, n_test, out)
    return result


def _scaled_hw(h: int, w: int, size: int | None) -> tuple[int, int, float]:
    s = 1.0 if not size else size / max(h, w)
    return max(8, round(h * s)), max(8, round(w * s)), s


def _vin_plans_random(n, n_test, size, rng) -> dict:
    plans = {}
    for split, m in (("train", n), ("test", n_test)):
        plans[split] = []
        n_ab = int(round(m * (1 - NORMAL_FRAC)))
        abnormal = rng.permutation(np.arange(m) < n_ab)
        for k in range(m):
            image_id = rng.bytes(16).hex()
            h, w, _ = _scaled_hw(*VIN_SIZES[int(rng.integers(len(VIN_SIZES)))], size)
            findings = _random_findings(h, w, rng) if abnormal[k] else []
            rrows, findings = _rater_rows(image_id, findings, h, w, rng)
            plans[split].append((image_id, h, w, rrows, findings))
    return plans


def _vin_plans_real(labels, meta, n, n_test, size, rng) -> dict:
    if meta is None:
        raise ValueError("--labels needs --meta (image_id,dim0,dim1: original height, width)")
    lab, met = _read_csv(labels), _read_csv(meta)
    if "dim0" not in met:
        met = met.rename(columns={"height": "dim0", "width": "dim1"})
    miss = [c for c in VIN_COLUMNS if c not in lab] + [c for c in ("image_id", "dim0", "dim1") if c not in met]
    if miss:
        raise ValueError(f"{labels} / {meta}: missing column(s) {miss}")
    dims = met.drop_duplicates("image_id").set_index("image_id")[["dim0", "dim1"]]
    lab = lab[lab["image_id"].isin(dims.index)]
    ab = lab.groupby("image_id", sort=True)["class_id"].apply(lambda s: bool((s < NORMAL_ID).any()))
    train, test = _split_real(ab, n, n_test, rng)
    by_id = dict(tuple(lab.groupby("image_id", sort=False)))
    plans = {}
    for split, ids in (("train", train), ("test", test)):
        plans[split] = []
        for image_id in ids:
            h, w, s = _scaled_hw(int(dims.at[image_id, "dim0"]), int(dims.at[image_id, "dim1"]), size)
            g = by_id[image_id][VIN_COLUMNS].copy()
            for c, lim in zip(COORDS, (w, h, w, h)):
                g[c] = (g[c] * s).round(1).clip(0, lim)
            g["class_id"] = g["class_id"].astype("int64")
            plans[split].append((image_id, h, w, g.to_dict("records"), true_boxes(g)))
    return plans


# ----------------------------------------------------------------------------- RSNA
def synth_rsna(out, n: int = 60, n_test: int | None = None, seed: int = 0, labels=None,
               class_info=None) -> dict:
    """Write ``n`` train + ``n_test`` (default ``max(2, n // 5)``) RSNA phantoms (1024x1024 8-bit
    JPEG baseline) under ``out``. ``labels``: real stage_2_train_labels.csv (or "embedded"),
    ``class_info``: its detailed class info. Returns {"train": table, "test": table}."""
    out = Path(out)
    n_test = max(2, n // 5) if n_test is None else n_test
    rng = np.random.default_rng(seed)
    labels, class_info = _resolve(labels, class_info, ("rsna_subset_labels.csv", "rsna_subset_class_info.csv"))
    plans = _rsna_plans_real(labels, class_info, n, n_test, rng) if labels is not None else \
        _rsna_plans_random(n, n_test, rng)
    result = {}
    for split, folder in (("train", "stage_2_train_images"), ("test", "stage_2_test_images")):
        (out / folder).mkdir(parents=True, exist_ok=True)
        rows, info, images = [], [], []
        for k, (pid, boxes, cls) in enumerate(tqdm(plans[split], desc=f"synth {split}", leave=False)):
            irng = np.random.default_rng([seed, 11, k, split == "test"])
            lesions = [("rsna", (x, y, x + bw, y + bh)) for x, y, bw, bh in boxes]
            if cls == RSNA_CLASSES[2]:      # abnormal but no opacity: an unlabelled enlarged heart
                lesions.append((3, (300.0, 560.0, 760.0, 720.0)))
            path = out / folder / f"{pid}.dcm"
            write_rsna_dicom(path, render(1024, 1024, lesions, irng), pid, irng)
            for b in boxes or [None]:
                rows.append(dict(zip(RSNA_COLUMNS, [pid, *(b if b else [None] * 4), int(bool(boxes))])))
                info.append({"patientId": pid, "class": cls})
            images.append(dict(image_id=pid, height=1024, width=1024, path=str(path)))
        lab = pd.DataFrame(rows, columns=RSNA_COLUMNS)
        if split == "train":
            write_csv(lab, out / "stage_2_train_labels.csv")
            write_csv(pd.DataFrame(info, columns=["patientId", "class"]), out / "stage_2_detailed_class_info.csv")
        else:
            write_csv(lab, out / "stage_2_test_labels.csv")
            write_csv(pd.DataFrame({"patientId": [i["image_id"] for i in images], "PredictionString": ""}),
                       out / "stage_2_sample_submission.csv")
        result[split] = pd.DataFrame(images)
    log.info("wrote %d train + %d test RSNA phantoms to %s", n, n_test, out)
    return result


def _uuid(rng) -> str:
    h = bytearray(rng.bytes(16))
    h[6], h[8] = (h[6] & 0x0F) | 0x40, (h[8] & 0x3F) | 0x80
    s = bytes(h).hex()
    return f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}"


def _rsna_plans_random(n, n_test, rng) -> dict:
    plans = {}
    for split, m in (("train", n), ("test", n_test)):
        pos = rng.permutation(np.arange(m) < int(round(0.3 * m)))
        plans[split] = []
        for k in range(m):
            boxes = []
            if pos[k]:
                nb = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.55, 0.04, 0.01]))
                for i in range(nb):
                    side = [0, 1][i % 2] if nb > 1 else int(rng.integers(2))
                    bw, bh = np.clip(rng.normal(218, 45), 100, 330), np.clip(rng.normal(300, 90), 120, 520)
                    if nb > 2 and i >= 2:
                        bh = bh / 2
                    cx = (0.3 if side == 0 else 0.7) * 1024 + rng.uniform(-40, 40)
                    cy = rng.uniform(330, 620) + (150 if i >= 2 else (-60 if nb > 2 else 0))
                    x, y = np.clip(cx - bw / 2, 0, 1024 - bw), np.clip(cy - bh / 2, 0, 1024 - bh)
                    boxes.append([float(round(v)) for v in (x, y, bw, bh)])
            cls = RSNA_CLASSES[0] if boxes else RSNA_CLASSES[1 + int(rng.random() < 0.55)]
            plans[split].append((_uuid(rng), boxes, cls))
    return plans


def _rsna_plans_real(labels, class_info, n, n_test, rng) -> dict:
    lab = _read_csv(labels)
    miss = [c for c in RSNA_COLUMNS if c not in lab]
    if miss:
        raise ValueError(f"{labels}: missing column(s) {miss}; expected {RSNA_COLUMNS}")
    info = {}
    if class_info is not None:
        ci = _read_csv(class_info).drop_duplicates("patientId")
        info = dict(zip(ci["patientId"], ci["class"]))
    pos = lab.groupby("patientId", sort=True)["Target"].max().astype(bool)
    train, test = _split_real(pos, n, n_test, rng)
    by_id = dict(tuple(lab.groupby("patientId", sort=False)))
    plans = {}
    for split, ids in (("train", train), ("test", test)):
        plans[split] = []
        for pid in ids:
            g = by_id[pid]
            g = g[g["Target"] == 1]
            boxes = g[["x", "y", "width", "height"]].astype(float).values.tolist()
            cls = RSNA_CLASSES[0] if boxes else info.get(pid, RSNA_CLASSES[1])
            plans[split].append((pid, boxes, cls))
    return plans


# ----------------------------------------------------------------------------- embedded subset
def make_subset(shared, out=DATA_DIR, n_vin: int = 300, frac_abnormal: float = 0.38, min_per_class: int = 6,
                n_rsna: int = 200, frac_positive: float = 0.4, seed: int = 0) -> dict:
    """Sample the embedded real-label subsets from ``shared`` (../shared/data): VinBigData
    ``n_vin`` images (``frac_abnormal`` abnormal, each class present in >= ``min_per_class``
    abnormal images, rarest first; ALL raters' rows kept) and RSNA ``n_rsna`` patients
    (``frac_positive`` with boxes). Writes vinbigdata_subset_{train,meta}.csv,
    rsna_subset_{labels,class_info}.csv to ``out``; returns {name: rows}."""
    shared, out = Path(shared), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lab = _read_csv(shared / "vinbigdata" / "train.csv.gz")
    met = _read_csv(shared / "vinbigdata" / "train_meta.csv.gz")
    ab = lab[lab["class_id"] < NORMAL_ID]
    ids_ab = sorted(ab["image_id"].unique())
    ids_no = sorted(set(lab["image_id"]) - set(ids_ab))
    n_ab = int(round(n_vin * frac_abnormal))
    pick: list[str] = []
    for cid in ab["class_id"].value_counts(ascending=True).index:
        have = ab[ab["image_id"].isin(pick) & (ab["class_id"] == cid)]["image_id"].nunique()
        cand = sorted(set(ab.loc[ab["class_id"] == cid, "image_id"]) - set(pick))
        pick += list(rng.choice(cand, max(0, min_per_class - have), replace=False))
    rest = sorted(set(ids_ab) - set(pick))
    pick += list(rng.choice(rest, max(0, n_ab - len(pick)), replace=False))
    pick += list(rng.choice(ids_no, n_vin - len(pick), replace=False))
    sub = lab[lab["image_id"].isin(pick)].sort_values(["image_id", "rad_id", "class_id"], kind="stable")
    written = {"vinbigdata_subset_train.csv": sub,
               "vinbigdata_subset_meta.csv": met[met["image_id"].isin(pick)].sort_values("image_id")}
    rl = _read_csv(shared / "rsna" / "stage_2_train_labels.csv.gz")
    ci = _read_csv(shared / "rsna" / "stage_2_detailed_class_info.csv.gz").drop_duplicates()
    rl = rl[rl["patientId"].isin(ci["patientId"])]
    pos = rl.groupby("patientId")["Target"].max().astype(bool)
    k = int(round(n_rsna * frac_positive))
    pids = list(rng.choice(sorted(pos.index[pos]), k, replace=False)) + \
        list(rng.choice(sorted(pos.index[~pos]), n_rsna - k, replace=False))
    written["rsna_subset_labels.csv"] = rl[rl["patientId"].isin(pids)].sort_values("patientId", kind="stable")
    written["rsna_subset_class_info.csv"] = ci[ci["patientId"].isin(pids)].sort_values("patientId")
    for name, df in written.items():
        write_csv(df, out / name)
    return {k: len(v) for k, v in written.items()}


# ----------------------------------------------------------------------------- CLI
def add_arguments_synth(p) -> None:
    p.add_argument("dataset", choices=["vinbigdata", "rsna"], help="competition layout to write")
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--n", type=int, default=60, help="train images (default 60)")
    p.add_argument("--n-test", type=int, default=None, help="test images (default max(2, n // 5))")
    p.add_argument("--size", type=int, default=None,
                   help="vinbigdata: longest side of the ORIGINALS in px (aspect kept; default real 2000-3000 px)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed: the same seed writes the same phantoms and labels (default: %(default)s)")
    p.add_argument("--labels", default=None,
                   help="real label CSV (vinbigdata train.csv / rsna stage_2_train_labels.csv) or 'embedded'")
    p.add_argument("--meta", default=None,
                   help="vinbigdata: image_id,dim0,dim1 CSV; rsna: stage_2_detailed_class_info.csv")


def run_synth(args) -> int:
    if getattr(args, "overrides", None):
        raise ValueError(f"cxrdet synth takes no key=value overrides, got {args.overrides}")
    if args.dataset == "vinbigdata":
        res = synth_vinbigdata(args.out, n=args.n, n_test=args.n_test, size=args.size, seed=args.seed,
                               labels=args.labels, meta=args.meta)
    else:
        if args.size is not None:
            raise ValueError(f"--size {args.size}: RSNA phantoms are always 1024x1024 like the real images")
        res = synth_rsna(args.out, n=args.n, n_test=args.n_test, seed=args.seed, labels=args.labels,
                         class_info=args.meta)
    print(f"{args.dataset}: {len(res['train'])} train + {len(res['test'])} test phantoms in {args.out}")
    return 0
