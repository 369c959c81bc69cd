"""``cxrdet cv --config CONFIG --prep OUT [--folds 0,1,2,3,4] [--with-cls] [--out DIR] [--test DIR --sample SAMPLE]
[--tune [--trials N]] [--force] [--scheduler local|tcp://host:port [--workers N]] [key=value ...]``: k-fold cross-validation on a prepared dataset
(DIR defaults to OUT/cv).

For each fold k (default: every fold of ``OUT/folds.csv``):

1. **train** the detector on the other folds through :func:`detection.engine.train.train_detector`, the
   code path and run folder of ``cxrdet train --fold k`` (``<project>/<dataset>_fold<k>``, or
   ``<name>_fold<k>`` when ``name`` is set); with ``--with-cls`` the 2-class filter through
   :func:`detection.engine.train.train_classifier` (``..._fold<k>_cls``);
2. **check for leaks**: the training list each model recorded (``train_args["data"]`` in its
   checkpoint -> data.yaml -> its ``train`` list, or the classifier's ``train/`` folder; a
   radiologist variant counts as its image, ``train_labels``; with ``init`` the init checkpoint's
   list too) must hold no image of fold k and no image of a patient of fold k; a leak stops the run with
   ``ValueError`` naming the images;
3. **predict** the held-out images (fold k of folds.csv) with :func:`detection.engine.predict.infer`:
   inference only (TTA views fused by WBF, nothing else): ``DIR/parts/fold<k>.csv`` (raw box
   table + ``fold``), ``DIR/parts/fold<k>_probs.csv`` (its classifier's probabilities + ``fold``)
   and ``DIR/parts/fold<k>.json``.

Then (:func:`write_oof`) ``DIR/oof_raw.csv`` (every raw part, original pixels, ``fold``),
``DIR/oof_probs.csv`` (with ``--with-cls``: image_id, abnormal [, one column per class], fold)
and ``DIR/oof.csv`` = :func:`detection.competition.postprocess.postprocess_files` of those two with the
config's keys (what ``cxrdet postprocess`` writes; + ``fold``), and ``DIR/cv.json`` (``metric``,
``oof`` {score, per_class, n_images}, ``folds`` [{fold, n_train, n_val, data, weights, score}],
``baseline``, ``missing``, and for ``cxrdet tune --cv DIR``: ``inputs`` {prep, truth, meta,
folds}, ``files`` {oof_raw, oof_probs, oof}, ``config`` (dataset, metric, iou_thr, seed and the
post-processing keys that made oof.csv); with ``ckpt_ensemble: K`` also ``ckpt_ensemble``
{k, score, per_class, oof, folds [{fold, members, score}]}: each fold predicted by its run's K best
kept epochs (``keep_epochs``) fused by WBF, raw in ``DIR/oof_ckpt_raw.csv``, post-processed like
oof.csv (the same probabilities) into ``DIR/oof_ckpt.csv``, beside ``oof``'s best epoch). The scores come from
:func:`detection.evaluation.evaluate.evaluate_files` on oof.csv against the prepared truth
(``OUT/fused_boxes.csv`` + ``OUT/images.csv`` + ``OUT/folds.csv``): the very call
``cxrdet evaluate`` makes, so both print the same number. ``baseline`` = the radiologists'
scores on the same images (:func:`detection.evaluation.evaluate.rater_baseline`) where the labels carry
radiologist ids.

With ``--test DIR`` (or the config's ``test_dir`` inside the dataset folder that prep read),
inference only (:func:`predict_test`): ``DIR/test_raw.csv`` (every fold model fused by WBF with
the ``ens_*`` keys, TTA per config), ``DIR/test_probs.csv`` (the mean of the fold classifiers),
``DIR/test_meta.csv`` (original sizes); then ``DIR/submission.csv`` = submit(postprocess(test_raw,
test_probs, keys)) validated against ``--sample`` (or the config's ``sample`` there)
(:func:`write_test_submission`). ``--tune``: after the folds, :func:`detection.competition.tune.tune_cv`
(``DIR/tuned.yaml`` + ``tuned.json``), and the submission's keys are the tuned ones. So every
post-processing step runs exactly once between a model and oof.csv or the submission.

``--scheduler`` (config ``scheduler``): each (fold, model) of steps 1-3 is one Dask task
(:func:`run_jobs`; one per GPU on workers that declare a ``GPU`` resource); the rest runs here.

Resume: each model's settings are recorded in ``DIR/parts/fold<k>.<det|cls>.json`` before it
trains. A re-run reuses a finished model whose settings and weights are unchanged, resumes an
unfinished one from its ``last.pt`` (ultralytics resume), and reuses a fold's raw prediction
when its weights, held-out images and inference settings are unchanged (a post-processing key
never re-runs inference); ``--force`` retrains everything. Every file is written to a temporary
name and renamed (data_prep.core.atomic), parts before oof_raw.csv before oof.csv, so a killed run never
leaves a half-written file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pandas as pd
import yaml

from data_prep.core.atomic import write_csv, write_text
from data_prep.datasets import describe
from data_prep.prep import file_stamp, read_table
from data_prep.core.tables import write_probs
from data_prep.core.prepdir import PrepDir
from detection.models import safe_load
from detection.engine.train import checkpoint_finished, train_list, trained_on

log = logging.getLogger(__name__)

N_NAMED = 10  # leaked images named in the error message
_DET_KEYS = ("model", "epochs", "imgsz", "batch", "seed", "patience", "yolo_args", "tv_lr", "tv_args",
             "backbone_weights")
_CLS_KEYS = ("cls_model", "cls_epochs", "cls_imgsz", "batch", "seed", "patience", "yolo_args")
_CONVERT_KEYS = ("size", "keep_ratio", "voi", "window_index", "stretch", "padding")  # DICOM -> PNG, as prep did it
_INFER_KEYS = ("tta", "conf", "nms_iou", "max_det", "imgsz", "cls_imgsz") + _CONVERT_KEYS
_FUSE_KEYS = ("ens_iou", "ens_skip", "ens_conf_type")  # WBF of TTA views and of several models (inference)


# ----------------------------------------------------------------------------- small helpers
def _sha(items: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(items).encode()).hexdigest()[:16]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(obj, path: Path) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def parse_folds(text: str | None, present: list[int]) -> list[int]:
    """``"0,2"`` -> [0, 2] checked against the folds of folds.csv; None -> all of them."""
    if text is None or str(text).strip() == "":
        return list(present)
    try:
        ks = sorted({int(t) for t in str(text).split(",") if t.strip()})
    except ValueError:
        raise ValueError(f"--folds {text!r}: expected fold numbers like 0,1,2") from None
    bad = [k for k in ks if k not in present]
    if bad or not ks:
        raise ValueError(f"--folds {text!r}: fold(s) {bad} not in folds.csv; folds present {present}")
    return ks


def infer_settings(cfg: dict, n_models: int = 1) -> dict:
    """The config keys a raw prediction (inference only) depends on: inference, DICOM conversion,
    and the ``ens_*`` keys where WBF fuses TTA views or ``n_models`` models. No post-processing
    key: a changed threshold or filter band re-runs post-processing, never inference."""
    keys = _INFER_KEYS + (_FUSE_KEYS if cfg["tta"] or n_models > 1 else ()) + (("ens_weights",) if n_models > 1 else ())
    return json.loads(json.dumps({"output": "raw", **{k: cfg.get(k) for k in keys}}, default=str))


def predict_settings(cfg: dict, **changes):
    """The :class:`detection.engine.settings.PredictSettings` of cv's predictions (what ``cxrdet
    predict --config`` uses: inference settings, DICOM conversion, every post-processing key in
    ``post``, the 2-class filter bounds included), at the config's ``imgsz`` (the size cv trains at)
    and in this process (``scheduler`` is cv's own: its (fold, model) tasks); ``changes`` override fields."""
    from detection.engine.settings import PredictSettings

    return PredictSettings.from_config(cfg, imgsz=int(cfg["imgsz"]), scheduler=None, **changes)


# ----------------------------------------------------------------------------- leak check
def check_leaks(train_ids: Iterable[str], held_out: Iterable[str], images: pd.DataFrame, what: str) -> None:
    """Raise ``ValueError`` naming every training image that is a held-out image or belongs to a
    patient of a held-out image (``images``: image_id, patient_id; missing ids are their own patient)."""
    patient = dict(zip(images["image_id"].astype(str), images.get("patient_id", images["image_id"]).astype(str)))
    held = set(map(str, held_out))
    held_patients = {patient.get(i, i) for i in held}
    same = sorted({i for i in train_ids if i in held})
    kin = sorted({i for i in train_ids if i not in held and patient.get(i, i) in held_patients})
    if same or kin:
        named = [f"{i} (held out)" for i in same] + [f"{i} (patient {patient.get(i, i)} is held out)" for i in kin]
        raise ValueError(f"leak: {what} trained on {len(same) + len(kin)} image(s) of its held-out fold or of "
                         f"its patients: {', '.join(named[:N_NAMED])}" + (" ..." if len(named) > N_NAMED else "")
                         + "; expected none (rebuild the folds with `cxrdet prep`, then re-run with --force)")


def training_ids(data) -> list[str]:
    """The image of every item of a training list (a data.yaml, a COCO json, a classifier folder):
    radiologist variants and squarified items map to their image (``train_items/items.csv``)."""
    from data_prep.labels.export import item_image_ids

    return item_image_ids(train_list(data))


# ----------------------------------------------------------------------------- training one model
def _fingerprint(cfg: dict, keys: tuple[str, ...], inputs: dict) -> dict:
    return json.loads(json.dumps({**{k: cfg[k] for k in keys}, **inputs}, default=str))


OWNER = ".cxrdet_cv_run.json"   # in a run folder: the cv record (fold, kind, --out) it belongs to, its settings


def claim_run(run: Path, record: Path, fp: dict) -> None:
    """A run folder holds the models of ONE cv run: refuse one whose :data:`OWNER` names another
    cv run (another ``--out``, its record still there) trained with different settings (the second
    run would train over the first one's models, or predict its OOF with them); else claim it.
    The same settings, or an owner whose record is gone, may share or take it over."""
    from data_prep.core.errors import InputError

    held = _read_json(run / OWNER)
    me = str(record.resolve())
    if held and held.get("record") != me and held.get("fingerprint") != fp and Path(str(held.get("record"))).is_file():
        diff = sorted(k for k in set(fp) | set(held.get("fingerprint") or {})
                      if fp.get(k) != (held.get("fingerprint") or {}).get(k))
        raise InputError(run, f"run folder of another cv run with different settings ({held['record']}; differs in "
                         f"{', '.join(diff[:6])}); expected a run folder of its own: give this run another "
                         "name=... (or project=...), or delete that run")
    if not held or held.get("record") != me or held.get("fingerprint") != fp:
        run.mkdir(parents=True, exist_ok=True)
        _write_json({"record": me, "fingerprint": fp}, run / OWNER)


def train_model(kind: str, cfg: dict, prep: Path, record: Path, force: bool = False,
                callbacks: dict[str, Callable] | None = None,
                precheck: Callable[[Path], None] | None = None) -> tuple[Path, str, float]:
    """Train (or reuse, or resume) fold ``cfg['fold']``'s detector (``kind`` det) or classifier
    (cls). ``precheck(data.yaml)`` runs before a detector trains. Returns (best.pt, how: trained
    | resumed | reused, seconds of training)."""
    from detection.engine.train import resolve_model, run_dir, train_classifier, train_detector

    k = int(cfg["fold"])
    if kind == "det":
        from detection.models.checkpoints import init_weights
        from detection.engine.train import fold_data

        labels = str(cfg.get("train_labels") or "fused")
        data = fold_data(prep, k, cfg)
        train_txt = data.parent / (yaml.safe_load(data.read_text()) or {}).get("train", PrepDir(prep).train_list(k, labels).name)
        inputs = {"model": resolve_model(cfg["model"]), "data": str(data.resolve()),
                  "data_stamp": file_stamp(data), "train_stamp": file_stamp(train_txt)}
        if labels != "fused":                   # only when set: runs recorded before the keys stay valid
            inputs["train_labels"] = labels
        init = init_weights(cfg)
        if init is not None:
            inputs["init"] = [str(init), file_stamp(init)]
        if int(cfg.get("keep_epochs") or 0):      # only when set: runs recorded before the key stay valid
            inputs["keep_epochs"] = int(cfg["keep_epochs"])
        if str(cfg["model"]).startswith("tv:"):   # torchvision's models train on the COCO export
            inputs["coco_stamp"] = file_stamp(PrepDir(prep).coco_train(k, labels))
        fp, run, train = _fingerprint(cfg, _DET_KEYS, inputs), run_dir(cfg), train_detector
    else:
        inputs = {"cls_model": resolve_model(cfg["cls_model"], "cls_model"), "folds": file_stamp(PrepDir(prep).folds_csv),
                  "fused": file_stamp(PrepDir(prep).fused_boxes_csv)}
        fp, run, train = _fingerprint(cfg, _CLS_KEYS, inputs), run_dir(cfg, "_cls"), train_classifier
    best, last = run / "weights" / "best.pt", run / "weights" / "last.pt"
    claim_run(run, record, fp)
    rec = None if force else _read_json(record)
    same = rec is not None and rec.get("fingerprint") == fp
    if same and rec.get("done") and best.is_file() and file_stamp(best) == rec.get("stamp"):
        return best, "reused", float(rec.get("seconds", 0.0))
    resume = same and not rec.get("done") and last.is_file()
    try:
        finished = resume and checkpoint_finished(last)
    except ValueError as e:
        if safe_load.refused(e):   # a planted file is refused, never trained over as "cut short"
            raise
        log.warning("cv fold %d: %s; training again from the start", k, e)
        resume = finished = False
    if finished and best.is_file():  # killed after training, before the record
        rec = {"fingerprint": fp, "done": True, "weights": str(best), "stamp": file_stamp(best),
               "seconds": float(rec.get("seconds", 0.0))}
        _write_json(rec, record)
        return best, "reused", rec["seconds"]
    why = ("--force" if force else "resuming from last.pt" if resume else "not trained yet" if rec is None
           else "settings changed" if not same else "weights changed or missing")
    log.info("cv fold %d: training the %s (%s) in %s", k, "detector" if kind == "det" else "classifier", why, run)
    if precheck is not None and kind == "det" and data.is_file():
        precheck(data)
    if not resume:
        _write_json({"fingerprint": fp, "done": False}, record)
    t0 = time.perf_counter()
    best = Path(train({**cfg, "resume": bool(resume)}, prep, k, callbacks=callbacks))
    dt = time.perf_counter() - t0 + (float(rec.get("seconds", 0.0)) if resume else 0.0)
    _write_json({"fingerprint": fp, "done": True, "weights": str(best), "stamp": file_stamp(best),
                 "seconds": round(dt, 3)}, record)
    return best, "resumed" if resume else "trained", dt


# ----------------------------------------------------------------------------- one fold
def _fold_cfg(cfg: dict, k: int) -> dict:
    return {**cfg, "fold": int(k), "resume": False, "name": f"{cfg['name']}_fold{k}" if cfg.get("name") else None}


def run_fold(cfg: dict, prep: Path, out: Path, k: int, held: pd.DataFrame, images: pd.DataFrame,
             with_cls: bool = False, force: bool = False, callbacks: dict | None = None,
             cls_cfg: dict | None = None) -> dict:
    """Train, leak-check and predict fold ``k`` (``held``: its image rows) -> ``parts/fold<k>.csv``
    (the raw box table: inference only, + ``fold``) and with ``with_cls`` ``parts/fold<k>_probs.csv``
    (its classifier's probabilities, + ``fold``); returns its record. ``cls_cfg``: the config the
    classifier trains with (its run folder name), when it is not ``cfg`` (one of several models)."""
    parts = out / "parts"
    fc = _fold_cfg(cfg, k)
    held_ids = held["image_id"].astype(str).tolist()

    def precheck(data_yaml: Path) -> None:  # before training: the list the detector is about to learn from
        check_leaks(training_ids(data_yaml), held_ids, images, f"fold {k}'s training list {data_yaml}")
        from detection.models.checkpoints import init_weights

        init = init_weights(fc)
        if init is not None:   # a fine-tune starts from a model that must not have seen the fold either
            check_leaks(training_ids(trained_on(init)), held_ids, images, f"fold {k}'s init checkpoint {init}")

    t0 = time.perf_counter()
    det, how, t_train = train_model("det", fc, prep, parts / f"fold{k}.det.json", force, callbacks, precheck)
    models = [("detector", det)]
    clf, cls_how = None, None
    if with_cls:
        clf, cls_how, t_cls = train_model("cls", fc if cls_cfg is None else _fold_cfg(cls_cfg, k), prep,
                                          parts / f"fold{k}.cls.json", force, callbacks)
        models.append(("classifier", clf))
        t_train += t_cls
    n_train, data = None, None
    for what, w in models:  # the leak check runs on every run, reused models included
        d = trained_on(w)
        ids = training_ids(d)
        check_leaks(ids, held_ids, images, f"fold {k}'s {what} {w}")
        if what == "detector":
            n_train, data = len(ids), d

    record_path, part_path, probs_path = parts / f"fold{k}.json", parts / f"fold{k}.csv", parts / f"fold{k}_probs.csv"
    fp = {"weights": [str(det), file_stamp(det)], "classifier": [str(clf), file_stamp(clf)] if clf else None,
          "images": _sha(held_ids), **infer_settings(cfg)}
    fp = json.loads(json.dumps(fp, default=str))
    rec = None if force else _read_json(record_path)
    if (rec is not None and rec.get("fingerprint") == fp and part_path.is_file()
            and (clf is None or probs_path.is_file())):
        pred_how, t_pred = "reused", 0.0
    else:
        from detection.engine.predict import infer

        listing = parts / f"fold{k}_images.txt"
        write_text(listing, "".join(f"{p}\n" for p in held["path"]))
        errors: list[str] = []
        tp = time.perf_counter()
        settings = predict_settings(cfg, post={**cfg, "ens_weights": None})  # one model per fold: ensemble weights are the test set's
        inf = infer(det, listing, PrepDir(prep).images_csv, settings, classifier=clf, errors=errors)  # inference only
        t_pred = time.perf_counter() - tp
        failed = [i for i, p in zip(held_ids, held["path"]) if any(e.startswith(str(p)) for e in errors)]
        write_csv(inf.raw.assign(fold=int(k)), part_path)
        if clf is not None:
            write_probs(inf.probs.assign(fold=int(k)), probs_path)
        rec = {"fold": int(k), "fingerprint": fp, "n_train": n_train, "n_val": len(held_ids), "data": data,
               "weights": str(det), "classifier": str(clf) if clf else None,
               "images": [i for i in held_ids if i not in set(failed)], "missing": failed,
               "predict_seconds": round(t_pred, 3)}
        _write_json(rec, record_path)
        pred_how = "predicted"
    rec = dict(rec, how=how, cls_how=cls_how, pred_how=pred_how, train_seconds=t_train, predict_seconds=t_pred,
               seconds=time.perf_counter() - t0)
    if int(cfg.get("ckpt_ensemble") or 0) > 0:
        rec["ckpt"] = predict_ckpt(cfg, prep, out, k, held, det, clf, force)
    return rec


# ----------------------------------------------------------------------------- checkpoint ensembles
def predict_ckpt(cfg: dict, prep: Path, out: Path, k: int, held: pd.DataFrame, det: Path, clf: Path | None,
                 force: bool = False) -> dict:
    """``ckpt_ensemble: K``: fold ``k``'s held-out images predicted by the K best kept epochs of
    its run (:mod:`detection.models.checkpoints`), fused by WBF, inference only: ``DIR/parts/fold<k>_ckpt.csv``
    (the raw table + ``fold``; reused while its members, images and inference settings are
    unchanged). The classifier's probabilities are the fold's own (``parts/fold<k>_probs.csv``).
    Returns ``{members, how}``."""
    from detection.models.checkpoints import members
    from detection.engine.predict import infer

    parts = out / "parts"
    chosen = members(det.parents[1], int(cfg["ckpt_ensemble"]))
    held_ids = held["image_id"].astype(str).tolist()
    one = {**cfg, "ens_weights": None}   # the kept epochs of one run weigh the same
    fp = json.loads(json.dumps({"members": [[str(m), file_stamp(m)] for m in chosen], "images": _sha(held_ids),
                                **infer_settings(one, len(chosen))}, default=str))
    record, part = parts / f"fold{k}_ckpt.json", parts / f"fold{k}_ckpt.csv"
    rec = None if force else _read_json(record)
    if rec is not None and rec.get("fingerprint") == fp and part.is_file():
        return {"members": [str(m) for m in chosen], "how": "reused"}
    listing = parts / f"fold{k}_images.txt"
    write_text(listing, "".join(f"{p}\n" for p in held["path"]))
    inf = infer([str(m) for m in chosen], listing, PrepDir(prep).images_csv, predict_settings(cfg, post=one), errors=[])
    write_csv(inf.raw.assign(fold=int(k)), part)
    _write_json({"fold": int(k), "fingerprint": fp, "members": [str(m) for m in chosen]}, record)
    return {"members": [str(m) for m in chosen], "how": "predicted"}


def ckpt_oof(cfg: dict, prep: Path, out: Path, records: list[dict], ks, present, probs: Path | None = None
             ) -> dict | None:
    """The checkpoint ensembles' OOF table ``DIR/oof_ckpt.csv`` = postprocess(the raw ckpt parts,
    ``probs`` (oof_probs.csv), cfg) as oof.csv is made, and its score (cv.json ``ckpt_ensemble``:
    k, score, per_class, oof, folds [{fold, members, score}]), scored like ``oof``."""
    from detection.evaluation.evaluate import evaluate_files
    from detection.competition.postprocess import postprocess_files

    if not any("ckpt" in r for r in records):
        return None
    raw = write_csv(_read_parts([out / "parts" / f"fold{r['fold']}_ckpt.csv" for r in records]),
                    out / "oof_ckpt_raw.csv")
    oof = postprocess_files([raw], probs, cfg, PrepDir(prep).images_csv)
    fold_of = read_table(PrepDir(prep).folds_csv).set_index("image_id")["fold"].astype(int)
    path = write_csv(oof.assign(fold=oof["image_id"].map(fold_of).astype("int64")), out / "oof_ckpt.csv")
    res = evaluate_files(PrepDir(prep).fused_boxes_csv, path, PrepDir(prep).images_csv, PrepDir(prep).folds_csv,
                         ks if ks != present else None, cfg["metric"], float(cfg["iou_thr"]))
    score = {r["fold"]: r["score"] for r in res["folds"]}
    return {"k": int(cfg["ckpt_ensemble"]), "score": res["mAP"], "per_class": res["per_class"], "oof": str(path),
            "folds": [{"fold": r["fold"], "members": r["ckpt"]["members"], "score": score[r["fold"]]}
                      for r in records]}


# ----------------------------------------------------------------------------- the whole run
def _prep_tables(prep: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    layout = PrepDir(prep)
    for path in (layout.folds_csv, layout.images_csv, layout.fused_boxes_csv):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `cxrdet prep` first (--prep is its output folder)")
    folds, images = read_table(PrepDir(prep).folds_csv), read_table(PrepDir(prep).images_csv)
    images["path"] = [p if p else str(layout.png(i)) for i, p in zip(images["image_id"], images["path"])]
    unknown = sorted(set(folds["image_id"]) - set(images["image_id"]))
    if unknown:
        raise ValueError(f"{PrepDir(prep).folds_csv}: {len(unknown)} image(s) not in images.csv, e.g. {unknown[:5]}")
    return folds, images, _read_json(layout.manifest) or {}


def _baseline(cfg: dict, manifest: dict, images: pd.DataFrame, ids: list[str], parts: Path) -> dict:
    """The radiologists' scores on ``ids`` (cached in parts/baseline.json), or a note saying why none."""
    data = manifest.get("data")
    labels = Path(data) / (manifest.get("config") or {}).get("labels", cfg["labels"]) if data else None
    ds = describe(cfg)
    if not ds.has_raters or ds.normal is None or labels is None or not labels.is_file():
        return {"note": f"no radiologist ids for {cfg['dataset']} "
                        f"({'labels ' + str(labels) if labels else 'no dataset folder in prep.json'})"}
    min_images = min(500, max(1, len(ids) // 5))
    fp = {"labels": str(labels), "stamp": file_stamp(labels), "images": _sha(sorted(ids)),
          "iou_thr": float(cfg["iou_thr"]), "min_images": min_images}
    cached = _read_json(parts / "baseline.json")
    if cached and cached.get("fingerprint") == fp:
        return cached["baseline"]
    from detection.evaluation.evaluate_out import to_jsonable
    from detection.evaluation.raters import rater_baseline

    keep = set(ids)
    raw = pd.read_csv(labels, dtype={"image_id": str, "class_name": str, "rad_id": str})
    raw = raw[raw["image_id"].isin(keep)].reset_index(drop=True)
    meta = images.loc[images["image_id"].isin(keep), ["image_id", "height", "width"]].reset_index(drop=True)
    df = rater_baseline(raw, meta, min_images, float(cfg["iou_thr"]), dataset=ds)
    # a radiologist who only read images nobody found anything on scores 1 by construction: the
    # summary is the mean over those who read at least one image with a finding
    abnormal = set(raw.loc[raw["class_id"] != ds.normal_id, "image_id"])
    read = raw.groupby("rad_id")["image_id"].agg(lambda s: len(set(s) & abnormal))
    df["n_abnormal"] = df["rater"].map(read).fillna(0).astype(int)
    scored = df[df["n_abnormal"] > 0]
    base = {"metric": "vinbigdata", "iou_thr": float(cfg["iou_thr"]), "min_images": min_images,
            "n_images": len(keep), "mAP": float(scored["mAP"].mean()) if len(scored) else None,
            "note": "mAP: mean over the radiologists (of at least min_images images) who read an image with a "
                    "finding; each is scored against the WBF of the others (cxrdet evaluate --rater-baseline)",
            "raters": to_jsonable({"r": df.to_dict("records")})["r"]}
    _write_json({"fingerprint": fp, "baseline": base}, parts / "baseline.json")
    return base


def _test_paths(cfg: dict, manifest: dict, test, sample) -> tuple[Path | None, Path | None]:
    """--test/--sample, else the config's test_dir/sample inside the dataset folder prep read."""
    data = Path(manifest["data"]) if manifest.get("data") else None
    if test is None and data is not None and cfg.get("test_dir") and (data / cfg["test_dir"]).is_dir():
        test = data / cfg["test_dir"]
        log.info("cv: test images from the config's test_dir: %s", test)
    if test is None:
        return None, None
    test = Path(test)
    if not test.is_dir():
        raise FileNotFoundError(f"--test {test}: no such folder")
    if sample is None and data is not None and cfg.get("sample") and (data / cfg["sample"]).is_file():
        sample = data / cfg["sample"]
    if sample is None:
        raise ValueError(f"--test {test}: no sample submission; pass --sample SAMPLE (the competition's "
                         "sample_submission.csv)")
    if not Path(sample).is_file():
        raise FileNotFoundError(f"--sample {sample}: no such file")
    return test, Path(sample)


def predict_test(cfg: dict, weights: list[Path], classifiers: list[Path], test: Path, out: Path,
                 force: bool = False) -> dict:
    """Every fold model on ``test``, inference only: ``out/test_raw.csv`` (the fold models fused by
    WBF with the ``ens_*`` keys, TTA per config), ``out/test_probs.csv`` (the mean of the fold
    classifiers, when there are any) and ``out/test_meta.csv`` (original sizes from the images).
    Reused while the weights, test files and inference keys are unchanged."""
    from data_prep.prep import files_stamp
    from detection.engine.predict import infer

    files = sorted(p for p in test.rglob("*") if p.is_file() and not p.name.startswith("."))
    fp = json.loads(json.dumps({"weights": [[str(w), file_stamp(w)] for w in weights],
                                "classifiers": [[str(c), file_stamp(c)] for c in classifiers],
                                "test": str(test.resolve()), "files": files_stamp(files),
                                **infer_settings(cfg, len(weights))}, default=str))
    rec_path = out / "parts" / "test.json"
    paths = {"test_raw": out / "test_raw.csv", "test_probs": out / "test_probs.csv" if classifiers else None,
             "test_meta": out / "test_meta.csv"}
    rec = None if force else _read_json(rec_path)
    t0 = time.perf_counter()
    if rec is not None and rec.get("fingerprint") == fp and all(p.is_file() for p in paths.values() if p):
        how, errors = "reused", rec.get("errors", [])
    else:
        errors = []
        inf = infer([str(w) for w in weights], test, None, predict_settings(cfg),
                    classifier=[str(c) for c in classifiers] or None, errors=errors)
        write_csv(inf.raw, paths["test_raw"])
        if classifiers:
            write_probs(inf.probs, paths["test_probs"])
        sizes = inf.sizes if inf.sizes is not None else pd.DataFrame(columns=["height", "width"])
        write_csv(sizes.rename_axis("image_id").reset_index(), paths["test_meta"])
        _write_json({"fingerprint": fp, "errors": errors}, rec_path)
        how = "predicted"
    if not classifiers:  # a table left by an earlier run --with-cls is not this run's
        (out / "test_probs.csv").unlink(missing_ok=True)
    return {**{k: v for k, v in paths.items() if v}, "how": how, "errors": errors,
            "seconds": time.perf_counter() - t0}


def predict_test_models(cfg: dict, mlist: list[tuple[str, dict]], records: list[dict], test: Path, out: Path,
                        force: bool = False) -> dict:
    """Several models: each model's fold models on ``test`` (:func:`predict_test` into
    ``models/<name>/``: its ``test_raw.csv``), then ``test_raw.csv`` = their WBF with the ``ens_*``
    keys (the ensemble step of postprocess, sizes from ``test_meta.csv``), ``test_probs.csv`` the
    fold classifiers' mean (run with the first model), ``test_meta.csv``. ``test_tables``: the
    per-model tables the submission is post-processed from (the ensemble step with its keys)."""
    from data_prep.core.tables import read_probs
    from detection.competition.postprocess import ensemble, image_sizes, post_config
    from detection.competition.submission import read_predictions

    got = []
    for i, (name, mcfg) in enumerate(mlist):
        clfs = [Path(r["classifier"]) for r in records if r.get("classifier")] if i == 0 else []
        got.append(predict_test(mcfg, [Path(r["weights"][name]) for r in records], clfs, test,
                                out / "models" / name, force))
    res = {"test_raw": out / "test_raw.csv", "test_meta": out / "test_meta.csv",
           "test_tables": [g["test_raw"] for g in got], "how": "/".join(g["how"] for g in got),
           "errors": sorted({e for g in got for e in g["errors"]}), "seconds": sum(g["seconds"] for g in got)}
    write_csv(pd.read_csv(got[0]["test_meta"], dtype={"image_id": str}), res["test_meta"])
    if "test_probs" in got[0]:
        res["test_probs"] = write_probs(read_probs(got[0]["test_probs"]), out / "test_probs.csv")
    else:
        (out / "test_probs.csv").unlink(missing_ok=True)
    c = post_config(cfg)
    meta = res["test_meta"] if len(pd.read_csv(res["test_meta"])) else None
    fused = ensemble([read_predictions(t, describe(cfg)) for t in res["test_tables"]], image_sizes(meta),
                     c["ens_iou"], c["ens_skip"], c["ens_conf_type"], c["ens_weights"])
    write_csv(fused, res["test_raw"])
    return res


def write_test_submission(cfg: dict, test_res: dict, sample: Path, out: Path) -> Path:
    """``out/submission.csv`` = submit(postprocess(test_raw, test_probs, cfg)): the one
    post-processing of the test predictions (:func:`detection.competition.postprocess.postprocess_files`,
    what ``cxrdet postprocess --pred test_raw.csv --cls-probs test_probs.csv --meta test_meta.csv``
    writes), then the competition's format, validated against ``sample``."""
    from detection.competition.postprocess import postprocess_files
    from detection.competition.submission import FORMATS, submit

    fmt = cfg["dataset"]
    if fmt not in FORMATS:
        raise ValueError(f"dataset {fmt!r} has no Kaggle submission format (known: {sorted(FORMATS)})")
    meta = test_res["test_meta"] if len(pd.read_csv(test_res["test_meta"])) else None
    tables = test_res.get("test_tables") or [test_res["test_raw"]]   # several models: fused here, with cfg's keys
    final = postprocess_files(tables, test_res.get("test_probs"), cfg, meta)
    return Path(submit(final, sample, fmt, out / "submission.csv"))


def run_jobs(jobs: list[tuple], cfg: dict) -> Iterator[tuple]:
    """Run each ``(key, args)`` of ``jobs`` as :func:`run_fold` ``(*args)``; yields ``(key, record)``.
    ``scheduler`` null: here, one after the other, in order. ``local`` / ``tcp://host:port``: each
    job is one task on that Dask cluster (:mod:`data_prep.core.cluster`; ``local`` = a LocalCluster of
    ``workers`` single-threaded processes), all submitted at once, yielded as they finish; where
    some worker declares a ``GPU`` resource (``dask worker --resources GPU=1``) each task holds one
    GPU, so a worker trains one model per GPU at a time. The tasks write what the sequential run
    writes (run folders, parts, records, under the same absolute paths: the workers must see them)
    and return the same records; the seeds are the config's, so a deterministic training gives the
    same tables either way."""
    from data_prep.core.cluster import check_scheduler

    scheduler = check_scheduler(cfg.get("scheduler"))
    if scheduler is None:
        for key, args in jobs:
            yield key, run_fold(*args)
        return
    from data_prep.core.cluster import dask_client, run_each, task_resources

    with dask_client(scheduler, int(cfg.get("workers") or 2)) as client:
        res = task_resources(client)
        log.info("cv: %d (fold, model) training(s) as Dask tasks on %s%s", len(jobs), scheduler,
                 ", one GPU each" if res else "")
        for j, rec in run_each(client, _fold_task, [args for _, args in jobs], res):
            yield jobs[j][0], rec


def _fold_task(*args) -> dict:
    """:func:`run_fold` on a Dask worker, under the config's ``trust_weights`` (what ``cxrdet cv``
    set in its own process)."""
    safe_load.configure(args[0])
    return run_fold(*args)


def cross_validate(cfg: dict, prep, folds: str | list[int] | None = None, with_cls: bool = False, out=None,
                   test=None, sample=None, force: bool = False, callbacks: dict | None = None,
                   tune_trials: int | None = None) -> dict:
    """Run the cross-validation (module docstring); returns cv.json's content plus ``paths``.
    ``tune_trials``: then :func:`detection.competition.tune.tune_cv` with that many trials, and the
    submission with the tuned keys. One run at a time per output folder (``DIR/.cxrdet.lock``)."""
    from data_prep.core.atomic import folder_lock

    prep = Path(prep).resolve()
    out = Path(out).resolve() if out else prep / "cv"
    if tune_trials is not None and int(tune_trials) < 1:
        raise ValueError(f"--trials {tune_trials}: expected >= 1")
    with folder_lock(out, "cxrdet cv"):
        return _cross_validate(cfg, prep, out, folds, with_cls, test, sample, force, callbacks, tune_trials)


def _read_parts(paths: list[Path], probs: bool = False) -> pd.DataFrame:
    if probs:
        return pd.concat([pd.read_csv(p, dtype={"image_id": str}) for p in paths], ignore_index=True)
    return pd.concat([pd.read_csv(p, dtype={"image_id": str, "class_name": str, "rater": str}, keep_default_na=False)
                      for p in paths], ignore_index=True)


def model_settings(cfg: dict) -> list[tuple[str, dict]] | None:
    """``models:`` -> [(name, that model's config)], or None for the one ``model`` of the config.
    A model's config is ``cfg`` with its settings on top, run folders ``<name>_fold<k>`` (under
    ``name`` when set: ``<name>_<model name>_fold<k>``), ``ens_weights`` null (its fold models)."""
    if not cfg.get("models"):
        return None
    n = len(cfg["models"])
    if cfg.get("ens_weights") is not None and len(cfg["ens_weights"]) != n:
        raise ValueError(f"ens_weights {cfg['ens_weights']}: {len(cfg['ens_weights'])} weight(s) for the {n} "
                         "model(s) of `models:`; expected one per model, in order")
    out = []
    for m in cfg["models"]:
        name = str(m["name"])
        run = f"{cfg['name']}_{name}" if cfg.get("name") else name
        out.append((name, {**cfg, **{k: v for k, v in m.items() if k != "name"}, "name": run, "models": None,
                           "ens_weights": None}))
    return out


def _with_fold(table: pd.DataFrame, prep: Path) -> pd.DataFrame:
    fold_of = read_table(PrepDir(prep).folds_csv).set_index("image_id")["fold"].astype(int)
    return table.assign(fold=table["image_id"].map(fold_of).astype("int64"))  # the 2-class filter's rows too


def write_oof(cfg: dict, prep: Path, out: Path, ks: list[int], with_cls: bool,
              names: list[str] | None = None) -> dict:
    """The out-of-fold tables from the fold parts: ``oof_raw.csv`` (inference only, ``fold``),
    ``oof_probs.csv`` (with the classifiers: each image's probabilities from its own fold's
    classifier, ``fold``) and ``oof.csv`` = postprocess(oof_raw, oof_probs, cfg) read back from
    those files (:func:`detection.competition.postprocess.postprocess_files`, sizes from images.csv) with each
    row's ``fold``. Written whole, in that order; returns their paths.

    ``names`` (several models): each model's ``models/<name>/oof_raw.csv`` and ``oof.csv`` (its
    own parts, post-processed the same way: ``models`` {name: {oof_raw, oof}}), and ``oof_raw.csv``
    = their WBF (:func:`detection.competition.postprocess.ensemble`, the ``ens_*`` keys, sizes from images.csv:
    the ensemble step of postprocess); the classifier parts are the first model's."""
    from detection.competition.postprocess import ensemble, image_sizes, post_config, postprocess_files
    from detection.competition.submission import read_predictions

    first = out / "models" / names[0] if names else out
    probs = None
    if with_cls:
        probs = write_probs(_read_parts([first / "parts" / f"fold{k}_probs.csv" for k in ks], probs=True),
                            out / "oof_probs.csv")
    else:  # a table left by an earlier run --with-cls is not this run's
        (out / "oof_probs.csv").unlink(missing_ok=True)
    res: dict = {}
    if names:
        res["models"] = {}
        for name in names:
            d = out / "models" / name
            raw_m = write_csv(_read_parts([d / "parts" / f"fold{k}.csv" for k in ks]), d / "oof_raw.csv")
            oof_m = write_csv(_with_fold(postprocess_files([raw_m], probs, cfg, PrepDir(prep).images_csv), prep),
                              d / "oof.csv")
            res["models"][name] = {"oof_raw": raw_m, "oof": oof_m}
        c = post_config(cfg)
        tables = [read_predictions(res["models"][n]["oof_raw"], describe(cfg)) for n in names]
        fused = ensemble(tables, image_sizes(PrepDir(prep).images_csv), c["ens_iou"], c["ens_skip"], c["ens_conf_type"],
                         c["ens_weights"])
        raw = write_csv(_with_fold(fused, prep), out / "oof_raw.csv")
    else:
        raw = write_csv(_read_parts([out / "parts" / f"fold{k}.csv" for k in ks]), out / "oof_raw.csv")
    oof = _with_fold(postprocess_files([raw], probs, cfg, PrepDir(prep).images_csv), prep)
    return {"oof_raw": raw, "oof_probs": probs, "oof": write_csv(oof, out / "oof.csv"), **res}


def _merged(k: int, per: list[dict], names: list[str]) -> dict:
    """One fold's record over several models: the first model's training counts, every model's
    weights, an image predicted when every model predicted it."""
    missing = sorted({i for r in per for i in r["missing"]})
    return {"fold": k, "n_train": per[0]["n_train"], "n_val": per[0]["n_val"], "data": per[0]["data"],
            "weights": {n: r["weights"] for n, r in zip(names, per)}, "classifier": per[0]["classifier"],
            "images": [i for i in per[0]["images"] if i not in set(missing)], "missing": missing,
            "how": "/".join(r["how"] for r in per), "cls_how": per[0]["cls_how"],
            "seconds": sum(r["seconds"] for r in per), "models": per}


def _model_entry(name: str, mcfg: dict, paths: dict, out: Path, prep: Path, ks, present, cfg: dict) -> dict:
    from detection.evaluation.evaluate import evaluate_files

    r = evaluate_files(PrepDir(prep).fused_boxes_csv, paths["oof"], PrepDir(prep).images_csv, PrepDir(prep).folds_csv,
                       ks if ks != present else None, cfg["metric"], float(cfg["iou_thr"]))
    return {"name": name, "model": mcfg["model"], "score": r["mAP"],
            "folds": [{"fold": f["fold"], "score": f["score"]} for f in r["folds"]],
            "oof_raw": str(paths["oof_raw"].relative_to(out)), "oof": str(paths["oof"].relative_to(out))}


def _cross_validate(cfg: dict, prep: Path, out: Path, folds, with_cls: bool, test, sample, force: bool,
                    callbacks: dict | None, tune_trials: int | None = None) -> dict:
    from detection.evaluation.evaluate import evaluate_files
    from detection.evaluation.evaluate_out import to_jsonable
    from detection.competition.postprocess import POST_KEYS, post_config

    fold_table, images, manifest = _prep_tables(prep)
    present = sorted(set(fold_table["fold"].astype(int)))
    ks = folds if isinstance(folds, list) else parse_folds(folds, present)
    test, sample = _test_paths(cfg, manifest, test, sample)
    made = manifest.get("config") or {}
    for key in _CONVERT_KEYS:  # test DICOMs are converted the way prep converted the training images
        if key in made and made[key] != cfg[key]:
            log.info("cv: %s = %r as prep used it (not %r)", key, made[key], cfg[key])
            cfg = {**cfg, key: made[key]}
    images = images.set_index("image_id", drop=False)
    mlist = model_settings(cfg)
    names = [m for m, _ in mlist] if mlist else None
    jobs = []   # one (fold, model): train + predict its held-out images (run_fold)
    every = images.reset_index(drop=True)
    for k in ks:
        held = images.loc[fold_table.loc[fold_table["fold"].astype(int) == k, "image_id"]].reset_index(drop=True)
        for i, (name, mcfg) in enumerate(mlist or [(None, cfg)]):
            args = ((cfg, prep, out, k, held, every, with_cls, force, callbacks) if name is None else
                    (mcfg, prep, out / "models" / name, k, held, every, with_cls and i == 0, force, callbacks, cfg))
            jobs.append(((k, i, name), args))
    done = {}
    for (k, i, name), rec in run_jobs(jobs, cfg):
        done[(k, i)] = rec
        print(f"cv fold {k} ({ks.index(k) + 1}/{len(ks)})" + (f" model {name}" if name else "")
              + f": detector {rec['how']}" + (f", classifier {rec['cls_how']}" if rec.get("cls_how") else "")
              + f", prediction {rec['pred_how']}: {rec['n_train']} training / {rec['n_val']} held-out images"
              f" ({len(rec['missing'])} unreadable) in {rec['seconds']:.1f} s", flush=True)
    records = []
    for k in ks:
        per = [done[(k, i)] for i in range(len(mlist or [None]))]
        records.append(per[0] if mlist is None else _merged(k, per, names))

    # coverage: every held-out image predicted by its own fold's model, exactly once
    seen: dict[str, int] = {}
    for r in records:
        for i in r["images"] + r["missing"]:
            if i in seen:
                raise ValueError(f"cv: image {i!r} is held out by folds {seen[i]} and {r['fold']}; expected one")
            seen[i] = r["fold"]
    want = set(fold_table.loc[fold_table["fold"].astype(int).isin(ks), "image_id"])
    if set(seen) != want:
        raise ValueError(f"cv: {len(want - set(seen))} held-out image(s) neither predicted nor reported, e.g. "
                         f"{sorted(want - set(seen))[:5]}")
    files = write_oof(cfg, prep, out, [r["fold"] for r in records], with_cls, names)
    oof_path = files["oof"]
    per_model = files.pop("models", None)

    res = evaluate_files(PrepDir(prep).fused_boxes_csv, oof_path, PrepDir(prep).images_csv, PrepDir(prep).folds_csv,
                         ks if ks != present else None, cfg["metric"], float(cfg["iou_thr"]))
    score = {r["fold"]: r["score"] for r in res["folds"]}
    predicted = sorted(i for r in records for i in r["images"])
    missing = sorted(i for r in records for i in r["missing"])
    cv = {"metric": cfg["metric"],
          "oof": {"score": res["mAP"], "per_class": res["per_class"], "n_images": len(predicted)},
          "folds": [{"fold": r["fold"], "n_train": r["n_train"], "n_val": r["n_val"], "data": r["data"],
                     "weights": r["weights"], "score": score[r["fold"]]}
                    | ({"classifier": r["classifier"]} if with_cls else {}) for r in records],
          "baseline": _baseline(cfg, manifest, images.reset_index(drop=True), predicted + missing, out / "parts"),
          "missing": missing,
          # what `cxrdet tune --cv DIR` reads: the truth of these images, the raw tables, and the
          # config that made oof.csv (its post-processing keys are tune's starting point)
          "inputs": {"prep": str(prep), "truth": str(PrepDir(prep).fused_boxes_csv), "meta": str(PrepDir(prep).images_csv),
                     "folds": str(PrepDir(prep).folds_csv)},
          "files": {k: (v.name if v else None) for k, v in files.items()}
          | ({"model_oof_raw": [str(per_model[m]["oof_raw"].relative_to(out)) for m in names]} if names else {}),
          "config": {"dataset": cfg["dataset"], "classes": cfg.get("classes"), "metric": cfg["metric"],
                     "iou_thr": float(cfg["iou_thr"]), "seed": int(cfg["seed"]),
                     **{k: v for k, v in post_config(cfg).items() if k in POST_KEYS}}}
    if names:   # each model's OOF score (its own table through the same post-processing) and the ensemble's
        cv["models"] = [_model_entry(m, mcfg, per_model[m], out, prep, ks, present, cfg) for m, mcfg in mlist]
        cv["models"].append({"name": "ensemble", "members": names, "score": res["mAP"],
                             "folds": [{"fold": r["fold"], "score": score[r["fold"]]} for r in records],
                             "oof_raw": "oof_raw.csv", "oof": "oof.csv",
                             **{k: post_config(cfg)[k] for k in ("ens_iou", "ens_skip", "ens_conf_type", "ens_weights")}})
    ck = ckpt_oof(cfg, prep, out, records, ks, present, files["oof_probs"])
    if ck is not None:   # the checkpoint ensembles' OOF score beside the best epochs' (oof)
        cv["ckpt_ensemble"] = ck
    cv = to_jsonable(cv)
    _write_json(cv, out / "cv.json")

    test_res = None
    if test is not None and not names:
        test_res = predict_test(cfg, [Path(r["weights"]) for r in records],
                                [Path(r["classifier"]) for r in records if r.get("classifier")], test, out, force)
    elif test is not None:
        test_res = predict_test_models(cfg, mlist, records, test, out, force)

    _print_table(cv, records, res, prep, out, ks, present, cfg, files)
    for m in cv.get("models", []):
        print(f"  {m['name']:>12} OOF {cfg['metric']} {m['score']:.4f}  ({m['oof']})", flush=True)
    if ck is not None:
        print(f"checkpoint ensemble ({ck['k']} best kept epochs per fold, WBF): OOF {cfg['metric']} {ck['score']:.4f} "
              f"vs {res['mAP']:.4f} with the best epoch ({ck['oof']})")
    post, tuned = cfg, None
    if tune_trials is not None:
        from detection.competition.tune import print_tuned, tune_cv

        tuned = tune_cv(out, trials=int(tune_trials), seed=int(cfg["seed"]))
        print_tuned(tuned)
        post = {**cfg, **tuned["config"]}
    if test_res is not None:
        test_res["submission"] = write_test_submission(post, test_res, sample, out)
        print(f"test: {test_res['test_raw']} ({test_res['how']}, {len(records)} fold model(s)"
              + (f" x {len(names)} models" if names else "") + " fused by WBF, "
              f"inference only)" + (f", {test_res['test_probs']} (mean of the fold classifiers)"
                                    if "test_probs" in test_res else "")
              + f"; submission {test_res['submission']} (valid) = postprocess with "
              + (f"the tuned keys of {tuned['yaml']}: {json.dumps(tuned['params'])}" if tuned else
                 "the config's post-processing keys"), flush=True)
    cv["paths"] = {"out": str(out), "cv_json": str(out / "cv.json"), **{k: str(v) for k, v in files.items() if v},
                   **({k: str(v) for k, v in test_res.items()
                       if (k.startswith("test_") and k != "test_tables") or k == "submission"}
                      if test_res else {}),
                   **({"tuned_yaml": str(tuned["yaml"]), "tuned_json": str(tuned["json"])} if tuned else {})}
    cv["errors"] = missing + (test_res["errors"] if test_res else [])
    return cv


def _print_table(cv: dict, records: list[dict], res: dict, prep: Path, out: Path, ks, present, cfg,
                 files: dict) -> None:
    lines = [f"{'fold':>6} {'n':>7} {'score':>8} {'time':>9}  models"]
    for r, f in zip(records, cv["folds"]):
        how = r["how"] + (f"/{r['cls_how']}" if r.get("cls_how") else "")
        lines.append(f"{r['fold']:>6} {r['n_val']:>7} {f['score']:>8.4f} {r['seconds']:>8.1f}s  {how}")
    lines.append(f"{'oof':>6} {res['n_images']:>7} {cv['oof']['score']:>8.4f} "
                 f"{sum(r['seconds'] for r in records):>8.1f}s  {cv['metric']}")
    base = cv["baseline"].get("mAP")
    if base is not None:
        n = sum(r["n_abnormal"] > 0 for r in cv["baseline"]["raters"])
        lines.append(f"radiologists on the same images (mean of {n} who read a finding): {base:.4f}")
    fold_arg = "" if ks == present else f" --fold {','.join(map(str, ks))}"
    probs = f" --cls-probs {files['oof_probs']}" if files.get("oof_probs") else ""
    lines.append(f"wrote {files['oof_raw']} (inference only)" + (f", {files['oof_probs']}" if probs else "")
                 + f", {files['oof']} (= cxrdet postprocess --pred {files['oof_raw']}{probs} --meta "
                 f"{PrepDir(prep).images_csv} with this config)")
    lines.append(f"and {out / 'cv.json'}; the same score: cxrdet evaluate "
                 f"--metric {cfg['metric']} --iou {cfg['iou_thr']} --truth {PrepDir(prep).fused_boxes_csv} --meta "
                 f"{PrepDir(prep).images_csv} --pred {out / 'oof.csv'} --folds {PrepDir(prep).folds_csv}{fold_arg}")
    print("\n".join(lines), flush=True)


# ----------------------------------------------------------------------------- CLI
def add_arguments_cv(p: argparse.ArgumentParser) -> None:
    from data_prep.core.config import add_config_arguments

    p.add_argument("--prep", required=True, help="output folder of `cxrdet prep`")
    p.add_argument("--folds", default=None, help="folds to run, e.g. 0,1,2,3,4 (default: every fold of folds.csv)")
    p.add_argument("--with-cls", action="store_true", help="also train each fold's 2-class filter and apply it")
    p.add_argument("--out", default=None, help="output folder (default: PREP/cv)")
    p.add_argument("--test", default=None, help="test images (DICOM or PNG folder) to predict with every fold "
                                                "model (default: the config's test_dir in the dataset folder)")
    p.add_argument("--sample", default=None, help="sample submission for --test (default: the config's sample)")
    p.add_argument("--force", action="store_true", help="retrain and re-predict every fold")
    p.add_argument("--tune", action="store_true", help="then `cxrdet tune --cv DIR` (DIR/tuned.yaml, tuned.json) and "
                   "the submission from test_raw + test_probs with the tuned keys")
    p.add_argument("--trials", type=int, default=None, help="with --tune: trials per search (default 100)")
    p.epilog = ("key=value overrides any config key, e.g. model=yolo11s.yaml epochs=40 imgsz=640 batch=16 "
                "device=0 tta=true.")
    add_config_arguments(p, ["model", "epochs", "imgsz", "batch", "device", "scheduler", "workers"],
                         retired_positional=True)


def run_cv(args: argparse.Namespace) -> int:
    from data_prep.core.config import stage_config

    from data_prep.core.errors import InputError

    if args.trials is not None and not args.tune:
        raise InputError("--trials", "only with --tune (the trials of its search)")
    cfg = stage_config(args)
    safe_load.configure(cfg)   # trust_weights: what a model file may run on load
    res = cross_validate(cfg, args.prep, args.folds, args.with_cls, args.out, args.test, args.sample, args.force,
                         tune_trials=(100 if args.trials is None else args.trials) if args.tune else None)
    if res["errors"]:
        print(f"{len(res['errors'])} image(s) could not be read (see the log): {res['errors'][:5]}")
        return 1
    return 0
