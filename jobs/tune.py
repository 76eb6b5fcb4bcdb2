"""Ray job: `slidegrid tune` with the same arguments.

    python jobs/tune.py --grids GRIDS --cohort cohort.csv --out OUT ...
    ray job submit --working-dir . -- python jobs/tune.py ...
"""

import sys

import _bootstrap  # noqa: F401
from slidegrid.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
