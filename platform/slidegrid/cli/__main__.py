"""`python -m slidegrid.cli`: the `slidegrid` command."""

import sys

from . import main

sys.exit(main())
