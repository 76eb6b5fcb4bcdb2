"""The `slidegrid` command: one subcommand per job, one module per subcommand (`cli/<command>.py`: its
flags and a thin call into the library), shared options in `cli/options.py`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from .. import __version__
from ..errors import SlidegridError
from ..runtime import ray_log_path, ray_logs_to
from . import (
    burden,
    demo,
    encode,
    encoders,
    info,
    pn_stage,
    predict,
    probe,
    segment,
    show,
    synth,
    tiles,
    tissue,
    train,
    train_encoder,
    train_seg,
    tune,
)
from .options import Parser

# Each entry adds one subcommand; keep them in the order users meet them.
REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    info.register,
    synth.register,
    tissue.register,
    tiles.register,
    encoders.register,
    encode.register,
    show.register,
    probe.register,
    train_encoder.register,
    train.register,
    tune.register,
    predict.register,
    train_seg.register,
    segment.register,
    pn_stage.register,
    burden.register,
    demo.register,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all subcommands)."""
    parser = Parser(prog="slidegrid", description="Whole-slide images to grids of tile "
                                     "embeddings, and models trained on them, on Ray.")
    parser.add_argument("--version", action="version", version=f"slidegrid {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in REGISTRARS:
        register(sub)
    return parser


def _out_folder(args: argparse.Namespace) -> str | None:
    """The command's output folder, given or its config's default (None for commands without one)."""
    if "out" in vars(args):
        return args.out
    options = getattr(args, "options", None)
    return options.value(args, "out") if options is not None and "out" in options.fields() else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `slidegrid` console script; exit code 2 with one `error:` line on failure."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Ray's own logs go to a file beside the outputs; --debug keeps them on the terminal.
    ray_log = None if args.debug else ray_log_path(_out_folder(args))
    try:
        with ray_logs_to(ray_log):
            return int(args.func(args) or 0)
    except SlidegridError as exc:
        if args.debug:
            raise
        print(f"error: {exc.input}: {exc.reason}", file=sys.stderr)
        return 2
    except OSError as exc:
        if args.debug:
            raise
        print(f"error: {exc.filename or args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130

