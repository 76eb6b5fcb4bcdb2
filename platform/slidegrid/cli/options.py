"""What the commands share: flags bound to config fields (ConfigOptions, one default per setting), the parser
and help formats of the error contract, the shared flags (storage, placement, tissue, reader) and output helpers."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import inspect
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: a bad command line is one line `error: <command>: <reason>` and
    exit code 2 (argparse's own prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


class ConfigHelpFormatter(argparse.HelpFormatter):
    """Help that shows each config option's default, read from the config (the flag has none itself): where the
    text has `%(default)s`, and appended as "(default X)" where the text names none. Text may come from a function
    (`ConfigOptions.add(help=callable)`: a registry read only for --help)."""

    def _expand_help(self, action: argparse.Action) -> str:
        text_from = getattr(action, "help_from", None)
        lookup = getattr(action, "config_default", None)
        if text_from is None and lookup is None:
            return super()._expand_help(action)
        action = copy.copy(action)
        if text_from is not None:
            action.help = text_from()
        if lookup is None:
            return super()._expand_help(action)
        action.default = lookup()
        text = "" if action.help == NO_HELP else action.help or ""
        shown = _shown_default(action)
        if shown is not None:
            action.default = shown  # what %(default)s prints: 0.25, "150 400"
            if getattr(action, "show_default", True) and "default" not in text.lower():
                text = f"{text} (default {shown.replace('%', '%%')})".strip()
        action.help = text
        return super()._expand_help(action) if text else ""


# The placeholder help of a config option given none: its line then shows the default alone.
NO_HELP = "-"


def _shown_default(action: argparse.Action) -> str | None:
    """A config default worth printing: not unset (None, required), not a switch's off state, not empty."""
    value = action.default
    if (value is None or value is dataclasses.MISSING or isinstance(value, bool) or action.nargs == 0 or action.required
            or (hasattr(value, "__len__") and not isinstance(value, str) and not len(value))):
        return None
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


class ConfigOptions:
    """The flags of one config dataclass (or library function) on a command's parser, so that each default
    lives in one place.

    Each flag's dest is a field of the config (dotted for a field of a nested config: `cleanup.threshold`) and
    the flag has no default of its own (`argparse.SUPPRESS`): unset, it is absent from the parsed namespace and
    the dataclass's default applies; `--help` shows that default (ConfigHelpFormatter).
    `show_defaults` False: the help names no field default where another layer decides (a paper recipe).
    A bool field is a switch: `store_true` for a field that defaults to False, `store_false` (`--no-mlflow`,
    `--keep-ink`) for one that defaults to True; tests/cli/test_cli_config.py checks every flag against its field.
    The config class is named by "module:Class" and imported only when a command runs or shows its help, so
    `slidegrid --help` stays free of torch.
    """

    def __init__(self, parser: argparse.ArgumentParser, config: str, key: str = "options",
                 show_defaults: bool = True) -> None:
        self.parser, self.config_path, self.show_defaults = parser, config, show_defaults
        self.actions: list[argparse.Action] = []
        self.converters: dict[str, Callable[[Any], Any]] = {}
        parser.formatter_class = ConfigHelpFormatter
        parser.set_defaults(**{key: self})
        parser.__dict__.setdefault("config_options", []).append(self)

    @property
    def config(self) -> Callable[..., Any]:
        """The config dataclass (or the library function whose keyword defaults the flags take)."""
        module, name = self.config_path.split(":")
        return getattr(importlib.import_module(module), name)

    def fields(self) -> dict[str, Any]:
        """The config's fields (a function's parameters) and their defaults (`config_fields`)."""
        return config_fields(self.config)

    def add(self, *flags: str, field: str | None = None, convert: Callable[[Any], Any] | None = None,
            group: Any = None, **kw: Any) -> argparse.Action:
        """One flag of the field `field` (default: the flag's name, dashes as underscores). `convert` turns the
        parsed value into the field's (it may raise ConfigError, which argparse's `type=` could not report); a
        callable `help` is called for --help only, so that building the parser imports no model registry."""
        target = group if group is not None else self.parser
        help_from = kw.pop("help") if callable(kw.get("help")) else None
        if help_from is not None or kw.get("help") is None:
            kw["help"] = NO_HELP  # replaced by ConfigHelpFormatter
        if flags[0].startswith("-"):
            name = field or flags[0].lstrip("-").replace("-", "_")
            if field and kw.get("action") is None and "metavar" not in kw:  # as argparse names the flag's own
                kw["metavar"] = flags[0].lstrip("-").replace("-", "_").upper()
            action = target.add_argument(*flags, dest=name, default=argparse.SUPPRESS, **kw)
        else:  # a positional argument is always given; its name is the field's
            name = flags[0]
            action = target.add_argument(*flags, **kw)
        action.config_default = partial(self.default, name)
        action.show_default = self.show_defaults
        if help_from is not None:
            action.help_from = help_from
        if convert is not None:
            self.converters[name] = convert
        self.actions.append(action)
        return action

    def default(self, name: str) -> Any:
        """The config's default of a (dotted) field: a nested field's is that of the config's default instance
        (EncoderTrainConfig's grid keeps min_tissue 0.5, not GridSpec's own 0.25); `dataclasses.MISSING` for a
        required one."""
        head, *rest = name.split(".")
        value = config_fields(self.config)[head]
        for part in rest:
            value = getattr(value, part)
        return value

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """The options the user set, converted, by (dotted) field name."""
        values = vars(args)
        return {a.dest: self.converters.get(a.dest, _same)(values[a.dest]) for a in self.actions if a.dest in values}

    def value(self, args: argparse.Namespace, name: str) -> Any:
        """The value a field gets: the option given (converted; no other option is), else the config's default."""
        values = vars(args)
        return self.converters.get(name, _same)(values[name]) if name in values else self.default(name)

    def build(self, args: argparse.Namespace, **extra: Any) -> Any:
        """The config from the given options (nested configs filled in from their defaults) plus `extra`; for a
        function, its result."""
        flat = {**self.given(args), **extra}
        values: dict[str, Any] = {k: v for k, v in flat.items() if "." not in k}
        nested: dict[str, dict[str, Any]] = {}
        for k, v in flat.items():
            if "." in k:
                head, rest = k.split(".", 1)
                nested.setdefault(head, {})[rest] = v
        for head, sub in nested.items():
            values[head] = dataclasses.replace(self.default(head), **sub)
        return self.config(**values)


def config_fields(config: Callable[..., Any]) -> dict[str, Any]:
    """Field (or parameter) name -> default of a dataclass or function; `dataclasses.MISSING` for a required one."""
    if dataclasses.is_dataclass(config):
        out = {}
        for f in dataclasses.fields(config):
            factory = f.default_factory
            out[f.name] = f.default if f.default is not dataclasses.MISSING else (
                factory() if factory is not dataclasses.MISSING else dataclasses.MISSING)
        return out
    return {k: dataclasses.MISSING if p.default is inspect.Parameter.empty else p.default
            for k, p in inspect.signature(config).parameters.items()}


def _same(value: Any) -> Any:
    return value


def job_argument(p: Any, *flags: str, **kw: Any) -> argparse.Action:
    """An argument of the job itself, not a config field (a slide to inspect, the YAML file a config is read
    from, a mode such as --cv); marked so that tests/cli/test_cli_config.py can tell it from a forgotten mapping."""
    action = p.add_argument(*flags, **kw)
    action.job_argument = True
    return action


def comma_list(text: str) -> tuple[str, ...]:
    """A comma-separated flag value as a tuple (blanks dropped)."""
    return tuple(m.strip() for m in text.split(",") if m.strip())


def add_storage(opts: ConfigOptions) -> None:
    from ..io.storage import parse_storage_options

    opts.add("--storage-options", metavar="JSON", convert=parse_storage_options,
             help="fsspec options for remote URIs as JSON (default: AWS env/config, AWS_ENDPOINT_URL)")


def add_placement(opts: ConfigOptions, *, reads: bool = True, actors: bool = False, train: bool = False,
                  concurrent: ConfigOptions | bool = False) -> None:
    """Flags that override the resource plan (placement.py); its rule goes in the command's --help.
    `concurrent`: --max-concurrent too, a field of `opts` (True) or of another config (tune's sweep)."""
    from ..placement import DATA_SHARE, START_TIMEOUT_S

    p = opts.parser
    p.epilog = ("Placement is planned from the cluster's resources (a local Ray, or the cluster at RAY_ADDRESS)"
                + (" so that Ray Data's read tasks always keep a CPU" if reads else "")
                + "; the flags under 'placement' override it (README: Placement).")
    g = p.add_argument_group("placement")
    if actors:
        opts.add("--actors", type=int, metavar="N", group=g,
                 help="model actors (default: one per GPU; else 1 CPU actor, shrunk to what the reads leave)")
    if train:
        opts.add("--workers", type=int, metavar="N", group=g, help="Ray Train workers per run (default 1)")
        opts.add("--gpus-per-worker", type=float, metavar="N", group=g,
                 help="GPUs per Ray Train worker (default 0: CPU training)")
        opts.add("--cpus-per-worker", type=float, metavar="N", group=g,
                 help="CPUs per Ray Train worker (default 1; an equal share of what is left when even one run "
                      "does not fit whole)")
    if reads:
        opts.add("--data-cpus", type=float, metavar="N", group=g,
                 help=f"CPUs no actor or Train worker may take, kept for Ray Data's read tasks (default: "
                      f"{DATA_SHARE * 100:.0f}%% of the cluster's CPUs, at least 1)")
    if train:
        opts.add("--start-timeout", field="start_timeout_s", type=float, metavar="S", group=g,
                 help=f"seconds a Train run may wait for its workers before it fails (default {START_TIMEOUT_S:g})")
    if concurrent:
        (opts if concurrent is True else concurrent).add(
            "--max-concurrent", type=int, metavar="N", group=g,
            help="Train runs (trials, members) at once (default: as many as the cluster fits)")


MIN_TISSUE_HELP = ("min tissue fraction of a kept tile, over the whole tile (edge tiles are padded: outside the "
                   "slide is glass)")


def add_keep_ink(opts: ConfigOptions, field: str = "remove_ink") -> None:
    opts.add("--keep-ink", field=field, action="store_false",
             help="keep pen and marker ink in the tissue mask (for stains that are blue or green themselves: "
                  "IHC counterstain, Alcian blue, trichrome)")


def add_mpp_override(opts: ConfigOptions) -> None:
    from ..io.readers import READER_HELP, READERS

    opts.add("--mpp-override", type=float, metavar="MPP",
             help="level-0 µm/px for slides whose metadata lacks it or is implausible")
    opts.add("--reader", choices=READERS, help=READER_HELP)


# Archives longer than this get counts only; every slide's row is in the manifest anyway.
SLIDE_TABLE_MAX = 50
# The exit codes of the archive commands (io.manifest.exit_code, and main for 2 and 130).
EXIT_CODES_HELP = ("Exit codes: 0 every slide ok or skipped, 2 bad configuration or input, 3 some slides failed "
                   "(the summary line counts them), 130 interrupted.")


def batch_size_arg(value: str) -> int | str:
    """--batch-size: "auto" or an integer (checked by EncodeConfig)."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer or auto") from None


def print_outputs(tables: dict[str, str], run_id: str | None, tracking_uri: str | None) -> None:
    """The closing lines of an analysis command: where its tables went and its MLflow run (when logged)."""
    print("tables: " + "  ".join(tables.values()))
    if run_id:
        print(f"mlflow: run {run_id} in {tracking_uri}")


def metrics_text(scored: dict[str, float]) -> str:
    """'test_auc 0.91 [0.82, 0.97], ...': each metric with its 95% bootstrap interval (losses and counts left out)."""
    return ", ".join(f"{k} {v:.4f} [{scored[k + '_ci_low']:.4f}, {scored[k + '_ci_high']:.4f}]"
                     for k, v in scored.items() if k + "_ci_low" in scored)
