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


# --- the reject schedule: tracks, deadlines, retries (no port, no thread; times are ints) -----------------
def _schedule(**cfg):
    from inspector.config import GateConfig
    from inspector.gate.schedule import Schedule

    counts: dict[str, int] = {}
    base = {
        "camera_to_gate_mm": 300.0,
        "belt_speed_mm_s": 1000.0,
        "ack_timeout_ms": 20.0,
        "late_margin_ms": 5.0,
        "link_timeout_ms": 200.0,
        "worst_latency_ms": 50.0,
        "pulse_ms": 10.0,
    }
    c = GateConfig(**{**base, **cfg})
    return Schedule(c, lambda k: counts.__setitem__(k, counts.get(k, 0) + 1)), c, counts


def _part(pid: int, t_capture: int, defect: bool):
    from inspector.records import Part, Verdict

    return Part(pid, pid, t_capture, (0, 0, 8, 8), Verdict.DEFECT if defect else Verdict.OK, t_verdict_ns=t_capture)


class _Effects:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []
        self.held: list[int] = []
        self.done: list[int] = []

    def kw(self, sched, failsafe: bool = False):
        def send(track, now):
            self.sent.append((track.part.part_id, now))
            sched.sent(track, 100 + len(self.sent), now, now)

        return {
            "failsafe_at": lambda t: failsafe,
            "held": lambda: (),
            "send": send,
            "hold_unacked": lambda tr, now: self.held.append(tr.part.part_id),
            "finalise": lambda tr, now: self.done.append(tr.part.part_id),
        }


def test_a_defect_is_resent_on_ack_timeout_until_acked_then_fired() -> None:
    s, c, counts = _schedule()
    fx = _Effects()
    tr = s.admit(_part(1, 0, True), now=10 * MS)
    assert tr.gate_ns == c.travel_ns == 300 * MS and tr.rejected and counts["rejects"] == 1
    s.service(10 * MS, **fx.kw(s))  # never sent: sent now
    assert fx.sent == [(1, 10 * MS)] and tr.seq == 101 and tr.ack_due_ns == 30 * MS
    s.service(29 * MS, **fx.kw(s))
    assert len(fx.sent) == 1  # the ack is not due yet
    s.service(30 * MS, **fx.kw(s))  # no ack in time: resent, counted, reason noted
    assert len(fx.sent) == 2 and counts["ack_timeouts"] == 1 and tr.result.reason == "ACK timeout"
    assert tr.result.retries == 1 and 101 not in s.by_seq and s.by_seq[102] == 1
    s.acked(102, 35 * MS)
    s.fired(1, 300 * MS, 0)
    s.service(300 * MS + 209 * MS, **fx.kw(s))
    assert fx.done == []  # waits pulse + link timeout after the gate time for the FIRED echo
    s.service(300 * MS + 210 * MS, **fx.kw(s))
    assert fx.done == [1]
    r = s.outcome(tr, failsafe=False)
    assert (r.status, r.sent_ns, r.acked_ns, r.fired_ns) == ("fired", 10 * MS, 35 * MS, 300 * MS)
    assert len(s) == 0 and counts["fired"] == 1


def test_a_reject_that_cannot_be_acknowledged_holds_the_gate_before_its_deadline() -> None:
    s, c, _ = _schedule()
    fx = _Effects()
    tr = s.admit(_part(2, 0, True), now=0)
    deadline = tr.deadline_ns  # gate time - late margin
    now = 0
    while now < deadline:
        s.service(now, **fx.kw(s))
        now += 1 * MS
    assert fx.held == [2]  # once, when the last retry was due
    assert tr.extra["unacked"] and s.unacked_short_of_gate(now)
    assert not s.unacked_short_of_gate(tr.gate_ns + int(c.pulse_ms * MS))
    r = s.outcome(tr, failsafe=True)
    assert r.status == "failsafe"  # the held controller diverted it


def test_a_late_verdict_is_rejected_under_the_reject_policy_and_an_ok_part_passes() -> None:
    s, c, counts = _schedule()
    late = s.admit(_part(3, 0, False), now=c.travel_ns - 1 * MS)  # 1 ms before its gate time: too late
    assert late.rejected and late.result.late_verdict and counts["late_verdicts"] == 1
    ok = s.admit(_part(4, 0, False), now=0)
    assert not ok.rejected and s.outcome(ok, failsafe=False).status == "passed"
    never = s.admit(_part(5, 0, True), now=0)
    r = s.outcome(never, failsafe=False, shutdown=True)
    assert (r.status, r.reason) == ("missed", "shutdown before sending")


def test_a_nak_backs_off_and_a_lost_link_forgets_the_commands_in_flight() -> None:
    s, _, _ = _schedule()
    fx = _Effects()
    tr = s.admit(_part(6, 0, True), now=0)
    s.service(0, **fx.kw(s))
    s.nacked(101, "BUSY", 1 * MS)
    assert tr.result.nacks == 1 and tr.result.reason == "NAK BUSY" and tr.ack_due_ns == 6 * MS
    s.service(6 * MS, **fx.kw(s))
    s.nacked(102, "BUSY", 7 * MS)
    assert tr.ack_due_ns == 17 * MS  # 5, 10, 20 ms ... capped at the ack timeout
    s.link_down()
    assert tr.seq is None and tr.ack_due_ns is None and s.by_seq == {}
    s.service(8 * MS, **fx.kw(s))
    assert fx.sent[-1] == (6, 8 * MS)  # sent again as soon as the schedule is serviced with a link
