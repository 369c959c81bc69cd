"""``cxrdet report-eval``: one self-contained HTML evaluation report.

The page holds, top to bottom: the headline number and what it was computed on, the per-class
table (truth/prediction counts, AP), per-class AP bars, the PR curve of every class, the
radiologists' baseline when given (``cxrdet evaluate --rater-baseline --json B.json``), a gallery of
the images that cost the metric most, and one overlay per worst image. Every picture is embedded
as a base64 PNG, so the single ``.html`` file can be mailed or attached to a Kaggle discussion.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep.core.atomic import safe_name, write_text  # noqa: E402
from data_prep.core.config import StageSettings  # noqa: E402
from data_prep.datasets import describe  # noqa: E402
from detection.evaluation.metrics import METRICS, metric_named  # noqa: E402

log = logging.getLogger(__name__)
COST_TEXT = {  # how detection.evaluation.image_metrics.image_costs scores an image, in the report's words
    "boxes": "cost = missed truth boxes + confidence of each false positive",
    "rsna": "cost = 1 - the image's RSNA score (mean over IoU 0.40-0.75 of TP/(TP+FP+FN))",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222}
h1{font-size:24px;margin-bottom:4px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
.head{font-size:42px;font-weight:700;color:#1f4e9c} .sub{color:#666}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
td:nth-child(2),th:nth-child(2){text-align:left} .grid{display:flex;flex-wrap:wrap;gap:8px}
.grid img{width:280px;border:1px solid #ddd} img.wide{max-width:100%;border:1px solid #ddd}
.explore a{font-weight:600;color:#1f4e9c} .overlay{margin:8px 0} .overlay img{max-width:100%;border:1px solid #ddd}
"""


def _img_tag(path: Path, cls: str = "", alt: str = "") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def score_names(metric: str) -> tuple[str, str]:
    """(per-class score, overall score) as the report names them: the RSNA metric is not an AP
    (TP/(TP+FP+FN) averaged over IoU 0.40:0.75), so it is called the RSNA score throughout."""
    return metric_named(metric).score_names if metric in METRICS else ("AP", "mAP")


def _ap_bars(res: dict, out: Path) -> Path:
    """Per-class score bars in the class colours (the overlays' palette); each value written
    inside its bar (in black or white by the bar's lightness) when the bar is long, else after it."""
    from data_prep.dicom.palette import class_color, class_rgb, text_color

    per, overall = score_names(res.get("metric", ""))
    rows = [r for r in res["table"] if r["ap"] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.35 * max(len(rows), 3) + 1), dpi=100)
    names = [f"{r['class_id']} {r['class_name']}" for r in rows][::-1]
    aps = [r["ap"] for r in rows][::-1]
    cids = [int(r["class_id"]) for r in rows][::-1]
    ax.barh(names, aps, color=[class_color(c) for c in cids], edgecolor="#333333", linewidth=0.4)
    for y, (v, c) in enumerate(zip(aps, cids)):
        if v >= 0.8:
            ax.text(v - 0.01, y, f"{v:.3f}", va="center", ha="right", fontsize=8, color=text_color(class_rgb(c)))
        else:
            ax.text(v + 0.01, y, f"{v:.3f}", va="center", ha="left", fontsize=8, color="black")
    ax.axvline(res["mAP"], color="black", ls="--", lw=1)      # named in the title: no legend over the bars
    ax.set(xlim=(0, 1), xlabel=per, title=f"{per} per class (dashed line: {overall} {res['mAP']:.3f})")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _table_html(res: dict) -> str:
    def ap(v):
        return "—" if v is None else f"{v:.4f}"
    per = score_names(res.get("metric", ""))[0]
    head = f"<tr><th>id</th><th>class</th><th>truth</th><th>pred</th><th>{per}</th></tr>"
    body = "".join(
        f"<tr><td>{r['class_id']}</td><td>{html.escape(str(r['class_name']))}</td><td>{r['n_truth']}</td>"
        f"<td>{r['n_pred']}</td><td>{ap(r['ap'])}</td></tr>" for r in res.get("table", []))
    return f"<table>{head}{body}</table>"


def _fmt(v, nd: int = 4) -> str:
    return "—" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def _baseline_html(baseline: dict | None) -> str:
    if not baseline:
        return ""
    rows = baseline.get("rater_baseline", [])
    body = "".join(f"<tr><td>{html.escape(str(r.get('rater')))}</td><td>{r.get('n_images', '')}</td>"
                   f"<td>{_fmt(r.get('mAP'))}</td><td>{_fmt(r.get('mAP_point'))}</td></tr>" for r in rows)
    return (f"<h2>Radiologists' baseline</h2><p>Each radiologist scored as a model against the fusion of the "
            f"other radiologists (mAP@{baseline.get('iou_thr', 0.4):g}); mean "
            f"<b>{_fmt(baseline.get('mAP'))}</b> over {len(rows)} radiologists.</p>"
            "<table><tr><th>radiologist</th><th>images</th><th>mAP</th><th>single-point mAP</th></tr>"
            f"{body}</table>")




def _explorer_link(out: Path, explorer) -> str:
    index = Path(explorer if explorer is not None else out.parent / "explore") / "index.html"
    if not index.is_file():
        if explorer is not None:
            log.warning("report: no explorer at %s (run `cxrdet explore --out %s`); no link", index, explorer)
        return ""
    href = Path(os.path.relpath(index.resolve(), out.parent.resolve())).as_posix()
    return (f"<p class='explore'><a href='{html.escape(href)}'>Open the interactive explorer</a> — every image "
            "with truth, predictions and radiologists; confidence slider, per-class toggles, TP/FP/FN per image.</p>")


@dataclass(frozen=True)
class ReportSettings(StageSettings):
    """What :func:`build_report` is tuned by; ``metric``, ``iou_thr``, ``show_conf`` are the config
    keys; ``normal_class`` (id or None) and ``class_names`` come from the config's dataset;
    ``n_worst``, ``n_overlays``, ``title`` are ``cxrdet report-eval``'s own arguments.
    Pictures show predictions scored >= ``show_conf``; the worst-images gallery holds up to
    ``n_worst`` images with a cost > 0 (the image cost of ``cxrdet show --gallery worst``), the
    first ``n_overlays`` of them also as full-size overlays."""
    metric: str = "vinbigdata"
    iou_thr: float = 0.4
    show_conf: float = 0.3
    normal_class: int | None = None   # the dataset's normal class id (from_config: describe(cfg).normal_id)
    class_names: object = None   # list by class id or {id: name}; None = from the tables
    n_worst: int = 12
    n_overlays: int = 6
    title: str = "cxrdet evaluation"

    OLD = {"conf": "show_conf"}   # build_report's keyword before the settings object

    @classmethod
    def derived(cls, cfg: dict) -> dict:
        ds = describe(cfg)
        return {"normal_class": ds.normal_id, "class_names": ds.names}


def build_report(truth: pd.DataFrame, pred: pd.DataFrame, images: pd.DataFrame, source, out,
                 settings: ReportSettings | dict | None = None, *, baseline: dict | None = None, explorer=None,
                 raters: dict | None = None, sr: dict[str, str] | None = None, **changes) -> Path:
    """Score ``pred`` against ``truth`` on ``images`` and write the HTML report to ``out``.

    ``truth``/``pred``: box tables (ORIGINAL pixels); ``images``: image table (image_id, height,
    width) of the evaluated images; ``source``: the folder with their PNGs or DICOMs;
    ``settings``: a :class:`ReportSettings`, or a merged config dict, or None (the defaults);
    keyword ``changes`` override single fields (``title="..."``).
    ``baseline``: the JSON dict of ``cxrdet evaluate --rater-baseline --json``. ``explorer``: the
    folder of a ``cxrdet explore`` page to link to (default: ``explore/`` beside the report,
    linked when its index.html exists). ``raters``: keyword arguments of
    :func:`detection.evaluation.raters.raters_html` (``labels``, ``meta``, ``dataset``, ``per_rater_json``)
    for the radiologists' section. ``sr``: {image_id: path of its DICOM SR} (``cxrdet export-sr``'s
    index): each shown image links to its SR. Returns the report's path (written atomically)."""
    s = ReportSettings.of(settings, **changes)
    metric, iou_thr, normal_class, class_names, conf = s.metric, s.iou_thr, s.normal_class, s.class_names, s.show_conf
    n_worst, n_overlays, title = s.n_worst, s.n_overlays, s.title
    from detection.evaluation.evaluate import evaluate
    from detection.evaluation.evaluate_out import plot_pr
    from detection.evaluation.image_metrics import image_costs
    from detection.pictures.visualize import render_gallery, render_image, source_ids

    out = Path(out)
    ids = images["image_id"].astype(str).tolist()
    res = evaluate(truth, pred, ids, metric, iou_thr, normal_class, class_names)
    names = {int(r["class_id"]): str(r["class_name"]) for r in res["table"]}
    shown = pred[pred["score"] >= conf]
    if normal_class is not None:
        shown = shown[shown["class_id"] != normal_class]
    costs = image_costs(truth, pred, ids, metric=res["metric"], normal_class=normal_class, iou_thr=iou_thr,
                        conf_thr=conf)
    costs = costs[costs["cost"] > 0]
    on_disk = set(source_ids(source))
    missing = ~costs["image_id"].isin(on_disk)
    if missing.any():
        log.warning("report: %d costly image(s) not under %s left out of the pictures, e.g. %s",
                    int(missing.sum()), source, costs.loc[missing, "image_id"].iloc[0])
    worst = costs[~missing].head(n_worst)
    caps = {r.image_id: f"{r.image_id[:8]} cost {r.cost:.2f} (fn {r.n_fn}, fp {r.n_fp}, tp {r.n_tp})"
            for r in worst.itertuples()}
    head = metric_named(res["metric"]).head(iou_thr)
    base = ""
    if baseline and baseline.get("mAP") is not None:
        base = f" · radiologists' baseline {_fmt(baseline.get('mAP'))}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        parts = [f"<h1>{html.escape(title)}</h1>",
                 f"<div class='head'>{head} {_fmt(res['mAP'])}</div>",
                 f"<p class='sub'>{res['n_images']} images · {len(pred)} predicted boxes · "
                 f"{len(truth)} truth boxes · metric {html.escape(res['metric'])}{base}</p>",
                 _explorer_link(out, explorer), _sr_summary(sr, ids), "<h2>Per class</h2>", _table_html(res)]
        if any(r["ap"] is not None for r in res["table"]):
            parts.append(_img_tag(_ap_bars(res, tmp / "ap.png"), "wide", f"{score_names(metric)[0]} per class"))
        pr = plot_pr(res, tmp / "pr") if res.get("pr") else []
        if pr:
            parts += ["<h2>Precision-recall curves</h2><div class='grid'>"]
            parts += [_img_tag(p, "", p.stem) for p in pr] + ["</div>"]
        parts.append(_baseline_html(baseline))
        if raters:
            from detection.evaluation.raters import raters_html
            parts.append(raters_html(tmp_dir=tmp, img_tag=_img_tag, iou_thr=iou_thr, **raters))
        parts.append("<h2>Worst images</h2>")
        if len(worst):
            plural = "s" if len(worst) != 1 else ""
            g = render_gallery(list(worst["image_id"]), source, tmp / "worst.png", images, truth, shown,
                               names, caps, title=f"the {len(worst)} image{plural} that cost the most")
            parts += [f"<p class='sub'>{COST_TEXT['rsna' if metric_named(res['metric']).per_image else 'boxes']} "
                      f"(predictions ≥ {conf:g}); truth solid, predictions dashed.</p>",
                      _img_tag(g, "wide", "worst images gallery")]
            if sr:
                parts.append("<p class='sub'>DICOM SR of each: " + ", ".join(
                    f"{html.escape(i[:8])} {_sr_link(i, sr, out) or '(none)'}" for i in worst["image_id"]) + "</p>")
            parts.append("<h2>Overlays</h2>")
            for iid in worst["image_id"].head(n_overlays):
                p = render_image(iid, source, tmp / f"ov_{safe_name(iid)}.png", images, truth, shown, None, names)
                parts.append(f"<div class='overlay'>{_img_tag(p, '', iid)}<br><small>{html.escape(caps[iid])}"
                             f"</small> {_sr_link(iid, sr, out)}</div>")
        else:
            parts.append(f"<p class='sub'>No image costs anything at confidence ≥ {conf:g}: no missed truth box "
                         "and no false positive.</p>")
        doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
               f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    return write_text(out, doc)


def _sr_link(image_id: str, sr: dict | None, out: Path) -> str:
    """``<a class='sr'>`` to the image's DICOM SR (relative to the report), or "" when it has none."""
    if not sr or image_id not in sr:
        return ""
    from detection.pacs.export_sr import relative_link

    href = html.escape(relative_link(sr[image_id], Path(out).parent))
    return f"<a class='sr' data-image='{html.escape(image_id)}' href='{href}'>DICOM SR</a>"


def _sr_summary(sr: dict | None, ids: list[str]) -> str:
    if not sr:
        return ""
    n = sum(i in sr for i in ids)
    return f"<p class='sub'>DICOM Structured Reports (cxrdet export-sr): {n} of {len(ids)} images have one.</p>"


def add_arguments_report_eval(p: argparse.ArgumentParser) -> None:
    from data_prep.core.config import add_config_arguments, retired_flag

    p.add_argument("--truth", required=True, help="train.csv / fused.csv / RSNA labels / box table CSV")
    p.add_argument("--pred", required=True, help="submission CSV or box table CSV")
    p.add_argument("--source", required=True, help="folder of the evaluated images (<id>.png or DICOM)")
    p.add_argument("--meta", help="image sizes (meta.csv or image_id,dim0,dim1)")
    p.add_argument("--folds", help="folds.csv (image_id,fold)")
    p.add_argument("--baseline", help="JSON from `cxrdet evaluate --rater-baseline --json`")
    p.add_argument("--rater-labels", help="raw per-radiologist labels (train.csv): adds the radiologists' pairwise "
                   "agreement matrix and box-size ratios (needs --meta)")
    p.add_argument("--per-rater-json", help="JSON from `cxrdet evaluate --per-rater --json`: the model against each radiologist")
    p.add_argument("--n-worst", type=int, default=12, help="images in the worst-images gallery")
    p.add_argument("--n-overlays", type=int, default=6, help="full-size overlays of the worst images")
    p.add_argument("--title", default="cxrdet evaluation",
                   help="heading of the HTML report and its page title (default: %(default)r)")
    p.add_argument("--explorer", help="folder of a `cxrdet explore` page to link (default: explore/ beside the report)")
    p.add_argument("--sr", metavar="SR_DIR", help="a `cxrdet export-sr` folder: each shown image links to its DICOM SR")
    p.add_argument("--out", required=True, help="report .html path")
    add_config_arguments(p, ["dataset", "metric", "iou_thr", "fold", "show_conf"],
                         help={"fold": "with --folds: report only this held-out fold"})
    retired_flag(p, "--conf", "show_conf")


def run_report_eval(args) -> int:
    from data_prep.core.config import held_out_fold, stage_config
    from data_prep.core.tables import read_truth, select_images
    from detection.evaluation.evaluate import asked_for, predicted_folds, warn_coverage
    from detection.competition.submission import read_predictions

    cfg = stage_config(args)
    fold = held_out_fold(cfg, args.folds)
    if not asked_for(cfg, "fold"):
        fold = None   # no fold asked for: the folds the predictions are for (below), not the default fold 0
    images, truth, ds = read_truth(args.truth, describe(cfg), args.meta)
    pred = read_predictions(args.pred, ds)
    every = (images, truth, pred)
    images, truth, pred = select_images(*every, args.folds, fold)
    if args.folds and fold is None:  # out-of-fold predictions of some folds: the report is about those
        keep, empty = predicted_folds(images, pred)
        if keep and empty:
            log.warning("%s: no prediction on the images of fold(s) %s of %s: the report covers fold(s) %s "
                        "(--fold K to choose)", args.pred, empty, args.folds, keep)
            images, truth, pred = select_images(*every, args.folds, keep)
    warn_coverage(pred, images["image_id"].astype(str).tolist(), args.pred, fold if fold is not None else args.folds)
    baseline = None
    if args.baseline:
        from data_prep.core.errors import reading

        with reading(args.baseline, "rater-baseline JSON written by `cxrdet evaluate --rater-baseline --json`"):
            baseline = json.loads(Path(args.baseline).read_text(encoding="utf-8"))
    settings = ReportSettings.from_config(cfg, normal_class=ds.normal_id, class_names=ds.names, n_worst=args.n_worst,
                                          n_overlays=args.n_overlays, title=args.title)
    sr = None
    if args.sr:
        from detection.pacs.export_sr import read_index

        sr = read_index(args.sr)
    path = build_report(truth, pred, images, args.source, args.out, settings, baseline=baseline,
                        explorer=args.explorer, raters=_raters_args(args, cfg), sr=sr)
    print(path)
    return 0


def _raters_args(args, cfg: dict) -> dict | None:
    if not (args.rater_labels or args.per_rater_json):
        return None
    return {"labels": args.rater_labels, "meta": args.meta, "dataset": cfg["dataset"], "per_rater_json": args.per_rater_json}
