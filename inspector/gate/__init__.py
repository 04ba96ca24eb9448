"""The reject gate: protocol codec, actuator (a PartSink) and the gate controller simulator.

:func:`open_actuator` is what `inspector run` calls: it returns None when no gate is configured.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import serial
from pydantic import ValidationError

from ground.errors import UserError
from inspector.config import GateConfig
from inspector.gate.actuator import GateActuator, GateResult
from inspector.records import Part

log = logging.getLogger(__name__)

__all__ = ["GateActuator", "GateResult", "SimulatedGate", "check_timing", "open_actuator"]


def check_timing(cfg: GateConfig) -> float:
    """-> belt travel camera-to-gate in ms; UserError when a verdict (or a dead link) could come too late."""
    try:
        GateConfig.model_validate(cfg.model_dump())
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UserError(f"gate configuration: {msg}") from None
    return cfg.travel_ms


class SimulatedGate:
    """`--serial sim`: the actuator talking to an in-process simulated controller over a real pty pair."""

    def __init__(
        self, cfg: GateConfig, on_result: Callable[[GateResult], None] | None = None, record: str | None = None
    ) -> None:
        from inspector.gate.sim import GateSimulator, PtyLink

        self.link = PtyLink()
        self.sim = GateSimulator(
            self.link,
            record=record,
            fail_safe="DIVERT" if cfg.fail_safe == "divert" else "STOP",
            link_timeout_ms=cfg.link_timeout_ms,
            heartbeat_ms=cfg.heartbeat_ms,
            pulse_ms=cfg.pulse_ms,
            counts_per_mm=cfg.counts_per_mm or 10.0,
            belt_speed_mm_s=cfg.belt_speed_mm_s,
        ).start()
        self.actuator = GateActuator(cfg, self.link.port, on_result)
        self.stats = self.actuator.stats

    def on_part(self, part: Part) -> None:
        self.actuator.on_part(part)

    def on_line_state(self, ok: bool, reason: str) -> None:
        self.actuator.on_line_state(ok, reason)

    def state(self) -> dict[str, Any]:
        """The actuator's state, as monitoring reads it (no one reaches through to ``.actuator``)."""
        return self.actuator.state()

    def close(self) -> None:
        self.actuator.close()
        self.sim.close()
        self.link.close()
        log.info("simulated gate: %s", self.sim.counters)


def check_port(port: str) -> None:
    """Refuse a port that cannot work at start-up (typo, no permission, unknown URL scheme).

    Once running, a port that vanishes is a link fault (the actuator reconnects, the controller fails safe);
    at start it is a setting to fix, so the operator is told at once instead of the line running fail-safe.
    """
    if port == "sim":
        return
    if "://" in port:
        try:
            serial.serial_for_url(port, do_not_open=True)
        except (ValueError, serial.SerialException) as exc:
            raise UserError(f"gate.port {port}: {exc}; use a device path, loop://, spy://... or 'sim'") from None
        return
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UserError(
            f"gate.port {port}: no such serial port; check the cable and the name (ls /dev/ttyUSB* /dev/ttyACM*),"
            " or use --serial sim to simulate the gate"
        ) from None
    except PermissionError:
        raise UserError(
            f"gate.port {port}: permission denied; add the user to the port's group "
            "(sudo usermod -aG dialout $USER, then log in again)"
        ) from None
    except OSError as exc:
        raise UserError(f"gate.port {port}: cannot open it ({exc.strerror}); check the device") from None
    try:
        if not os.isatty(fd):
            raise UserError(
                f"gate.port {port}: not a serial port (no terminal device); give the adapter's device, "
                "e.g. /dev/ttyUSB0 or /dev/ttyACM0"
            )
    finally:
        os.close(fd)


def open_actuator(
    cfg: GateConfig, on_result: Callable[[GateResult], None] | None = None
) -> GateActuator | SimulatedGate | None:
    """The gate sink for ``cfg.port`` (None: no gate). ``on_result`` gets each part's GateResult (the log)."""
    if not cfg.port:
        return None
    travel = check_timing(cfg)
    check_port(cfg.port)
    log.info("gate on %s: %.0f ms belt travel, fail-safe %s", cfg.port, travel, cfg.fail_safe)
    if cfg.port == "sim":
        return SimulatedGate(cfg, on_result)
    return GateActuator(cfg, cfg.port, on_result)
