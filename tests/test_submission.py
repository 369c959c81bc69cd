"""detection.competition.submission: write -> parse round trips, sample order, the validator's faults, the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep.core.boxes import BOX_COLUMNS, empty_boxes, make_boxes
from detection.cli import main
from data_prep.datasets import describe
from detection.competition.submission import parse_submission, submission_ids, validate_submission, write_submission

NORMAL_STRING = "14 1 0 0 1 1"     # VinBigData: an image without findings, as the competition scores it

HYP = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _sample(path: Path, ids, fmt="vinbigdata") -> Path:
    col = "image_id" if fmt == "vinbigdata" else "patientId"
    pd.DataFrame({col: ids, "PredictionString": NORMAL_STRING if fmt == "vinbigdata" else ""}).to_csv(
        path, index=False)
    return path


# ----------------------------------------------------------------------------- hypothesis round trips
@st.composite
def predictions(draw, fmt):
    """(sample ids, image table, prediction box table) with 0..5 boxes per image, inside the image."""
    n = draw(st.integers(1, 6))
    ids = [f"img{i:02d}" for i in draw(st.permutations(range(n)))]
    names = describe("vinbigdata").names
    rows, sizes = [], []
    for iid in ids:
        h, w = (1024, 1024) if fmt == "rsna" else (draw(st.integers(50, 3000)), draw(st.integers(50, 3000)))
        sizes.append((iid, h, w))
        for _ in range(draw(st.integers(0, 5))):
            score = draw(st.floats(0, 1))
            cls = 0 if fmt == "rsna" else draw(st.integers(0, 14))
            if cls == 14:
                box = [0.0, 0.0, 1.0, 1.0]
            else:
                x = sorted(draw(st.floats(0, w)) for _ in range(2))
                y = sorted(draw(st.floats(0, h)) for _ in range(2))
                box = [x[0], y[0], x[1], y[1]]
            rows.append((iid, cls, names[cls] if fmt == "vinbigdata" else "Lung Opacity", *box, score))
    images = pd.DataFrame(sizes, columns=["image_id", "height", "width"])
    if not rows:
        return ids, images, empty_boxes()
    a = pd.DataFrame(rows, columns=["image_id", "class_id", "class_name", "x_min", "y_min", "x_max", "y_max", "score"])
    return ids, images, make_boxes(a.image_id, a.class_id, a.class_name, a[["x_min", "y_min", "x_max", "y_max"]],
                                   score=a.score)


def _expected(ids, pred, fmt):
    """What parse(write(pred)) must give: per sample id, boxes by confidence (stable), fill-ins."""
    parts = []
    for iid in ids:
        p = pred[pred.image_id == iid]
        if len(p) == 0 and fmt == "vinbigdata":
            p = make_boxes(iid, 14, "No finding", [[0, 0, 1, 1]], score=1.0)
        parts.append(p.iloc[np.argsort(-p.score.to_numpy(), kind="stable")])
    return pd.concat(parts, ignore_index=True) if parts else empty_boxes()


@pytest.mark.parametrize("fmt", ["vinbigdata", "rsna"])
@pytest.mark.parametrize("decimals", [1, 0])
@HYP
@given(data=st.data())
def test_round_trip(tmp_path, fmt, decimals, data):
    ids, images, pred = data.draw(predictions(fmt))
    sample = _sample(tmp_path / "sample.csv", ids, fmt)
    out = write_submission(pred, sample, fmt, tmp_path / "sub.csv",
                           images=images if fmt == "vinbigdata" else None, decimals=decimals)
    assert validate_submission(out, sample, fmt, images=images) == []
    got = parse_submission(out, fmt)
    assert list(got.columns) == BOX_COLUMNS
    assert got.attrs["image_ids"] == ids == submission_ids(out)
    exp = _expected(ids, pred, fmt)
    assert got.image_id.tolist() == exp.image_id.tolist()
    assert got.class_id.tolist() == exp.class_id.tolist()
    assert got.class_name.tolist() == exp.class_name.tolist()
    np.testing.assert_allclose(got.score, exp.score, atol=1e-4, rtol=0)
    g = got[["x_min", "y_min", "x_max", "y_max"]].to_numpy()
    e = exp[["x_min", "y_min", "x_max", "y_max"]].to_numpy()
    step = 10.0 ** -decimals
    assert np.all(np.abs(g - e) <= step + 1e-6)
    # grid, positive size, inside the image
    assert np.allclose(g * 10 ** decimals, np.round(g * 10 ** decimals))
    assert np.all(g[:, 2] > g[:, 0]) and np.all(g[:, 3] > g[:, 1]) and np.all(g >= 0)
    hw = images.set_index("image_id").loc[got.image_id, ["height", "width"]].to_numpy()
    assert np.all(g[:, 2] <= hw[:, 1]) and np.all(g[:, 3] <= hw[:, 0])


# ----------------------------------------------------------------------------- hand-checked strings
def test_vinbigdata_strings_order_and_fill(tmp_path):
    sample = _sample(tmp_path / "s.csv", ["c", "a", "b"])
    pred = pd.concat([
        make_boxes(["a", "a", "a"], [3, 14, 0], ["Cardiomegaly", "No finding", "Aortic enlargement"],
                   [[10.04, 20.96, 30.0, 40.01], [5, 5, 9, 9], [0, 0, 100, 100]], score=[0.5, 0.7, 0.123456789]),
        make_boxes("c", 7, "Lung Opacity", [[-3.0, 1.0, 52.0, 61.2]], score=1.0),
    ])
    images = pd.DataFrame({"image_id": ["a", "b", "c"], "dim0": [200, 10, 60], "dim1": [200, 10, 50]})
    write_submission(pred, sample, "vinbigdata", tmp_path / "o.csv", images=images)
    assert (tmp_path / "o.csv").read_text().splitlines() == [
        "image_id,PredictionString",
        "c,7 1 0 1 50 60",  # clipped to width 50 / height 60 and at 0
        "a,14 0.7 0 0 1 1 3 0.5 10 20.9 30 40.1 0 0.123457 0 0 100 100",
        "b,14 1 0 0 1 1",
    ]
    write_submission(pred, sample, "vinbigdata", tmp_path / "i.csv", decimals=0)
    assert (tmp_path / "i.csv").read_text().splitlines()[1:3] == [
        "c,7 1 0 1 52 62", "a,14 0.7 0 0 1 1 3 0.5 10 20 30 41 0 0.123457 0 0 100 100"]
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_rsna_strings(tmp_path):
    sample = _sample(tmp_path / "s.csv", ["p1", "p2", "p3"], "rsna")
    pred = pd.concat([
        make_boxes(["p3", "p3"], 0, "Lung Opacity", [[100.0, 200.0, 350.55, 420.0], [1000.2, 990, 1030, 1024]],
                   score=[0.25, 0.9]),
        make_boxes("p1", 14, "No finding", [[0, 0, 1, 1]], score=0.8),  # a normal verdict: no box
    ])
    write_submission(pred, sample, "rsna", tmp_path / "o.csv")
    assert (tmp_path / "o.csv").read_text().splitlines() == [
        "patientId,PredictionString", "p1,", "p2,", "p3,0.9 1000.2 990 23.8 34 0.25 100 200 250.6 220"]
    got = parse_submission(tmp_path / "o.csv", "rsna")
    assert got.attrs["image_ids"] == ["p1", "p2", "p3"]
    assert got[["x_min", "y_min", "x_max", "y_max"]].to_numpy().tolist() == [
        [1000.2, 990, 1024, 1024], [100, 200, 350.6, 420]]


def test_write_rejects_bad_predictions(tmp_path):
    sample = _sample(tmp_path / "s.csv", ["a"])
    with pytest.raises(ValueError, match=r"not in the sample submission.*'zz'"):
        write_submission(make_boxes("zz", 0, "x", [[0, 0, 2, 2]]), sample, "vinbigdata", tmp_path / "o.csv")
    with pytest.raises(ValueError, match=r"row 0: score 1.5 outside \[0, 1\]"):
        write_submission(make_boxes("a", 0, "x", [[0, 0, 2, 2]], score=1.5), sample, "vinbigdata", tmp_path / "o.csv")
    with pytest.raises(ValueError, match="class_id 15"):
        write_submission(make_boxes("a", 15, "x", [[0, 0, 2, 2]]), sample, "vinbigdata", tmp_path / "o.csv")
    with pytest.raises(ValueError, match="class_id 3 .*rsna"):
        write_submission(make_boxes("a", 3, "x", [[0, 0, 2, 2]]), sample, "rsna", tmp_path / "o.csv")
    with pytest.raises(ValueError, match="x_max 1.0 < x_min 5.0"):
        write_submission(make_boxes("a", 0, "x", [[5, 0, 1, 2]]), sample, "vinbigdata", tmp_path / "o.csv")
    with pytest.raises(ValueError, match="unknown"):
        write_submission(empty_boxes(), sample, "coco", tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_parse_either_header_dataframe_and_errors(tmp_path):
    df = pd.DataFrame({"image_id": ["x", "y"], "PredictionString": ["0.5 1 2 3 4", ""]})
    got = parse_submission(df, "rsna")
    assert got[["x_min", "y_min", "x_max", "y_max", "score"]].to_numpy().tolist() == [[1, 2, 4, 6, 0.5]]
    assert got.attrs["image_ids"] == ["x", "y"]
    f = tmp_path / "v.csv"
    f.write_text("patientId,PredictionString\nq,14 1 0 0 1 1 8 0.25 1 2 3 4\n")
    got = parse_submission(f, "vinbigdata")
    assert got.class_name.tolist() == ["No finding", "Nodule/Mass"] and got.score.tolist() == [1, 0.25]
    f.write_text("image_id,PredictionString\nq,14 1 0 0 1 1\nr,3 0.5 1 2 3\n")
    with pytest.raises(ValueError, match="line 3: 5 tokens"):
        parse_submission(f, "vinbigdata")
    f.write_text("image_id,PredictionString\nq,3 0.5 1 two 3 4\n")
    with pytest.raises(ValueError, match="line 2: token 'two' is not a number"):
        parse_submission(f, "vinbigdata")


# ----------------------------------------------------------------------------- validator faults
META = "image_id,dim0,dim1\na,100,200\nb,100,200\nc,100,200\n"
GOOD = {"a": "3 0.5 10 20 30 40", "b": NORMAL_STRING, "c": "14 0.2 0 0 1 1 0 0.1 0 0 200 100"}


def _file(tmp_path, lines, header="image_id,PredictionString"):
    f = tmp_path / "sub.csv"
    f.write_text("\n".join([header] + lines) + "\n")
    return f


def _rows(**over):
    d = dict(GOOD, **over)
    return [f"{k},{v}" for k, v in d.items()]


FAULTS = [  # (lines, header, expected line prefix, fault text)
    (_rows(), "ImageId,PredictionString", "line 1", "header"),
    (_rows()[:1] + _rows()[2:], None, "sample line 3", "'b' missing"),
    (_rows()[:1] + _rows(), None, "line 3", "duplicate id, first on line 2"),
    (_rows()[:1] + ["z,14 1 0 0 1 1"] + _rows()[1:], None, "line 3", "unknown id"),
    ([_rows()[0], _rows()[2], _rows()[1]], None, "line 3", "out of the sample's order; expected 'b'"),
    (_rows(b="3 0.5 10 20 30"), None, "line 3", "5 tokens; expected a multiple of 6"),
    (_rows(b="3 0.5 10 x 30 40"), None, "line 3", "token 4 'x' is not a number"),
    (_rows(c="14 0.2 0 0 1 1 15 0.1 0 0 5 5"), None, "line 4", "box 2: class '15'"),
    (_rows(c="2.5 0.1 0 0 5 5"), None, "line 4", "box 1: class '2.5'"),
    (_rows(c="-1 0.1 0 0 5 5"), None, "line 4", "class '-1'"),
    (_rows(a="3 1.5 10 20 30 40"), None, "line 2", "confidence 1.5 outside [0, 1]"),
    (_rows(a="3 -0.01 10 20 30 40"), None, "line 2", "confidence -0.01 outside"),
    (_rows(a="3 0.5 30 20 30 40"), None, "line 2", "x_max 30 <= x_min 30"),
    (_rows(a="3 0.5 10 40 30 20"), None, "line 2", "y_max 20 <= y_min 40"),
    (_rows(a="3 0.5 10 20 200.5 40"), None, "line 2", "outside the image of height x width 100 x 200"),
    (_rows(a="3 0.5 10 20 30 101"), None, "line 2", "outside the image"),
    (_rows(a="3 0.5 -1 20 30 40"), None, "line 2", "negative coordinate"),
    (_rows(a="3 nan 10 20 30 40"), None, "line 2", "token 2 'nan' is not a finite number"),
    (_rows(a="3 0.5 10 20 inf 40"), None, "line 2", "token 5 'inf' is not a finite number"),
    (_rows(b="14 1 0 0 5 5"), None, "line 3", "class 14 (No finding) box 0 0 5 5; expected 0 0 1 1"),
    (_rows(b=""), None, "line 3", "empty PredictionString"),
    (_rows()[:1] + [""] + _rows()[1:], None, "line 3", "blank line"),
    (_rows(b="14 1 0 0 1 1,extra"), None, "line 3", "3 fields"),
]


@pytest.mark.parametrize("lines,header,where,fault", FAULTS, ids=[f[3][:30] for f in FAULTS])
def test_validator_fault(tmp_path, lines, header, where, fault):
    sample = _sample(tmp_path / "s.csv", ["a", "b", "c"])
    (tmp_path / "meta.csv").write_text(META)
    f = _file(tmp_path, lines, header or "image_id,PredictionString")
    problems = validate_submission(f, sample, "vinbigdata", images=tmp_path / "meta.csv")
    assert len(problems) == 1, problems
    assert problems[0].startswith(where + " ") or problems[0].startswith(where + ":"), problems
    assert fault in problems[0]


def test_validator_good_and_all_faults_reported(tmp_path):
    sample = _sample(tmp_path / "s.csv", ["a", "b", "c"])
    assert validate_submission(_file(tmp_path, _rows()), sample, "vinbigdata") == []
    f = _file(tmp_path, _rows(a="3 2 -5 20 1 40 99 0.5 1 1 1 1", b="", c="1 2 3"))
    problems = validate_submission(f, sample, "vinbigdata")
    assert [p.split(":")[0] for p in problems] == [
        "line 2 (image_id 'a'), box 1", "line 2 (image_id 'a'), box 1", "line 2 (image_id 'a'), box 2",
        "line 2 (image_id 'a'), box 2", "line 2 (image_id 'a'), box 2", "line 3 (image_id 'b')",
        "line 4 (image_id 'c')"]
    (tmp_path / "empty.csv").write_text("")
    assert validate_submission(tmp_path / "empty.csv", sample, "vinbigdata") == [
        "line 1: empty file; expected header image_id,PredictionString"]


def test_validator_rsna(tmp_path):
    sample = _sample(tmp_path / "s.csv", ["p", "q"], "rsna")
    hdr = "patientId,PredictionString"
    assert validate_submission(_file(tmp_path, ["p,", "q,0.5 1 2 3 4"], hdr), sample, "rsna") == []
    cases = [
        ("q,0.5 1 2 -3 4", "width -3 <= 0"), ("q,0.5 1 2 3 -4", "height -4 <= 0"),
        ("q,0.5 1 2 3", "4 tokens; expected a multiple of 5"), ("q,0.5 1000 2 30 4", "height x width 1024 x 1024"),
        ("q,1.01 1 2 3 4", "confidence 1.01"), ("q,0.5 1 2 3 4 0.4 1 2 3 inf", "token 10 'inf'"),
    ]
    for row, fault in cases:
        problems = validate_submission(_file(tmp_path, ["p,", row], hdr), sample, "rsna")
        assert len(problems) == 1 and problems[0].startswith("line 3 (patientId 'q')") and fault in problems[0], \
            (row, problems)
    problems = validate_submission(_file(tmp_path, ["p,", "q,"]), sample, "rsna")
    assert problems == ["line 1: header 'image_id,PredictionString'; expected 'patientId,PredictionString'"]


# ----------------------------------------------------------------------------- CLI
def test_cli_submit_and_validate(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    sample = _sample(tmp_path / "s.csv", ["a", "b", "c"])
    (tmp_path / "meta.csv").write_text(META)
    pred = make_boxes(["c", "a"], [3, 0], ["Cardiomegaly", "Aortic enlargement"],
                      [[10, 20, 300, 40], [1, 2, 3, 4]], score=[0.5, 0.25])
    pred.to_csv(tmp_path / "pred.csv", index=False)
    out = tmp_path / "sub.csv"
    rc = main(["submit", "--format", "vinbigdata", "--pred", str(tmp_path / "pred.csv"), "--sample", str(sample),
               "--meta", str(tmp_path / "meta.csv"), "--out", str(out)])
    assert rc == 0
    assert out.read_text().splitlines()[1:] == ["a,0 0.25 1 2 3 4", "b,14 1 0 0 1 1", "c,3 0.5 10 20 200 40"]
    said = caplog.text + "".join(capsys.readouterr())
    assert str(out) in said and "unvalidated" not in said          # the staging file's name is never shown
    args = ["validate-submission", "--format", "vinbigdata", "--sample", str(sample), "--meta",
            str(tmp_path / "meta.csv"), str(out)]
    capsys.readouterr()
    assert main(args) == 0 and "valid vinbigdata submission (3 images)" in capsys.readouterr().out
    out.write_text("image_id,PredictionString\n" + "".join(f"z{i},3 2 1 1 0 0\n" for i in range(10)))
    assert main(args) == 1
    printed = capsys.readouterr().out.splitlines()
    # per line: unknown id + confidence 2 + x_max <= x_min + y_max <= y_min; + 3 missing ids = 43
    assert len(printed) == 20 + 2
    assert printed[0].endswith("line 2 (image_id 'z0'): unknown id, not in the sample submission")
    assert printed[-2].endswith("... and 23 more problem(s)") and printed[-1].endswith("INVALID, 43 problem(s)")


def test_cli_submit_fails_loudly(tmp_path, capsys):
    # a sample listing an id twice makes the writer's own output invalid: submit must refuse it
    sample = _sample(tmp_path / "s.csv", ["a", "b", "a"])
    empty_boxes().to_csv(tmp_path / "pred.csv", index=False)
    out = tmp_path / "sub.csv"
    rc = main(["submit", "--format", "vinbigdata", "--pred", str(tmp_path / "pred.csv"), "--sample", str(sample),
               "--out", str(out)])
    assert rc == 2
    assert "line 4 (image_id 'a'): duplicate id, first on line 2" in capsys.readouterr().err
    assert not out.exists() and (tmp_path / "sub.csv.invalid").exists()
    make_boxes("q", 0, "x", [[0, 0, 2, 2]]).to_csv(tmp_path / "pred.csv", index=False)
    rc = main(["submit", "--format", "rsna", "--pred", str(tmp_path / "pred.csv"), "--sample", str(sample),
               "--out", str(out)])
    assert rc == 2 and "not in the sample submission" in capsys.readouterr().err


def test_submit_decimals_and_one_announcement(tmp_path, caplog):
    from detection.competition.submission import submit

    caplog.set_level("INFO")
    sample = _sample(tmp_path / "s.csv", ["a"])
    pred = make_boxes("a", 3, "Cardiomegaly", [[10.123, 20.987, 30.5, 40.25]], score=0.5)
    out = submit(pred, sample, "vinbigdata", tmp_path / "one.csv")                  # default: 1 decimal
    assert out.read_text().splitlines()[1] == "a,3 0.5 10.1 20.9 30.5 40.3"
    assert [r.getMessage() for r in caplog.records if "wrote" in r.getMessage()] == [f"wrote {out}: 1 images, 1 boxes"]
    two = submit(pred, sample, "vinbigdata", tmp_path / "two.csv", decimals=2)
    assert two.read_text().splitlines()[1] == "a,3 0.5 10.12 20.98 30.5 40.25"


# ----------------------------------------------------------------------------- edges (issue 20 survivors)
@pytest.mark.parametrize("decimals, a_string, b_string", [
    (2, "7 0.75 0 0 3.34 0.01 3 0.5 10.12 20 30 40.01 5 0.25 199.99 50 200 60", "0 1 0 5 5000.04 60"),
    (0, "7 0.75 0 0 4 1 3 0.5 10 20 30 41 5 0.25 199 50 200 60", "0 1 0 5 5001 60"),
])
def test_vinbigdata_snapping_by_hand(tmp_path, caplog, decimals, a_string, b_string):
    """Mins floored, maxes ceiled to 10**-decimals (on-grid values unchanged), negative coordinates
    clipped at 0, a box past the image edge clipped to zero size then widened to one grid step
    inside the image; an image of unknown size clipped at 0 only; an image without rows -> 14 1 0 0 1 1."""
    caplog.set_level("INFO")
    sample = _sample(tmp_path / "s.csv", ["a", "b", "c", "d"])
    images = pd.DataFrame({"image_id": ["a", "c", "d"], "height": [100, 50, 50], "width": [200, 50, 50]})
    pred = make_boxes(["a", "a", "a", "b", "c"], [3, 5, 7, 0, 14], "x",
                      [[10.127, 20, 30, 40.001], [250, 50, 260, 60], [-5.5, -0.004, 3.333, 0.001],
                       [-3, 5, 5000.04, 60], [5, 5, 9, 9]], score=[0.5, 0.25, 0.75, 1.0, 0.3])
    out = write_submission(pred, sample, "vinbigdata", tmp_path / "o.csv", images=images, decimals=decimals)
    assert out.read_text().splitlines() == ["image_id,PredictionString", f"a,{a_string}", f"b,{b_string}",
                                            "c,14 0.3 0 0 1 1", "d,14 1 0 0 1 1"]
    said = [r.getMessage() for r in caplog.records]
    assert "1 predicted box(es) on images of unknown size: clipped at 0 only" in said
    assert f"wrote {out}: 4 images, 5 boxes, 1 without prediction" in said   # announced by default


def test_rsna_clips_to_the_given_image_sizes_and_says_normal_rows_write_nothing(tmp_path, caplog):
    from detection.competition.submission import submit

    caplog.set_level("INFO")
    sample = _sample(tmp_path / "s.csv", ["p", "q"], "rsna")
    images = pd.DataFrame({"patientId": ["p", "q"], "height": [2048, 2048], "width": [1536, 1536]})
    pred = make_boxes(["p", "q"], [0, 14], ["Lung Opacity", "No finding"],
                      [[1000.5, 1500, 1600, 2000], [0, 0, 1, 1]], score=[0.8, 0.9])
    lines = ["patientId,PredictionString", "p,0.8 1000.5 1500 535.5 500", "q,"]
    out = write_submission(pred, sample, "rsna", tmp_path / "o.csv", images=images)
    assert out.read_text().splitlines() == lines          # clipped to width 1536, not 1024
    assert "rsna submission: 1 'normal' row(s) (class [14]) write no box" in [r.getMessage() for r in caplog.records]
    assert submit(pred, sample, "rsna", tmp_path / "v.csv", images=images).read_text().splitlines() == lines
    assert validate_submission(tmp_path / "v.csv", sample, "rsna") != []  # past 1024 without the sizes


def test_write_and_parse_messages_name_the_table_class_and_allowed_range(tmp_path):
    sample = _sample(tmp_path / "s.csv", ["a"])
    with pytest.raises(ValueError, match=r"^prediction box table row 0: x_max 1.0 < x_min 5.0"):
        write_submission(make_boxes("a", 0, "x", [[5, 0, 1, 2]]), sample, "vinbigdata", tmp_path / "o.csv")
    with pytest.raises(ValueError, match=r"class_id 15 \(image_id 'a'\) not allowed in a vinbigdata submission; "
                                         r"expected 0\.\.14$"):
        write_submission(make_boxes("a", 15, "x", [[0, 0, 2, 2]]), sample, "vinbigdata", tmp_path / "o.csv")
    with pytest.raises(ValueError, match=r"class_id 3 \(image_id 'a'\) not allowed in a rsna submission; "
                                         r"expected 0 \(Lung Opacity\) or 14 \(normal\)$"):
        write_submission(make_boxes("a", 3, "x", [[0, 0, 2, 2]]), sample, "rsna", tmp_path / "o.csv")
    # no predictions at all, even a table without columns: every image gets the normal row
    out = write_submission(pd.DataFrame(), sample, "vinbigdata", tmp_path / "e.csv")
    assert out.read_text().splitlines() == ["image_id,PredictionString", "a,14 1 0 0 1 1"]
    for cls in ("15", "-1", "2.5"):
        f = tmp_path / "p.csv"
        f.write_text(f"image_id,PredictionString\nq,14 1 0 0 1 1 {cls} 0.5 1 2 3 4\n")
        with pytest.raises(ValueError, match=rf"image 'q' has class {cls}; expected an integer in 0\.\.14$"):
            parse_submission(f, "vinbigdata")


def test_validator_edges(tmp_path):
    sample = _sample(tmp_path / "s.csv", ["a", "b", "c"])
    (tmp_path / "meta.csv").write_text("image_id,dim0,dim1\na,100,200\nb,1,1\nc,100,200\n")
    meta = tmp_path / "meta.csv"

    def check(**over):
        return validate_submission(_file(tmp_path, _rows(**over)), sample, "vinbigdata", images=meta)

    # within the 1e-6 tolerance, exactly at its edge: valid
    assert check(a="3 0.5 -0.000001 -0.000001 200.000001 100.000001") == []
    # every bad token is reported, not only the first
    assert [p.split(": ")[1] for p in check(a="3 0.5 x 20 y 40")] == ["token 3 'x' is not a number",
                                                                       "token 5 'y' is not a number"]
    assert [p.split(": ")[1][:8] for p in check(a="3 nan 10 20 inf 40")] == ["token 2 ", "token 5 "]
    # a class-14 box that is not 0 0 1 1 is one fault (then read as 0 0 1 1, inside a 1 x 1 image)
    assert len(check(b="14 1 0 0 5 5")) == 1
    # a line holding only "" is a blank line
    f = tmp_path / "q.csv"
    f.write_text("image_id,PredictionString\n" + "\n".join(_rows()[:1] + ['""'] + _rows()[1:]) + "\n")
    assert validate_submission(f, sample, "vinbigdata", images=meta) == ["line 3: blank line"]
    # rsna: zero width / height, a box ending below the image
    sample = _sample(tmp_path / "r.csv", ["q"], "rsna")
    for row, fault in [("q,0.5 1 2 0 4", "width 0 <= 0"), ("q,0.5 1 2 3 0", "height 0 <= 0"),
                       ("q,0.5 1 1000 3 30", "(xyxy) ends outside the image of height x width 1024 x 1024")]:
        problems = validate_submission(_file(tmp_path, [row], "patientId,PredictionString"), sample, "rsna")
        assert len(problems) == 1 and fault in problems[0], (row, problems)


def test_fixed_and_snap_outward_by_hand():
    from detection.competition.submission_numbers import STR, fixed, snap_outward

    assert fixed(np.array([-1.5, -0.04, -3, 12.30, 5.0, 0.06]), 1).tolist() == ["-1.5", "0", "-3", "12.3", "5", "0.1"]
    assert fixed(np.array([-2.4, 2.6]), 0).tolist() == ["-2", "3"]
    assert fixed(np.array([0.0012, -0.25]), 3).tolist() == ["0.001", "-0.25"]
    empty = fixed(np.array([]), 3)
    assert empty.shape == (0,) and empty.dtype == STR
    # float32 values are written by their exact value: float32(2.675) = 2.67499995... -> 2.67
    assert fixed(np.array([2.675], "float32"), 2).tolist() == ["2.67"]
    # height or width unknown (NaN) on its own: only the known side clips
    box = np.array([[10.05, 20.05, 300.01, 70.01]] * 3)
    got = snap_outward(box, np.array([[50.0, np.nan], [np.nan, 40.0], [np.nan, np.nan]]), 1)
    np.testing.assert_array_equal(got, [[10, 20, 300.1, 50], [10, 20, 40, 70.1], [10, 20, 300.1, 70.1]])
    np.testing.assert_array_equal(snap_outward(box[:1], None, 1), [[10, 20, 300.1, 70.1]])


def test_no_branch_names_a_dataset():
    """Issue 28: the submission format is part of each dataset's description; the writer, parser
    and checker branch on that description (with_class, xywh, normal_row), never on a dataset name."""
    import ast

    from data_prep.datasets import DATASETS
    from detection.competition import submission

    tree = ast.parse(Path(submission.__file__).read_text())
    named = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Compare)
             for c in [n.left, *n.comparators] if isinstance(c, ast.Constant) and c.value in DATASETS]
    assert named == []
