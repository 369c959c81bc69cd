"""data_prep.dicom.convert: discovery, PNGs + meta.csv + errors.csv, resume after a kill, overwrite, CLI."""
from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep.dicom.convert import PARTIAL, convert_folder, dicom_paths
from detection.cli import main

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")



@pytest.fixture()
def good_src(tfile, tmp_path):
    """Three good DICOMs: .dcm, .dicom in a subfolder, and one with no extension."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    shutil.copy(tfile("CT_small.dcm"), src / "ct.dcm")
    shutil.copy(tfile("MR_small_RLE.dcm"), src / "sub" / "mr.dicom")
    shutil.copy(tfile("dicomdirtests/77654033/CR1/6154"), src / "sub" / "cr")
    (src / "README").write_text("not an image\n" * 20)         # no extension, no DICM: ignored
    (src / "notes.txt").write_text("ignored")
    return src


@pytest.fixture()
def mixed_src(make_ds, ramp, save, tfile, good_src):
    """good_src + one of each bad kind."""
    bad = good_src / "bad"
    bad.mkdir()
    (bad / "zero.dcm").write_bytes(b"")
    (bad / "text.dicom").write_text("hello\n" * 50)
    data = open(tfile("CT_small.dcm"), "rb").read()
    (bad / "truncated.dcm").write_bytes(data[: len(data) // 2])
    nopix = make_ds(ramp(4, 4))
    del nopix.PixelData
    save(nopix, bad / "nopix.dcm")
    shutil.copy(tfile("JPEG-lossy.dcm"), bad / "lossy12.dcm")
    return good_src


def test_dicom_paths(good_src):
    names = [p.relative_to(good_src).as_posix() for p in dicom_paths(good_src)]
    assert names == ["ct.dcm", "sub/cr", "sub/mr.dicom"]


def test_convert_writes_pngs_and_meta(good_src, tmp_path):
    dst = tmp_path / "out"
    res = convert_folder(good_src, dst, size=256, workers=1, progress=False)
    assert (res.n_converted, res.n_skipped, res.errors) == (3, 0, [])
    assert sorted(p.name for p in dst.iterdir()) == ["cr.png", "ct.png", "meta.csv", "mr.png"]
    meta = pd.read_csv(dst / "meta.csv", dtype={"image_id": str})
    assert list(meta.columns[:5]) == ["image_id", "height", "width", "png_height", "png_width"]
    assert meta["image_id"].tolist() == ["cr", "ct", "mr"]
    assert meta[["height", "width"]].values.tolist() == [[16, 16], [128, 128], [64, 64]]
    assert (meta[["png_height", "png_width"]] == 256).all().all()
    row = meta.set_index("image_id").loc["ct"]
    assert row["Modality"] == "CT" and row["BitsStored"] == 16 and row["PixelSpacing"] == "0.661468|0.661468"
    assert meta.set_index("image_id").loc["cr", "PhotometricInterpretation"] == "MONOCHROME1"
    png = cv2.imread(str(dst / "ct.png"), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint8 and png.shape == (256, 256) and png.min() == 0 and png.max() == 255
    assert not list(dst.glob("*.tmp")) and not (dst / PARTIAL).exists() and not (dst / "errors.csv").exists()


def test_bad_files_do_not_stop_the_batch(mixed_src, tmp_path):
    dst = tmp_path / "out"
    res = convert_folder(mixed_src, dst, size=64, workers=2, progress=False)
    assert res.n_converted == 3 and len(res.errors) == 5
    errors = pd.read_csv(dst / "errors.csv")
    assert list(errors.columns) == ["path", "error"]
    by_name = {os.path.basename(p): e for p, e in zip(errors["path"], errors["error"])}
    assert sorted(by_name) == ["lossy12.dcm", "nopix.dcm", "text.dicom", "truncated.dcm", "zero.dcm"]
    assert "empty file" in by_name["zero.dcm"]
    assert "not a DICOM file" in by_name["text.dicom"]
    assert "no pixel data" in by_name["nopix.dcm"]
    assert "less than expected" in by_name["truncated.dcm"]
    assert "1.2.840.10008.1.2.4.51" in by_name["lossy12.dcm"]
    assert len(pd.read_csv(dst / "meta.csv")) == 3


def test_resume_after_a_kill(good_src, tmp_path):
    """Simulate a run killed after ct and cr were done, while mr was being written: no meta.csv
    yet, the journal has two rows and a line cut short, mr.png is missing, a temp file lies
    around. The rerun converts only mr, leaves ct/cr untouched and ends with a full meta.csv."""
    dst = tmp_path / "out"
    convert_folder(good_src, dst, size=128, workers=1, progress=False)
    meta = pd.read_csv(dst / "meta.csv", dtype={"image_id": str})
    (dst / "meta.csv").unlink()
    (dst / "mr.png").unlink()
    rows = [{k: v for k, v in r.items() if pd.notna(v)} for r in meta.to_dict("records") if r["image_id"] != "mr"]
    with open(dst / PARTIAL, "w") as f:
        for r in rows:
            f.write(json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}) + "\n")
        f.write('{"image_id": "mr", "hei')
    (dst / "mr.png.999.tmp").write_bytes(b"\x89PNG half")
    old = {n: 1_000_000_000 for n in ("ct.png", "cr.png")}
    for n, t in old.items():
        os.utime(dst / n, (t, t))

    res = convert_folder(good_src, dst, size=128, workers=1, progress=False)
    assert (res.n_converted, res.n_skipped, res.errors) == (1, 2, [])
    for n, t in old.items():
        assert (dst / n).stat().st_mtime == t
    assert (dst / "mr.png").is_file() and not list(dst.glob("*.tmp")) and not (dst / PARTIAL).exists()
    again = pd.read_csv(dst / "meta.csv", dtype={"image_id": str})
    pd.testing.assert_frame_equal(again, meta)

    res = convert_folder(good_src, dst, size=128, workers=1, progress=False)     # all done now
    assert (res.n_converted, res.n_skipped) == (0, 3)


def test_png_without_meta_row_is_converted_again(good_src, tmp_path):
    """Killed between the PNG rename and its journal line: the PNG is not trusted."""
    dst = tmp_path / "out"
    convert_folder(good_src, dst, size=64, workers=1, progress=False)
    meta = pd.read_csv(dst / "meta.csv", dtype={"image_id": str})
    meta[meta.image_id != "ct"].to_csv(dst / "meta.csv", index=False)
    res = convert_folder(good_src, dst, size=64, workers=1, progress=False)
    assert (res.n_converted, res.n_skipped) == (1, 2)
    assert len(pd.read_csv(dst / "meta.csv")) == 3


def test_overwrite_and_size_change(good_src, tmp_path):
    dst = tmp_path / "out"
    convert_folder(good_src, dst, size=64, workers=1, progress=False)
    os.utime(dst / "ct.png", (1_000_000_000, 1_000_000_000))
    res = convert_folder(good_src, dst, size=64, workers=1, overwrite=True, progress=False)
    assert (res.n_converted, res.n_skipped) == (3, 0)
    assert (dst / "ct.png").stat().st_mtime > 1_000_000_000
    res = convert_folder(good_src, dst, size=32, workers=1, progress=False)      # new size: redone
    assert (res.n_converted, res.n_skipped) == (3, 0)
    assert cv2.imread(str(dst / "ct.png"), cv2.IMREAD_UNCHANGED).shape == (32, 32)


def test_keep_ratio(make_ds, ramp, save, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    save(make_ds(ramp(600, 400)), src / "tall.dcm")
    save(make_ds(ramp(300, 900)), src / "wide.dcm")
    dst = tmp_path / "out"
    res = convert_folder(src, dst, size=512, keep_ratio=True, workers=1, progress=False)
    assert res.n_converted == 2
    assert cv2.imread(str(dst / "tall.png"), cv2.IMREAD_UNCHANGED).shape == (512, 341)
    assert cv2.imread(str(dst / "wide.png"), cv2.IMREAD_UNCHANGED).shape == (171, 512)
    meta = pd.read_csv(dst / "meta.csv").set_index("image_id")
    assert meta.loc["tall", ["height", "width", "png_height", "png_width"]].tolist() == [600, 400, 512, 341]


def test_duplicate_image_ids_are_errors(tfile, tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    shutil.copy(tfile("CT_small.dcm"), src / "a" / "x.dcm")
    shutil.copy(tfile("MR_small.dcm"), src / "b" / "x.dcm")
    res = convert_folder(src, tmp_path / "out", size=32, workers=1, progress=False)
    assert res.n_converted == 1 and len(res.errors) == 1 and "duplicate image_id 'x'" in res.errors[0][1]


def test_cli_exit_status_and_summary(mixed_src, good_src, tmp_path, capsys):
    dst = tmp_path / "out"
    assert main(["convert", str(mixed_src), str(dst), "--size", "48", "--workers", "2"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("cxrdet convert: converted 3, skipped 0") and "errors 5" in out[-1]
    assert len(pd.read_csv(dst / "errors.csv")) == 5
    assert cv2.imread(str(dst / "ct.png"), cv2.IMREAD_UNCHANGED).shape == (48, 48)

    clean = tmp_path / "clean"
    shutil.copytree(good_src, clean, ignore=shutil.ignore_patterns("bad"))
    dst2 = tmp_path / "out2"
    # key=value beats the flag (defaults < config < flags < key=value): size 48, not 100
    assert main(["convert", str(clean), str(dst2), "--size", "100", "--keep-ratio", "size=48"]) == 0
    assert not (dst2 / "errors.csv").exists()
    assert main(["convert", str(clean), str(dst2), "--size", "48", "--keep-ratio"]) == 0
    assert "converted 0, skipped 3" in capsys.readouterr().out

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["convert", str(empty), str(tmp_path / "o3")]) == 2
    assert main(["convert", str(tmp_path / "nowhere"), str(tmp_path / "o4")]) == 2


def test_keep_ratio_run_after_square_run_redoes_the_pngs(make_ds, ramp, save, tmp_path):
    """Resume must compare the PNG with what THIS run asks for: square then keep-ratio into one
    folder re-converts, and keep-ratio then square does too."""
    src = tmp_path / "src"
    src.mkdir()
    save(make_ds(ramp(600, 400)), src / "tall.dcm")
    dst = tmp_path / "out"
    convert_folder(src, dst, size=64, workers=1, progress=False)
    assert cv2.imread(str(dst / "tall.png"), cv2.IMREAD_UNCHANGED).shape == (64, 64)
    res = convert_folder(src, dst, size=64, keep_ratio=True, workers=1, progress=False)
    assert (res.n_converted, res.n_skipped) == (1, 0)
    assert cv2.imread(str(dst / "tall.png"), cv2.IMREAD_UNCHANGED).shape == (64, 43)
    assert pd.read_csv(dst / "meta.csv").loc[0, ["png_height", "png_width"]].tolist() == [64, 43]
    res = convert_folder(src, dst, size=64, keep_ratio=True, workers=1, progress=False)   # same: reused
    assert (res.n_converted, res.n_skipped) == (0, 1)
    res = convert_folder(src, dst, size=64, workers=1, progress=False)                    # back to square
    assert (res.n_converted, res.n_skipped) == (1, 0)
    assert cv2.imread(str(dst / "tall.png"), cv2.IMREAD_UNCHANGED).shape == (64, 64)
