"""Training the slide-level aggregators on grids (models/: attention, NIC CNN, RAN-CNN, RAN-LSTM): config,
data (cohort + grid examples), loop (Ray Train worker), fit (driver), and what they share with `predict`
(inference), with Tune sweeps (sweep), the papers' recipes (recipes), grid augmentation (augment) and MLflow
(registry)."""
