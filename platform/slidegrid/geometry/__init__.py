"""Stage 2 of the flow, where a slide becomes a set of tiles: tissue detection (`tissue`) and tile grids at a
target mpp (`tiling`)."""
