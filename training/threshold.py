"""Threshold choice, where training has always imported it; it lives in :mod:`ground.threshold` so that
calibration can use it without importing training."""

from ground.threshold import ThresholdChoice, choose_threshold, rates_at

__all__ = ["ThresholdChoice", "choose_threshold", "rates_at"]
