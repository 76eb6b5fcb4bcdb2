"""`import slidegrid` from a plain checkout, as the jobs do (jobs/_bootstrap.py)."""

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parents[1] / "_bootstrap.py"))
