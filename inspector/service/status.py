"""The one-line summary the service manager shows (`systemctl status`: the STATUS= line), from the line's typed
health snapshot, so it says the same as the metrics and MQTT."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from inspector.health import Health

if TYPE_CHECKING:
    from inspector.service.notify import ServiceNotifier


def status_line(h: Health) -> str:
    """e.g. ``parts 120 (defect 8, no verdict 1) | 29.8 fps | camera ok | gate ok | log ok``."""
    p = h.parts
    bits = [
        f"parts {p.ok + p.defect + p.no_verdict} (defect {p.defect}, no verdict {p.no_verdict})",
        f"{h.inspection.fps:.1f} fps",
        f"camera stalled ({h.camera.stalls} stall(s))" if h.camera.stalled else "camera ok",
    ]
    if h.gate is not None:
        g = h.gate
        if g.link_down or not g.connected:
            bits.append("gate link down")
        elif g.held:
            bits.append(f"gate held ({', '.join(g.hold_reasons) or '?'})")
        else:
            bits.append("gate ok")
    if h.log is not None:
        dropped = h.log.counters.get("rows_dropped", 0)
        bits.append(
            f"log rows dropped {dropped}" if dropped else f"log queue {h.log.queue}" if h.log.queue else "log ok"
        )
    return " | ".join(bits)


class StatusOnLineState:
    """A sink that only listens: tells the service manager at once when the camera stalls and when frames flow
    again (the 5 s status would say it later; the watchdog only after a whole period). Parts pass through."""

    def __init__(self, notifier: ServiceNotifier, summary: Callable[[], str]) -> None:
        self.notifier, self.summary = notifier, summary

    def on_part(self, part: object) -> None:
        pass

    def on_line_state(self, ok: bool, reason: str) -> None:
        """The pipeline's word (inspection thread, only on a change): one STATUS= datagram."""
        if ok:
            self.notifier.status(f"camera back: {self.summary()}")
        else:
            self.notifier.status("camera stalled: parts in flight rejected, the gate holds; reopening the source")

    def close(self) -> None:
        pass
