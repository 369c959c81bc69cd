"""``cxrdet STAGE ...``: one subcommand per stage module, nothing else in it.

Each stage module exposes ``add_arguments_<cmd>(parser)`` and ``run_<cmd>(args) -> int`` (``cmd``
with ``-`` as ``_``). Only the chosen stage's module is imported, so ``cxrdet convert`` never pays
for importing torch. Bare ``key=value`` tokens are collected into ``args.overrides`` for the
config merge (defaults < CONFIG < command line, see ``data_prep/core/config.py``).

The error boundary: every failure a user can cause ends as ONE line
``cxrdet STAGE: error: <file or argument>: <what is wrong, what was expected>`` and exit status 2
(see ``data_prep/core/errors.py``); anything else is one line saying it is an internal error, status 1.
``--debug`` anywhere on the command line (or ``CXRDET_DEBUG=1``) prints the traceback as well.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "labels": ("data_prep.labels.image_level", "image-level label table (one 0/1 column per label + abnormal) from a dataset's file"),
    "synth": ("data_prep.phantoms.synth", "write synthetic DICOM phantoms in the VinBigData / RSNA layouts"),
    "convert": ("data_prep.dicom.convert", "DICOM folder -> 8-bit PNGs + meta.csv (+ errors.csv); resumable"),
    "fuse": ("data_prep.labels.fusion", "fuse the radiologists' boxes (WBF, NMS, ...) into one set per image"),
    "prep": ("data_prep.prep", "convert -> load -> fuse -> folds -> YOLO/COCO export, from a dataset folder"),
    "report": ("data_prep.report.dataset_report", "markdown + PNG report of an annotation file"),
    "train": ("detection.engine.train", "train an ultralytics YOLO detector on a prepared fold"),
    "train-cls": ("detection.engine.train", "train the normal/abnormal filter, or a multi-label classifier (cls_task=multilabel)"),
    "cv": ("detection.competition.cv", "k-fold cross-validation: train every fold, out-of-fold predictions, leak check, fold ensemble"),
    "classify": ("detection.engine.classify", "multi-label classifier -> probabilities table (image_id, labels, abnormal)"),
    "export": ("detection.engine.export", "export YOLO or multi-label classifier weights to ONNX"),
    "predict": ("detection.engine.predict", "predict boxes in original pixels from PNGs or DICOMs (TTA, ensembles)"),
    "postprocess": ("detection.competition.postprocess", "WBF of prediction tables, class probabilities, 2-class filter, thresholds, box scaling"),
    "tune": ("detection.competition.tune", "search the post-processing keys on out-of-fold predictions (optuna), nested estimate"),
    "submit": ("detection.competition.submission", "write a Kaggle submission CSV from a prediction box table"),
    "validate-submission": ("detection.competition.submission", "check a submission CSV against the sample submission"),
    "evaluate": ("detection.evaluation.evaluate", "mAP (vinbigdata / rsna / coco), image-level AUC, the radiologist baseline"),
    "evaluate-cls": ("detection.evaluation.evaluate_cls", "per-label ROC AUC (bootstrap CI), best F1, macro/micro AUC, ROC plot"),
    "show": ("detection.pictures.visualize", "draw truth and predicted boxes over X-rays; galleries"),
    "report-eval": ("detection.pictures.report_eval", "self-contained HTML evaluation report"),
    "explore": ("detection.pictures.explore", "interactive HTML explorer (opens from disk): truth, predictions, radiologists"),
    "export-sr": ("detection.pacs.export_sr", "predictions as DICOM: TID 1500 Structured Reports (+ GSPS) per image, to a folder or a PACS (DICOMweb)"),
    "demo": ("detection.demo", "run the whole pipeline on the embedded phantom dataset"),
}


# What each stage writes, by argparse dest (every other path-like argument is an input; see
# :func:`path_roles`). A stage's new output flag goes here; a new input flag needs nothing.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "labels": ("out",), "synth": ("out",), "convert": ("dst",), "fuse": ("out",), "prep": ("out",),
    "report": ("out",), "cv": ("out",), "classify": ("out",), "export": ("out",),
    "predict": ("out", "raw", "probs", "cls_probs_out"), "postprocess": ("out",), "tune": ("out",),
    "submit": ("out",), "evaluate": ("json", "plots"), "evaluate-cls": ("json", "plots"), "show": ("out",),
    "report-eval": ("out",), "explore": ("out",), "export-sr": ("out",), "demo": ("out",),
}
# Files a stage writes beside an output flag's path: (label, path -> path)
DERIVED = {("tune", "out"): (("its JSON", lambda p: Path(p).with_suffix(".json")),)}
# String arguments that are not paths (names, choices, ids, addresses, fold lists)
NOT_PATHS = {"dataset", "vote", "fusion", "fusion_conf_type", "raters", "device", "format", "study", "scheduler",
             "metric", "title", "to", "image", "gallery"}
NOT_PATHS_OF = {"cv": {"folds"}}   # cv --folds 0,1,2 is a fold list


def path_roles(cmd: str, parser: argparse.ArgumentParser, args: argparse.Namespace
               ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(outputs, inputs)`` of a parsed command line as ``(flag, path)`` pairs: outputs by
    :data:`OUTPUTS` (+ :data:`DERIVED`), inputs = every other string argument that is not in
    :data:`NOT_PATHS` (a config given by bare name is its file in configs/)."""
    outs, ins = [], []
    names = set(OUTPUTS.get(cmd, ()))
    skip = NOT_PATHS | NOT_PATHS_OF.get(cmd, set())
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction) or a.nargs == 0 or a.type not in (None, str) or a.choices:
            continue
        if a.dest.startswith("_") or (a.dest in skip and a.dest not in names):
            continue
        flag = a.option_strings[0] if a.option_strings else a.dest
        vals = getattr(args, a.dest, None)
        vals = [v for v in (vals if isinstance(vals, list) else [vals]) if isinstance(v, str) and v]
        if a.dest in names:
            for v in vals:
                outs.append((flag, v))
                outs += [(f"{flag} ({label})", str(fn(v))) for label, fn in DERIVED.get((cmd, a.dest), ())]
        else:
            ins += [(flag, _config_file(v) if a.dest == "config" else v) for v in vals]
    return outs, ins


def _config_file(v: str) -> str:
    if Path(v).exists():
        return v
    try:
        from data_prep.core.config import resolve_config_path

        return str(resolve_config_path(v))
    except (FileNotFoundError, OSError):
        return v


def check_paths(cmd: str, parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The one guard: no output over an input, no two outputs on one path (:func:`data_prep.core.atomic.check_outputs`)."""
    from data_prep.core.atomic import check_outputs

    check_outputs(*path_roles(cmd, parser, args))


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: cxrdet STAGE [args] [key=value ...]", "", "stages:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "cxrdet STAGE --help shows a stage's arguments; cxrdet --version the version; --debug (or CXRDET_DEBUG=1) shows tracebacks."]
    return "\n".join(lines)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CXRDET_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] in (["--version"], ["-V"]):
        from detection import __version__

        print(f"cxrdet {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"cxrdet: unknown stage {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    saved = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _one_line_warning
    try:
        module = importlib.import_module(COMMANDS[cmd][0])
        fn = cmd.replace("-", "_")
        parser = argparse.ArgumentParser(prog=f"cxrdet {cmd}", description=COMMANDS[cmd][1])
        getattr(module, f"add_arguments_{fn}")(parser)
        args, unknown = parser.parse_known_args(rest)
        bad = [t for t in unknown if "=" not in t or t.startswith("-")]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = [t for t in unknown if t not in bad]
        args.debug = debug
        check_paths(cmd, parser, args)
        return int(getattr(module, f"run_{fn}")(args) or 0)
    except SystemExit:
        raise
    except BaseException as e:  # the boundary: one line, the traceback only with --debug
        from data_prep.core.errors import user_message

        line, status = user_message(e)
        if debug:
            traceback.print_exc()
        print(f"cxrdet {cmd}: error: {line}", file=sys.stderr)
        return status
    finally:
        warnings.formatwarning = saved


if __name__ == "__main__":
    raise SystemExit(main())
