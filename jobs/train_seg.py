"""Ray job: `slidegrid train-seg` with the same arguments.

    python jobs/train_seg.py ...
    ray job submit --working-dir . -- python jobs/train_seg.py ...
"""

import sys

import _bootstrap  # noqa: F401
from slidegrid.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-seg", *sys.argv[1:]]))
