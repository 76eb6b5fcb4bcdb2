"""Ray job: `slidegrid train-encoder` with the same arguments.

    python jobs/train_encoder.py --input cohort.csv --method vae --code-size 128 --out OUT ...
    ray job submit --working-dir . -- python jobs/train_encoder.py ...
"""

import sys

import _bootstrap  # noqa: F401
from slidegrid.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-encoder", *sys.argv[1:]]))
