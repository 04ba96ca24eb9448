"""The one wait helper every suite uses: poll a condition with a deadline (never sleep-then-assert)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(pred: Callable[[], object], timeout_s: float = 5.0, *, every_s: float = 0.01) -> float | None:
    """Poll until ``pred()`` holds: the monotonic time it was first seen to hold (always truthy), or None when
    it still does not hold at the deadline (checked once more then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return time.monotonic()
        time.sleep(every_s)
    return time.monotonic() if pred() else None
