"""The slide-stream skeleton `encode` and `segment` share: plan → read → model actors that write → driver
that coordinates → commit tasks. A light model (mean-RGB) runs in the read tasks instead of actors.

    slides ─► plan (CPU task per slide) ─► read (CPU tasks) ─► model actor pool (GPU or CPU), each batch's rows
           written by the actor as part files under <out>/.staging/<slide_id>/ ─► driver: small records only
           (slide id, tile indices, part name, outcome) ─► the slide's last tile seen: a commit task (CPU) merges
           its parts into the slide's outputs atomically and deletes them ─► manifest row

No embedding or map passes through the driver: it holds a bitmap of the tiles seen per slide in flight, so its
CPU and memory do not grow with the code size or the archive, and one driver coordinates a cluster of GPUs.
Exactly once: outputs appear under their final names whole (atomic writes), a part is named after its tile
indices (a retried task rewrites the same name) and a commit keeps each tile once; a re-run removes the
staging a killed run left. Placement comes from `placement.plan_pool` (the read tasks always keep a CPU).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SlidegridError, error_text
from ..io.archive import SlideRecord
from ..io.manifest import ManifestWriter, SlideResult
from ..io.slides import open_slide_cached
from ..io.storage import is_remote
from ..placement import OVERRIDE_HELP, ClusterShape, PoolPlan, Watchdog, plan_pool
from .staging import part_uri, read_parts, remove, slide_staging, staging_root, write_part

log = logging.getLogger(__name__)

# Memory each read task reserves (Ray's `memory` resource): a chunk of decoded tiles, the reader's decoded-tile
# cache and the slide handle. Also what keeps decode and the model in separate stages: Ray Data fuses adjacent
# map stages only when their resource requests are equal, and fused, decode and inference would take turns in
# one process instead of overlapping.
READ_TASK_MEMORY = 512 * 2**20
# Columns of the records the model stage returns to the driver (none of them grows with the code size).
RECORD_COLUMNS = ("slide_id", "status", "error", "n_tiles", "meta", "part", "indices")


def retry_once(fn: Callable[..., Any], *args: Any) -> Any:
    """Run fn; on an unexpected error (a dropped connection, a worker shutting down) re-open and try again.

    A SlidegridError is the slide's own fault (corrupt, no mpp, not found) and is not retried.
    """
    try:
        return fn(*args)
    except SlidegridError:
        raise
    except Exception:
        open_slide_cached.cache_clear()
        return fn(*args)


@dataclass(frozen=True)
class StreamSpec:
    """What a job plugs into the skeleton: its stages and its commit.

    Row contract through the stream: every row has `slide_id`, `status` ("ok" or a manifest status), `error`,
    `n_tiles` (the slide's planned tiles), `meta` (JSON: the slide's metadata with `plan_started`; non-empty on
    at least the row of tile 0, "" elsewhere) and `index` (the tile's number 0..n_tiles-1, -1 on a marker row
    that only carries a slide's outcome).
    """

    name: str  # "encode" / "segment": progress bar, log and watchdog lines
    out: str
    plan: Callable[..., list[dict[str, Any]]]  # Ray Data flat_map fn: archive row -> rows
    plan_kwargs: dict[str, Any]
    read: Callable[..., dict[str, np.ndarray]]  # map_batches fn: adds the `image` column
    read_kwargs: dict[str, Any]
    read_batch: int  # rows per read call
    actor: type  # model actor: __init__(**actor_kwargs(placement)); __call__(batch) -> batch with `payload`
    actor_kwargs: Callable[[PoolPlan], dict[str, Any]]
    actor_batch: Callable[[PoolPlan], int]  # rows per model call, given the placement (GPU or CPU)
    payload: tuple[str, ...]  # per-tile columns staged for the commit (besides `index`)
    # On a CPU worker: (slide_id, meta, columns ordered by tile index) -> {"tiles": n, ...}; writes the outputs.
    commit: Callable[[str, dict[str, Any], dict[str, np.ndarray]], dict[str, Any]]
    shash: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    actors: int | None = None
    data_cpus: float | None = None
    light: bool = False  # the model barely computes (mean-RGB): it runs in the read tasks (read_model_sink)
    progress: bool = True


@dataclass
class StreamResult:
    """What a stream did: tiles committed, the commits' extra results, and what reached the driver."""

    tiles: int
    seconds: float  # from the pipeline's start (Ray running) to the last commit
    extras: dict[str, dict[str, Any]]  # per committed slide: its commit's result
    driver_columns: set[str]  # every column the driver received
    driver_bytes: int  # bytes of every batch the driver received


class SinkActor:
    """The model stage: runs the job's actor on a batch, writes each slide's rows as a part file and returns
    only records (RECORD_COLUMNS), one per slide of the batch."""

    def __init__(self, actor: type, actor_kwargs: dict[str, Any], out: str, payload: tuple[str, ...],
                 storage_options: Mapping[str, Any]) -> None:
        self.model = actor(**actor_kwargs)
        self.out, self.payload, self.opts = out, payload, storage_options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return write_parts(self.model(batch), self.out, self.payload, self.opts)


# The light model of this worker process (fused stage), built on its first batch: {key: model}.
_FUSED_MODELS: dict[str, Any] = {}


def read_model_sink(batch: dict[str, np.ndarray], read: Callable[..., dict[str, np.ndarray]],
                    read_kwargs: dict[str, Any], actor: type, actor_kwargs: dict[str, Any], out: str,
                    payload: tuple[str, ...], storage_options: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The fused stage of a light model (mean-RGB): read, model and part writing in one CPU task, so decoded
    tiles never cross the object store (turning a chunk of 150 KB tiles into Arrow blocks and back costs several
    times what the mean does). The model is built once per worker process."""
    key = f"{actor.__module__}.{actor.__qualname__}{sorted(actor_kwargs.items())!r}"
    model = _FUSED_MODELS.get(key)
    if model is None:
        model = _FUSED_MODELS[key] = actor(**actor_kwargs)
    return write_parts(model(read(batch, **read_kwargs)), out, payload, storage_options)


def write_parts(batch: Mapping[str, np.ndarray], out: str, payload: tuple[str, ...],
                storage_options: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Stage the ok rows of each slide of `batch` as one part; return one record per slide (a failed or skipped
    slide's record carries its outcome and no part)."""
    recs: list[tuple[Any, ...]] = []
    sids = np.asarray(batch["slide_id"]).astype(str)
    for sid in np.unique(sids):
        rows = np.flatnonzero(sids == sid)
        status, index = np.asarray(batch["status"])[rows].astype(str), np.asarray(batch["index"])[rows]
        meta = next((str(m) for m in np.asarray(batch["meta"])[rows] if m), "")
        bad = (status != "ok") | (index < 0)
        if bad.any():
            i = rows[np.argmax(bad)]
            recs.append((sid, str(batch["status"][i]), str(batch["error"][i]), 0, meta, "", b""))
            continue
        index = index.astype(np.int64)
        uri = part_uri(out, sid, index)
        write_part(uri, {"index": index, **{k: np.asarray(batch[k])[rows] for k in payload}}, storage_options)
        recs.append((sid, "ok", "", int(batch["n_tiles"][rows[0]]), meta, uri, index.astype(np.int32).tobytes()))
    if not recs:
        return {k: np.zeros(0, dtype=object) for k in RECORD_COLUMNS}
    cols = list(zip(*recs))
    return {k: np.array(v, dtype=object if k in ("meta", "indices", "error") else None)
            for k, v in zip(RECORD_COLUMNS, cols)}


def commit_slide(commit: Callable[..., dict[str, Any]], out: str, slide_id: str, meta: dict[str, Any],
                 parts: list[str], n_tiles: int, storage_options: Mapping[str, Any]) -> dict[str, Any]:
    """A Ray task: merge a slide's parts, let the job write its outputs, then delete the slide's staging."""
    columns = read_parts(parts, n_tiles, storage_options)
    result = commit(slide_id, meta, columns)
    remove(slide_staging(out, slide_id), storage_options)
    return result


@dataclass
class _Pending:
    """A slide in flight on the driver: which tiles have been staged, in which parts, and its metadata."""

    n: int
    seen: np.ndarray
    parts: set[str] = field(default_factory=set)
    meta: str = ""


class Coordinator:
    """The driver's side: records in, commit tasks out, manifest rows as slides end."""

    def __init__(self, spec: StreamSpec, uris: Mapping[str, str], writer: ManifestWriter, commit_task: Any,
                 bar: Any) -> None:
        self.spec, self.uris, self.writer, self.task, self.bar = spec, uris, writer, commit_task, bar
        self.pending: dict[str, _Pending] = {}
        self.commits: dict[Any, str] = {}
        self.committing: set[str] = set()
        self.started: dict[str, float] = {}
        self.extras: dict[str, dict[str, Any]] = {}
        self.tiles = 0
        self.columns: set[str] = set()
        self.bytes = 0

    def receive(self, batch: Mapping[str, np.ndarray]) -> None:
        """Take one batch of records from the stream."""
        self.columns.update(batch)
        self.bytes += sum(np.asarray(v).nbytes + sum(len(x) for x in v if isinstance(x, (bytes, str)))
                          for v in batch.values())
        for i in range(len(batch["slide_id"])):
            sid = str(batch["slide_id"][i])
            if self.writer.has(sid) or sid in self.committing:
                continue  # already ended (a late record of a failed slide, a duplicate after a retry)
            meta = str(batch["meta"][i])
            if meta:
                self.started.setdefault(sid, float(json.loads(meta).get("plan_started", time.time())))
            if batch["status"][i] != "ok":
                self._end(sid, str(batch["status"][i]), 0, str(batch["error"][i]))
                continue
            p = self.pending.get(sid)
            if p is None:
                n = int(batch["n_tiles"][i])
                p = self.pending[sid] = _Pending(n, np.zeros(n, bool))
            p.seen[np.frombuffer(batch["indices"][i], np.int32)] = True
            p.parts.add(str(batch["part"][i]))
            p.meta = p.meta or meta
            if p.meta and p.seen.all():
                self._commit(sid, self.pending.pop(sid))

    def _commit(self, sid: str, p: _Pending) -> None:
        ref = self.task.remote(self.spec.commit, self.spec.out, sid, json.loads(p.meta), sorted(p.parts), p.n,
                               dict(self.spec.storage_options))
        self.commits[ref] = sid
        self.committing.add(sid)

    def poll(self, timeout: float = 0.0) -> None:
        """Record the commits that have finished (waiting up to `timeout` seconds for one)."""
        import ray

        if not self.commits:
            return
        ready, _ = ray.wait(list(self.commits), num_returns=len(self.commits), timeout=timeout)
        for ref in ready:
            sid = self.commits.pop(ref)
            self.committing.discard(sid)
            try:
                extra = ray.get(ref)
            except Exception as exc:  # a commit that fails fails its slide only
                self._end(sid, "failed", 0, error_text(getattr(exc, "cause", None) or exc))
                continue
            self.extras[sid] = extra
            self.tiles += int(extra["tiles"])
            self._end(sid, "ok", int(extra["tiles"]), "")

    def drain(self) -> None:
        """Wait for every commit; a slide whose tiles did not all come back fails."""
        while self.commits:
            self.poll(timeout=1.0)
        for sid, p in list(self.pending.items()):
            self._end(sid, "failed", 0, f"{int(p.seen.sum())} of {p.n} tiles came back from the pipeline; run "
                                        "again to redo the slide")

    def _end(self, sid: str, status: str, tiles: int, error: str) -> None:
        self.pending.pop(sid, None)
        seconds = round(time.time() - self.started.get(sid, time.time()), 3)
        self.writer.add(SlideResult(sid, self.uris.get(sid, ""), status, tiles, seconds, error, self.spec.shash))
        self.bar.update(1)


def _check_shared_output(out: str) -> None:
    """Workers on every node write under `out`: on a cluster spanning hosts it must be shared storage."""
    import ray

    hosts = {n.get("NodeManagerAddress") for n in ray.nodes() if n.get("Alive")}
    if not is_remote(out) and len(hosts) > 1:
        log.warning("--out %s is a local path and the cluster spans %d hosts: every node writes there, so it must "
                    "be a shared filesystem (else use s3://...)", out, len(hosts))


def run_stream(spec: StreamSpec, todo: list[SlideRecord], writer: ManifestWriter) -> StreamResult:
    """Run the stream over `todo` (Ray started or joined here), adding one manifest row per slide as it ends.

    Removes the staging a killed run left before starting, and the run's own after the last commit.
    """
    import ray
    from tqdm import tqdm

    from ..runtime import init_ray

    init_ray()
    t0 = time.time()  # after Ray's start: the pipeline's throughput, not the cluster's boot
    remove(staging_root(spec.out), spec.storage_options)
    _check_shared_output(spec.out)
    place = plan_pool(ClusterShape.current(), actors=spec.actors, light=spec.light, data_cpus=spec.data_cpus)
    log.info("%s placement: %s", spec.name, "light model, run in the read tasks" if spec.light else place.describe())
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = spec.progress
    ctx.execution_options.preserve_order = False
    # Ray Data reserves a share of the CPUs for each stage by default; with a light model there are only the
    # plan and read stages, and the plans (a tissue mask per slide) would keep half the CPUs idle. Restored after.
    reservation = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = not spec.light
    items = [{"slide_id": r.slide_id, "uri": r.uri, "mpp": r.mpp} for r in todo]
    planned = (ray.data.from_items(items, override_num_blocks=min(len(items), 1000))
               .flat_map(spec.plan, fn_kwargs=spec.plan_kwargs, num_cpus=place.read_cpus))
    sink = {"actor": spec.actor, "actor_kwargs": spec.actor_kwargs(place), "out": spec.out, "payload": spec.payload,
            "storage_options": dict(spec.storage_options)}
    if spec.light:  # the model in the read tasks: as many as the cluster has CPUs, no tile leaves its task
        ds = planned.map_batches(read_model_sink, fn_kwargs={"read": spec.read, "read_kwargs": spec.read_kwargs,
                                                             **sink},
                                 batch_size=spec.read_batch, batch_format="numpy", num_cpus=place.read_cpus,
                                 memory=READ_TASK_MEMORY)
    else:
        ds = (
            planned.map_batches(spec.read, fn_kwargs=spec.read_kwargs, batch_size=spec.read_batch,
                                batch_format="numpy", num_cpus=place.read_cpus, memory=READ_TASK_MEMORY)
            .map_batches(
                SinkActor, fn_constructor_kwargs=sink, batch_size=spec.actor_batch(place), batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=place.actors,
                                                   max_tasks_in_flight_per_actor=2),
                # Ray Data restarts pool actors on node loss by itself (max_restarts=-1).
                num_gpus=place.num_gpus, num_cpus=place.num_cpus,
            )
        )
    task = ray.remote(commit_slide).options(num_cpus=place.read_cpus)
    bar = tqdm(total=len(todo), desc=spec.name, unit="slide", disable=not spec.progress)
    coord = Coordinator(spec, {r.slide_id: r.uri for r in todo}, writer, task, bar)
    with Watchdog(spec.name, OVERRIDE_HELP) as watchdog:
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                watchdog.tick()
                coord.receive(batch)
                coord.poll()
            coord.drain()
        finally:
            ctx.op_resource_reservation_enabled = reservation
            bar.close()
            writer.flush()
    if log.isEnabledFor(logging.DEBUG):  # per-stage time and CPU (`--debug`)
        log.debug("%s stream, Ray Data stats:\n%s", spec.name, ds.stats())
    remove(staging_root(spec.out), spec.storage_options)
    return StreamResult(coord.tiles, time.time() - t0, coord.extras, coord.columns, coord.bytes)
