"""Published pathology patch encoders, one file per family; importing this package registers them all."""

from __future__ import annotations

from . import uni  # noqa: F401
