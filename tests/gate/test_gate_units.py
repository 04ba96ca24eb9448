"""The gate actuator's pure parts, without a port or a thread: the hold bookkeeping (times are plain ints)."""

from __future__ import annotations

from inspector.gate import protocol as P
from inspector.gate.holds import Holds

MS = 1_000_000


def test_a_hold_is_kept_until_its_release_time_and_a_new_hold_cancels_the_release() -> None:
    counted: list[str] = []
    h = Holds(counted.append)
    assert h.hold(P.HOLD_SOURCE_STALL) is True  # newly held: the controller must be told
    assert h.hold(P.HOLD_SOURCE_STALL) is False and counted == ["holds"]  # idempotent
    assert h.held.is_set() and h.reasons == (P.HOLD_SOURCE_STALL,)
    h.release_at(P.HOLD_SOURCE_STALL, 100 * MS)
    assert h.service(99 * MS, lambda: False) is False and h.held.is_set()
    h.hold(P.HOLD_SOURCE_STALL)  # held again before the release was due: it is cancelled
    assert h.service(200 * MS, lambda: False) is False and h.held.is_set()
    h.release_at(None, 300 * MS)
    assert h.service(300 * MS, lambda: False) is True  # the last reason went: sync and RUN
    assert not h.held.is_set() and not h and counted == ["holds", "releases"]
    assert h.service(400 * MS, lambda: False) is False  # nothing held, nothing to do


def test_an_unacked_reject_hold_releases_itself_once_its_parts_have_passed() -> None:
    h = Holds()
    h.hold(P.HOLD_REJECT_UNACKED)
    short = [True]
    assert h.service(10 * MS, lambda: short[0]) is False and h.held.is_set()
    short[0] = False
    assert h.service(11 * MS, lambda: short[0]) is True and not h.held.is_set()


def test_two_reasons_both_must_go() -> None:
    h = Holds()
    h.hold(P.HOLD_SOURCE_STALL)
    assert h.hold(P.HOLD_REJECT_UNACKED) is False  # already held: nothing new to send
    assert h.reasons == (P.HOLD_SOURCE_STALL, P.HOLD_REJECT_UNACKED) and h.first == P.HOLD_SOURCE_STALL
    h.release_at(P.HOLD_SOURCE_STALL, 0)
    assert h.service(1, lambda: True) is False and h.reasons == (P.HOLD_REJECT_UNACKED,)
