"""``cxrdet demo [vinbigdata|rsna]``: the whole pipeline on the embedded phantom dataset.

Nothing is downloaded and no real image is needed: the labels are a few hundred REAL images' rows
shipped in ``data_prep/data/`` (real classes, real box sizes, real radiologist disagreement) and
the pixels are phantoms drawn at those boxes. Steps, each timed and each a stage of its own:

1. ``synth``   phantom DICOMs in the competition layout (train + test split with truth);
2. ``prep``    DICOM -> PNG, load, fuse the radiologists (WBF), folds, YOLO/COCO export;
3. ``train``   a short fine-tune of the shipped detector on fold 0 (proves training runs);
4. ``predict`` the held-out fold 0 (PNGs) and the test split (straight from DICOM) with the
               SHIPPED detector + 2-class filter;
5. ``submit``  a Kaggle submission for the test split, validated;
6. ``evaluate`` fold 0 and the test split; the radiologists' baseline on the subset;
   ``classify`` (VinBigData) the test split with the shipped multi-label classifier: its AUC table;
7. ``tune``    the post-processing keys on fold 0's predictions, before / after / nested (3
               sub-folds of fold 0, leave-one-out): ``tuned.yaml`` + ``tuned.json``;
8. ``show``    overlays, a worst-images gallery, the HTML explorer (``explore/index.html``: every
               held-out image, predictions, radiologists, a confidence slider) and the HTML report.

The shipped weights (``weights/``) were trained on other phantoms (weights/README.md), so fold 0
and the test split are unseen by them. Everything goes into ``<out>/<dataset>/`` (one folder per
dataset; finished steps there are re-used); the closing summary lists every entry of
:data:`OUTPUTS` written.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from data_prep.core.resources import weights_dir
from data_prep.core.prepdir import PrepDir
from detection.evaluation.metrics import metric_named

log = logging.getLogger(__name__)

WEIGHTS = weights_dir()   # the checkout's weights/, or the installed package's copy
MULTILABEL = "vinbig_phantom_multilabel.pt"  # the multi-label classifier scored on the VinBigData test split
FLAVOURS = {
    # dataset: (config, detectors (several = a WBF ensemble), classifier, metric, n_train, n_test)
    "vinbigdata": ("phantom", ("vinbig_phantom_yolo11n.pt",), "vinbig_phantom_cls.pt", "vinbigdata", 240, 60),
    "rsna": ("rsna_phantom", ("rsna_phantom_yolo11n.pt",), None, "rsna", 160, 40),
}


SYNTH_PX = 512   # longest side of the VinBigData phantoms (RSNA's are 1024x1024 JPEG like the real ones)

# every file / folder the demo writes directly under its --out/<dataset> folder, in the order of
# the steps, with what it is (the closing summary lists them; a test checks nothing is left out)
OUTPUTS = {
    "data/": "phantom DICOMs in the competition layout + their labels (synth)",
    "prep/": "PNGs, meta.csv, fused.csv, folds.csv, YOLO/COCO export (prep)",
    "runs/": "the fine-tuned detector of the training step (runs/*/weights/)",
    "fold0_images/": "links to the held-out fold 0's PNGs (predict's input)",
    "pred_fold0.csv": "predictions on fold 0 (box table)",
    "pred_test.csv": "predictions on the test split (box table)",
    "test_meta.csv": "test split image sizes from the DICOM headers (validate-submission --meta)",
    "submission.csv": "Kaggle submission for the test split, validated",
    "metrics_fold0.json": "metric on held-out fold 0",
    "metrics_test.json": "metric on the test split",
    "rater_baseline.json": "each radiologist scored against the others (VinBigData)",
    "probs_test.csv": "the multi-label classifier's class probabilities on the test split (VinBigData)",
    "metrics_cls_test.json": "the classifier's per-class AUC on the test split (VinBigData)",
    "tune_folds.csv": "the 3 sub-folds of fold 0 tune's nested estimate leaves out",
    "tuned.yaml": "tuned post-processing keys (predict/postprocess --config tuned.yaml)",
    "tuned.json": "tune's before / after / nested scores and parameters",
    "pictures/": "overlays and the worst-images gallery (PNG)",
    "explore/": "HTML explorer: explore/index.html, open in a browser (no server)",
    "report.html": "HTML report of fold 0 (links to the explorer)",
    "demo.json": "this summary: paths, headline numbers, step timings",
}


@contextmanager
def _step(name: str, timings: dict):
    t0 = time.perf_counter()
    print(f"\n== {name}", flush=True)
    yield
    timings[name] = time.perf_counter() - t0
    print(f"   {name} done in {timings[name]:.1f} s", flush=True)


def demo(dataset: str = "vinbigdata", out="demo_out", finetune_epochs: int = 1, seed: int = 0,
         overrides: list[str] | None = None, n: int | None = None, weights_dir=None) -> dict:
    """Run every stage on the embedded dataset into ``out``; return paths and headline numbers."""
    from data_prep.core.atomic import safe_name, write_csv, write_text
    from data_prep.dicom.convert import header_meta
    from data_prep.core.config import load_config
    from data_prep.prep import prep
    from data_prep.phantoms.synth import synth_rsna, synth_vinbigdata
    from data_prep.datasets import describe
    from data_prep.core.tables import read_folds, read_images, read_truth
    from detection.evaluation.evaluate import evaluate
    from detection.evaluation.evaluate_out import write_json
    from detection.evaluation.raters import rater_baseline
    from detection.pictures.explore import ExploreSettings, build_explorer
    from detection.engine.predict import PredictSettings, predict
    from detection.pictures.report_eval import ReportSettings, build_report
    from detection.competition.submission import validate_submission, write_submission
    from detection.engine.train import train_detector
    from detection.pictures.visualize import pick_gallery, render_gallery, render_image

    if dataset not in FLAVOURS:
        raise ValueError(f"demo dataset {dataset!r}; expected one of {sorted(FLAVOURS)}")
    cfg_name, det_names, cls_name, metric, n_train, n_test = FLAVOURS[dataset]
    if n is not None:
        n_train, n_test = n, max(2, n // 4)
    wdir = Path(weights_dir) if weights_dir else WEIGHTS
    dets = [wdir / d for d in det_names]
    clf = wdir / cls_name if cls_name else None
    for w in (*dets, clf):
        if w is not None and not w.is_file():
            raise FileNotFoundError(f"{w}: shipped weights missing (see weights/README.md to re-train them)")
    out = Path(out).resolve() / dataset          # one folder per dataset: demos never mix outputs
    cfg = load_config(cfg_name, overrides or [])
    cfg.update(project=str(out / "runs"))
    timings: dict[str, float] = {}
    res: dict = {"dataset": dataset, "out": str(out)}
    data, pdir = out / "data", out / "prep"
    ds = describe(cfg)

    with _step("synth: phantom DICOMs at real boxes (embedded labels)", timings):
        if (data / cfg["labels"]).is_file():
            print(f"   reusing {data}")
        elif ds.name == "vinbigdata":
            # longest side 512 px: the size prep converts to (the detector sees 320 px), so the
            # phantoms cost a quarter of the disk of 1024 px ones for the same pictures and metrics
            synth_vinbigdata(data, n=n_train, n_test=n_test, size=SYNTH_PX, seed=seed, labels="embedded")
        else:
            synth_rsna(data, n=n_train, n_test=n_test, seed=seed, labels="embedded")

    with _step("prep: PNGs, fusion, folds, YOLO/COCO", timings):
        paths = prep(cfg, data, pdir)
        print(f"   {paths.get('summary', '')}" if isinstance(paths.get("summary"), str) else "", end="")

    with _step(f"train: fine-tune the shipped detector {finetune_epochs} epoch(s) on fold 0", timings):
        tcfg = dict(cfg, model=str(dets[0]), epochs=int(finetune_epochs), name="finetune_fold0",
                    yolo_args={**(cfg.get("yolo_args") or {}), "plots": False, "val": False})
        res["finetuned"] = str(train_detector(tcfg, pdir, fold=0))

    folds = read_folds(PrepDir(pdir).folds_csv)
    images = read_images(PrepDir(pdir).images_csv)
    fold0 = images[images["image_id"].isin(set(folds.loc[folds["fold"] == 0, "image_id"]))]
    settings = PredictSettings.from_config(cfg)
    with _step("predict: held-out fold 0 (PNG) and the test split (straight from DICOM)", timings):
        src0 = out / "fold0_images"
        src0.mkdir(exist_ok=True)
        for p in fold0["path"]:
            link = src0 / Path(p).name
            if not link.exists():
                link.symlink_to(Path(p).resolve())
        pred0 = predict(dets, src0, PrepDir(pdir).meta, settings, classifier=clf)
        pred0.to_csv(out / "pred_fold0.csv", index=False)
        test_dir = data / cfg["test_dir"]
        pred_t = predict(dets, test_dir, None, settings, classifier=clf)
        pred_t.to_csv(out / "pred_test.csv", index=False)
        # the test split's image sizes from its DICOM headers: submit clips to them and
        # validate-submission --meta checks every box lies inside its image
        test_meta = write_csv(header_meta(test_dir), out / "test_meta.csv")

    fmt = ds.name   # the submission format is named after its dataset (ds.submission: its layout)
    with _step("submit: Kaggle CSV for the test split, validated", timings):
        sub = write_submission(pred_t, data / cfg["sample"], fmt, out / "submission.csv", images=test_meta)
        problems = validate_submission(sub, data / cfg["sample"], fmt, images=test_meta)
        if problems:
            raise ValueError(f"{sub}: invalid submission: {problems[:5]}")
        res["submission"] = str(sub)

    with _step(f"evaluate: {metric} on fold 0 and on the test split", timings):
        # the fused truth where prep wrote one in the competition's layout, else the source labels
        truth_file, truth_meta = ((PrepDir(pdir).fused_csv, PrepDir(pdir).meta) if ds.competition_csv
                                  else (data / cfg["labels"], None))
        ti, tb, _ = read_truth(truth_file, ds, truth_meta)
        names = ds.names if ds.normal is not None else None
        r0 = evaluate(tb, pred0, list(fold0["image_id"]), metric, normal_class=ds.normal_id, class_names=names)
        write_json(r0, out / "metrics_fold0.json")
        test_truth = data / ("test_truth.csv" if ds.name == "vinbigdata" else "stage_2_test_labels.csv")
        ti_t, tb_t, _ = read_truth(test_truth, ds, None)
        rt = evaluate(tb_t, pred_t, list(ti_t["image_id"]), metric, normal_class=ds.normal_id, class_names=names)
        write_json(rt, out / "metrics_test.json")
        res["map_fold0"], res["map_test"] = r0["mAP"], rt["mAP"]
        print(_table(r0))
        baseline = None
        if ds.has_raters:
            bl = rater_baseline(data / cfg["labels"], data / "train_meta.csv" if (data / "train_meta.csv").is_file()
                                else PrepDir(pdir).meta, min_images=50, dataset=ds)
            baseline = {"metric": "vinbigdata", "iou_thr": 0.4, "rater_baseline": bl.to_dict("records"),
                        "mAP": float(bl["mAP"].mean()) if len(bl) else float("nan")}
            write_json(baseline, out / "rater_baseline.json")
            res["rater_baseline"] = baseline["mAP"]
            print(bl.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    with _step("tune: post-processing keys on fold 0's predictions (nested: 3 sub-folds)", timings):
        res.update(_tune(out, truth_file, truth_meta,
                         list(fold0["image_id"]), metric, cfg, seed))

    mlw = wdir / MULTILABEL if ds.name == "vinbigdata" else None
    if mlw is not None and mlw.is_file():
        with _step("classify: the shipped multi-label classifier on the test split (from DICOM)", timings):
            from data_prep.labels.image_level import vinbigdata_labels
            from detection.engine.classify import classify
            from detection.evaluation.evaluate_cls import evaluate_cls, format_table

            probs = classify(mlw, data / cfg["test_dir"], size=int(cfg["size"]), keep_ratio=bool(cfg["keep_ratio"]),
                             device="cpu")   # the CPU, as before the settings object (its default: auto)
            probs.to_csv(out / "probs_test.csv", index=False)
            rc = evaluate_cls(vinbigdata_labels(data / "test_truth.csv"), probs, n_boot=1000)
            write_json(rc, out / "metrics_cls_test.json")
            res["cls_macro_auc"], res["cls_abnormal_auc"] = rc["macro_auc"], rc["per_label"]["abnormal"]["auc"]
            print(format_table(rc))

    with _step("show: overlays, worst-images gallery, explorer, HTML report", timings):
        shown = ds.findings(pred0[pred0["score"] >= 0.3])
        pics = out / "pictures"
        ab = list(tb[tb["image_id"].isin(set(fold0["image_id"]))]["image_id"].unique()[:4])
        for iid in ab:
            render_image(iid, pdir / "images", pics / f"{safe_name(iid)}.png", images, tb, shown, None, names)
        t0 = tb[tb["image_id"].isin(set(fold0["image_id"]))]
        try:
            worst, caps = pick_gallery("worst", fold0, t0, pred0, n=12, conf=0.3, class_names=names,
                                       metric=ds.metric, normal_class=ds.normal_id)
        except ValueError as e:  # nothing missed and no confident false positive: no gallery to show
            print(f"   no worst-images gallery: {e}")
            worst = []
        if worst:
            res["gallery"] = str(render_gallery(worst, pdir / "images", pics / "gallery_worst.png", images, t0,
                                                shown, names, caps, title=f"held-out fold 0: the {len(worst)} "
                                                "images that cost the metric most"))
        raw = None
        if ds.has_raters:  # the radiologists' own boxes, one explorer layer each
            raw = ds.load(data / cfg["labels"], PrepDir(pdir).meta, on_missing_meta="drop")[1]
        title = f"cxrdet demo ({dataset} phantoms): held-out fold 0"
        ex = build_explorer(fold0, t0, [("pred_fold0.csv", pred0)], pdir / "images", out / "explore",
                            ExploreSettings(metric=metric, iou_thr=0.4, show_conf=0.3, normal_class=ds.normal_id,
                                            class_names=names, title=title, truth_name=truth_file.name), raters=raw)
        res["explorer"] = str(ex["index"])
        rep = build_report(tb[tb["image_id"].isin(set(fold0["image_id"]))], pred0, fold0, pdir / "images",
                           out / "report.html", ReportSettings(metric=metric, iou_thr=0.4, normal_class=ds.normal_id,
                                                               class_names=names, title=title), baseline=baseline)
        res["report"], res["pictures"] = str(rep), str(pics)

    res["timings"] = timings
    res["files"] = {name: what for name, what in OUTPUTS.items() if (out / name).exists() or name == "demo.json"}
    write_text(out / "demo.json", json.dumps(res, indent=2, default=float))
    total = sum(timings.values())
    print("\n== cxrdet demo finished in %.0f s; everything is under %s" % (total, out))
    for name, what in res["files"].items():
        print(f"   {name:<20} {what}")
    rule = metric_named(metric)
    label = rule.describe(0.4) if rule.per_image else f"{metric} {rule.head(0.4)}"
    print(f"\n   {label}: held-out fold 0 {res['map_fold0']:.3f} | test split {res['map_test']:.3f}"
          + (f" | radiologists {res['rater_baseline']:.3f}" if "rater_baseline" in res else ""))
    print(f"   tuned post-processing on fold 0: before {res['tune_before']:.3f} | after {res['tune_after']:.3f} "
          f"(in-sample) | nested {_f(res['tune_nested'])}  ({res['tuned']})")
    if "cls_macro_auc" in res:
        f3 = lambda v: "-" if v is None else f"{v:.3f}"  # None: one class only among the test images
        print(f"   multi-label classifier, test split: AUC abnormal {f3(res['cls_abnormal_auc'])} | macro "
              f"{f3(res['cls_macro_auc'])}  ({out / 'metrics_cls_test.json'})")
    return res


def _tune(out: Path, truth, meta, ids: list, metric: str, cfg: dict, seed: int) -> dict:
    """``cxrdet tune`` on ``pred_fold0.csv``; the nested estimate leaves out one of 3 sub-folds."""
    from detection.competition import tune as T

    folds = out / "tune_folds.csv"
    pd.DataFrame({"image_id": ids, "fold": [i % 3 for i in range(len(ids))]}).to_csv(folds, index=False)
    prob = T.load_problem(truth, [out / "pred_fold0.csv"], folds, metric, None, meta, cfg)
    r = T.tune(prob, T.default_space(metric, 1, False, False), trials=30, seed=seed)
    T.write_outputs(r, out / "tuned.yaml")
    print("   " + T.summary(r).replace("\n", "\n   "))
    return {"tune_before": r["before"], "tune_after": r["after"], "tune_nested": r["nested"]["mean"],
            "tuned": str(out / "tuned.yaml")}


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _table(r: dict) -> str:
    from detection.evaluation.evaluate_out import format_table

    return format_table(r)


def add_arguments_demo(p: argparse.ArgumentParser) -> None:
    from data_prep.core.config import add_config_arguments

    p.add_argument("dataset", nargs="?", default="vinbigdata", choices=sorted(FLAVOURS))
    p.add_argument("--out", default="demo_out",
                   help="output folder; each dataset writes into OUT/<dataset>/ and re-runs there re-use "
                        "finished steps (default: %(default)s)")
    p.add_argument("--n", type=int, default=None, help="train images to synthesise (default 240 vinbigdata, 160 rsna)")
    p.add_argument("--weights-dir", default=None, help="folder with the shipped weights (default weights/)")
    add_config_arguments(p, ["epochs", "seed"], help={"epochs": "fine-tune epochs of the training step (default 1)",
                                                      "seed": "seed of the phantoms (default 0)"})
    p.epilog = "key=value overrides any key of the flavour's config (phantom / rsna_phantom)."


def run_demo(args) -> int:
    demo(args.dataset, args.out, 1 if args.epochs is None else args.epochs, 0 if args.seed is None else args.seed,
         args.overrides, args.n, args.weights_dir)
    return 0
