"""The forget settings are described once (engine/settings.py field metadata): the `unstar forget` options, the
validation and the training form are generated from it, old job settings still load, and the methods' parameters
(NPO beta, KL weight, negation alpha/beta) are real settings that reach the method."""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from unstar_gui.engine.errors import InvalidInput
from unstar_gui.engine.methods import MethodContext
from unstar_gui.engine.settings import (PRESETS, Bounds, ForgetSettings, check, cli_fields, default_of, gui_fields,
                                        method_params, setting_fields)

README = Path(__file__).resolve().parents[1] / "README.md"
QUESTION = "Where did Harry Potter go to school?"

# `asdict(ForgetSettings())` as job.json held it before the method parameters became settings (and before the
# settings moved to engine/settings.py): such a job must still load, with every value as it was.
OLD_SETTINGS = {
    "rank": 8, "lora_scale": 20.0, "num_layers": 16, "learning_rate": 0.0002, "retain_weight": 1.0,
    "retain_loss": "ce", "max_rounds": 3, "steps_per_round": 20, "batch_size": 4, "retain_batch_size": 4,
    "max_seq_len": 160, "n_paraphrases": 12, "heldout_share": 0.34, "n_wrong_answers": 6, "n_neighbours": 8,
    "n_general": 24, "n_general_eval": 0, "general_max_tokens": 32, "min_retention": 0.85,
    "min_general_retention": 0.5, "min_trained_general_retention": 0.95, "probe_max_tokens": 64,
    "checkpoint_every": 10, "checkpoint_seconds": 60.0, "grad_checkpoint": False, "method": "unstar",
    "lora_keys": "all", "placement": "last", "rationale_weight": 1.0, "undial_beta": 10.0, "null_space_eps": 0.0,
    "dense_weight": 0.0, "dense_batch_size": 8, "early_stop_every": 0, "scale_sweep": False, "preset": "", "seed": 0,
    "attacks": "all"}
# The methods' defaults before they were settings (class attributes of NPOMethod, GradientAscentKL, NegateMethod).
OLD_METHOD_DEFAULTS = {"npo_beta": 0.1, "kl_weight": 1.0, "negate_alpha": 1.0, "negate_beta": 0.0,
                       "undial_beta": 10.0}
# The `unstar forget` options before they were generated: flag -> field.
OLD_FLAGS = {"--seed": "seed", "--max-rounds": "max_rounds", "--steps": "steps_per_round", "--rank": "rank",
             "--layers": "num_layers", "--lr": "learning_rate", "--retain-weight": "retain_weight",
             "--retain-loss": "retain_loss", "--method": "method", "--attacks": "attacks"}


def forget_parser() -> argparse.ArgumentParser:
    from unstar_gui.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["forget"]


# the settings themselves -------------------------------------------------------------------------------------------
def test_every_field_is_described_and_the_defaults_are_unchanged():
    for f in setting_fields():
        assert f.metadata.get("label") and f.metadata.get("help"), f.name
        assert not ("bounds" in f.metadata and "choices" in f.metadata), f.name
        if "choices" in f.metadata:
            assert default_of(f) in f.metadata["choices"], f.name
    settings = asdict(ForgetSettings())
    assert {k: settings[k] for k in OLD_SETTINGS} == OLD_SETTINGS
    assert {f.name: default_of(f) for f in method_params()} == OLD_METHOD_DEFAULTS
    check(ForgetSettings())  # the defaults and every preset are valid
    for name in PRESETS:
        check(ForgetSettings.preset_named(name))


def test_method_defaults_have_one_home():
    ctx = MethodContext("q", "a")
    assert all(getattr(ctx, f.name) == default_of(f) for f in method_params())
    assert ForgetSettings(npo_beta=0.5).method_params() == dict(OLD_METHOD_DEFAULTS, npo_beta=0.5)


def test_old_settings_without_the_method_fields_load():
    old = dict(OLD_SETTINGS, seed=7, steps_per_round=5, some_removed_setting=True)  # unknown keys are ignored
    s = ForgetSettings.from_dict(old)
    assert s.seed == 7 and s.steps_per_round == 5
    assert {f.name: getattr(s, f.name) for f in method_params()} == OLD_METHOD_DEFAULTS  # missing: the defaults
    check(s)
    assert ForgetSettings.from_dict({}) == ForgetSettings()


def test_the_pipeline_re_exports_the_settings_and_defines_none_of_its_own():
    from unstar_gui.engine import pipeline, settings

    assert pipeline.ForgetSettings is settings.ForgetSettings and pipeline.PRESETS is settings.PRESETS


# validation --------------------------------------------------------------------------------------------------------
def _outside(bounds: Bounds, integer: bool) -> list[float]:
    step = 1 if integer else 1e-3
    out = []
    if bounds.lo is not None:
        out.append(bounds.lo if bounds.lo_open else bounds.lo - step)
    if bounds.hi is not None:
        out.append(bounds.hi if bounds.hi_open else bounds.hi + step)
    return out


def test_bounds_describe_themselves():
    assert Bounds(1).describe() == "at least 1"
    assert Bounds(0, lo_open=True).describe() == "above 0"
    assert Bounds(0, 1).describe() == "from 0 to 1"
    assert Bounds(0, 1, hi_open=True).describe() == "from 0 up to (not including) 1"
    assert 0.5 in Bounds(0, 1) and 1 not in Bounds(0, 1, hi_open=True) and 0 not in Bounds(0, lo_open=True)


@pytest.mark.parametrize("f", [f for f in setting_fields() if "bounds" in f.metadata], ids=lambda f: f.name)
def test_validation_rejects_values_out_of_bounds_naming_the_setting(f):
    bounds, integer = f.metadata["bounds"], isinstance(default_of(f), int)
    bad_values = _outside(bounds, integer)
    assert bad_values, f"{f.name}: bounds with no limit"
    for bad in bad_values:
        with pytest.raises(InvalidInput) as err:
            check(ForgetSettings(**{f.name: bad}))
        message = err.value.message
        assert message.startswith("Invalid settings:") and f.metadata["label"] in message, message
        assert bounds.describe() in message and f"(got {bad})" in message, message
    if not integer:
        with pytest.raises(InvalidInput, match="finite"):
            check(ForgetSettings(**{f.name: math.nan}))


@pytest.mark.parametrize("f", [f for f in setting_fields() if "choices" in f.metadata], ids=lambda f: f.name)
def test_validation_rejects_values_outside_the_choices(f):
    with pytest.raises(InvalidInput) as err:
        check(ForgetSettings(**{f.name: "no-such-choice"}))
    message = err.value.message
    assert f.metadata["label"] in message and "no-such-choice" in message
    assert all(repr(c) in message for c in f.metadata["choices"])


def test_validation_names_every_problem_and_the_flag_to_fix_it():
    with pytest.raises(InvalidInput) as err:
        check(ForgetSettings(learning_rate=0.0, npo_beta=-1.0, attacks="bogus"))
    message = err.value.message
    assert "Learning rate (--lr) must be above 0" in message
    assert "NPO beta (--npo-beta) must be above 0" in message
    assert "Attacks (--attacks): Unknown attack 'bogus'" in message


# the CLI -----------------------------------------------------------------------------------------------------------
def test_forget_options_are_the_metadata():
    parser = forget_parser()
    by_flag = {s: a for a in parser._actions for s in a.option_strings}
    for f in cli_fields():
        action = by_flag[f.metadata["flag"]]
        assert action.dest == f.name and action.default is None  # unset: a --preset's value stands
        assert f.metadata["help"] in action.help and f"(default: {default_of(f)})" in action.help
        if "choices" in f.metadata:
            assert tuple(action.choices) == tuple(f.metadata["choices"])
        else:
            assert action.type is type(default_of(f))
    settings_options = {a.dest for a in parser._actions if a.dest in ForgetSettings.__dataclass_fields__}
    assert settings_options - {"preset"} == {f.name for f in cli_fields()}  # no option written by hand
    assert {flag: by_flag[flag].dest for flag in OLD_FLAGS} == OLD_FLAGS  # today's flag names still work


def test_options_override_the_preset_and_nothing_else():
    from unstar_gui.commands.forget import settings_from_args

    parser = forget_parser()
    assert settings_from_args(parser.parse_args([])) == ForgetSettings()
    s = settings_from_args(parser.parse_args(["--preset", "locality", "--steps", "7", "--lr", "1e-3",
                                              "--method", "npo", "--npo-beta", "0.25"]))
    assert s == ForgetSettings.preset_named("locality", steps_per_round=7, learning_rate=1e-3, method="npo",
                                            npo_beta=0.25)


def readme_forget_commands() -> list[str]:
    """Every `unstar forget` line of the README's command block, continuation lines joined, comments dropped."""
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [line for line in lines if line.startswith("unstar forget ")]


def test_compare_offers_the_shared_settings_from_the_same_metadata():
    from unstar_gui.cli import build_parser
    from unstar_gui.commands.compare import SHARED_SETTINGS
    from unstar_gui.commands.forget import settings_from_args

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    compare = sub.choices["compare"]
    flags = {a.dest: a for a in compare._actions}
    for name in SHARED_SETTINGS:
        f = next(f for f in fields(ForgetSettings) if f.name == name)
        assert f.metadata["flag"] in flags[name].option_strings and str(default_of(f)) in flags[name].help
    args = compare.parse_args(["-q", "Q?", "-a", "A", "--steps", "3", "--seed", "2"])
    settings = settings_from_args(args)
    assert (settings.steps_per_round, settings.seed, settings.max_rounds) == (3, 2, ForgetSettings().max_rounds)
    assert "rank" not in flags  # a comparison trains every method with the same defaults otherwise


def test_the_readme_forget_commands_still_parse():
    from unstar_gui.commands.forget import request_from_args

    commands = readme_forget_commands()
    assert len(commands) >= 3, commands
    parser = forget_parser()
    for command in commands:
        argv = shlex.split(command.replace("...", f'--question "{QUESTION}" --answer Hogwarts'))[2:]
        args = parser.parse_args(argv)
        if args.resume:
            continue
        settings = request_from_args(args).settings
        check(settings)
        for flag, value in re.findall(r"(--[a-z-]+) (\S+)", command):
            field = {f.metadata["flag"]: f.name for f in cli_fields()}.get(flag)
            if field is not None:
                assert str(getattr(settings, field)) == value, (command, field)


# the wizard's form -------------------------------------------------------------------------------------------------
@pytest.mark.gui
def test_the_training_form_is_built_from_the_metadata(qtbot):
    from PySide6.QtWidgets import QComboBox

    from unstar_gui.ui.pages.common import TrainingForm

    form = TrainingForm("Training")
    qtbot.addWidget(form)
    shown = gui_fields()
    assert list(form.fields) == [f.name for f in shown]
    today = {"max_rounds", "steps_per_round", "rank", "num_layers", "learning_rate", "seed", "preset"}
    assert today <= set(form.fields)
    layout = form.layout()
    for f in shown:
        box, meta = form.fields[f.name], f.metadata
        assert layout.labelForField(box).text() == f"{meta['label']}:"
        assert box.toolTip() == meta["help"]
        if "choices" in meta:
            assert isinstance(box, QComboBox)
            items = [box.itemData(i) for i in range(box.count())]
            assert items and set(items) <= set(meta["choices"])
        else:  # the spin box's whole range is valid
            gui, bounds = meta["gui"], meta.get("bounds")
            if bounds is not None and bounds.lo is not None and "min" not in gui:
                assert box.minimum() == bounds.lo
            for value in (box.minimum(), box.maximum()):
                check(ForgetSettings(**{f.name: value}))
    form.set_values({"rank": 4, "learning_rate": 1e-3, "preset": "locality"})
    values = form.values()
    assert values["rank"] == 4 and values["learning_rate"] == pytest.approx(1e-3) and values["preset"] == "locality"
    check(ForgetSettings.from_dict(values))


# the method parameters reach the method ----------------------------------------------------------------------------
def test_npo_beta_set_in_the_settings_reaches_the_loss(tiny_model, tmp_path, monkeypatch):
    from unstar_gui.engine import pipeline
    from unstar_gui.engine.llm import LLM, LoraSettings
    from unstar_gui.engine.methods import npo
    from unstar_gui.engine.trainer import Trainer, TrainSettings, encode_pairs

    settings = ForgetSettings(method="npo", npo_beta=0.5, kl_weight=2.0)
    job = pipeline.create_forget_job(pipeline.ForgetRequest(question=QUESTION, answer="Hogwarts", model="tiny",
                                                            settings=settings, out_dir=tmp_path / "job"))
    saved = json.loads((Path(job.dir) / "job.json").read_text(encoding="utf-8"))["settings"]
    assert saved["npo_beta"] == 0.5 and saved["kl_weight"] == 2.0

    class Prepared(Exception):
        pass

    prepared = []
    real_get_method = pipeline.get_method

    def spy(name):
        method = real_get_method(name)
        real_prepare = method.prepare

        def prepare(ctx):
            real_prepare(ctx)
            prepared.append(method)
            raise Prepared  # the context is what this test needs; training is the next test's

        method.prepare = prepare
        return method

    monkeypatch.setattr(pipeline, "get_method", spy)
    llm = LLM(tiny_model.path)
    with pytest.raises(Prepared):
        next(pipeline.train_rounds(job, llm))
    method = prepared[0]
    assert isinstance(method, npo.NPOMethod)
    assert method.ctx.npo_beta == 0.5 and method.ctx.kl_weight == 2.0 and method.ctx.negate_alpha == 1.0

    betas = []
    real_loss = npo.npo_loss
    monkeypatch.setattr(npo, "npo_loss", lambda logp, ref, beta: betas.append(beta) or real_loss(logp, ref, beta))
    trainer = Trainer(llm, method, TrainSettings(batch_size=1, retain_batch_size=0, max_seq_len=32), seed=0)
    trainer.attach(LoraSettings(rank=2, scale=1.0, num_layers=1))
    list(trainer.train_round(encode_pairs(llm, [(QUESTION, "Hogwarts.")], 32), [], 0, 1))
    assert betas and set(betas) == {0.5}
