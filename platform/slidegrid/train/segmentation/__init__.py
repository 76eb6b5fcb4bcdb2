"""Training the segmentation ensemble's members (models/: U-Nets, DeepLabV3+, MRN): config (with the members'
recipes), data (patches streamed from slides + annotations), loop (Ray Train worker), fit (driver: members in
parallel as Tune trials, one registered ensemble)."""
