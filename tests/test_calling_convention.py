"""Issue 28 item 4: one calling convention for every stage's config: ``--config NAME|FILE``. The
old positional form of prep, train, train-cls and cv (``cxrdet train phantom --prep p``) is a
one-line error naming the replacement; a first ``key=value`` is still an override."""
from __future__ import annotations

import argparse
import importlib

import pytest

from data_prep.core.config import stage_config
from detection.cli import COMMANDS, main


@pytest.mark.parametrize("stage,extra", [("train", ["--prep", "p"]), ("train-cls", ["--prep", "p"]),
                                         ("cv", ["--prep", "p"]), ("prep", ["--data", "d", "--out", "o"])])
def test_old_positional_config_is_a_one_line_error(stage, extra, capsys):
    assert main([stage, "phantom", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cxrdet {stage}: error: phantom: a config given positionally; use --config phantom "
                   "(every stage takes its config with --config since issue 28)"]


def _parse(stage: str, argv: list[str]) -> dict:
    mod = importlib.import_module(COMMANDS[stage][0])
    p = argparse.ArgumentParser()
    getattr(mod, f"add_arguments_{stage.replace('-', '_')}")(p)
    args, unknown = p.parse_known_args(argv)
    args.overrides = unknown
    return stage_config(args)


@pytest.mark.parametrize("stage", ["train", "cv", "prep"])
def test_config_flag_and_first_override_are_kept(stage):
    extra = ["--data", "d", "--out", "o"] if stage == "prep" else ["--prep", "p"]
    cfg = _parse(stage, [*extra, "seed=7", "--config", "phantom", "iou_thr=0.3"])
    assert (cfg["dataset"], cfg["seed"], cfg["iou_thr"]) == ("vinbigdata", 7, 0.3)
    assert cfg["_sources"]["seed"] != cfg["_sources"]["dataset"]


def test_every_stage_with_a_config_takes_the_flag():
    """No stage declares a positional ``config`` any more."""
    for stage, (module, _) in COMMANDS.items():
        p = argparse.ArgumentParser()
        getattr(importlib.import_module(module), f"add_arguments_{stage.replace('-', '_')}")(p)
        positional = [a.dest for a in p._actions if not a.option_strings]
        assert "config" not in positional, stage
