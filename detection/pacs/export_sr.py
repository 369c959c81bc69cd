"""Predictions as DICOM: a TID 1500 Structured Report (+ optional GSPS) per image, to a folder or a PACS.

``cxrdet export-sr --pred PRED.csv --source DICOM_DIR|dicomweb:URL [--study UID ...] --out SR_DIR
[--gsps] [--no-box-reports] [--to dicomweb:URL] [--dataset NAME | --config NAME]``

For every image of the prediction table (a box table in ORIGINAL pixels, as ``cxrdet predict`` writes
it) the source DICOM is found in ``--source`` (by file stem = ``image_id``, else by SOP Instance UID)
and ``SR_DIR/<image_id>.sr.dcm`` is written with highdicom: a **Comprehensive 3D SR** holding a
**TID 1500 Measurement Report** (title "Imaging Measurement Report", procedure LOINC 43468-8 "XR
unspecified body region", observer = the cxrdet device) that references the source image by its Study,
Series and SOP Instance UIDs and inherits its patient and study attributes. Inside it:

* one **TID 1410 planar ROI** group per box: Image Region = SCOORD POLYLINE of 5 points, the closed
  rectangle ``(x_min, y_min) (x_max, y_min) (x_max, y_max) (x_min, y_max) (x_min, y_min)`` in the source
  image's own pixel matrix (column, row): PS3.3 C.18.6.1.1 puts 0.0\\0.0 at the top-left corner of the
  top-left pixel and Columns\\Rows at the bottom-right corner of the last one, which is the box table's
  convention (boxes in [0, width] x [0, height] of the original image), so the numbers are copied as
  they are; Finding = the class's code from the dataset description (``Dataset.code``: SNOMED CT or
  DICOM where one is known, else the local scheme 99CXRDET, declared in the file's Coding Scheme
  Identification Sequence); the score as a **measurement** "Certainty of Finding" (DCM 111012, unit
  UCUM "1") in [0, 1]. A measurement, not a qualitative evaluation, because the score is a number: a
  qualitative evaluation holds a coded value only, so the score would have to be binned (lossy), and
  viewers list measurements with their values;
* the dataset's normal class (VinBigData's "No finding" row ``0 0 1 1``, what the 2-class filter writes)
  is no region: it becomes one **TID 1501 image-level** group, Finding "No abnormality" (DCM 111286),
  with its score as the same measurement.

Images of ``--source`` with no row in the table get **no report** by default: a prediction table lists
boxes, so it cannot tell an image predicted without any box from an image never predicted (a table of one
fold beside a folder of every image); a report saying "no finding" for the latter would be a confident
wrong statement in the PACS. ``--no-box-reports`` (for a table made from this very source, e.g. by
``cxrdet predict --source`` the same folder) writes for each of them a report with one image-level
"No abnormality" group and no score. Their number is printed either way.

``--gsps`` also writes ``SR_DIR/<image_id>.gsps.dcm``, a Grayscale Softcopy Presentation State that
draws each box (POLYLINE, PIXEL units) with a "class score" label on layer CXRDET, for viewers that do
not render SR. ``SR_DIR/index.csv`` (written last) maps each ``image_id`` to its files and UIDs: the
explorer and the HTML report link images to their SR through it. ``--to dicomweb:URL`` stores every
file written on that server (STOW-RS; credentials from ``CXRDET_DICOMWEB_AUTH``, see
:mod:`detection.pacs.dicomweb`). UIDs are derived from the source SOP Instance UID and the image's rows, so
re-exporting the same predictions gives the same instance (a PACS replaces it); changed predictions
give a new one. A prediction row whose image is not in ``--source`` fails that image (listed at the end,
exit 1); the others are written. One run at a time per ``SR_DIR`` (``.cxrdet.lock``, as ``convert``); every
file is written whole (write-then-rename) and ``index.csv`` last, so a killed run is simply run again.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.datasets.common import LOCAL_SCHEME, LOCAL_SCHEME_NAME, NO_ABNORMALITY, Dataset

log = logging.getLogger(__name__)

SR_SUFFIX, GSPS_SUFFIX, INDEX = ".sr.dcm", ".gsps.dcm", "index.csv"
INDEX_COLUMNS = ["image_id", "sr", "gsps", "n_boxes", "normal_score", "study_instance_uid", "series_instance_uid",
                 "sop_instance_uid", "sr_sop_instance_uid"]
# coded concepts as (scheme, value, meaning), like Dataset.code
CERTAINTY = ("DCM", "111012", "Certainty of Finding")
NO_UNITS = ("UCUM", "1", "no units")
PROCEDURE = ("LN", "43468-8", "XR unspecified body region")
MANUFACTURER = "cxrdet"
SR_SERIES_NUMBER, GSPS_SERIES_NUMBER = 9901, 9902
# Type 2 attributes of the patient and study modules the SR copies from its source: required, may be
# empty; phantoms and anonymised files (VinBigData's) lack some of them entirely
TYPE2_INHERITED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                   "StudyDate", "StudyTime", "ReferringPhysicianName")
NOT_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.11.")


def _code(t):
    from highdicom.sr import CodedConcept

    scheme, value, meaning = t
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _finding(dataset: Dataset, class_id: int):
    return _code(dataset.code(class_id))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cxrdet")
    except PackageNotFoundError:
        return "0.1.0"


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def rows_digest(rows: pd.DataFrame) -> str:
    """A short hash of one image's prediction rows (class, box, score): part of its SR's UIDs."""
    cols = ["class_id", "x_min", "y_min", "x_max", "y_max", "score"]
    return hashlib.sha1(rows[cols].to_csv(index=False, float_format="%.6f").encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- sources
def source_headers(folder: str | os.PathLike) -> tuple[dict, list[str]]:
    """``{image_id or SOP Instance UID: (path, header)}`` of the image DICOMs under ``folder`` (headers
    only), and the problems met (unreadable files; SR/PR instances are skipped silently)."""
    import pydicom

    from data_prep.dicom.convert import dicom_paths
    from data_prep.dicom.read import unvalidated

    out, problems = {}, []
    for p in dicom_paths(folder):
        try:
            with unvalidated():
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            if str(ds.get("SOPClassUID", "")).startswith(NOT_IMAGE_SOP_PREFIXES):
                continue
            missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows",
                                   "Columns") if not ds.get(k)]
            if missing:
                problems.append(f"{p}: no {', '.join(missing)} in the header; expected an image with its UIDs and size")
                continue
        except Exception as e:  # one bad file costs its image, never the run
            problems.append(f"{p}: not a readable DICOM ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''})")
            continue
        out.setdefault(p.stem, (p, ds))
        out.setdefault(str(ds.SOPInstanceUID), (p, ds))
    return out, problems


def evidence(header):
    """A copy of a source header with the absent Type 2 patient/study attributes present and empty
    (what highdicom copies into the SR; an empty Type 2 value is valid DICOM, an absent one is not)."""
    ds = copy.copy(header)
    for k in TYPE2_INHERITED:
        if k not in ds:
            setattr(ds, k, "")
    return ds


# ----------------------------------------------------------------------------- one image
def _algorithm():
    from highdicom.sr import AlgorithmIdentification

    return AlgorithmIdentification(name=MANUFACTURER, version=_version())


def report(header, rows: pd.DataFrame, dataset: Dataset, no_box: bool = False):
    """The Comprehensive 3D SR (TID 1500) of one source image and its prediction rows (see the module
    docstring); ``no_box``: the image had no row (a "No abnormality" group without a score)."""
    from highdicom.sr import (Comprehensive3DSR, DeviceObserverIdentifyingAttributes, GraphicTypeValues, ImageRegion,
                              Measurement, MeasurementReport, MeasurementsAndQualitativeEvaluations,
                              ObservationContext, ObserverContext, PlanarROIMeasurementsAndQualitativeEvaluations,
                              SourceImageForMeasurement, SourceImageForRegion, TrackingIdentifier)
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.sr.codedict import codes

    ev = evidence(header)
    digest = rows_digest(rows)
    sop = str(ev.SOPInstanceUID)
    src_region = SourceImageForRegion.from_source_image(ev)
    algo = _algorithm()
    groups = []
    normal = dataset.normal_id
    for k, r in enumerate(rows.itertuples(index=False)):
        score = Measurement(name=_code(CERTAINTY), value=float(r.score), unit=_code(NO_UNITS), algorithm_id=algo)
        tid = TrackingIdentifier(uid=_uid(sop, digest, k), identifier=f"{r.class_name} #{k + 1}")
        if normal is not None and int(r.class_id) == normal:
            groups.append(MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tid, finding_type=_finding(dataset, r.class_id), algorithm_id=algo,
                measurements=[Measurement(name=_code(CERTAINTY), value=float(r.score), unit=_code(NO_UNITS),
                                          algorithm_id=algo,
                                          referenced_images=[SourceImageForMeasurement.from_source_image(ev)])]))
            continue
        x0, y0, x1, y1 = float(r.x_min), float(r.y_min), float(r.x_max), float(r.y_max)
        polyline = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype="float64")
        groups.append(PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tid, referenced_region=ImageRegion(GraphicTypeValues.POLYLINE, polyline, src_region),
            finding_type=_finding(dataset, r.class_id), algorithm_id=algo, measurements=[score]))
    if no_box:
        groups.append(MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=_uid(sop, "no-box"), identifier="no box predicted"),
            finding_type=_code(NO_ABNORMALITY),
            algorithm_id=algo))
    observer = ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=(
        DeviceObserverIdentifyingAttributes(uid=_uid(MANUFACTURER, "device"), name=MANUFACTURER)))
    content = MeasurementReport(observation_context=ObservationContext(observer_device_context=observer),
                                procedure_reported=_code(PROCEDURE), imaging_measurements=groups)
    sr = Comprehensive3DSR(evidence=[ev], content=content[0], series_instance_uid=_uid(ev.StudyInstanceUID, "cxrdet-sr"),
                           series_number=SR_SERIES_NUMBER, sop_instance_uid=_uid(sop, digest, "sr"), instance_number=1,
                           manufacturer=MANUFACTURER, is_complete=True, series_description="cxrdet predictions (SR)")
    scheme = DicomDataset()
    scheme.CodingSchemeDesignator, scheme.CodingSchemeName = LOCAL_SCHEME, LOCAL_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "cxrdet project (data_prep/datasets: CODES)"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def presentation_state(header, rows: pd.DataFrame, dataset: Dataset):
    """A GSPS drawing the boxes of one image (layer CXRDET, POLYLINE in PIXEL units, "class score" labels);
    the normal-class row (no region) is not drawn."""
    from highdicom.pr import (AnnotationUnitsValues, GraphicAnnotation, GraphicLayer, GraphicObject,
                              GraphicTypeValues, GrayscaleSoftcopyPresentationState, TextObject)

    ev = evidence(header)
    boxes = dataset.findings(rows) if dataset.normal is not None else rows
    layer = GraphicLayer("CXRDET", 1, "cxrdet predicted boxes")
    objects, texts = [], []
    for r in boxes.itertuples(index=False):
        x0, y0, x1, y1 = float(r.x_min), float(r.y_min), float(r.x_max), float(r.y_max)
        objects.append(GraphicObject(GraphicTypeValues.POLYLINE, np.array(
            [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype="float64"), AnnotationUnitsValues.PIXEL))
        texts.append(TextObject(f"{r.class_name} {float(r.score):.2f}"[:64], AnnotationUnitsValues.PIXEL,
                                anchor_point=(x0, y0), anchor_point_visible=False))
    annotations = [GraphicAnnotation([ev], layer, graphic_objects=objects, text_objects=texts)] if objects else None
    sop = str(ev.SOPInstanceUID)
    pr = GrayscaleSoftcopyPresentationState(
        [ev], _uid(ev.StudyInstanceUID, "cxrdet-gsps"), GSPS_SERIES_NUMBER, _uid(sop, rows_digest(rows), "gsps"), 1,
        MANUFACTURER, MANUFACTURER, _version(), "none", "CXRDET_BOXES", content_description="cxrdet predicted boxes",
        graphic_annotations=annotations, graphic_layers=[layer] if annotations else None)
    if "Laterality" not in pr:  # Type 2C of General Series (a chest may be judged paired): present, empty
        pr.Laterality = ""
    return pr


# ----------------------------------------------------------------------------- reading back
def read_report(path_or_ds, dataset: Dataset) -> pd.DataFrame:
    """The boxes of an SR written by :func:`report` (a path, a pydicom dataset or a highdicom SR), as prediction rows: ``sop_instance_uid`` (of the
    referenced source image), ``class_id``, ``class_name``, ``x_min, y_min, x_max, y_max``, ``score``.
    Image-level "No abnormality" groups with a score come back as the dataset's normal-class row with
    the box ``0 0 1 1``; one without a score (``--no-box-reports``) gives no row."""
    import highdicom as hd

    from data_prep.labels.raters import NORMAL_BOX

    if hasattr(path_or_ds, "content"):   # already a highdicom SR
        sr = path_or_ds
    elif hasattr(path_or_ds, "SOPClassUID"):   # a pydicom dataset (e.g. retrieved by WADO-RS)
        sr = hd.sr.Comprehensive3DSR.from_dataset(path_or_ds)
    else:
        sr = hd.sr.srread(path_or_ds)
    by_code = {dataset.code(c)[:2]: c for c in dataset.class_ids}
    names = dataset.class_names()
    ref = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    out = []

    def row(finding, xyxy, score):
        key = (finding.scheme_designator, finding.value)
        if key not in by_code:
            raise ValueError(f"SR {sr.SOPInstanceUID}: finding {key} is not a class of {dataset.name}; expected one of "
                             f"{sorted(by_code)}")
        c = by_code[key]
        out.append({"sop_instance_uid": str(ref.ReferencedSOPInstanceUID), "class_id": c, "class_name": names[c],
                    "x_min": xyxy[0], "y_min": xyxy[1], "x_max": xyxy[2], "y_max": xyxy[3], "score": score})

    for g in sr.content.get_planar_roi_measurement_groups():
        pts = np.asarray(g.roi.value, dtype="float64")
        score = [m.value for m in g.get_measurements(name=_code(CERTAINTY))]
        row(g.finding_type, [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()], float(score[0]))
    for g in sr.content.get_image_measurement_groups():
        score = [m.value for m in g.get_measurements(name=_code(CERTAINTY))]
        if score:
            row(g.finding_type, list(NORMAL_BOX), float(score[0]))
    return pd.DataFrame(out, columns=["sop_instance_uid", "class_id", "class_name", "x_min", "y_min", "x_max", "y_max",
                                      "score"])


# ----------------------------------------------------------------------------- the stage
@dataclass
class ExportResult:
    """What :func:`export_sr` wrote: the index table, files, failures, source images without rows."""
    index: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    no_rows: int = 0
    stored: int = 0


def export_sr(pred: pd.DataFrame, source: str | os.PathLike, out: str | os.PathLike, dataset: Dataset, *,
              gsps: bool = False, no_box_reports: bool = False) -> ExportResult:
    """Write the SR (+ GSPS) of every image of ``pred`` (a box table in original pixels) whose DICOM is
    under ``source``; ``out/index.csv`` last. See the module docstring."""
    from data_prep.core.atomic import atomic_path, safe_name, write_csv

    headers, problems = source_headers(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = ExportResult(index=pd.DataFrame(columns=INDEX_COLUMNS))
    res.failed += problems
    rows_of = {iid: g for iid, g in pred.groupby("image_id", sort=True)}
    sources = {}
    for iid, (p, _) in headers.items():   # one image_id per file: its stem (listed before its SOP Instance UID)
        sources.setdefault(str(p), iid)
    todo = [(iid, g, False) for iid, g in rows_of.items()]
    covered = {str(headers[i][0]) for i in rows_of if i in headers}
    no_rows = sorted({sources[p] for p in sources if p not in covered})
    res.no_rows = len(no_rows)
    if no_box_reports:
        todo += [(iid, pred.iloc[:0], True) for iid in no_rows]
    index = []
    for iid, rows, no_box in todo:
        if iid not in headers:
            res.failed.append(f"image_id {iid!r}: no DICOM with that file stem or SOP Instance UID under {source}")
            continue
        path, hdr = headers[iid]
        try:
            if int(hdr.Rows) and len(rows):
                over = ((rows["x_max"] > int(hdr.Columns) + 1e-6) | (rows["y_max"] > int(hdr.Rows) + 1e-6)
                        | (rows["x_min"] < -1e-6) | (rows["y_min"] < -1e-6))
                if over.any():
                    raise ValueError(f"box {rows.loc[over, ['x_min', 'y_min', 'x_max', 'y_max']].iloc[0].tolist()} "
                                     f"lies outside the image ({int(hdr.Rows)} x {int(hdr.Columns)}); expected boxes in "
                                     "original pixels")
            docs = [(SR_SUFFIX, report(hdr, rows, dataset, no_box))]
            if gsps:
                docs.append((GSPS_SUFFIX, presentation_state(hdr, rows, dataset)))
            for suffix, ds in docs:
                dst = out / f"{safe_name(iid)}{suffix}"
                with atomic_path(dst) as tmp:
                    ds.save_as(tmp, enforce_file_format=True)
                res.files.append(dst)
        except Exception as e:  # one image never stops the batch; listed at the end
            msg = " ".join(str(e).split()) or type(e).__name__
            res.failed.append(f"{path}: {msg if isinstance(e, ValueError) else f'{type(e).__name__}: {msg}'}")
            continue
        normal = rows[rows["class_id"] == dataset.normal_id] if dataset.normal is not None else rows.iloc[:0]
        index.append({"image_id": iid, "sr": f"{safe_name(iid)}{SR_SUFFIX}",
                      "gsps": f"{safe_name(iid)}{GSPS_SUFFIX}" if gsps else "", "n_boxes": len(rows) - len(normal),
                      "normal_score": float(normal["score"].max()) if len(normal) else np.nan,
                      "study_instance_uid": str(hdr.StudyInstanceUID), "series_instance_uid": str(hdr.SeriesInstanceUID),
                      "sop_instance_uid": str(hdr.SOPInstanceUID), "sr_sop_instance_uid": str(docs[0][1].SOPInstanceUID)})
    res.index = pd.DataFrame(index, columns=INDEX_COLUMNS)
    write_csv(res.index, out / INDEX)
    return res


def read_index(sr_dir: str | os.PathLike) -> dict[str, str]:
    """``{image_id: path of its SR}`` from an export-sr folder's ``index.csv`` (files that exist only)."""
    from data_prep.core.tables import read_table

    path = Path(sr_dir) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{sr_dir}: no {INDEX}; expected a folder written by `cxrdet export-sr`")
    df = read_table(path, "export-sr index")
    return {r.image_id: str(Path(sr_dir) / r.sr) for r in df.itertuples() if (Path(sr_dir) / r.sr).is_file()}


def relative_link(path, page_dir) -> str:
    """``path`` as a URL relative to a page in ``page_dir`` (what a ``file://`` page can follow): how the
    explorer and the HTML report link an image to its SR."""
    from urllib.parse import quote

    return quote(Path(os.path.relpath(Path(path).resolve(), Path(page_dir).resolve())).as_posix())


# ----------------------------------------------------------------------------- CLI
def add_arguments_export_sr(p: argparse.ArgumentParser) -> None:
    from data_prep.core.config import add_config_arguments

    p.add_argument("--pred", required=True, help="prediction box table CSV (original pixels, as `cxrdet predict` writes)")
    p.add_argument("--source", required=True, help="folder of the source DICOMs, or dicomweb:URL (a DICOMweb server)")
    p.add_argument("--study", action="extend", nargs="+", default=None,
                   help="with --source dicomweb:URL: only these Study Instance UIDs (default: every study)")
    p.add_argument("--out", required=True, help="output folder: <image_id>.sr.dcm (+ .gsps.dcm) and index.csv")
    p.add_argument("--gsps", action="store_true", help="also write a Grayscale Softcopy Presentation State per image")
    p.add_argument("--no-box-reports", action="store_true",
                   help="also write a 'No abnormality' report for each source image without a row in --pred (only "
                        "when the table was predicted from this very source: a table cannot tell 'no box' from "
                        "'not predicted')")
    p.add_argument("--to", default=None, help="dicomweb:URL: also store the files written there (STOW-RS; "
                   "credentials from the environment variable CXRDET_DICOMWEB_AUTH)")
    add_config_arguments(p, ["dataset"])


def run_export_sr(args: argparse.Namespace) -> int:
    from data_prep.core.atomic import check_not_input, folder_lock
    from data_prep.core.config import stage_config
    from data_prep.datasets import describe
    from data_prep.core.errors import InputError, check_output
    from data_prep.core.tables import read_predictions
    from detection.pacs import dicomweb

    cfg = stage_config(args)
    dataset = describe(cfg)
    check_output(args.out, folder=True, arg="--out")
    remote = dicomweb.is_dicomweb(args.source)
    inputs = [args.pred] + ([] if remote else [args.source])
    check_not_input(args.out, inputs)
    if not remote and Path(args.out).resolve().is_relative_to(Path(args.source).resolve()):
        raise InputError(f"--out {args.out}", f"is inside --source {args.source}; expected an output folder outside "
                                              "the source (the reports would be read as sources next time)")
    to_url = dicomweb.service_url(args.to, "--to") if args.to else None
    pred = read_predictions(args.pred, dataset.class_names())
    bad = ~pred["class_id"].isin(dataset.class_ids)
    if bad.any():
        raise InputError(args.pred, f"class_id {int(pred.loc[bad, 'class_id'].iloc[0])} is not a class of {dataset.name} "
                                    f"({int(bad.sum())} such row(s)); expected 0..{dataset.class_ids[-1]} (--dataset?)")
    names = dataset.class_names()
    wrong = (pred["class_name"] != pred["class_id"].map(names)).to_numpy()
    if wrong.any():  # coding the finding by class_id would then contradict the table's own name
        i = int(wrong.argmax())
        raise InputError(f"{args.pred} row {i + 1}", f"class_name {pred['class_name'].iloc[i]!r} is not {dataset.name}'s "
                                                      f"class {int(pred['class_id'].iloc[i])} ({names[int(pred['class_id'].iloc[i])]!r}); "
                                                      "expected the dataset's own names (--dataset?)")
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied module and file
    with folder_lock(args.out, "export-sr"), dicomweb.local_source(args.source, args.study) as source:
        res = export_sr(pred, source, args.out, dataset, gsps=args.gsps, no_box_reports=args.no_box_reports)
    if to_url and res.files:
        res.stored = dicomweb.store(to_url, res.files)
    n_sr = int(len(res.index))
    print(f"{args.out}: {n_sr} SR(s){' + GSPS' if args.gsps else ''} for {pred['image_id'].nunique()} image(s) of "
          f"{args.pred} ({int(res.index['n_boxes'].sum()) if n_sr else 0} box(es)); {len(res.failed)} failed")
    if res.no_rows:
        print(f"  {res.no_rows} source image(s) without a row in the table: "
              + ("a 'No abnormality' report each (--no-box-reports)" if args.no_box_reports else
                 "no report (a table cannot tell 'no box' from 'not predicted'; --no-box-reports writes one)"))
    if to_url:
        print(f"  stored {res.stored} file(s) on {dicomweb.PREFIX}{to_url} (STOW-RS)")
    for e in res.failed:
        print(f"  failed: {e}")
    return 1 if res.failed else 0
