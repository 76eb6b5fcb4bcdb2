"""Stage 1 of the flow, where bytes become slides and results become files: slide readers (`readers/`,
`slides`), archive listing (`archive`), storage (`storage`: local paths and s3://), annotations (QuPath GeoJSON,
ASAP XML), the per-slide grid files (`grids`) and the archive manifest (`manifest`)."""
