"""Resource planning: every plan leaves Ray Data's reads a CPU, from a 1-CPU node to a 64-GPU cluster; a wait
that cannot end is said within a minute; a Train run that cannot start fails with one line; an encode on a
cluster whose only worker node has 1 CPU finishes with the same grids as on the session's Ray."""

from __future__ import annotations

import time

import numpy as np
import pytest

from _scenarios import run_scenario
from slidegrid.errors import ConfigError
from slidegrid.placement import TRIAL_CPUS, ClusterShape, Watchdog, plan_pool, plan_runs

LAPTOP = ClusterShape(cpus=2, gpus=0, node_cpus=2)
TEST_RAY = ClusterShape(cpus=4, gpus=0, node_cpus=4)
ONE_CPU_WORKER = ClusterShape(cpus=1, gpus=0, node_cpus=1)
GPU_CLUSTER = ClusterShape(cpus=8 * 96, gpus=64, node_cpus=96)  # 8 nodes x (8 GPUs, 96 CPUs)

SHAPES = [ONE_CPU_WORKER, LAPTOP, TEST_RAY, ClusterShape(3, 0, 3), ClusterShape(16, 0, 8), GPU_CLUSTER]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s.cpus:g}cpu-{s.gpus:g}gpu")
@pytest.mark.parametrize("light", [True, False], ids=["light", "cnn"])
def test_every_pool_plan_leaves_a_read_task_room(shape, light):
    plan = plan_pool(shape, light=light)
    assert plan.actors * plan.num_cpus + plan.read_cpus <= shape.cpus + 1e-9
    assert 0 < plan.read_cpus <= 1 and plan.read_cpus <= shape.node_cpus


def test_pool_plans_by_cluster():
    cnn = plan_pool(LAPTOP)
    assert (cnn.device, cnn.actors, cnn.num_cpus, cnn.read_cpus, cnn.data_cpus) == ("cpu", 1, 1.0, 1.0, 1.0)
    assert plan_pool(LAPTOP, light=True).num_cpus == 0.25
    tiny = plan_pool(ONE_CPU_WORKER)  # the actor and the reads split the one CPU
    assert (tiny.num_cpus, tiny.read_cpus) == (0.5, 0.5)
    gpu = plan_pool(GPU_CLUSTER)
    assert (gpu.device, gpu.actors, gpu.num_gpus, gpu.num_cpus, gpu.data_cpus) == ("cuda", 64, 1.0, 1.0, 192.0)
    assert plan_pool(GPU_CLUSTER, light=True).device == "cpu"  # mean-RGB needs no GPU
    with pytest.raises(ConfigError, match="--actors"):
        plan_pool(GPU_CLUSTER, actors=65)
    with pytest.raises(ConfigError, match="--data-cpus"):
        plan_pool(LAPTOP, data_cpus=3)


@pytest.mark.parametrize("shape", [LAPTOP, TEST_RAY, ClusterShape(3, 0, 3), ClusterShape(16, 0, 8)],
                         ids=lambda s: f"{s.cpus:g}cpu")
@pytest.mark.parametrize("runs,workers", [(1, 1), (2, 1), (3, 2), (8, 1)])
def test_every_run_plan_leaves_the_reads_a_cpu(shape, runs, workers):
    plan = plan_runs(shape, runs=runs, workers=workers, trial_cpus=TRIAL_CPUS)
    held = plan.concurrent * (plan.workers * plan.cpus_per_worker + TRIAL_CPUS)
    assert 1 <= plan.concurrent <= runs
    assert shape.cpus - held >= plan.data_cpus - 1e-9 >= 1 - 1e-9


def test_run_plans_by_cluster():
    # A 2-CPU laptop: one ensemble member at a time (its trial actor takes 0.01 CPU), one CPU for the reads.
    p = plan_runs(LAPTOP, runs=2, workers=1, trial_cpus=TRIAL_CPUS)
    assert (p.concurrent, p.cpus_per_worker, p.data_cpus) == (1, 0.99, 1.0)
    assert plan_runs(LAPTOP, runs=1, workers=1).cpus_per_worker == 1.0
    # Two workers do not fit whole beside the reads: they share the one CPU left (the only way).
    p = plan_runs(LAPTOP, workers=2)
    assert (p.concurrent, p.cpus_per_worker) == (1, 0.5)
    with pytest.raises(ConfigError, match=r"--cpus-per-worker 0\.5"):
        plan_runs(LAPTOP, workers=2, cpus_per_worker=1)
    # Without a Ray Dataset (aggregator training) nothing is kept back.
    assert plan_runs(LAPTOP, workers=2, reads=False).cpus_per_worker == 1.0
    # The test suite's Ray (4 logical CPUs): both members at once.
    assert plan_runs(TEST_RAY, runs=2, trial_cpus=TRIAL_CPUS).concurrent == 2
    assert plan_runs(TEST_RAY, runs=4, max_concurrent=1).concurrent == 1
    # 64 GPUs: eight 8-GPU trials at once, a quarter of the CPUs kept for reads.
    p = plan_runs(GPU_CLUSTER, runs=20, workers=8, gpus_per_worker=1, trial_cpus=TRIAL_CPUS)
    assert (p.concurrent, p.cpus_per_worker, p.data_cpus) == (8, 1.0, 192.0)
    with pytest.raises(ConfigError, match="--gpus-per-worker"):
        plan_runs(LAPTOP, gpus_per_worker=1)
    with pytest.raises(ConfigError, match="--data-cpus"):
        plan_runs(LAPTOP, data_cpus=2)


def test_an_elastic_cluster_waits_for_nodes_instead_of_refusing(caplog):
    """A cluster we joined may autoscale (GPU workers from 0, a head with no CPUs): plan what one node would
    hold and wait (the Train start timeout bounds it) rather than refuse; a local Ray we started is fixed."""
    empty = ClusterShape(cpus=0, gpus=0, node_cpus=0, elastic=True)
    p = plan_runs(empty, runs=3, workers=4, gpus_per_worker=1)
    assert (p.concurrent, p.workers, p.cpus_per_worker, p.gpus_per_worker) == (1, 4, 1.0, 1.0)
    assert "waiting for the cluster to add nodes" in caplog.text
    pool = plan_pool(empty)
    assert (pool.num_cpus, pool.read_cpus) == (1.0, 1.0)
    with pytest.raises(ConfigError, match="--gpus-per-worker"):
        plan_runs(ClusterShape(cpus=0, gpus=0, node_cpus=0), gpus_per_worker=1)


def test_start_timeout_counts_ray_train_start_attempts(monkeypatch):
    monkeypatch.delenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", raising=False)
    assert plan_runs(LAPTOP, start_timeout_s=600).start_attempts == 9  # 10 x 60 s
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "5")
    assert plan_runs(LAPTOP, start_timeout_s=12).start_attempts == 2


def test_watchdog_speaks_only_after_a_stall_with_something_waiting():
    dog = Watchdog("encode", "use --data-cpus", stall_s=60)
    dog._progress = 0.0  # last progress at t = 0 s
    waiting = "1 task/actor(s) x {CPU: 1}"
    assert dog.check("", 100) is None  # nothing waits: a slow job, not a stuck one
    assert dog.check(waiting, 101) is None  # waiting only since now
    assert dog.check(waiting, 160) is None
    message = dog.check(waiting, 162)
    assert message == f"encode: no progress for 61 s, waiting for resources: {waiting}. use --data-cpus"
    assert dog.check(waiting, 163) is None  # once per stall period
    dog._progress = 200.0  # progress while the demand stays: tasks queue behind busy CPUs, normal
    assert dog.check(waiting, 250) is None
    assert dog.check(waiting, 261) is not None
    assert dog.check("", 262) is None and dog._waiting_since is None


def _hog(ray, cpus: float):
    """An actor that holds `cpus` CPUs and does nothing (defined here: workers cannot import test modules)."""

    class Hog:
        def ready(self) -> bool:
            return True

    hog = ray.remote(num_cpus=cpus)(Hog).remote()
    ray.get(hog.ready.remote())
    return hog


def test_watchdog_names_a_task_that_no_cpu_can_take(ray_local):
    import ray

    hog = _hog(ray, ray.cluster_resources()["CPU"])
    starved = ray.remote(num_cpus=1)(lambda: 1).remote()
    try:
        with Watchdog("test job", "free a CPU", stall_s=2, poll_s=0.5) as dog:
            deadline = time.monotonic() + 30
            while not dog.warnings and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        ray.kill(hog)
    assert dog.warnings, "the watchdog never said the task was waiting"
    assert "{CPU: 1}" in dog.warnings[0] and "free now: 0 CPU" in dog.warnings[0]
    assert ray.get(starved, timeout=60) == 1  # it runs once the CPUs are back


def _never_runs(config):  # a Train loop whose workers never get a CPU
    raise AssertionError("the workers started")


@pytest.mark.timeout(240)
def test_train_run_that_cannot_start_fails_with_one_line(ray_local, tmp_path, monkeypatch):
    import ray

    from slidegrid.train.runner import run_trainer

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "5")
    plan = plan_runs(ClusterShape.current(), reads=False, start_timeout_s=10)
    hog = _hog(ray, ray.cluster_resources()["CPU"] - 0.5)
    t0 = time.monotonic()
    try:
        with pytest.raises(ConfigError, match=r"could not start 1 worker\(s\).*within 10 s") as err:
            run_trainer(_never_runs, {}, "cannot-start", str(tmp_path), plan, max_failures=0)
    finally:
        ray.kill(hog)
    assert "\n" not in str(err.value) and "--workers" in str(err.value)
    assert time.monotonic() - t0 < 120


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_encode_on_a_cluster_whose_only_worker_has_one_cpu(tmp_path, ray_local):
    from _cases import synthetic_archive
    from slidegrid.encode import EncodeConfig, run_encode
    from slidegrid.geometry.tiling import GridSpec
    from slidegrid.io.grids import grid_uri, read_grid

    archive = synthetic_archive(tmp_path / "slides", "s", 2, 1536, seed=70, height=1024)
    out = tmp_path / "one-cpu"
    report = run_scenario("one_cpu_worker", archive, out, 64, timeout=540)
    for name, got in report.items():
        assert [r["status"] for r in got["results"]] == ["ok", "ok"], (name, got["results"])
        assert got["plan"]["num_cpus"] + got["plan"]["read_cpus"] <= 1.0
    # The same grids as on the session's Ray (4 CPUs): the placement changes where, never what.
    ref = tmp_path / "ref"
    run_encode(EncodeConfig(input=str(archive), out=str(ref), dtype="float32", mlflow=False, progress=False,
                            grid=GridSpec(tile_size=64)))
    for sid in ("s0", "s1"):
        a, b = read_grid(grid_uri(str(ref), sid)), read_grid(grid_uri(str(out / "mean-rgb"), sid))
        oa, ob = np.lexsort((a.col, a.row)), np.lexsort((b.col, b.row))
        assert len(a.row) > 0
        np.testing.assert_array_equal(a.embedding[oa], b.embedding[ob])
