"""Options and output helpers the commands share (storage, placement, tissue, tables)."""

from __future__ import annotations

import argparse
from typing import Any


def add_storage(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-options", metavar="JSON", default=None,
                   help="fsspec options for remote URIs as JSON (default: AWS env/config, AWS_ENDPOINT_URL)")


def add_placement(p: argparse.ArgumentParser, *, reads: bool = True, actors: bool = False, train: bool = False,
                   concurrent: bool = False) -> None:
    """Flags that override the resource plan (placement.py); its rule goes in the command's --help."""
    from ..placement import DATA_SHARE, START_TIMEOUT_S

    p.epilog = ("Placement is planned from the cluster's resources (a local Ray, or the cluster at RAY_ADDRESS)"
                + (" so that Ray Data's read tasks always keep a CPU" if reads else "")
                + "; the flags under 'placement' override it (README: Placement).")
    g = p.add_argument_group("placement")
    if actors:
        g.add_argument("--actors", type=int, default=None, metavar="N",
                       help="model actors (default: one per GPU; else 1 CPU actor, shrunk to what the reads leave)")
    if train:
        g.add_argument("--workers", type=int, default=None, metavar="N",
                       help="Ray Train workers per run (default 1)")
        g.add_argument("--gpus-per-worker", type=float, default=None, metavar="N",
                       help="GPUs per Ray Train worker (default 0: CPU training)")
        g.add_argument("--cpus-per-worker", type=float, default=None, metavar="N",
                       help="CPUs per Ray Train worker (default 1; an equal share of what is left when even one "
                            "run does not fit whole)")
    if reads:
        g.add_argument("--data-cpus", type=float, default=None, metavar="N",
                       help=f"CPUs no actor or Train worker may take, kept for Ray Data's read tasks (default: "
                            f"{DATA_SHARE * 100:.0f}%% of the cluster's CPUs, at least 1)")
    if train:
        g.add_argument("--start-timeout", dest="start_timeout_s", type=float, default=None, metavar="S",
                       help=f"seconds a Train run may wait for its workers before it fails (default {START_TIMEOUT_S:g})")
    if concurrent:
        g.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                       help="Train runs (trials, members) at once (default: as many as the cluster fits)")


def given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The named options the user set (None: unset, so the config's own default applies)."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None}


MIN_TISSUE_HELP = ("min tissue fraction of a kept tile, over the whole tile (edge tiles are padded: outside the "
                   "slide is glass)")


def add_keep_ink(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-ink", action="store_true",
                   help="keep pen and marker ink in the tissue mask (for stains that are blue or green themselves: "
                        "IHC counterstain, Alcian blue, trichrome)")


def add_mpp_override(p: argparse.ArgumentParser) -> None:
    from ..io.readers import READER_HELP, READERS

    p.add_argument("--mpp-override", type=float, default=None, metavar="MPP",
                   help="level-0 µm/px for slides whose metadata lacks it or is implausible")
    p.add_argument("--reader", choices=READERS, default="auto", help=READER_HELP)


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
