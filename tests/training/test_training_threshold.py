"""Threshold choice for a target defect recall (numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from engines.errors import UserError
from training.threshold import choose_threshold, rates_at


def test_threshold_catches_target_share_with_margin():
    scores = np.array([0.05, 0.10, 0.20, 0.40, 0.60, 0.70, 0.90, 0.95])
    defect = np.array([0, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    c = choose_threshold(scores, defect, 1.0)
    # the lowest defect (0.40) must be caught; the next lower score is 0.20 -> midway 0.30
    assert c.threshold == pytest.approx(0.30)
    assert c.recall == 1.0
    assert c.precision == pytest.approx(4 / 5)
    assert c.false_reject_rate == pytest.approx(1 / 4)
    c75 = choose_threshold(scores, defect, 0.75)
    # 3 of 4 defects: the third highest defect is 0.70, next lower score 0.60 -> 0.65
    assert c75.threshold == pytest.approx(0.65)
    assert (c75.recall, c75.precision, c75.false_reject_rate) == (0.75, 1.0, 0.0)


def test_threshold_lowest_defect_at_bottom():
    c = choose_threshold(np.array([0.0, 0.3]), np.array([True, False]), 1.0)
    assert c.threshold == 0.0 and c.recall == 1.0


def test_rates_at_match_hand_count():
    r, p, f = rates_at(np.array([0.1, 0.6, 0.7, 0.2]), np.array([True, True, False, False]), 0.5)
    assert (r, p, f) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    "scores, defect, target, match",
    [
        ([0.1, 0.2], [False, False], 0.99, "no defect"),
        ([0.1, 0.2], [True, False], 0.0, "target recall"),
        ([0.1, 0.2], [True, False], 1.5, "target recall"),
        ([0.1, np.nan], [True, False], 0.9, "NaN"),
        ([0.1, 0.2, 0.3], [True, False], 0.9, "labels"),
    ],
)
def test_threshold_bad_input(scores, defect, target, match):
    with pytest.raises(UserError, match=match):
        choose_threshold(np.array(scores), np.array(defect), target)
