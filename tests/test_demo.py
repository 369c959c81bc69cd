"""`cxrdet demo` wiring on a small embedded set, with the shipped weights (what `make demo` runs)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from detection.demo import FLAVOURS, WEIGHTS


def _shipped(dataset: str) -> bool:
    _, dets, cls, *_ = FLAVOURS[dataset]
    return all((WEIGHTS / w).is_file() for w in (*dets, cls) if w)


@pytest.mark.parametrize("dataset", ["vinbigdata", "rsna"])
@pytest.mark.slow   # the whole demo: synth, prep, train, predict, tune, report
def test_demo_end_to_end_small(tmp_path, dataset):
    if not _shipped(dataset):
        pytest.fail(f"shipped weights for {dataset} are missing from weights/ (see weights/README.md)")
    from detection.demo import demo
    from detection.competition.submission import validate_submission

    res = demo(dataset, tmp_path / "demo", finetune_epochs=1, n=16)
    out = tmp_path / "demo" / dataset                                # one folder per dataset
    assert res["out"] == str(out.resolve()) and sorted(p.name for p in (tmp_path / "demo").iterdir()) == [dataset]
    # the closing summary names every file and folder the demo wrote
    listed = {n.rstrip("/") for n in res["files"]}
    assert {p.name for p in out.iterdir()} == listed, {p.name for p in out.iterdir()} ^ listed
    assert ("rater_baseline.json" in listed) == (dataset == "vinbigdata")
    assert {"tuned.yaml", "tuned.json", "explore", "test_meta.csv"} <= listed
    # test_meta.csv: the test split's sizes from the DICOM headers; with it the validator checks bounds
    tm = pd.read_csv(out / "test_meta.csv", dtype={"image_id": str})
    # every output the demo announces exists
    for key in ("submission", "report", "finetuned", "explorer"):
        assert Path(res[key]).is_file(), key
    data = out / "data"
    sample = data / ("sample_submission.csv" if dataset == "vinbigdata" else "stage_2_sample_submission.csv")
    assert validate_submission(res["submission"], sample, dataset) == []
    assert validate_submission(res["submission"], sample, dataset, images=out / "test_meta.csv") == []
    assert set(tm["image_id"]) == set(pd.read_csv(sample).iloc[:, 0].astype(str))
    import pydicom
    one = next(p for p in (data / ("test" if dataset == "vinbigdata" else "stage_2_test_images")).iterdir())
    hdr = pydicom.dcmread(one, stop_before_pixels=True)
    assert tm.set_index("image_id").loc[one.stem, ["height", "width"]].tolist() == [hdr.Rows, hdr.Columns]
    if dataset == "vinbigdata":
        assert max(hdr.Rows, hdr.Columns) == 512                      # phantoms at the size the demo needs
    bad = pd.read_csv(res["submission"], dtype=str)
    bad.iloc[0, 1] = "0 0.5 10 10 99999 20" if dataset == "vinbigdata" else "0.5 10 10 99999 20"
    bad.to_csv(tmp_path / "bad.csv", index=False)                     # a box far outside its image:
    if dataset == "vinbigdata":                                       # sizes vary: unchecked without them
        assert validate_submission(tmp_path / "bad.csv", sample, dataset) == []
    assert validate_submission(tmp_path / "bad.csv", sample, dataset, images=out / "test_meta.csv")
    sub = pd.read_csv(res["submission"])
    assert len(sub) == len(pd.read_csv(sample))
    for name in ("metrics_fold0.json", "metrics_test.json"):
        m = json.loads((out / name).read_text())
        assert m["metric"] == dataset and 0.0 <= m["mAP"] <= 1.0 and m["n_images"] > 0
    tuned = json.loads((out / "tuned.json").read_text())  # tune ran on fold 0: before / after / nested
    assert list(tuned) == ["metric", "before", "after", "params", "trials", "nested"] and tuned["trials"] == 30
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "href='explore/index.html'" in html                       # the report links to the explorer
    ex = json.loads((out / "explore" / "data.json").read_text())
    folds = pd.read_csv(out / "prep" / "folds.csv", dtype={"image_id": str})
    assert {i["id"] for i in ex["images"]} == set(folds.loc[folds["fold"] == 0, "image_id"])
    kinds = {layer["kind"] for layer in ex["layers"]}
    assert kinds == ({"truth", "pred", "rater"} if dataset == "vinbigdata" else {"truth", "pred"})
    assert set(json.loads((out / "demo.json").read_text())["timings"]) == set(res["timings"])
    if dataset == "vinbigdata":  # the shipped multi-label classifier scored on the test split
        mc = json.loads((out / "metrics_cls_test.json").read_text())
        assert set(mc["per_label"]) == set(pd.read_csv(out / "probs_test.csv").columns[1:])
        assert mc["n_images"] == len(sub)
    pics = list((out / "pictures").glob("*.png"))
    assert pics and all(p.stat().st_size > 10_000 for p in pics)
    if "gallery" in res:
        assert Path(res["gallery"]).is_file()
