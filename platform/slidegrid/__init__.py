"""slidegrid: gigapixel whole-slide images to grids of tile embeddings, on Ray."""

__version__ = "0.1.0"
