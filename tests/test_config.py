"""data_prep.config: the one merge (priority order, types, flag aliases, unknown keys) and its use by every stage."""
from __future__ import annotations

import argparse
import importlib
import logging

import pytest
import yaml

from data_prep import config as C
from detection.cli import COMMANDS


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """A configs folder of our own: default.yaml + dataset configs a.yaml, b.yaml + a user file."""
    d = tmp_path / "configs"
    d.mkdir()
    (d / "default.yaml").write_text("dataset: a      # (str) the dataset\nx: 1    # (int) x\ny: 1.0   # (float) y\n"
                                    "z: s   # (str) z\nflag: false   # (bool) f\nanything: null  # (any) n\n")
    (d / "a.yaml").write_text("dataset: a\nx: 2\ny: 2.5\n")
    (d / "b.yaml").write_text("dataset: b\nz: from-b\n")
    (tmp_path / "mine.yaml").write_text("x: 3\n")
    monkeypatch.setattr(C, "CONFIG_DIR", d)
    monkeypatch.setattr(C, "DEFAULT", d / "default.yaml")
    return tmp_path


def test_priority_defaults_dataset_config_file_flags_key_value(configs):
    cfg = C.load_config()
    assert (cfg["x"], cfg["y"], cfg["z"]) == (2, 2.5, "s")           # a.yaml (the default dataset's) over defaults
    assert cfg["_sources"] == {"dataset": "dataset config", "x": "dataset config", "y": "dataset config"}
    mine = str(configs / "mine.yaml")
    assert C.load_config(mine)["x"] == 3                              # --config over the dataset config
    assert C.load_config(mine, flags={"x": 4})["x"] == 4              # flags over --config
    cfg = C.load_config(mine, ["x=5"], flags={"x": 4})
    assert cfg["x"] == 5 and cfg["_sources"]["x"] == "key=value"     # key=value over flags
    assert cfg["y"] == 2.5 and cfg["_config"] == mine


def test_dataset_config_follows_the_dataset_the_upper_layers_name(configs):
    cfg = C.load_config(overrides=["dataset=b"])
    assert (cfg["dataset"], cfg["z"], cfg["x"]) == ("b", "from-b", 1)  # b.yaml, not a.yaml
    assert C.load_config(flags={"dataset": "b"})["z"] == "from-b"
    cfg = C.load_config("b")                                          # the dataset config itself: one layer
    assert cfg["_sources"]["z"] == str(configs / "configs" / "b.yaml")
    assert C.load_config(overrides=["dataset=zzz"])["dataset"] == "zzz"  # no zzz.yaml: no dataset layer


def test_types(configs):
    cfg = C.load_config(overrides=["y=3", "z=7", "anything=[1, 2]", "flag=true"])
    assert cfg["y"] == 3.0 and isinstance(cfg["y"], float)           # an int where a float is expected
    assert cfg["z"] == "7"                                            # a number where a string is expected
    assert cfg["anything"] == [1, 2] and cfg["flag"] is True
    assert C.load_config(overrides=["y=1e-3"])["y"] == pytest.approx(0.001)  # YAML 1.1 leaves 1e-3 a string
    with pytest.raises(ValueError, match=r"key=value: key 'x' = 'abc' is str; expected int \(default 1\)"):
        C.load_config(overrides=["x=abc"])
    with pytest.raises(ValueError, match="key 'flag' = 1 is int; expected bool"):
        C.load_config(overrides=["flag=1"])
    with pytest.raises(ValueError, match="key 'x' = True is bool; expected int"):
        C.load_config(flags={"x": True})
    with pytest.raises(ValueError, match="expected key=value"):
        C.load_config(overrides=["x"])


def test_unknown_keys(configs):
    with pytest.raises(ValueError, match=r"key=value: unknown key 'xx' \(did you mean 'x'\?\)\. Valid keys: anything, "):
        C.load_config(overrides=["xx=1"])
    (configs / "bad.yaml").write_text("nope: 1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown key 'nope'"):
        C.load_config(str(configs / "bad.yaml"))
    with pytest.raises(FileNotFoundError, match=r"config 'missing': no such file, and not one of configs/\{a,b,default\}"):
        C.load_config("missing")


def test_device_stays_a_string():
    assert C.load_config(overrides=["device=0"])["device"] == "0"
    assert C.load_config(overrides=["device=0, 1"])["device"] == "0,1"


# ----------------------------------------------------------------------------- aliases and stages
def test_every_alias_names_a_documented_key():
    defaults = yaml.safe_load(C.DEFAULT.read_text())
    assert set(C.ALIASES.values()) <= set(defaults)
    text = C.DEFAULT.read_text()
    for key in defaults:   # every key documented with its type
        assert any(line.startswith(f"{key}:") and "# (" in line for line in text.splitlines()), key


def _parser(cmd: str) -> argparse.ArgumentParser:
    name = COMMANDS[cmd][0]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:  # a stage registered before its module landed
        if e.name != name:
            raise
        pytest.skip(f"cxrdet {cmd}: module {name} is not there yet")
    p = argparse.ArgumentParser(prog=f"cxrdet {cmd}")
    getattr(module, f"add_arguments_{cmd.replace('-', '_')}")(p)
    return p


# stages without settings of the config (synth writes phantoms from its own arguments)
NO_CONFIG = {"synth"}


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_same_flag_same_key_in_every_stage(cmd):
    p = _parser(cmd)
    dests = {a.dest for a in p._actions}
    if cmd not in NO_CONFIG:
        assert "config" in dests, f"cxrdet {cmd} takes no --config"
    for action in p._actions:
        for flag in action.option_strings:
            if flag in C.ALIASES and not action.dest.startswith("_deprecated_"):
                assert action.dest == C.ALIASES[flag], f"cxrdet {cmd} {flag} sets {action.dest}, not {C.ALIASES[flag]}"


def _cfg(cmd: str, argv: list[str]) -> dict:
    p = _parser(cmd)
    args, rest = p.parse_known_args(argv)
    args.overrides = rest
    return C.stage_config(args)


def test_stage_merge_end_to_end():
    base = ["--truth", "t.csv", "--pred", "p.csv"]
    cfg = _cfg("evaluate", base + ["--config", "rsna"])
    assert (cfg["dataset"], cfg["metric"], cfg["iou_thr"]) == ("rsna", "rsna", 0.4)
    cfg = _cfg("evaluate", base + ["--config", "rsna", "--iou", "0.5", "--metric", "coco"])
    assert (cfg["metric"], cfg["iou_thr"]) == ("coco", 0.5)
    assert _cfg("evaluate", base + ["--iou", "0.5", "iou_thr=0.7"])["iou_thr"] == 0.7
    # prep/train: the positional config; dataset=rsna alone layers configs/rsna.yaml (conf 0.3)
    cfg = _cfg("predict", ["--weights", "w.pt", "--source", "s", "--out", "o.csv", "dataset=rsna", "--low", "0.2"])
    assert (cfg["conf"], cfg["cls_low"], cfg["_sources"]["conf"]) == (0.3, 0.2, "dataset config")
    cfg = _cfg("train", ["phantom", "--prep", "p", "--epochs", "2", "device=0"])
    assert (cfg["epochs"], cfg["imgsz"], cfg["device"]) == (2, 320, "0")


def test_deprecated_stage_meaning_still_works_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = _cfg("fuse", ["--labels", "l.csv", "--out", "o.csv", "--iou", "0.6"])
    assert cfg["fusion_iou"] == 0.6 and cfg["iou_thr"] == 0.4
    assert "--iou is deprecated here (it sets `fusion_iou`); use --fusion-iou" in caplog.text
    assert _cfg("fuse", ["--labels", "l", "--out", "o", "--iou", "0.6", "--fusion-iou", "0.7"])["fusion_iou"] == 0.7
    assert _cfg("show", ["--source", "s", "--out", "o", "--conf", "0.5"])["show_conf"] == 0.5
    rep = ["--truth", "t", "--pred", "p", "--source", "s", "--out", "o"]
    with pytest.raises(ValueError, match="--folds and --fold go together"):
        C.held_out_fold(_cfg("report-eval", rep + ["--fold", "1"]), None)
    assert C.held_out_fold(_cfg("report-eval", rep + ["--fold", "2"]), "folds.csv") == 2
    assert C.held_out_fold(_cfg("report-eval", rep), "folds.csv") == 0
    assert C.held_out_fold(_cfg("report-eval", rep), None) is None
