"""Training, sweeps and tracking: Ray Train loops, Ray Tune, MLflow."""
