"""The gate's reject schedule: one track per part between the camera and the gate, its deadline, its
(re)sends, acknowledgements and retries, and - once it has passed the gate - its outcome.

Pure logic on the gate's I/O thread: no port, no thread, no clock of its own (every method takes ``now`` in
``time.monotonic_ns()``). What it decides is done through the callbacks :meth:`Schedule.service` is given
(send a reject, hold the gate, report an outcome), so it is tested with plain integers and lists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from inspector.config import GateConfig
from inspector.records import GateResult, Part

log = logging.getLogger(__name__)

MS = 1_000_000


@dataclass(slots=True)
class Track:
    part: Part
    rejected: bool
    gate_ns: int
    deadline_ns: int  # last moment a (re)send can still reach the part
    result: GateResult
    seq: int | None = None  # the reject command in flight
    ack_due_ns: int | None = None
    failsafe_at_gate: bool | None = None
    extra: dict = field(default_factory=dict)  # trouble / unacked / held / measured


class Schedule:
    def __init__(self, cfg: GateConfig, count: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.tracks: dict[int, Track] = {}  # part id -> track, until finalised
        self.by_seq: dict[int, int] = {}  # reject seq -> part id
        self._count = count or (lambda key: None)

    def __len__(self) -> int:
        return len(self.tracks)

    # -- a new part --------------------------------------------------------------------------------------
    def admit(self, part: Part, now: int) -> Track:
        """Track ``part`` until it has passed the gate; a verdict too late for its gate time is flagged (and
        rejected under ``late_policy: reject``)."""
        c = self.cfg
        self._count("parts")
        gate_ns = part.t_capture_ns + c.travel_ns
        margin = int(c.late_margin_ms * MS)
        late = gate_ns - now < margin
        rejected = part.rejected or (late and c.late_policy == "reject")
        result = GateResult(part.part_id, rejected, "passed", gate_ns, part.t_capture_ns, late_verdict=late)
        if late:
            self._count("late_verdicts")
            result.reason = f"verdict {(now - gate_ns) / MS + c.late_margin_ms:.0f} ms too late"
            log.warning("gate: part %d verdict late (%s)", part.part_id, result.reason)
        deadline = gate_ns - margin if not late else now + int(c.ack_timeout_ms * MS)
        track = Track(part, rejected, gate_ns, deadline, result)
        self.tracks[part.part_id] = track
        if rejected:
            self._count("rejects")
        return track

    # -- the wire ----------------------------------------------------------------------------------------
    def sent(self, track: Track, seq: int, t_written: int, now: int) -> None:
        """A reject for ``track`` was written as command ``seq``: first send or a retry; an ack is due."""
        if track.result.sent_ns is None:
            track.result.sent_ns = t_written
            self._count("sent")
        else:
            track.result.retries += 1
            self._count("retries")
        if track.seq is not None:
            self.by_seq.pop(track.seq, None)
        track.seq, track.ack_due_ns = seq, now + int(self.cfg.ack_timeout_ms * MS)
        self.by_seq[seq] = track.part.part_id

    def acked(self, seq: int, t: int) -> None:
        pid = self.by_seq.pop(seq, None)
        track = self.tracks.get(pid) if pid is not None else None
        if track is None:
            return
        if track.result.acked_ns is None:
            track.result.acked_ns = t
            self._count("acked")
        track.ack_due_ns = None

    def nacked(self, seq: int, why: str, t: int) -> None:
        """The controller refused ``seq``: retry shortly while the part can still be reached, backing off (5, 10,
        20 ms ... up to the ack timeout) so that a controller that refuses everything is not flooded."""
        pid = self.by_seq.get(seq)
        track = self.tracks.get(pid) if pid is not None else None
        if track is None:
            return
        track.result.nacks += 1
        track.result.reason = f"NAK {why}"
        track.extra["trouble"] = True
        backoff = min(5 * MS * 2 ** min(track.result.nacks - 1, 10), int(self.cfg.ack_timeout_ms * MS))
        track.ack_due_ns = t + backoff

    def fired(self, part_id: int, t: int, late_ms: int) -> None:
        track = self.tracks.get(part_id)
        if track is not None:
            track.result.fired_ns, track.result.fire_late_ms = t, late_ms

    def link_down(self) -> None:
        """Unacknowledged commands go again once the link is back, if their parts can still be reached."""
        for track in self.tracks.values():
            if track.seq is not None and track.result.acked_ns is None:
                self.by_seq.pop(track.seq, None)
                track.seq, track.ack_due_ns = None, None

    # -- time passing ------------------------------------------------------------------------------------
    def ack_deadlines(self) -> list[int]:
        return [t.ack_due_ns for t in self.tracks.values() if t.ack_due_ns]

    def resendable(self, now: int) -> list[Track]:
        """Rejects not acknowledged whose part can still be reached (sent again after a resync)."""
        return [t for t in self.tracks.values() if t.rejected and t.result.acked_ns is None and now < t.deadline_ns]

    def unacked_short_of_gate(self, now: int) -> bool:
        """Is a part whose reject could not be acknowledged still short of the gate (+ a pulse)?"""
        pulse = self.cfg.pulse_ms * MS
        return any(t.extra.get("unacked") and now < t.gate_ns + pulse for t in self.tracks.values())

    def service(
        self,
        now: int,
        *,
        failsafe_at: Callable[[int], bool],
        held: Callable[[], tuple[str, ...]],
        send: Callable[[Track, int], object],
        hold_unacked: Callable[[Track, int], None],
        finalise: Callable[[Track, int], None],
    ) -> None:
        """One pass over the tracks: note fail-safe at each gate time, resend what is due (ack timeout, NAK
        backoff, never sent), hold the gate when a reject's last retry is due unacknowledged, and finalise
        the parts that have passed the gate (after time for the FIRED echo)."""
        ack_ns = int(self.cfg.ack_timeout_ms * MS)
        grace = int((self.cfg.pulse_ms + self.cfg.link_timeout_ms) * MS)
        for track in list(self.tracks.values()):
            r = track.result
            if track.failsafe_at_gate is None and now >= track.gate_ns:
                track.failsafe_at_gate = failsafe_at(track.gate_ns)
                if track.failsafe_at_gate and (reasons := held()):
                    track.extra["held"] = "gate held: " + ",".join(reasons)
            if track.rejected and r.acked_ns is None and now < track.deadline_ns:
                if track.seq is None or (track.ack_due_ns is not None and now >= track.ack_due_ns):
                    if track.seq is not None and r.reason is None:
                        self._count("ack_timeouts")
                        r.reason = "ACK timeout"
                    track.extra["trouble"] = track.extra.get("trouble") or track.seq is not None
                    send(track, now)
            elif track.ack_due_ns is not None and now >= track.deadline_ns:
                track.ack_due_ns = None  # too late to resend: nothing left to wait for
            if (
                track.extra.get("trouble")
                and r.acked_ns is None
                and "unacked" not in track.extra
                and now >= track.deadline_ns - ack_ns
                and now < track.gate_ns
            ):
                # the last retry is due and nothing got through: divert everything until this part has passed
                track.extra["unacked"] = True
                hold_unacked(track, now)
            if now >= track.gate_ns + grace:
                finalise(track, now)

    def outcome(self, track: Track, failsafe: bool, shutdown: bool = False) -> GateResult:
        """Stop tracking ``track`` and settle its status: fired, failsafe, unconfirmed, missed or passed."""
        self.tracks.pop(track.part.part_id, None)
        if track.seq is not None:
            self.by_seq.pop(track.seq, None)
        r = track.result
        if track.rejected:
            if r.fired_ns is not None:
                r.status = "fired"
            elif failsafe:
                r.status = "failsafe"
            elif r.acked_ns is not None:
                r.status = "unconfirmed"
            else:
                r.status = "missed"
                r.reason = r.reason or ("shutdown before sending" if shutdown else "never acknowledged")
                log.error(
                    "gate: part %d should have been rejected but no command got through (%s)", r.part_id, r.reason
                )
        else:
            r.status = "failsafe" if failsafe else "passed"
        if r.status == "failsafe" and "held" in track.extra:
            r.reason = f"{r.reason}; {track.extra['held']}" if r.reason else track.extra["held"]
        self._count(r.status)
        return r
