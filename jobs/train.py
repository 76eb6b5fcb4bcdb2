"""Ray job: `slidegrid train` with the same arguments.

    python jobs/train.py --grids GRIDS --cohort cohort.csv --out OUT ...
    ray job submit --working-dir . -- python jobs/train.py ...
"""

import sys

import _bootstrap  # noqa: F401
from slidegrid.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
