"""A ``model.min_sharpness`` for a line, from the sharpness of its own parts.

Pure arithmetic on the per-part sharpness figures the runtime computes (:mod:`inspector.sharpness`), measured
by ``inspector calibrate sharpness`` on a recording of the running line with good, in-focus parts and,
optionally, one with parts as blurred as the line must not pass (raised exposure time, a faster belt, focus
turned off). The rules:

- with a blurred recording whose sharpest part is below the sharp parts' 1st percentile: halfway between the two
  (the blurred parts are all rejected, about 99% or more of the sharp ones pass);
- with a blurred recording that overlaps the sharp one: the sharp parts' 1st percentile, and a warning with the
  share of blurred parts that would still pass: the camera set-up, not the threshold, has to change;
- without one: 80% of the sharp parts' 1st percentile (the margin measured on the simulated lines, where sharp
  crops scored >= 305.7 and heavily blurred ones <= 200.2: docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ground.errors import UserError

MIN_PARTS = 20
NO_BLUR_FACTOR = 0.8


@dataclass(frozen=True)
class SharpnessChoice:
    value: float
    rule: str
    n_sharp: int
    sharp_min: float
    sharp_p1: float
    sharp_p5: float
    sharp_p50: float
    sharp_rejected: float  # share of the sharp parts under ``value``
    n_blurred: int = 0
    blurred_max: float | None = None
    blurred_p50: float | None = None
    blurred_passed: float | None = None  # share of the blurred parts at or over ``value``
    separable: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def suggest_min_sharpness(sharp: Sequence[float], blurred: Sequence[float] | None = None) -> SharpnessChoice:
    s = np.asarray([v for v in sharp if v is not None], dtype=np.float64)
    if len(s) < MIN_PARTS:
        raise UserError(
            f"only {len(s)} part(s) measured in the sharp recording; record at least {MIN_PARTS} good parts "
            "passing the camera (check the ROI and detection settings if parts were on the belt)"
        )
    p1, p5, p50 = (float(v) for v in np.percentile(s, [1, 5, 50]))
    b = None if blurred is None else np.asarray([v for v in blurred if v is not None], dtype=np.float64)
    extra: dict = {}
    if b is None:
        value, rule = NO_BLUR_FACTOR * p1, f"{NO_BLUR_FACTOR:g} x the sharp parts' 1st percentile"
    else:
        if len(b) == 0:
            raise UserError("no part was measured in the blurred recording; check it shows parts passing the camera")
        bmax = float(b.max())
        if bmax < p1:
            value, rule, separable = (bmax + p1) / 2, "halfway: blurred parts' max to sharp parts' 1st percentile", True
        else:
            value, rule, separable = p1, "the sharp parts' 1st percentile (the recordings overlap)", False
        extra = dict(
            n_blurred=len(b),
            blurred_max=bmax,
            blurred_p50=float(np.median(b)),
            blurred_passed=float((b >= round(value, 1)).mean()),
            separable=separable,
        )
    value = round(float(value), 1)
    return SharpnessChoice(
        value=value,
        rule=rule,
        n_sharp=len(s),
        sharp_min=float(s.min()),
        sharp_p1=p1,
        sharp_p5=p5,
        sharp_p50=p50,
        sharp_rejected=float((s < value).mean()),
        **extra,
    )
