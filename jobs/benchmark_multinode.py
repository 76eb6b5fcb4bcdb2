"""Benchmark: the encode job on a 3-node `ray.cluster_utils.Cluster` vs a single-node Ray, same archive.

    python jobs/benchmark_multinode.py [--slides 8] [--size 8192]

Both runs call `run_encode` (the library's job). The table shows tiles/s, wall time and whether the grids
are identical. On one 2-core machine the three "nodes" share the same cores, so this measures the
overhead of scheduling across nodes (object transfer between raylets), not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import _bootstrap  # noqa: F401


def _child(mode: str, archive: str, out: str) -> None:
    import ray

    from slidegrid.encode import EncodeConfig, run_encode

    cluster = None
    if mode == "3-node":
        from ray.cluster_utils import Cluster

        cpus = os.cpu_count() or 2
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=cpus)
        ray.init(address=cluster.address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    report = run_encode(EncodeConfig(input=archive, out=out, mlflow=False, progress=False, dtype="float32"))
    print("RESULT " + json.dumps({"tiles": report.tiles, "seconds": report.seconds,
                                  "nodes": len([n for n in ray.nodes() if n["Alive"]])}))
    ray.shutdown()
    if cluster:
        cluster.shutdown()


def main() -> None:
    """Write the archive, run both modes in fresh processes, compare outputs, print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slides", type=int, default=8)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        _child(*a.child)
        return
    from slidegrid.grids import grid_uri, read_grid
    from slidegrid.synthetic import SyntheticSpec, write_synthetic_slide

    rows = {}
    with tempfile.TemporaryDirectory() as d:
        archive = os.path.join(d, "archive")
        os.makedirs(archive)
        for i in range(a.slides):
            write_synthetic_slide(os.path.join(archive, f"m{i}.tiff"),
                                  SyntheticSpec(width=a.size, height=a.size, seed=i, n_tumours=i % 2))
        for mode in ("1-node", "3-node"):
            out = os.path.join(d, mode)
            env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
            env.pop("RAY_ADDRESS", None)
            proc = subprocess.run([sys.executable, __file__, "--child", mode, archive, out], capture_output=True,
                                  text=True, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if not line:
                raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            rows[mode] = json.loads(line[7:])
        same = all(np.array_equal(read_grid(grid_uri(os.path.join(d, "1-node"), f"m{i}")).embedding,
                                  read_grid(grid_uri(os.path.join(d, "3-node"), f"m{i}")).embedding)
                   for i in range(a.slides))
    print(f"\n{os.cpu_count()} cores, {a.slides} synthetic slides of {a.size}x{a.size} px, mean-rgb, 224-px tiles\n")
    print("| cluster | alive nodes | tiles | wall (s) | tiles/s |")
    print("|---|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['nodes']} | {r['tiles']} | {r['seconds']:.1f} | {r['tiles'] / r['seconds']:.1f} |")
    print(f"\nidentical grids: {same}")


if __name__ == "__main__":
    main()
