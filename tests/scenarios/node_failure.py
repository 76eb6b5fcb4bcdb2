"""Encode an archive on a 3-node `ray.cluster_utils.Cluster` and remove a worker node mid-run.

Run as a script (the test needs its own Ray, apart from the session's): prints one JSON line with the
results and whether the node was removed while the job was running.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import threading
import time

import ray
from ray.cluster_utils import Cluster

from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.geometry.tiling import GridSpec
from slidegrid.stream.staging import STAGING


def main(archive: str, out: str, tile_size: int) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    victim = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address, log_to_driver=False)
    cfg = EncodeConfig(input=archive, out=out, encoder="mean-rgb", dtype="float32", mlflow=False,
                       progress=False, grid=GridSpec(tile_size=tile_size))
    results: list = []
    job = threading.Thread(target=lambda: results.append(run_encode(cfg).results))
    job.start()
    # Remove the node once the job is demonstrably under way but far from finished: the first chunk's part is in
    # staging (a first committed grid came too late: the light model encodes a slide in well under a second, so
    # on a fast machine the job could end within one poll of it).
    while job.is_alive() and not [p for p in glob.glob(os.path.join(out, STAGING, "**"), recursive=True)
                                  if os.path.isfile(p)]:
        time.sleep(0.02)
    removed_mid_run = job.is_alive()
    cluster.remove_node(victim)  # add/remove_node only from the main thread (RAY-NOTES)
    job.join()
    print("RESULT " + json.dumps({"removed_mid_run": removed_mid_run,
                                  "results": [r.__dict__ for r in results[0]] if results else None}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
