"""Published pathology patch encoders, one file per family; importing this package registers them all."""

from __future__ import annotations

from . import clam, gigapath, hoptimus, kaiko, lunit, uni, virchow  # noqa: F401

# isort: split
# transformers-format checkpoints, remapped into timm (phikon.py says why)
from . import hibou, midnight, phikon  # noqa: F401
