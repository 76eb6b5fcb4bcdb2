"""Ray job: probe an encoder's frozen embeddings on a labelled patch set. Same arguments as `slidegrid probe`.

    python jobs/probe.py --encoder timm:resnet18 --weights random --patches ../shared/data/realworld/patches/pcam --mpp 0.97
    ray job submit --working-dir . -- python jobs/probe.py --encoder uni --weights /models/uni.bin --patches ... --mpp 0.97

On a cluster the patch folder (and the weights) must be readable on every node: decode tasks read the files.
"""

import sys

import _bootstrap  # noqa: F401
from slidegrid.cli import main

if __name__ == "__main__":
    sys.exit(main(["probe", *sys.argv[1:]]))
