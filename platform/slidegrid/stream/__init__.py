"""The slide-stream skeleton of the archive jobs (`encode`, `segment`): plan → read → model actors that stage
their rows → driver that coordinates → per-slide commit tasks; resume from the manifest and one listing."""

from .pipeline import READ_TASK_MEMORY, StreamResult, StreamSpec, retry_once, run_stream
from .resume import NO_OUTPUT, done_slides, list_names, remove_stale_temporaries

__all__ = ["NO_OUTPUT", "READ_TASK_MEMORY", "StreamResult", "StreamSpec", "done_slides", "list_names",
           "remove_stale_temporaries", "retry_once", "run_stream"]
