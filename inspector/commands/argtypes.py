"""Numeric flag types: a count, an index, a duration or a fraction out of its range is refused by argparse
(usage line + one `error:` line, exit 2), never run as something else (`--max-frames 0` running one frame).

    p.add_argument("--max-frames", type=count)          # 1, 2, 3, ...
    p.add_argument("--camera", type=index)              # 0, 1, 2, ...
    p.add_argument("--seconds", type=positive)          # > 0
    p.add_argument("--target-recall", type=fraction)    # 0 < x <= 1
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _int(lo: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def _float(lo: float, hi: float, lo_open: bool, hi_open: bool, what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        below = v <= lo if lo_open else v < lo
        above = v >= hi if hi_open else v > hi
        if not math.isfinite(v) or below or above:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return v

    parse.__name__ = what
    return parse


#: how many of something: 1 or more
count = _int(1, "a whole number of 1 or more")
#: an index or a seed: 0 or more
index = _int(0, "a whole number of 0 or more")
#: a length, duration, rate or size: more than 0
positive = _float(0.0, math.inf, True, False, "a number above 0")
#: 0 or more (0 usually means off)
non_negative = _float(0.0, math.inf, False, False, "a number of 0 or more")
#: a share that must not be zero: 0 < x <= 1 (a recall, a quantile)
fraction = _float(0.0, 1.0, True, False, "a fraction above 0 and at most 1")
#: a share that may be zero: 0 <= x <= 1
share = _float(0.0, 1.0, False, False, "a fraction from 0 to 1")
#: strictly inside: 0 < x < 1 (a trigger line inside the ROI)
inside = _float(0.0, 1.0, True, True, "a fraction between 0 and 1 (not 0 or 1)")
#: 0 <= x < 1 (a jitter, a decay)
below_one = _float(0.0, 1.0, False, True, "a fraction from 0 up to (not including) 1")
