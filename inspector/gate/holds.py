"""The gate's holds: why the host keeps the controller in fail-safe, and when each reason is released.

Pure bookkeeping on the gate's I/O thread (no port, no threads, times in ``time.monotonic_ns()``): the actuator
asks it what changed and sends HOLD / RUN itself. A reason is held until released (``release_at(reason, t)``
schedules it; a new hold before then cancels the release); ``HOLD_REJECT_UNACKED`` releases itself once no
part that caused it is still short of the gate.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from inspector.gate import protocol as P

log = logging.getLogger(__name__)


class Holds:
    def __init__(self, count: Callable[[str], None] | None = None) -> None:
        self._reasons: dict[str, int | None] = {}  # reason -> when to release it (None: when told)
        self.held = threading.Event()  # set while any reason holds (read from any thread)
        self._count = count or (lambda key: None)

    def __bool__(self) -> bool:
        return bool(self._reasons)

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the gate is held now, in the order the reasons came (empty: not held)."""
        return tuple(self._reasons)

    @property
    def first(self) -> str:
        return next(iter(self._reasons))

    def hold(self, reason: str) -> bool:
        """Hold for ``reason`` (idempotent; cancels a pending release of it). -> True when the gate was not held
        before, so the caller must now tell the controller."""
        if reason in self._reasons and self._reasons[reason] is None:
            return False  # already held for this reason
        if reason not in self._reasons:
            self._count("holds")
            log.warning("gate: holding the controller in fail-safe (%s)", reason)
        self._reasons[reason] = None
        if self.held.is_set():
            return False
        self.held.set()
        return True

    def release_at(self, reason: str | None, t: int) -> None:
        """Release ``reason`` (None: every reason) at ``t``."""
        for r in [reason] if reason is not None else list(self._reasons):
            if r in self._reasons:
                self._reasons[r] = t

    def service(self, now: int, unacked_short_of_gate: Callable[[], bool]) -> bool:
        """Drop the reasons that are due. -> True when the last one just went (the caller syncs and sends RUN).

        ``unacked_short_of_gate()``: is a part whose reject was never acknowledged still short of the gate?
        """
        for reason, at in list(self._reasons.items()):
            if reason == P.HOLD_REJECT_UNACKED and at is None and not unacked_short_of_gate():
                at = self._reasons[reason] = now  # every part that caused it has passed the gate
            if at is not None and now >= at:
                del self._reasons[reason]
                self._count("releases")
                log.warning("gate: hold %s released", reason)
        if not self._reasons and self.held.is_set():
            self.held.clear()
            return True
        return False
