"""data_prep.core.config: the one merge (priority order, types, flag aliases, unknown keys) and its use by every stage."""
from __future__ import annotations

import argparse
import importlib
import logging

import pytest
import yaml

from data_prep.core import config as C
from detection.cli import COMMANDS, main


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
    monkeypatch.setattr(C.keys, "RULES", {})  # the rules are those of the real default.yaml's keys
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
            if flag in C.ALIASES and not action.dest.startswith("_retired_"):
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
    # dataset=rsna alone layers configs/rsna.yaml (conf 0.3)
    cfg = _cfg("predict", ["--weights", "w.pt", "--source", "s", "--out", "o.csv", "dataset=rsna", "--low", "0.2"])
    assert (cfg["conf"], cfg["cls_low"], cfg["_sources"]["conf"]) == (0.3, 0.2, "dataset config")
    cfg = _cfg("train", ["--config", "phantom", "--prep", "p", "--epochs", "2", "device=0"])
    assert (cfg["epochs"], cfg["imgsz"], cfg["device"]) == (2, 320, "0")


def test_a_retired_stage_meaning_is_a_one_line_error_naming_its_replacement(capsys):
    """fuse --iou (now --fusion-iou) and show/explore/report-eval --conf (now --show-conf) were kept
    one release with a warning; now they stop with one line naming the flag to use (issue 28)."""
    from data_prep.core.errors import InputError

    with pytest.raises(InputError, match=r"--iou: renamed; use --fusion-iou \(it sets `fusion_iou`\)"):
        _cfg("fuse", ["--labels", "l.csv", "--out", "o.csv", "--iou", "0.6"])
    assert _cfg("fuse", ["--labels", "l", "--out", "o", "--fusion-iou", "0.7"])["fusion_iou"] == 0.7
    for cmd in ("show", "explore", "report-eval"):
        with pytest.raises(InputError, match="--conf: renamed; use --show-conf"):
            _cfg(cmd, ["--source", "s", "--out", "o", "--truth", "t", "--pred", "p", "--conf", "0.5"])
    assert main(["fuse", "--labels", "l.csv", "--out", "o.csv", "--iou", "0.6"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fusion-iou" in err and "Traceback" not in err
    rep = ["--truth", "t", "--pred", "p", "--source", "s", "--out", "o"]
    with pytest.raises(ValueError, match="--folds and --fold go together"):
        C.held_out_fold(_cfg("report-eval", rep + ["--fold", "1"]), None)
    assert C.held_out_fold(_cfg("report-eval", rep + ["--fold", "2"]), "folds.csv") == 2
    assert C.held_out_fold(_cfg("report-eval", rep), "folds.csv") == 0
    assert C.held_out_fold(_cfg("report-eval", rep), None) is None


def _required(p: argparse.ArgumentParser) -> list[str]:
    """Placeholder values for a parser's required arguments (a required positional: vinbigdata)."""
    argv = []
    for a in p._actions:
        if not a.option_strings and a.dest not in ("help",) and a.nargs != "?":
            argv.append("vinbigdata")
        elif a.required:
            argv += [a.option_strings[0], "x"]
    return argv


def _stage_parsers() -> dict[str, argparse.ArgumentParser]:
    out = {}
    for cmd in sorted(COMMANDS):
        try:
            out[cmd] = _parser(cmd)
        except pytest.skip.Exception:
            continue
    return out


# input files named like a dataset-layout key (a path here, a file name inside --data there; --folds: the
# folds.csv, `folds`: how many): arguments of the stage, never a layer of the merge
INPUT_FILES = {"--folds", "--labels", "--meta", "--sample"}
# a stage whose flag takes more than the key's type, said in its --help
WIDER = {("evaluate", "--fold"): "a fold, or several (0,2) scored one by one"}


def test_each_flag_means_one_key_across_all_stages():
    """Over the parsers of every stage in detection/cli.py COMMANDS: an option string has one dest
    wherever it is declared (a retired stage meaning aside: an error naming the flag to use);
    a flag that sets a config key is that key's alias in data_prep.core.config.ALIASES, and takes its
    value the same way in every stage."""
    dests: dict[str, set] = {}
    forms: dict[str, set] = {}
    keys = set(yaml.safe_load(C.DEFAULT.read_text()))
    for cmd, p in _stage_parsers().items():
        retired = p.get_default("_retired") or {}
        for a in p._actions:
            if a.dest.startswith("_retired_"):
                flag, key = retired[a.dest]
                assert a.option_strings == [flag] and key in C.ALIASES.values(), (cmd, flag)
                assert C.ALIASES.get(flag) != key, f"cxrdet {cmd} {flag}: retired for its own key"
                continue
            for flag in a.option_strings:
                dests.setdefault(flag, set()).add(a.dest)
                if a.dest in keys and flag not in INPUT_FILES:
                    assert C.ALIASES.get(flag) == a.dest, f"cxrdet {cmd} {flag} sets `{a.dest}` by hand, not by ALIASES"
                if (cmd, flag) not in WIDER:      # every flag (a key's alias or not) takes its value one way
                    forms.setdefault(flag, set()).add((type(a).__name__, a.nargs, a.const, a.type))
    assert {f: d for f, d in dests.items() if len(d) > 1} == {}
    # one value, or (in a stage that takes several) any number, in one go or repeated: `--pred A B` = `--pred A --pred B`
    one_or_many = {("_StoreAction", None, None, None), ("_ExtendAction", "+", None, None)}
    assert {f: v for f, v in forms.items() if len(v) > 1 and v != one_or_many} == {}
    drops = {f for f, v in forms.items() if ("_StoreAction", "+", None, None) in v}
    assert drops == set(), f"{sorted(drops)}: a repeated flag would drop the earlier values; use action='extend'"
    assert {"--raters", "--iou", "--conf"} <= set(dests)
    assert dests["--raters"] == {"raters"}


RATERS_STAGES = ("explore", "fuse", "prep", "show")


def test_raters_flag_is_the_raters_key_in_every_stage_that_has_it():
    has = sorted(cmd for cmd, p in _stage_parsers().items() if "--raters" in p._option_string_actions)
    assert tuple(has) == RATERS_STAGES
    for cmd in RATERS_STAGES:
        base = _required(_parser(cmd))
        assert _cfg(cmd, base)["raters"] is None, cmd
        assert _cfg(cmd, base + ["--raters"])["raters"] == "all", cmd                # no value: every radiologist
        cfg = _cfg(cmd, base + ["--raters", "R8,R10"])
        assert cfg["raters"] == ["R8", "R10"] and cfg["_sources"]["raters"] == "flag", cmd
        cfg = _cfg(cmd, base + ["--raters", "seed=7"])                               # key=value right after it
        assert (cfg["raters"], cfg["seed"]) == ("all", 7), cmd
        assert _cfg(cmd, base + ["raters=[R8, NIH]"])["raters"] == ["R8", "NIH"], cmd
        assert _cfg(cmd, base + ["--raters", "R8", "raters=R9"])["raters"] == ["R9"], cmd


def test_raters_values():
    assert C.load_config(overrides=["raters=R8, R10"])["raters"] == ["R8", "R10"]
    assert C.load_config(overrides=["raters=all"])["raters"] == "all"
    assert C.load_config(overrides=["raters=[]"])["raters"] is None
    assert C.load_config(flags={"raters": ("R1", " R2 ")})["raters"] == ["R1", "R2"]
    with pytest.raises(ValueError, match=r"key=value: key 'raters' = 5; expected a list of radiologist ids"):
        C.load_config(overrides=["raters=5"])
    with pytest.raises(ValueError, match=r"key 'raters' = \{'R8': 2\}; expected"):
        C.load_config(flags={"raters": {"R8": 2}})


# ----------------------------------------------------------------------------- settings objects
def test_settings_objects_from_the_merged_config():
    from data_prep.dicom.voi import VoiOptions
    from detection.pictures.explore import ExploreSettings
    from detection.evaluation.raters import PerRaterSettings
    from detection.pictures.report_eval import ReportSettings

    cfg = C.load_config("rsna", ["iou_thr=0.5", "show_conf=0.2", "workers=3", "voi=none"])
    e = ExploreSettings.from_config(cfg, title="t")
    assert (e.metric, e.iou_thr, e.show_conf, e.workers, e.title) == ("rsna", 0.5, 0.2, 3, "t")
    assert (e.normal_class, e.class_names, e.max_side) == (None, None, 1024)          # RSNA: no normal class
    assert e.voi == VoiOptions.from_config(cfg) and e.voi.voi == "none"
    r = ReportSettings.from_config(C.load_config("vinbigdata", ["iou_thr=1"]), n_worst=3)
    assert isinstance(r.iou_thr, float) and r.iou_thr == 1.0 and r.n_worst == 3 and r.metric == "vinbigdata"
    from data_prep.datasets import describe
    vin = describe("vinbigdata")
    assert (r.normal_class, list(r.class_names)) == (vin.normal_id, list(vin.names))
    p = PerRaterSettings.from_config(cfg, min_images=2)
    assert (p.dataset, p.metric, p.iou_thr, p.min_images, p.baseline) == ("rsna", "rsna", 0.5, 2, True)
    # the defaults are the stage functions' former keyword defaults; former keyword names still work
    assert ExploreSettings().replace(conf=0.7, voi_options="v") == ExploreSettings(show_conf=0.7, voi="v")
    assert ReportSettings().replace(conf=0.1) == ReportSettings(show_conf=0.1)
    with pytest.raises(TypeError, match=r"ReportSettings: unknown setting\(s\) \['nope'\]"):
        ReportSettings().replace(nope=1)
    with pytest.raises(Exception):
        r.metric = "coco"                                                           # frozen


def test_a_repeated_multi_value_flag_keeps_every_value():
    """`--pred A --pred B` is `--pred A B` wherever a stage takes several (no silent drop of A)."""
    for cmd, flag in (("postprocess", "--pred"), ("tune", "--pred"), ("explore", "--pred"), ("predict", "--weights")):
        p = _parser(cmd)
        base = [a for a in _required(p)]
        if flag in base:  # tune: --pred is optional (tune --cv DIR reads the cv's tables)
            i = base.index(flag)
            base = base[:i] + base[i + 2:]
        a = p.parse_args(base + [flag, "A", "B"])
        b = p.parse_args(base + [flag, "A", flag, "B"])
        dest = p._option_string_actions[flag].dest
        assert getattr(a, dest) == getattr(b, dest) == ["A", "B"], (cmd, flag)
