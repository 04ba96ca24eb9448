"""Gate faults: the serial adapter unplugged and plugged back during a run, a storm of NAKs from the controller.

Serial is a real pty pair served by the gate simulator (the controller's protocol, watchdog and fail-safe);
the unplug closes both ends and removes the port's path, as a USB adapter does.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from faults_kit import ROOT, Hook, Line, check_fail_safe, line_video, write_config

from inspector.gate import protocol as P
from inspector.gate.sim import GateSimulator, PtyLink
from inspector.records import Verdict

SPACED = [(14 * i, False) for i in range(8)]  # a part every 14 frames (0.47 s at 30 fps)


def test_unplug_and_replug_during_a_run(kit, tmp_path: Path) -> None:
    """`inspector run --realtime` on a 4.7 s line; 1.2 s after the controller is in RUN the adapter is unplugged,
    1.0 s later plugged back. Every part is a defect here (threshold 0), so each one needs the gate.

    Expected: exit 0; every part has one log row; no rejected part is passed or missed: parts whose gate time
    falls in the outage are diverted by the controller's fail-safe (gate_status failsafe), the others fired
    (or unconfirmed, when the FIRED echo was lost with the link); the host reopens the port (stderr says so)
    and parts after the replug are fired again."""
    link = PtyLink(tmp_path / "ttyUSB0")
    sim = GateSimulator(link, record=tmp_path / "gate.jsonl", link_timeout_ms=200, heartbeat_ms=40).start()
    video = line_video(tmp_path / "line.avi", SPACED, 8 * 14 + 50)
    cfg = write_config(tmp_path / "line.yaml", kit, str(video), f"log:\n  db: {tmp_path / 'defects.db'}\n")
    cfg.write_text(cfg.read_text().replace("threshold: 0.99", "threshold: 0.0"))
    cmd = [
        sys.executable,
        "-m",
        "inspector",
        "run",
        "--config",
        str(cfg),
        "--realtime",
        "--serial",
        link.port,
        "--events",
        str(tmp_path / "ev.jsonl"),
    ]
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    try:
        assert sim.wait_for(lambda s: s.mode == P.MODE_RUN, 30), "the host never brought the controller to RUN"
        time.sleep(1.2)
        link.unplug()
        t_unplug = time.monotonic_ns()
        time.sleep(1.0)
        link.plug()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        sim.close()
        link.close()
    assert child.returncode == 0, err[-2000:]
    assert "reopened" in err, err[-2000:]
    events = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert len(events) == len(SPACED) and {e["verdict"] for e in events} == {"defect"}, events
    con = sqlite3.connect(tmp_path / "defects.db")
    status = dict(con.execute("SELECT part_id, gate_status FROM parts ORDER BY part_id").fetchall())
    con.close()
    assert sorted(status) == sorted(e["part_id"] for e in events)
    assert set(status.values()) <= {"fired", "failsafe", "unconfirmed"}, status
    assert "failsafe" in status.values(), status
    last = status[max(status)]
    assert last == "fired", f"the part after the replug was not fired: {status}"
    assert any(h[0] >= t_unplug for h in sim.holds()), "the controller never went fail-safe while unplugged"


def test_nak_storm_rejects_are_retried_then_the_gate_holds(kit, tmp_path: Path) -> None:
    """The controller NAKs every command but HOLD (reason FULL) from the moment part 2 is judged until part 2's
    gate time has passed; then it recovers. Every part is a defect (threshold 0).

    Expected: the host keeps retrying part 2 while it can still be reached (gate_retries > 0, NAKs counted);
    as the storm outlasts the belt, the host holds the controller in fail-safe (HOLD REJECT_UNACKED) before
    part 2's gate time, so part 2 is diverted (the simulator's record: the diverter was out at its gate time)
    and logged gate_status failsafe, gate_reason "NAK FULL; gate held: REJECT_UNACKED" - never missed.
    (If the flood of resends times out the port and drops the link, the controller's own fail-safe takes over:
    failsafe all the same.) Once part 2 has passed, the hold is released; part 1 (before) and parts 3-4
    (after) are fired; the run is not disturbed: every part one verdict, one row.
    """
    video = line_video(tmp_path / "line.avi", [(0, True), (14, True), (28, True), (42, True)], 95)
    line = Line(tmp_path, kit, str(video), source={"realtime": True}, model={"threshold": 0.0})
    state: dict = {"storm": None}

    def hook(view) -> bool:
        judged = line.parts.parts
        if state["storm"] is None and len(judged) >= 2:
            line.sim.nak_next, line.sim.nak_reason = 10**6, "FULL"
            state["storm"] = judged[1]
        elif state["storm"] is not None and line.sim.nak_next and view is not None:
            if time.monotonic_ns() > state["storm"].t_capture_ns + 450_000_000:  # part 2 is past the gate
                line.sim.nak_next = 0
        return True

    line.run(Hook(hook))
    parts = line.parts.parts
    assert [p.verdict for p in parts] == [Verdict.DEFECT] * 4, parts
    rows = check_fail_safe(line)
    storm = rows[state["storm"].part_id]
    assert storm["gate_retries"] > 0 and storm["reject_sent"] == 1, storm
    assert line.gate.stats["nacks"] > 1, line.gate.stats
    # On a loaded machine the simulator (a thread here) can fall behind the resends, the port's write times
    # out and the link is dropped: then the controller's watchdog holds the gate. Either way it is diverted.
    lost_link = line.gate.stats["link_lost"] > 0
    assert storm["gate_status"] == "failsafe" and line.gate.stats["missed"] == 0, (storm, line.gate.stats)
    assert line.sim.diverted_at(state["storm"].t_capture_ns + line.gate.travel_ns, 0), line.sim.holds()
    if not lost_link:
        assert storm["gate_reason"] == "NAK FULL; gate held: REJECT_UNACKED", storm
        assert line.gate.stats["holds"] == 1 and line.gate.stats["releases"] == 1, line.gate.stats
    others = [r["gate_status"] for i, r in sorted(rows.items()) if i != state["storm"].part_id]
    assert set(others) <= ({"fired", "failsafe", "unconfirmed"} if lost_link else {"fired"}), rows
    assert others[-1] == "fired", f"the gate did not recover after the storm: {rows}"
