"""Ray job: `slidegrid segment` with the same arguments.

    python jobs/segment.py ...
    ray job submit --working-dir . -- python jobs/segment.py ...
"""

import sys

import _bootstrap  # noqa: F401
from slidegrid.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
