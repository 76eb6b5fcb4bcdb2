"""Connecting to Ray: the cluster a job runs in (RAY_ADDRESS / `ray job submit`) or an embedded local one."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
_started_here = False  # whether init_ray started the Ray this process uses


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Connect to (or start) Ray once and return the cluster's resources.

    With RAY_ADDRESS set (as under `ray job submit`; `auto` for a `ray start` cluster on this machine) or an
    explicit address, connect to that cluster; otherwise start a local one of our own, even where another
    Ray runs on the machine (or left a stale address behind). Re-using an initialized Ray lets tests and
    notebooks share one.
    """
    import ray

    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS")
        if target:
            ray.init(address=target, logging_level=logging.WARNING)
        else:
            # The dashboard (on 127.0.0.1) serves the state API that Ray Train's placement-group cleaner needs:
            # without it a Train run whose controller dies keeps its workers' CPUs, and the cleaner logs a
            # warning every second.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=None, logging_level=logging.WARNING)
            global _started_here
            _started_here = True
    resources = ray.cluster_resources()
    log.info("ray resources: %s", resources)
    return resources


def started_local_ray() -> bool:
    """Whether the Ray in use is the local one `init_ray` started (fixed size), not a cluster we joined."""
    return _started_here
