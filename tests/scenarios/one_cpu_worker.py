"""Encode an archive on a `ray.cluster_utils.Cluster` whose only worker node has 1 CPU (the head has none).

Before placement planning the encoder actor took the node's CPU and the read tasks waited forever. Run as
a script (the test needs its own Ray, apart from the session's): prints one JSON line with each encoder's
results and the plan it ran with.
"""

from __future__ import annotations

import json
import os
import sys

import ray
from ray.cluster_utils import Cluster

from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.geometry.tiling import GridSpec
from slidegrid.placement import ClusterShape, plan_pool


def main(archive: str, out: str, tile_size: int) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    report = {}
    for name, weights, light in (("mean-rgb", None, True), ("timm:resnet18", "random", False)):
        cfg = EncodeConfig(input=archive, out=os.path.join(out, name.replace(":", "-")), encoder=name,
                           weights=weights, dtype="float32", mlflow=False, progress=False,
                           grid=GridSpec(tile_size=tile_size))
        results = run_encode(cfg).results
        report[name] = {"plan": plan_pool(ClusterShape.current(), light=light).__dict__,
                        "results": [r.__dict__ for r in results]}
    print("RESULT " + json.dumps(report))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
