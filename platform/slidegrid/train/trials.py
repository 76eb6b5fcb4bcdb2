"""Ray Train runs as Ray Tune trials that free their workers when they end.

Tune's function-trial bridge (`TuneReportCallback`) leaves a stopped trial's Train run behind: ASHA stops
the trial, the run's next report blocks on a queue nobody reads, its worker group keeps its CPUs, and the
next trial waits until Tune force-kills the actor ten minutes later (`TUNE_FORCE_TRIAL_CLEANUP_S`); a
killed controller also leaks its placement group when the dashboard's state API is off
(../shared/RAY-NOTES.md). Here each trial is a class trainable that runs the Train run in a thread, reads
its reports from an unbounded queue, and, when Tune stops the trial (ASHA, failure, end of the sweep),
aborts the run's controller in `cleanup()`: Ray Train then shuts the workers down and removes their
placement group before the trial actor exits.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from ray import tune
from ray.train.v2._internal.execution.callback import ControllerCallback
from ray.train.v2.api.callback import UserCallback

CHECKPOINT_PATH = "checkpoint_path"  # metric key: the Train checkpoint reported with the result
_ABORT_WAIT_S = 60.0


class _Reports(UserCallback):
    """Forwards rank 0's reported metrics (and the checkpoint path) from the Train controller to the trial."""

    def __init__(self, queue) -> None:
        self._queue = queue

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        result = dict(metrics[0])
        if checkpoint is not None:
            result[CHECKPOINT_PATH] = checkpoint.path
        self._queue.put(("result", result))


class _Controller(ControllerCallback):
    """Hands the Train controller's actor handle to the trial, so the trial can abort the run."""

    def __init__(self, queue) -> None:
        self._queue = queue

    def after_controller_start(self, train_run_context) -> None:
        import ray

        self._queue.put(("controller", ray.get_runtime_context().current_actor))


class TrainRunTrial(tune.Trainable):
    """A Tune trial whose body is one Ray Train run: `run(config, fixed, callbacks, trial_id)` must call
    `trainer.fit()` with `callbacks` in its RunConfig; `config` holds the trial's sampled values, `fixed`
    what every trial shares (`run_trials`). Each Train report is one Tune result."""

    run: Callable[[dict[str, Any], dict[str, Any], list, str], Any]  # set by `trial_for`

    def setup(self, config: dict[str, Any], **fixed: Any) -> None:
        from ray.util.queue import Queue

        self._queue = Queue(actor_options={"num_cpus": 0})
        self._controller = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fit, args=(dict(config), fixed), daemon=True)
        self._thread.start()

    def _fit(self, config: dict[str, Any], fixed: dict[str, Any]) -> None:
        try:
            self.run(config, fixed, [_Reports(self._queue), _Controller(self._queue)], self.trial_id)
        except BaseException as exc:  # surfaced by step() as the trial's error
            self._error = exc
        finally:
            self._queue.put(("end", None))

    def _next(self, timeout: float | None = None) -> tuple[str, Any]:
        kind, value = self._queue.get(timeout=timeout)
        if kind == "controller":
            self._controller = value
        return kind, value

    def step(self) -> dict[str, Any]:
        """The run's next report; at its end Tune's 'finished' marker (or the run's error)."""
        from ray.tune.result import DONE, RESULT_DUPLICATE

        while True:
            kind, value = self._next()
            if kind == "result":
                return value
            if kind == "end":
                if self._error is not None:
                    raise self._error
                return {RESULT_DUPLICATE: True, DONE: True}

    def cleanup(self) -> None:
        """Abort a run still going (the trial was stopped) and wait until its workers are gone."""
        import ray
        from ray.util.queue import Empty

        deadline = time.monotonic() + _ABORT_WAIT_S
        while self._thread.is_alive() and self._controller is None and time.monotonic() < deadline:
            try:
                if self._next(timeout=1)[0] == "end":
                    break
            except Empty:
                pass
        if self._thread.is_alive() and self._controller is not None:
            # abort ends the controller process: its reply never comes.
            with contextlib.suppress(ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                ray.get(self._controller.abort.remote(), timeout=_ABORT_WAIT_S)
        self._thread.join(timeout=_ABORT_WAIT_S)


def trial_for(run: Callable[[dict[str, Any], dict[str, Any], list, str], Any], name: str):
    """A Tune trainable (class) whose trials call `run(config, fixed, callbacks, trial_id)`; `run` must be
    importable (it travels to the trial actors by reference)."""
    return type(name, (TrainRunTrial,), {"run": staticmethod(run)})


def run_trials(trainable, param_space: dict[str, Any], fixed: dict[str, Any], plan, name: str, storage: str, *,
               what: str, scheduler=None, metric: str | None = None, mode: str | None = None,
               num_samples: int = 1):
    """Run Tune trials of a `trial_for` trainable, `plan.concurrent` at once (placement.plan_runs); returns
    Tune's ResultGrid. `param_space` is what Tune samples (the trials' config, shown and logged); `fixed`
    goes to every trial as is, with `fixed["plan"] = plan`, which places each trial's Train run. Each trial's
    actor takes `placement.TRIAL_CPUS`. A Watchdog says when trials wait for resources."""
    import ray.tune

    from ..placement import OVERRIDE_HELP, TRIAL_CPUS, Watchdog

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, **fixed, plan=plan), {"cpu": TRIAL_CPUS}),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric=metric, mode=mode, num_samples=num_samples, scheduler=scheduler,
                                    max_concurrent_trials=plan.concurrent),
        # The Train runs keep their own checkpoints (Ray Train storage); Tune's would be empty.
        run_config=ray.tune.RunConfig(name=name, storage_path=storage, verbose=1,  # status table, no config dumps
                                      checkpoint_config=ray.tune.CheckpointConfig(checkpoint_at_end=False)),
    )
    with Watchdog(what, OVERRIDE_HELP):
        return tuner.fit()
