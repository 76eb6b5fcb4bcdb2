"""Connecting to Ray: the cluster a job runs in (RAY_ADDRESS / `ray job submit`) or an embedded local one.

Also where Ray's own logs go: `ray_logs_to` (every `slidegrid` command but `--debug`) sends them to a file, so
the terminal keeps the job's stages, progress bars and the one line per epoch the training loops print.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

log = logging.getLogger(__name__)
_started_here = False  # whether init_ray started the Ray this process uses

# A line a Ray worker prints starting with this tag reaches the terminal even while Ray's logs go to a file
# (the training loops' epoch lines, train/checkpoints.py); with --debug Ray shows it with its worker prefix.
TERMINAL_TAG = "[slidegrid] "
RAY_PRINT_LOGS = "ray_print_logs"  # the handler Ray's driver prints worker output with (ray._private.worker)


class _RayLogFile:
    """Ray's logs in one file, from the first `init_ray` until `close()`.

    What goes there: the driver's `ray` loggers (Ray core, Data, Train, Tune), the output of every Ray worker
    and actor (Train controller and workers, Data tasks; Ray forwards it to the driver, log_to_driver), and
    what the driver's native Ray core writes to file descriptor 2 (its C++ ERROR lines). Python's sys.stderr,
    where progress bars, logging and error messages go, keeps the terminal.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._handler: logging.Handler | None = None
        self._loggers: list[tuple[logging.Logger, list[logging.Handler]]] = []
        self._ray_printers: list[tuple[str, Any]] = []
        self._fd2: int | None = None  # the terminal's stderr while fd 2 points at the file
        self._stderr: tuple[TextIO, TextIO, list[logging.StreamHandler]] | None = None  # (old, new, re-pointed)

    def start(self) -> None:
        """Open the file and send Ray's driver-side logs and native stderr there (idempotent)."""
        if self._file is not None:
            return
        import ray.data  # noqa: F401  (Ray Data sets up its loggers on import: take them over after that)

        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        # Open until close(): the file outlives this call.
        self._file = open(self.path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
        print(f"Ray's logs: {self.path} (--debug shows them here)", file=sys.stderr)
        self._handler = logging.StreamHandler(self._file)
        self._handler.setLevel(logging.INFO)  # Ray Data's loggers pass DEBUG; it keeps those in its session log
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        for name in ["ray", *sorted(n for n in logging.Logger.manager.loggerDict if n.startswith("ray."))]:
            logger = logging.getLogger(name)
            consoles = [h for h in logger.handlers if type(h) is not logging.FileHandler
                        and isinstance(h, logging.StreamHandler)]
            if consoles:
                self._loggers.append((logger, list(logger.handlers)))
                for h in consoles:
                    logger.removeHandler(h)
                logger.addHandler(self._handler)
        self._native_stderr_to_file()

    def _native_stderr_to_file(self) -> None:
        """Point fd 2 at the file; Python's sys.stderr (and the log handlers on it) move to a copy of the
        terminal's fd, so only native writers (Ray's C++ core worker in the driver) land in the file."""
        assert self._file is not None
        sys.stderr.flush()
        self._fd2 = os.dup(2)
        if _writes_to_fd(sys.stderr, 2):
            old = sys.stderr
            new = open(os.dup(self._fd2), "w", buffering=1, encoding=old.encoding, errors=old.errors)  # noqa: SIM115
            handlers = [h for h in logging.getLogger().handlers
                        if isinstance(h, logging.StreamHandler) and h.stream is old]
            for h in handlers:
                h.setStream(new)
            sys.stderr = new
            self._stderr = (old, new, handlers)
        os.dup2(self._file.fileno(), 2)

    def capture_worker_output(self) -> None:
        """Replace Ray's printer of forwarded worker output (Ray 2.60's `global_worker_stdstream_dispatcher`,
        a private API: the tests fail if it moves) with one that writes to the file."""
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        self._ray_printers += [p for p in dispatcher.handlers if p[0] == RAY_PRINT_LOGS]
        dispatcher.remove_handler(RAY_PRINT_LOGS)
        dispatcher.remove_handler(self.path)
        dispatcher.add_handler(self.path, self._worker_lines)

    def _worker_lines(self, batch: dict[str, Any]) -> None:
        """One batch of a worker's output lines: tagged ones to the terminal, all to the file."""
        who = batch.get("actor_name") or batch.get("task_name") or ""
        prefix = f"({who} pid={batch.get('pid')}) " if who else f"({batch.get('pid')}) "
        for line in batch.get("lines", []):
            if line.startswith(TERMINAL_TAG):
                print(line[len(TERMINAL_TAG):], flush=True)
            if self._file is not None:
                self._file.write(prefix + line + "\n")

    def close(self) -> None:
        """Give everything back as it was (Ray may go on running in this process: tests, notebooks)."""
        if self._file is None:
            return
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        dispatcher.remove_handler(self.path)
        for printer in self._ray_printers:
            dispatcher.add_handler(*printer)
        for logger, handlers in self._loggers:
            logger.removeHandler(self._handler)
            for h in handlers:
                if h not in logger.handlers:
                    logger.addHandler(h)
        if self._fd2 is not None:
            sys.stderr.flush()
            os.dup2(self._fd2, 2)
            os.close(self._fd2)
        if self._stderr is not None:
            old, new, handlers = self._stderr
            for h in handlers:
                h.setStream(old)
            sys.stderr = old
            new.close()
        self._file.close()
        self._file = None


def _writes_to_fd(stream: Any, fd: int) -> bool:
    """Whether a text stream writes to file descriptor `fd` (pytest's capture objects have none)."""
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


_log_file: _RayLogFile | None = None


def ray_log_path(out: str | None) -> str:
    """Where a command writing to `out` keeps Ray's logs: `<out>/logs/ray.log` for a local output folder;
    for an object-store one (s3://...) or none, `slidegrid-logs/ray-<pid>.log` in the temporary directory."""
    import tempfile

    from .io.storage import is_remote, normalize_uri

    if out and not is_remote(out):
        return os.path.join(normalize_uri(out), "logs", "ray.log")
    return os.path.join(tempfile.gettempdir(), "slidegrid-logs", f"ray-{os.getpid()}.log")


@contextmanager
def ray_logs_to(path: str | None) -> Iterator[None]:
    """Within the block, Ray's own logs go to the file `path` (appended to; created when Ray starts, so a
    command that never starts Ray leaves no file); None: Ray's defaults, everything on the terminal (--debug).

    The terminal keeps slidegrid's output: stages, progress bars (sys.stderr) and the lines Ray workers print
    starting with TERMINAL_TAG (one per training epoch). On leaving, loggers, Ray's printer of worker output
    and file descriptor 2 are restored.
    """
    global _log_file
    if path is None:
        yield
        return
    _log_file = _RayLogFile(os.path.abspath(path))
    try:
        yield
    finally:
        done, _log_file = _log_file, None
        done.close()


# Ray Train's controller takes a worker's report when it polls the workers (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S,
# 2 s by default), and the reporting worker waits for it: a small model's epoch (~0.1 s) then costs ~2 s per report.
# On one machine a poll is a cheap local call, so a Ray we start polls four times as often.
LOCAL_RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def local_ray_env() -> None:
    """Set LOCAL_RAY_ENV's defaults (a user's own values win) in this process, before it starts a local Ray whose
    processes inherit them."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Connect to (or start) Ray once and return the cluster's resources.

    With RAY_ADDRESS set (as under `ray job submit`; `auto` for a `ray start` cluster on this machine) or an
    explicit address, connect to that cluster; otherwise start a local one of our own, even where another
    Ray runs on the machine (or left a stale address behind). Re-using an initialized Ray lets tests and
    notebooks share one. Inside `ray_logs_to`, Ray logs (at INFO) to that file from here on.
    """
    import ray

    if _log_file is not None:
        _log_file.start()
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS")
        # The file takes Ray's INFO lines; on the terminal only its warnings.
        level = logging.INFO if _log_file is not None else logging.WARNING
        if target:
            ray.init(address=target, logging_level=level)
        else:
            # The dashboard (on 127.0.0.1) serves the state API that Ray Train's placement-group cleaner needs:
            # without it a Train run whose controller dies keeps its workers' CPUs, and the cleaner logs a
            # warning every second.
            local_ray_env()
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=None, logging_level=level)
            global _started_here
            _started_here = True
    if _log_file is not None:
        _log_file.capture_worker_output()
    resources = ray.cluster_resources()
    log.info("ray resources: %s", resources)
    return resources


def started_local_ray() -> bool:
    """Whether the Ray in use is the local one `init_ray` started (fixed size), not a cluster we joined."""
    return _started_here
