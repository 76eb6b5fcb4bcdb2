"""Synthetic pyramidal slides with known ground truth: colour-coded (`slides`) or tiled from a real patch set
(`texture`)."""
