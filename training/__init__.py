"""Training and evaluation: datasets, near-duplicate-aware split, the training loop, metrics and thresholds.

Uses :mod:`engines` (metadata, THE preprocessing, networks, checkpoints); nothing here is imported by the runtime
(threshold choice lives in :mod:`ground.threshold`, shared with calibration).
"""
