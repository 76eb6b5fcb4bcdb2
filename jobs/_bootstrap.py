"""Make `import slidegrid` work from a plain checkout (e.g. `ray job submit --working-dir .`) without install."""

from __future__ import annotations

import sys
from pathlib import Path

_PLATFORM = Path(__file__).resolve().parents[1] / "platform"
try:
    import slidegrid  # noqa: F401
except ImportError:
    sys.path.insert(0, str(_PLATFORM))
