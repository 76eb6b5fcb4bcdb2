"""Training a tile encoder (encoders/: VAE, contrastive, BiGAN, supervised) on tiles of an archive or a patch set:
config, data (tile streams), loop (Ray Train worker), fit (driver), registry (MLflow)."""
