"""Training: one folder per trainer (aggregator/, encoder/, segmentation/, each config, data, loop, fit), the shared
Ray Train runner (runner), checkpoints and Tune trials."""
