"""Ray job: encode a slide archive into grids. Same arguments as `slidegrid encode`.

    python jobs/encode.py ARCHIVE --out GRIDS --encoder mean-rgb
    ray job submit --working-dir . -- python jobs/encode.py s3://bucket/slides --out s3://bucket/grids ...
"""

import sys

import _bootstrap  # noqa: F401
from slidegrid.cli import main

if __name__ == "__main__":
    sys.exit(main(["encode", *sys.argv[1:]]))
