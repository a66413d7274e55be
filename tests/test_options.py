"""One table of training options and one tuple per choice list (:mod:`sheafdsl.options`): the
checker's ``train`` statement, ``TrainConfig``, the CLI's choices and the library read the same."""

import dataclasses
import importlib

import pytest

from sheafdsl import options as O
from sheafdsl.frontend import check_diagnostics, load_text, parse_text
from sheafdsl.training.config import TrainConfig

NET = "sheaf t\nnetwork mlp : 2 -> 3 -> 1\n"


def test_trainconfig_fields_are_the_option_table():
    fields = dataclasses.fields(TrainConfig)
    assert [f.name for f in fields] == list(O.TRAIN_OPTIONS)
    assert {f.name: f.default for f in fields} == {k: o.default for k, o in O.TRAIN_OPTIONS.items()}
    cfg = TrainConfig()
    assert cfg.validate() is cfg  # every default is valid


@pytest.mark.parametrize("name", list(O.TRAIN_OPTIONS))
def test_every_config_field_is_a_train_option_of_the_checker(name):
    """A model file takes every TrainConfig field (joint_init was rejected with E280)."""
    opt = O.TRAIN_OPTIONS[name]
    value = opt.choices[-1] if opt.choices else {"data": '"paraboloid"', "standardize": "true"}.get(
        name, "2" if opt.type is int else "0.5")
    model = load_text(NET + f"train {name}={value}\n")
    cfg = TrainConfig.from_sources(model.train)
    assert getattr(cfg, name) == model.train[name]


@pytest.mark.parametrize("name, bad, code", [("momentum", "1", "E283"), ("lr", "0", "E283"), ("n", "0", "E283"),
                                             ("seed", "-1", "E283"), ("trainer", "bogus", "E282"),
                                             ("joint_init", "ones", "E282"), ("steps", "1.5", "E282")])
def test_checker_and_config_reject_the_same_values(name, bad, code):
    assert code in [d.code for d in check_diagnostics(parse_text(NET + f"train {name}={bad}\n"))]
    value = bad if bad.isalpha() else float(bad)
    with pytest.raises(Exception) as e:
        TrainConfig.from_sources({name: value})
    assert e.value.codes == ["E610"]


def _choices(module: str, option: str):
    cmd = importlib.import_module(f"sheafdsl.cli.{module}").command
    (param,) = [p for p in cmd.params if p.name == option]
    return tuple(param.type.choices)


@pytest.mark.parametrize("module, option, table", [
    ("train", "optimizer", O.OPTIMIZERS), ("train", "trainer_name", O.TRAINERS + O.LEARNED_TRAINERS), ("train", "solver", O.TRAIN_SOLVERS),
    ("train", "backend", O.BACKENDS), ("infer", "solver", O.SOLVE_METHODS), ("verify", "boundary", O.BOUNDARY_NAMES),
    ("diagnose", "split", O.SPLITS)])
def test_cli_choices_are_the_library_tuples(module, option, table):
    assert _choices(module, option) == table


def test_library_reads_the_same_tuples():
    from sheafdsl.ir import BOUNDARIES
    from sheafdsl.lowering import BACKENDS
    from sheafdsl.solvers import METHODS
    from sheafdsl.training.trainers import TRAINERS

    assert METHODS is O.SOLVE_METHODS and BACKENDS is O.BACKENDS
    assert tuple(TRAINERS) == O.TRAINERS
    assert tuple(BOUNDARIES) == O.BOUNDARY_NAMES
    assert O.TRAIN_OPTIONS["solver"].choices is O.TRAIN_SOLVERS
    assert set(O.TRAIN_SOLVERS) <= set(O.SOLVE_METHODS)


def test_docs_table_lists_every_option():
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "language.md").read_text(encoding="utf-8")
    listed = {n for row in re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", doc, re.M) for n in re.findall(r"`(\w+)`", row)}
    assert set(O.TRAIN_OPTIONS) <= listed, sorted(set(O.TRAIN_OPTIONS) - listed)
