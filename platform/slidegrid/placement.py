"""Resource planning: where each stage of a Ray job runs, decided from the cluster's resources.

Every job that mixes Ray Data with actor pools (encode, segment) or with Ray Train workers and Tune trials
(train, tune, train-seg, train-encoder) plans here, so that the read tasks always have a CPU: actors and
Train workers never take the CPUs kept for Ray Data (`data_cpus`), concurrent runs are capped to what
fits, and Train workers get fractional CPUs only when nothing else fits (a 2-CPU laptop). On a small
machine a Train run that holds every CPU waits forever for reads it starved (ray-project/ray#44687,
../shared/RAY-NOTES.md "Starvation on small machines"); the same code plans a 64-GPU cluster.

`Watchdog` turns a wait that cannot end into one clear line within a minute.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

log = logging.getLogger(__name__)

# The smallest CPU share worth giving an actor or Train worker; below it a plan is refused.
MIN_CPUS = 0.05
# Share of a cluster's CPUs kept for Ray Data reads by default (at least one CPU).
DATA_SHARE = 0.25
# Tune's trial actors only wait on their Train run (RAY-NOTES: resources={"cpu": 0.01}).
TRIAL_CPUS = 0.01
# Ray Train gives a worker group this long (its default, or this variable) to start before a failed start.
TRAIN_START_ATTEMPT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
# Default time a Train run may wait for its workers (an autoscaling cluster adds nodes in minutes).
START_TIMEOUT_S = 600.0

OVERRIDE_HELP = ("Placement is planned from the cluster's resources; override with --data-cpus (CPUs kept "
                 "for Ray Data reads), --cpus-per-worker, --workers, --max-concurrent.")


@dataclass(frozen=True)
class ClusterShape:
    """The resources a plan is made for: totals and the largest node's CPUs."""

    cpus: float
    gpus: float
    node_cpus: float  # CPUs of the largest alive node: one task or worker never spans nodes
    # A cluster this process connected to may add nodes (autoscaling, GPU workers from 0): a request it cannot
    # hold now is logged and waited for (bounded by the Train start timeout) instead of refused.
    elastic: bool = False

    @classmethod
    def current(cls) -> ClusterShape:
        """The connected Ray cluster's alive nodes (elastic unless it is the local Ray `init_ray` started)."""
        import ray

        from .runtime import started_local_ray

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        largest = max((float(n.get("CPU", 0.0)) for n in nodes), default=0.0)
        total = ray.cluster_resources()
        return cls(float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0)), largest,
                   elastic=not started_local_ray())


def _cannot_fit(shape: ClusterShape, flag: str, reason: str) -> None:
    """Refuse a request a fixed cluster cannot hold; on an elastic one, say so and let it wait for nodes."""
    if not shape.elastic:
        raise ConfigError(flag, reason)
    log.warning("%s: %s; waiting for the cluster to add nodes (a Train run gives up after --start-timeout)",
                flag, reason)


def data_reserve(shape: ClusterShape, data_cpus: float | None = None) -> float:
    """CPUs no actor or Train worker may take, so Ray Data's read tasks always run.

    Default: a quarter of the cluster's CPUs, at least 1 (a 2-CPU laptop keeps 1, a 64-CPU node 16).
    Raises ConfigError when an explicit `--data-cpus` is not positive or exceeds the cluster.
    """
    if data_cpus is not None:
        if data_cpus <= 0:
            raise ConfigError("--data-cpus", "must be positive")
        if data_cpus > shape.cpus:
            _cannot_fit(shape, "--data-cpus", f"{data_cpus:g} exceed the cluster's {shape.cpus:g} CPUs")
        return float(data_cpus)
    return float(max(1.0, math.floor(shape.cpus * DATA_SHARE)))


@dataclass(frozen=True)
class PoolPlan:
    """An actor pool after a stage of Ray Data read tasks (encode, segment)."""

    device: str  # "cuda" or "cpu"
    actors: int  # pool size (one per GPU on GPU clusters)
    num_cpus: float  # CPUs each actor reserves
    num_gpus: float  # GPUs each actor reserves
    read_cpus: float  # CPUs each read (plan, decode) task reserves
    data_cpus: float  # CPUs kept for the read tasks
    # CPU models: torch threads per actor. A CNN takes every core's threads, like a DataLoader's main process,
    # while decode tasks interleave with it; None leaves torch's default (GPU, light models).
    torch_threads: int | None = None

    def describe(self) -> str:
        """One line for the log: what runs where."""
        return (f"{self.actors} {self.device} actor(s) x {self.num_cpus:g} CPU/{self.num_gpus:g} GPU, "
                f"read tasks {self.read_cpus:g} CPU, {self.data_cpus:g} CPU(s) kept for reads")


def plan_pool(shape: ClusterShape, *, actors: int | None = None, gpu: bool = True, light: bool = False,
              data_cpus: float | None = None) -> PoolPlan:
    """Plan the model actors of a read → model stream.

    GPU clusters (and a model that wants one): one actor per GPU, each with a CPU for its own work only when
    the reads keep theirs. CPU clusters: `actors` (default 1) actors of 1 CPU (0.25 for `light` models that
    barely compute, like mean-RGB), shrunk to what is left after the reads' share; on a cluster of a single
    CPU the actors and the reads split it, so both stages are always schedulable.
    """
    if actors is not None and actors < 1:
        raise ConfigError("--actors", "must be at least 1")
    reserve = min(data_reserve(shape, data_cpus), shape.cpus)
    if shape.gpus >= 1 and gpu and not light:
        n = actors or int(shape.gpus)
        if n > shape.gpus:
            raise ConfigError("--actors", f"{n} GPU actors need {n} GPUs; the cluster has {shape.gpus:g}")
        per = 1.0 if shape.cpus - n >= reserve else 0.0
        return PoolPlan("cuda", n, per, 1.0, min(1.0, shape.node_cpus or 1.0), reserve)
    n = actors or 1
    per = 0.25 if light else 1.0
    read = 1.0
    free = shape.cpus - reserve
    if n * per > free:
        if free >= n * MIN_CPUS:
            per = free / n
        else:  # a cluster of one CPU or less: the actors and the reads share it
            read = shape.node_cpus / 2
            per = read / n
    read = min(read, shape.node_cpus or read)
    if per < MIN_CPUS / 2 or read <= 0:
        _cannot_fit(shape, "--actors", f"{n} actor(s) and the reads do not fit in {shape.cpus:g} CPU(s); use "
                                       "fewer --actors or a larger cluster")
        per, read = (0.25 if light else 1.0), 1.0  # what a node the cluster adds will hold
    threads = None if light else max(1, (os.cpu_count() or 1) // n)
    return PoolPlan("cpu", n, round(per, 3), 0.0, round(read, 3), reserve, threads)


@dataclass(frozen=True)
class RunPlan:
    """Concurrent Ray Train runs (trials, ensemble members) and their workers."""

    concurrent: int  # runs at once
    workers: int  # Train workers per run
    cpus_per_worker: float
    gpus_per_worker: float
    data_cpus: float  # CPUs kept for Ray Data reads (0 when the runs read no Ray Dataset)
    start_timeout_s: float  # a run whose workers cannot start within this fails with one line

    @property
    def start_attempts(self) -> int:
        """Failed worker-group starts a run tolerates (Ray Train's FailureConfig.controller_failure_limit)."""
        attempt = float(os.environ.get(TRAIN_START_ATTEMPT_ENV, 60.0))
        return max(0, math.ceil(self.start_timeout_s / attempt) - 1)

    def describe(self) -> str:
        """One line for the log: what runs where."""
        gpus = f" + {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        return (f"{self.concurrent} run(s) at once x {self.workers} worker(s) x {self.cpus_per_worker:g} CPU{gpus}, "
                f"{self.data_cpus:g} CPU(s) kept for Ray Data reads")


def plan_runs(shape: ClusterShape, *, runs: int = 1, workers: int = 1, cpus_per_worker: float | None = None,
              gpus_per_worker: float = 0.0, reads: bool = True, data_cpus: float | None = None,
              max_concurrent: int | None = None, trial_cpus: float = 0.0,
              start_timeout_s: float = START_TIMEOUT_S) -> RunPlan:
    """Plan `runs` Ray Train runs of `workers` workers each.

    Runs go at once while their workers (1 CPU each unless `cpus_per_worker`) and trial actors
    (`trial_cpus`) fit beside the CPUs kept for reads (`reads`: the runs stream a Ray Dataset) and the GPUs;
    the rest wait for a free slot. Only when not even one run fits whole and `cpus_per_worker` was not given
    do its workers share what is left (fractional CPUs). Raises ConfigError naming the flag to change when an
    explicit request cannot fit.
    """
    if workers < 1 or runs < 1:
        raise ConfigError("--workers", "must be at least 1")
    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError("--max-concurrent", "must be at least 1")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise ConfigError("--cpus-per-worker", "must be positive")
    reserve = data_reserve(shape, data_cpus) if reads else 0.0
    free = shape.cpus - reserve
    per = 1.0 if cpus_per_worker is None else float(cpus_per_worker)
    fit = math.floor((free + 1e-9) / (workers * per + trial_cpus))
    if gpus_per_worker:
        fit = min(fit, math.floor(shape.gpus / (workers * gpus_per_worker) + 1e-9))
        if shape.gpus < workers * gpus_per_worker:
            _cannot_fit(shape, "--gpus-per-worker", f"{workers} worker(s) x {gpus_per_worker:g} GPU need "
                                                    f"{workers * gpus_per_worker:g} GPU(s), the cluster has "
                                                    f"{shape.gpus:g}; train on CPUs (leave out --gpus-per-worker) "
                                                    "or on a cluster with GPUs (RAY_ADDRESS)")
    if fit < 1:
        share = math.floor((free - trial_cpus) / workers * 100) / 100  # what each worker could have now
        if gpus_per_worker and shape.gpus < workers * gpus_per_worker:
            pass  # said above: an elastic cluster is adding GPU nodes
        elif cpus_per_worker is None and share >= MIN_CPUS:
            per = share  # the only way on a small machine: the workers share what the reads leave
        elif cpus_per_worker is None:
            _cannot_fit(shape, "--data-cpus", f"keeping {reserve:g} of the cluster's {shape.cpus:g} CPUs for reads "
                                              "leaves none for Train workers; lower --data-cpus or add CPUs")
        else:
            kept = f" beside the {reserve:g} kept for Ray Data's reads" if reserve else ""
            _cannot_fit(shape, "--cpus-per-worker", f"{workers} worker(s) x {per:g} CPU do not fit in the cluster's "
                                                    f"{shape.cpus:g} CPUs{kept}; use --cpus-per-worker "
                                                    f"{max(share, 0):g} or fewer --workers")
        fit = 1
    if per > shape.node_cpus > 0:
        _cannot_fit(shape, "--cpus-per-worker", f"{per:g} CPUs per worker exceed the largest node's "
                                                f"{shape.node_cpus:g}")
    concurrent = int(min(runs, fit, max_concurrent or runs))
    return RunPlan(concurrent, workers, per, float(gpus_per_worker), reserve, float(start_timeout_s))


def describe_demand(status: Any) -> str:
    """'2 x {CPU: 1}' style text of what an autoscaler ClusterStatus says is waiting for resources."""
    parts = []
    demands = status.resource_demands
    for kind, items in (("task/actor", demands.ray_task_actor_demand),
                        ("placement group", demands.placement_group_demand)):
        for d in items:
            for b in d.bundles_by_count:
                shape = ", ".join(f"{k}: {v:g}" for k, v in sorted(b.bundle.items()))
                parts.append(f"{b.count} {kind}(s) x {{{shape}}}")
    return "; ".join(parts)


class Watchdog:
    """Says, in one log line, when a job is waiting for resources it may never get.

    A daemon thread asks Ray's GCS every `poll_s` what is waiting to be scheduled (the autoscaler's demand,
    available without the dashboard). When something has waited `stall_s` seconds with no `tick()` of
    progress in that time, it logs what waits, what is free, and `hint` (the flag that fixes it); again
    every `stall_s` while it lasts. Use as a context manager around the blocking part of a job.
    """

    def __init__(self, what: str, hint: str, stall_s: float = 60.0, poll_s: float = 5.0) -> None:
        self.what, self.hint, self.stall_s, self.poll_s = what, hint, stall_s, poll_s
        self._progress = time.monotonic()
        self._waiting_since: float | None = None
        self._said = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slidegrid-watchdog", daemon=True)
        self.warnings: list[str] = []

    def tick(self) -> None:
        """Record progress (a batch, a slide, an epoch)."""
        self._progress = time.monotonic()

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=self.poll_s + 5)

    def _demand(self) -> str:
        import ray
        from ray.autoscaler.v2.sdk import get_cluster_status

        return describe_demand(get_cluster_status(ray.get_runtime_context().gcs_address))

    def check(self, demand: str, now: float) -> str | None:
        """The warning due at `now` given what waits (`demand`, '' when nothing), or None."""
        if not demand:
            self._waiting_since = None
            return None
        self._waiting_since = self._waiting_since or now
        since = max(self._waiting_since, self._progress)
        if now - since < self.stall_s or now - self._said < self.stall_s:
            return None
        self._said = now
        return (f"{self.what}: no progress for {now - since:.0f} s, waiting for resources: {demand}. "
                f"{self.hint}")

    def _run(self) -> None:
        import ray

        while not self._stop.wait(self.poll_s):
            try:
                demand = self._demand()
            except Exception as exc:  # the GCS is gone (shutdown) or answers late: try again
                log.debug("watchdog: %s", exc)
                continue
            message = self.check(demand, time.monotonic())
            if message:
                free = ray.available_resources()
                message += f" (free now: {free.get('CPU', 0):g} CPU, {free.get('GPU', 0):g} GPU)"
                self.warnings.append(message)
                log.warning(message)
