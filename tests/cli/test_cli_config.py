"""Every CLI flag is a field of the config (or library function) its command runs, with that field's default:
flags have no defaults of their own (cli/options.ConfigOptions), so a default lives in one place."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from slidegrid.cli import build_parser, main
from slidegrid.cli.options import ConfigOptions
from slidegrid.geometry.tissue import TissueConfig


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _flag_actions(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_flag_is_a_config_field_with_its_default(command):
    p = _commands()[command]
    binders: list[ConfigOptions] = p.__dict__.get("config_options", [])
    bound = {id(a): b for b in binders for a in b.actions}
    for action in _flag_actions(p):
        flag = action.option_strings[0] if action.option_strings else action.dest
        if getattr(action, "job_argument", False):
            assert id(action) not in bound
            continue
        assert id(action) in bound, f"{command} {flag}: neither a config option nor a job argument"
        binder = bound[id(action)]
        head = action.dest.split(".")[0]
        assert head in binder.fields(), f"{command} {flag}: {action.dest} is not a field of {binder.config_path}"
        default = binder.default(action.dest)  # KeyError for a dotted name the nested config lacks
        if action.option_strings:
            # No default of the flag's own: unset, the field's default applies.
            assert action.default is argparse.SUPPRESS, f"{command} {flag} has its own default {action.default!r}"
            if default is dataclasses.MISSING:
                assert action.required, f"{command} {flag}: {action.dest} has no default, so the flag is required"
        if isinstance(action, argparse._StoreTrueAction):
            assert default is False, f"{command} {flag} switches {action.dest} on, but it defaults to {default!r}"
        elif isinstance(action, argparse._StoreFalseAction):
            assert default is True, f"{command} {flag} switches {action.dest} off, but it defaults to {default!r}"
        elif action.choices is not None and default is not None:
            assert default in action.choices, f"{command} {flag}: default {default!r} is not a choice"
        elif action.type in (int, float) and default is not None and action.nargs is None:
            assert isinstance(default, (int, float)) and not isinstance(default, bool), (command, flag, default)
            if action.type is int:
                assert isinstance(default, int), f"{command} {flag}: int flag, default {default!r}"


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_unset_flags_give_the_configs_own_defaults(tmp_path):
    from slidegrid.analysis.burden_run import BurdenConfig
    from slidegrid.analysis.pn_stage_run import PnStageConfig
    from slidegrid.cli.train import train_config
    from slidegrid.demo import DemoConfig
    from slidegrid.encode import EncodeConfig
    from slidegrid.probe_patches import ProbeConfig
    from slidegrid.segment import SegmentConfig
    from slidegrid.train.aggregator.config import build_train_config
    from slidegrid.train.encoder.config import EncoderTrainConfig
    from slidegrid.train.segmentation.config import SegTrainConfig

    t = str(tmp_path)
    args = _parse(["encode", t, "--out", t])
    assert args.options.build(args) == EncodeConfig(input=t, out=t)
    args = _parse(["segment", t, "--model", "m.pt", "--out", t])
    assert args.options.build(args) == SegmentConfig(input=t, model="m.pt", out=t)
    args = _parse(["probe", "--patches", t, "--mpp", "0.97"])
    assert args.options.build(args) == ProbeConfig(patches=t, mpp=0.97)
    args = _parse(["train-encoder", "--input", t, "--method", "vae", "--out", t])
    assert args.options.build(args) == EncoderTrainConfig(input=t, out=t, method="vae")
    args = _parse(["train-seg", "--cohort", "c.csv", "--out", t])
    assert args.options.build(args) == SegTrainConfig(cohort="c.csv", out=t)
    args = _parse(["train", "--grids", t, "--cohort", "c.csv", "--out", t])
    assert train_config(args) == build_train_config({"grids": t, "cohort": "c.csv", "out": t})
    args = _parse(["demo"])
    assert args.options.build(args) == DemoConfig()
    args = _parse(["burden", "--segment-out", t])
    assert args.options.build(args) == BurdenConfig(segment_out=t)
    args = _parse(["pn-stage", "--features", "f.csv", "--cohort", "c.csv"])
    assert args.options.build(args) == PnStageConfig(features="f.csv", cohort="c.csv")
    from slidegrid.predict import PredictConfig
    from slidegrid.train.aggregator.sweep import TuneConfig, load_space

    args = _parse(["predict", "--grids", t, "--model", "models:/m/1", "--out", t])
    assert args.options.build(args) == PredictConfig(grids=t, model="models:/m/1", out=t)
    space = tmp_path / "space.yaml"
    space.write_text("metric: val_loss\nmode: min\nparams: {lr: {loguniform: [1.0e-4, 1.0e-2]}}\n")
    args = _parse(["tune", "--grids", t, "--cohort", "c.csv", "--out", t, "--space", str(space)])
    base = build_train_config({"grids": t, "cohort": "c.csv", "out": t})
    assert args.sweep.build(args, train=train_config(args)) == TuneConfig(train=base, space=load_space(str(space)))


def test_given_flags_reach_their_fields(tmp_path):
    t = str(tmp_path)
    args = _parse(["encode", t, "--out", t, "--keep-ink", "--no-mlflow", "--compile", "--min-tissue", "0.5",
                   "--storage-options", '{"anon": true}', "--batch-size", "16", "--reader", "openslide"])
    cfg = args.options.build(args)
    assert (cfg.tissue.remove_ink, cfg.mlflow, cfg.torch_compile, cfg.grid.min_tissue) == (False, False, True, 0.5)
    # Nested configs: the flags fill the shared GridSpec / TissueConfig; the rest keep their defaults.
    assert (cfg.grid.tile_size, cfg.grid.mpp, cfg.tissue.mpp) == (224, 0.5, TissueConfig().mpp)
    assert (dict(cfg.storage_options), cfg.batch_size, cfg.reader) == ({"anon": True}, 16, "openslide")
    # A flag of a nested config changes that field only; the rest of the nested config keeps its defaults.
    args = _parse(["burden", "--segment-out", t, "--threshold", "0.7"])
    cfg = args.options.build(args)
    from slidegrid.analysis.tumour_burden import CleanupConfig

    assert cfg.cleanup == dataclasses.replace(CleanupConfig(), threshold=0.7)
    args = _parse(["train-seg", "--cohort", "c.csv", "--out", t, "--members", "unet-densenet121, mrn-bilinear",
                   "--mpps", "0.5,1,2"])
    cfg = args.options.build(args)
    assert (cfg.members, cfg.mpps) == (("unet-densenet121", "mrn-bilinear"), (0.5, 1.0, 2.0))


def test_help_shows_the_configs_default():
    from slidegrid.analysis.tumour_burden import CleanupConfig
    from slidegrid.segment import SegmentConfig

    p = _commands()["segment"]
    assert f"(default {SegmentConfig.heatmap_mpp:g})" in " ".join(p.format_help().split())
    p = _commands()["burden"]
    assert f"(default {CleanupConfig().threshold})" in " ".join(p.format_help().split())


def test_a_bad_converted_flag_is_one_error_line(tmp_path, capsys):
    code = main(["encode", str(tmp_path), "--out", str(tmp_path / "g"), "--storage-options", "{not json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --storage-options: not valid JSON")


def test_building_the_cli_imports_no_torch_and_help_reads_the_registries():
    import subprocess
    import sys

    code = ("import sys; from slidegrid.cli import build_parser; build_parser(); "
            "sys.exit('torch' in sys.modules or 'ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "`slidegrid --help` would import torch"
    from slidegrid.models import registered

    shown = " ".join(_commands()["train"].format_help().split())
    assert " | ".join(registered("aggregator")) in shown
    from slidegrid.train.segmentation.config import SEG_MODELS, recipe_defaults

    shown = " ".join(_commands()["train-seg"].format_help().split())
    assert " | ".join(SEG_MODELS) in shown and f"recipes: {recipe_defaults('lr')}" in shown


def test_ray_logs_go_under_the_out_folder_also_when_it_is_the_default():
    from slidegrid.cli import _out_folder
    from slidegrid.demo import DemoConfig

    assert _out_folder(_parse(["demo"])) == DemoConfig().out
    assert _out_folder(_parse(["demo", "--out", "x"])) == "x"
    assert _out_folder(_parse(["info", "slide.svs"])) is None


@pytest.mark.parametrize("argv,says", [
    (["encode", "a", "--out", "g", "--dtype", "float64"], "error: slidegrid encode: argument --dtype: invalid choice"),
    (["encode", "a"], "error: slidegrid encode: the following arguments are required: --out"),
    (["train", "--grids", "g", "--cohort", "c", "--out", "o", "--epochs", "x"],
     "error: slidegrid train: argument --epochs: invalid int value: 'x'"),
])
def test_a_bad_command_line_is_one_error_line_and_exit_2(argv, says, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and len(err) == 1 and err[0].startswith(says), err


def test_help_names_each_options_default_from_its_config():
    from slidegrid.geometry.tiling import GridSpec
    from slidegrid.geometry.tissue import TissueConfig

    shown = " ".join(_commands()["encode"].format_help().split())
    assert f"(edge tiles are padded: outside the slide is glass) (default {GridSpec().min_tissue:g})" in shown
    assert f"resolution of the tissue mask (µm/px) (default {TissueConfig().mpp:g})" in shown
    assert "stored embedding type (default float16)" in shown
    # A nested config's default is that of the owning config's instance, not of the nested class.
    from slidegrid.train.encoder.config import EncoderTrainConfig

    shown = " ".join(_commands()["train-encoder"].format_help().split())
    assert EncoderTrainConfig.__dataclass_fields__["grid"].default_factory().min_tissue == 0.5
    assert "min tissue fraction of a training tile (default 0.5)" in shown and "(default vae)" not in shown
    # Where a paper recipe decides, the help says so instead of naming TrainConfig's own value.
    shown = " ".join(_commands()["train"].format_help().split())
    assert "training epochs (default: the recipe's)" in shown and "(default 35)" not in shown


@pytest.mark.parametrize("argv,says", [
    (["synth", "OUT", "--n", "0"], "error: --n: 0 slides"),
    (["synth", "OUT", "--size", "10"], "error: --size: 10 px"),
    (["synth", "OUT", "--tumour-rate", "5"], "error: --tumour-rate: 5.0 is a fraction"),
    (["demo", "--out", "OUT", "--slides", "0"], "error: --slides: 0: the demo needs at least 5 slides"),
])
def test_synthetic_archives_refuse_sizes_that_cannot_be_made(argv, says, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(says), err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
