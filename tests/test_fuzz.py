"""Fuzz tests (issue 10), seeded and bounded (~20 s in all on 2 cores):

* mutated bytes of small valid DICOMs through the reader: it returns a uint8 image or raises
  ``DicomReadError``, nothing else;
* mutated submission text through parse and validate: a box table / a list of problems, or a
  ``ValueError`` written by the project (one line), never a library's exception;
* random prediction tables through ``cxrdet submit`` -> ``cxrdet validate-submission``: a clean table
  gives a valid file that parses back to the same boxes; a faulty one gives one error line and no
  file (neither the submission nor the hidden staged copy).

The example counts are the module constants below (the issue's closing note quotes them).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from data_prep.core.boxes import make_boxes
from data_prep.dicom.read import DicomReadError, read_dicom
from data_prep.core.errors import raised_by_project
from detection.cli import main
from data_prep.datasets import describe
from detection.competition.submission import parse_submission, validate_submission

N_DICOM_MUTANTS = 600        # mutated DICOM files read
N_SUBMISSION_MUTANTS = 400   # mutated submission texts parsed and validated (1 in 4 with image sizes)
N_ROUND_TRIPS = 30           # random prediction tables through submit -> validate-submission

pytestmark = pytest.mark.filterwarnings("ignore")


# ----------------------------------------------------------------------------- byte mutations
def mutate(data: bytes, rng: np.random.Generator, hot: int | None = None) -> bytes:
    """1-4 random edits: flip/overwrite bytes (mostly within the first ``hot`` bytes: the
    header), delete or duplicate a span, truncate, or write 0xFF / 0x00 runs."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        if not b:
            break
        limit = min(len(b), hot) if hot and rng.random() < 0.8 else len(b)
        i = int(rng.integers(0, limit))
        op = int(rng.integers(0, 6))
        if op == 0:
            b[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            b[i] = int(rng.integers(0, 256))
        elif op == 2:
            del b[i:i + int(rng.integers(1, 64))]
        elif op == 3:
            j = int(rng.integers(i, min(len(b), i + 64) + 1))
            b[i:i] = b[i:j]
        elif op == 4:
            del b[int(rng.integers(0, len(b))):]
        else:
            n = int(rng.integers(1, 8))
            b[i:i + n] = bytes([0xFF if rng.random() < 0.5 else 0x00]) * n
    return bytes(b)


def _seed_dicoms(tmp: Path, make_ds, save) -> list[bytes]:
    """Small valid DICOMs: two made here (16-bit MONOCHROME1 with a window, 8-bit with a rescale)
    and pydicom's own small files (explicit/implicit VR, big endian, RLE, JPEG 2000, JPEG-LS)."""
    out = []
    for k, (dtype, photo, extra) in enumerate([
            ("<u2", "MONOCHROME1", {"WindowCenter": "800", "WindowWidth": "1200", "PatientAge": "045Y",
                                    "PixelSpacing": [0.2, 0.2]}),
            ("u1", "MONOCHROME2", {"RescaleSlope": "2", "RescaleIntercept": "-10", "ViewPosition": "PA"})]):
        arr = np.random.default_rng(k).integers(0, 4000 if dtype == "<u2" else 255, (24, 20)).astype(dtype)
        p = tmp / f"seed{k}.dcm"
        save(make_ds(arr, photo, 12 if dtype == "<u2" else 8, **extra), p)
        out.append(p.read_bytes())
    for name in ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                 "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        p = get_testdata_file(name, download=False)
        if p is not None:
            out.append(Path(p).read_bytes())
    return out


def test_mutated_dicoms_give_an_image_or_a_dicom_read_error(tmp_path, make_ds, save):
    seeds = _seed_dicoms(tmp_path, make_ds, save)
    assert len(seeds) >= 2
    rng = np.random.default_rng(2026)
    outcomes = {"image": 0, "DicomReadError": 0}
    path = tmp_path / "mutant.dcm"
    for k in range(N_DICOM_MUTANTS):
        seed = seeds[k % len(seeds)]
        path.write_bytes(mutate(seed, rng, hot=600))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img, header = read_dicom(path, size=32)
        except DicomReadError as e:
            assert str(path) in str(e) and "\n" not in str(e).strip(), str(e)
            outcomes["DicomReadError"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"mutant {k} of seed {k % len(seeds)}: {type(e).__name__}: {e} escaped the reader")
        assert img.dtype == np.uint8 and img.ndim == 2 and img.shape == (32, 32)
        assert header["height"] > 0 and header["width"] > 0
        outcomes["image"] += 1
    # both outcomes happen: the mutations reach past the header and also break it
    assert outcomes["image"] > 50 and outcomes["DicomReadError"] > 50, outcomes


# ----------------------------------------------------------------------------- submission text
def _valid_texts() -> list[tuple[str, str, list[str]]]:
    """(format, submission text, sample ids)."""
    vin_ids = ["a1", "b2", "c3"]
    vin = ("image_id,PredictionString\n"
           "a1,0 0.9 10 20 110.5 220 14 0.1 0 0 1 1\n"
           "b2,14 1 0 0 1 1\n"
           "c3,3 0.5 1 2 30 40 7 0.25 5 5 6 6\n")
    rsna_ids = ["p1", "p2", "p3"]
    rsna = ("patientId,PredictionString\n"
            "p1,0.9 10 20 100 200 0.3 500 500 20 30\n"
            "p2,\n"
            "p3,0.5 0 0 1024 1024\n")
    return [("vinbigdata", vin, vin_ids), ("rsna", rsna, rsna_ids)]


ALPHABET = list(",\n\r\" .-+e0123456789") + ["nan", "inf", "\x00", "é", "  ", "14", ",,", "\n\n"]


def mutate_text(text: str, rng: np.random.Generator) -> str:
    s = text
    for _ in range(int(rng.integers(1, 4))):
        i = int(rng.integers(0, len(s) + 1))
        op = int(rng.integers(0, 5))
        tok = ALPHABET[int(rng.integers(0, len(ALPHABET)))]
        if op == 0:
            s = s[:i] + tok + s[i + 1:]
        elif op == 1:
            s = s[:i] + tok + s[i:]
        elif op == 2:
            s = s[:i] + s[i + int(rng.integers(1, 12)):]
        elif op == 3:   # duplicate or drop a line
            lines = s.split("\n")
            j = int(rng.integers(0, len(lines)))
            lines = lines[:j] + lines[j:j + 1] * int(rng.integers(0, 3)) + lines[j + 1:]
            s = "\n".join(lines)
        else:           # swap two tokens of one line
            toks = s.split(" ")
            a, b = rng.integers(0, len(toks), 2)
            toks[a], toks[b] = toks[b], toks[a]
            s = " ".join(toks)
    return s


def test_mutated_submissions_parse_and_validate_cleanly(tmp_path):
    rng = np.random.default_rng(7)
    sizes = pd.DataFrame({"image_id": ["a1", "b2", "c3", "p1", "p2", "p3"], "height": [300, 300, 300, 1024, 1024, 1024],
                          "width": [400, 400, 400, 1024, 1024, 1024]})
    counts = {"valid": 0, "invalid": 0, "parse error": 0}
    path = tmp_path / "sub.csv"
    for k in range(N_SUBMISSION_MUTANTS):
        fmt, text, ids = _valid_texts()[k % 2]
        sample = pd.DataFrame({"image_id": ids, "PredictionString": ""})
        mutant = mutate_text(text, rng)
        path.write_bytes(mutant.encode("utf-8", errors="surrogatepass"))
        try:
            problems = validate_submission(path, sample, fmt, images=sizes if k % 4 == 0 else None)
        except ValueError as e:
            assert raised_by_project(e), f"mutant {k}: {type(e).__name__} from a library: {e}"
            problems = [str(e)]
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"mutant {k} {mutant!r}: validate raised {type(e).__name__}: {e}")
        assert all(isinstance(p, str) and p and "\n" not in p for p in problems), problems
        try:
            parsed = parse_submission(path, fmt)
        except ValueError as e:
            assert raised_by_project(e), f"mutant {k}: {type(e).__name__} from a library: {e}"
            assert "\n" not in str(e).strip()
            counts["parse error"] += 1
            assert problems, f"mutant {k} {mutant!r}: the parser refuses what the validator accepts: {e}"
            continue
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"mutant {k} {mutant!r}: parse raised {type(e).__name__}: {e}")
        if problems:
            counts["invalid"] += 1
        else:   # a file the validator accepts parses to boxes inside their images, on the sample's ids
            counts["valid"] += 1
            assert parsed.attrs["image_ids"] == ids
            assert parsed["score"].between(0, 1).all()
            assert (parsed["x_max"] > parsed["x_min"]).all() and (parsed["y_max"] > parsed["y_min"]).all()
            if k % 4 == 0:
                hw = sizes.set_index("image_id").loc[parsed["image_id"]]
                assert (parsed["x_max"].to_numpy() <= hw["width"].to_numpy()).all()
    assert counts["valid"] > 15 and counts["invalid"] > 60 and counts["parse error"] > 30, counts


# ----------------------------------------------------------------------------- submit -> validate
IDS = [f"img{i}" for i in range(5)]
HW = {i: (200 + 37 * k, 300 - 29 * k) for k, i in enumerate(IDS)}
FAULTS = ["none", "score above 1", "negative score", "NaN coordinate", "inverted box", "unknown image",
          "infinite coordinate", "float class id 2.5", "class 15", "no score column"]


@st.composite
def prediction_tables(draw):
    n = draw(st.integers(0, 12))
    rows = []
    names = describe("vinbigdata").names
    for _ in range(n):
        iid = draw(st.sampled_from(IDS))
        h, w = HW[iid]
        c = draw(st.integers(0, 14))
        x0 = draw(st.floats(-20, w + 20, allow_nan=False))
        y0 = draw(st.floats(-20, h + 20, allow_nan=False))
        bw = draw(st.floats(0, w, allow_nan=False))
        bh = draw(st.floats(0, h, allow_nan=False))
        s = draw(st.floats(0, 1, allow_nan=False))
        rows.append((iid, c, names[c], [x0, y0, x0 + bw, y0 + bh], s))
    fault = draw(st.sampled_from(FAULTS)) if n else "none"
    return rows, fault


def _table(rows, fault) -> pd.DataFrame:
    df = make_boxes([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                    [r[3] for r in rows], score=[r[4] for r in rows]) if rows else \
        pd.DataFrame(columns=["image_id", "class_id", "class_name", "x_min", "y_min", "x_max", "y_max", "score"])
    df = df.astype({"class_id": object, "x_min": object, "score": object})
    if fault == "score above 1":
        df.loc[0, "score"] = 1.5
    elif fault == "negative score":
        df.loc[0, "score"] = -0.1
    elif fault == "NaN coordinate":
        df.loc[0, "x_min"] = np.nan
    elif fault == "inverted box":
        df.loc[0, "x_min"] = float(df.loc[0, "x_max"]) + 5
    elif fault == "unknown image":
        df.loc[0, "image_id"] = "stranger"
    elif fault == "infinite coordinate":
        df.loc[0, "x_min"] = -np.inf
    elif fault == "float class id 2.5":
        df.loc[0, "class_id"] = 2.5
    elif fault == "class 15":
        df.loc[0, "class_id"] = 15
    elif fault == "no score column":
        df = df.drop(columns="score")
    return df


@settings(max_examples=N_ROUND_TRIPS, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=prediction_tables())
def test_random_prediction_tables_submit_then_validate(tmp_path_factory, case):
    rows, fault = case
    d = tmp_path_factory.mktemp("rt")
    pd.DataFrame({"image_id": IDS, "PredictionString": "14 1 0 0 1 1"}).to_csv(d / "sample.csv", index=False)
    pd.DataFrame({"image_id": IDS, "dim0": [HW[i][0] for i in IDS], "dim1": [HW[i][1] for i in IDS]}).to_csv(
        d / "meta.csv", index=False)
    _table(rows, fault).to_csv(d / "pred.csv", index=False)
    out = d / "sub.csv"
    common = ["--format", "vinbigdata", "--sample", str(d / "sample.csv"), "--meta", str(d / "meta.csv")]
    import io
    from contextlib import redirect_stderr, redirect_stdout

    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        rc = main(["submit", *common, "--pred", str(d / "pred.csv"), "--out", str(out)])
    hidden = [p.name for p in d.iterdir() if p.name.startswith(".")]
    assert hidden == [], hidden
    if fault != "none":
        lines = err.getvalue().strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("cxrdet submit: error: "), (fault, lines)
        assert not out.exists()
        return
    assert rc == 0, err.getvalue()
    with redirect_stdout(io.StringIO()) as o:
        assert main(["validate-submission", *common, str(out)]) == 0, o.getvalue()
    back = parse_submission(out, "vinbigdata")
    assert back.attrs["image_ids"] == IDS
    # every predicted box comes back once (a written box contains the predicted one, clipped to its image),
    # plus one "14 1 0 0 1 1" per image without any prediction
    want = _table(rows, "none")
    n_empty = len(set(IDS) - set(want["image_id"]))
    assert len(back) == len(want) + n_empty
    for iid, g in want.groupby("image_id"):
        b = back[back["image_id"] == iid]
        assert sorted(b["class_id"]) == sorted(g["class_id"].astype(int))
        np.testing.assert_allclose(sorted(b["score"]), sorted(g["score"].astype(float)), atol=1e-6)
        h, w = HW[iid]
        real = b[b["class_id"] != 14]
        assert (real["x_min"] >= 0).all() and (real["x_max"] <= w).all() and (real["y_max"] <= h).all()
