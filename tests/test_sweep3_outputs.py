"""Issue 30 (third sweep), item 2: no stage writes over any of its inputs, or two outputs to one path.

The cases are generated from the stages' own argparse parsers (detection.cli.COMMANDS): for every
stage, every output flag (detection.cli.OUTPUTS) is set to the path of every other path argument
(its inputs, config files included) and to every other output; the CLI refuses each with exit 2
and one line naming both flags, before any work. A flag added later is covered without editing
this file (it is an input unless declared an output). The sweep's own cases are listed too.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest

from detection.cli import COMMANDS, NOT_PATHS, NOT_PATHS_OF, OUTPUTS, main, path_roles


def _parser(cmd: str) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[cmd][0])
    p = argparse.ArgumentParser(prog=f"cxrdet {cmd}")
    getattr(module, f"add_arguments_{cmd.replace('-', '_')}")(p)
    return p


def _path_actions(cmd: str, p: argparse.ArgumentParser) -> list[argparse.Action]:
    skip = NOT_PATHS | NOT_PATHS_OF.get(cmd, set())
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction) and a.nargs != 0
            and a.type in (None, str) and not a.choices and not a.dest.startswith("_")
            and (a.dest not in skip or a.dest in OUTPUTS.get(cmd, ()))]


def _flag(a: argparse.Action) -> str:
    return a.option_strings[0] if a.option_strings else a.dest


def _argv(cmd: str, p: argparse.ArgumentParser, root: Path, same: dict[str, str]) -> list[str]:
    """A command line with every required argument (distinct dummy paths) plus ``same`` ({dest: path})."""
    pos, opt = [], []
    for a in p._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        v = same.get(a.dest)
        if v is None and not a.required:
            continue
        v = v or (str(sorted(a.choices)[0]) if a.choices else str(root / f"x_{a.dest}.csv"))
        if a.option_strings:
            opt += [a.option_strings[0], v]
        else:
            pos.append(v)
    return [cmd, *pos, *opt]


def _cases():
    out = []
    for cmd in COMMANDS:
        p = _parser(cmd)
        acts = _path_actions(cmd, p)
        outs = [a for a in acts if a.dest in OUTPUTS.get(cmd, ())]
        for o in outs:
            for i in acts:
                if i is not o:
                    out.append((cmd, o.dest, i.dest))
    return out


CASES = _cases()


def test_every_declared_output_is_a_flag_of_its_stage():
    for cmd, dests in OUTPUTS.items():
        have = {a.dest for a in _parser(cmd)._actions}
        assert set(dests) <= have, (cmd, set(dests) - have)
    assert len(CASES) >= 120   # every output flag against every path flag of its stage


@pytest.mark.parametrize("cmd,out,inp", CASES, ids=[f"{c}:{o}={i}" for c, o, i in CASES])
def test_an_output_on_another_path_argument_is_refused(cmd, out, inp, tmp_path, capsys):
    p = _parser(cmd)
    same = tmp_path / "same.csv"
    same.write_text("image_id\n")
    argv = _argv(cmd, p, tmp_path, {out: str(same), inp: str(same)})
    before = same.read_bytes()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1]
    fo = next(_flag(a) for a in p._actions if a.dest == out)
    fi = next(_flag(a) for a in p._actions if a.dest == inp)
    assert fo in line and fi in line and "internal error" not in err, line
    assert same.read_bytes() == before


@pytest.mark.parametrize("cmd", sorted(OUTPUTS))
def test_distinct_paths_pass_the_guard(cmd, tmp_path):
    p = _parser(cmd)
    argv = _argv(cmd, p, tmp_path, {a.dest: str(tmp_path / f"p_{a.dest}") for a in _path_actions(cmd, p)})
    args, _ = p.parse_known_args(argv[1:])
    outs, ins = path_roles(cmd, p, args)
    assert outs and all(o not in dict(ins).values() for _, o in outs)
    from data_prep.core.atomic import check_outputs

    check_outputs(outs, ins)   # nothing raised


# ----------------------------------------------------------------------------- the sweep's own cases
def _run(argv, capsys) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    return err.splitlines()[-1]


@pytest.mark.parametrize("case", ["labels=labels", "labels=meta", "postprocess=meta", "postprocess=config",
                                  "tune=folds", "tune=meta", "evaluate-cls=probs", "evaluate-cls=labels",
                                  "evaluate=pred", "evaluate=folds", "predict=cls-probs-out"])
def test_sweep_cases(case, tmp_path, capsys):
    cmd, inp = case.split("=")
    f = tmp_path / "f.csv"
    f.write_text("image_id\n")
    x = lambda n: str(tmp_path / f"{n}.csv")  # noqa: E731
    runs = {
        "labels": ["labels", "vinbigdata", "--labels", x("l"), "--meta", x("m"), "--out", x("o")],
        "postprocess": ["postprocess", "--pred", x("p"), "--meta", x("m"), "--config", x("c"), "--out", x("o")],
        "tune": ["tune", "--truth", x("t"), "--pred", x("p"), "--folds", x("f"), "--meta", x("m"), "--out", x("o")],
        "evaluate-cls": ["evaluate-cls", "--labels", x("l"), "--probs", x("p"), "--json", x("o")],
        "evaluate": ["evaluate", "--truth", x("t"), "--pred", x("p"), "--folds", x("f"), "--json", x("o")],
        "predict": ["predict", "--weights", x("w"), "--source", x("s"), "--out", x("o"), "--cls-probs-out", x("q")],
    }
    argv = runs[cmd]
    flag = f"--{inp}"
    out_flag = "--json" if cmd.startswith("evaluate") else "--out"
    argv[argv.index(flag) + 1] = str(f)
    argv[argv.index(out_flag) + 1] = str(f)
    line = _run(argv, capsys)
    assert flag in line and out_flag in line
    assert f.read_text() == "image_id\n"


def test_tune_out_json_would_write_the_yaml_then_the_json_over_it(tmp_path, capsys):
    argv = ["tune", "--truth", str(tmp_path / "t.csv"), "--pred", str(tmp_path / "p.csv"),
            "--folds", str(tmp_path / "f.csv"), "--out", str(tmp_path / "tuned.json")]
    line = _run(argv, capsys)
    assert "--out and --out (its JSON)" in line and "one path" in line


def test_classify_out_inside_source_over_a_png(tmp_path, capsys):
    import cv2
    import numpy as np

    src = tmp_path / "src"
    src.mkdir()
    png = src / "im0.png"
    cv2.imwrite(str(png), np.full((8, 8), 7, np.uint8))
    before = png.read_bytes()
    line = _run(["classify", "--weights", str(tmp_path / "w.pt"), "--source", str(src), "--out", str(png)], capsys)
    assert "--source" in line and "inside the input folder" in line
    assert png.read_bytes() == before
    # a CSV in the source folder is not something classify reads there: allowed by the guard
    from data_prep.core.atomic import check_outputs

    check_outputs([("--out", str(src / "probs.csv"))], [("--source", str(src))])


def test_a_hard_link_to_an_input_is_the_input(tmp_path, capsys):
    import os

    f = tmp_path / "m.csv"
    f.write_text("image_id\n")
    os.link(f, tmp_path / "alias.csv")
    line = _run(["labels", "vinbigdata", "--labels", str(tmp_path / "l.csv"), "--meta", str(f),
                 "--out", str(tmp_path / "alias.csv")], capsys)
    assert "--meta" in line


def test_a_config_named_by_its_bare_name_is_an_input(tmp_path, capsys, monkeypatch):
    from data_prep.core.config import CONFIG_DIR

    out = CONFIG_DIR / "phantom.yaml"
    before = out.read_bytes()
    line = _run(["report", "--labels", str(tmp_path / "l.csv"), "--config", "phantom", "--out", str(out)], capsys)
    assert "--config" in line and out.read_bytes() == before
