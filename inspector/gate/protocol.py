"""The gate line protocol: one ASCII line per message, ``$SEQ,TYPE,field,...*CC\\n``.

ASCII so a commissioning engineer can read it in a terminal or a PLC's serial monitor. ``CC`` is the
CRC-8 (polynomial 0x07, init 0x00, "CRC-8/SMBUS") of every byte between ``$`` and ``*``, two upper-case hex
digits. ``SEQ`` is the sender's own counter, 0..65535, wrapping. See docs/gate-protocol.md for the message
table and the fail-safe rules; this module is the codec both ends (actuator and simulator) share.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 80  # bytes including '$', '*CC' and '\n'; longer input is garbage until the next '$'
SEQ_MOD = 65536

# Host -> controller
HB = "HB"  # HB,<host_ms>                          heartbeat (not acknowledged)
REJ = "REJ"  # REJ,<part>,<delay_ms>                 fire <delay_ms> after receipt (<= 0: now, late)
REJT = "REJT"  # REJT,<part>,<ctrl_ms>               fire when the controller's clock reads ctrl_ms (32-bit)
REJE = "REJE"  # REJE,<part>,<encoder_count>         fire when the encoder reaches this count
CFG = "CFG"  # CFG,<D|S>,<link_timeout_ms>,<pulse_ms>,<heartbeat_ms>
RUN = "RUN"  # RUN                                   leave fail-safe (sent after pending rejects)
HOLD = "HOLD"  # HOLD,<reason>                       enter fail-safe until RUN: the host cannot vouch for parts
STQ = "ST?"  # ST?                                   ask for a STATUS line
HOST_TYPES = {HB: 2, REJ: 3, REJT: 3, REJE: 3, CFG: 5, RUN: 1, HOLD: 2, STQ: 1}  # type -> field count incl. type
# Controller -> host
ACK = "ACK"  # ACK,<host_seq>
NAK = "NAK"  # NAK,<host_seq|?>,<reason>
FIRED = "FIRED"  # FIRED,<part>,<late_ms>
ST = "ST"  # ST,<mode>,<queue>,<fired>,<late>,<rx_errors>,<failsafe_entries>
MODE = "MODE"  # MODE,<mode>,<reason>
ERR = "ERR"  # ERR,<code>,<text>
CTRL_TYPES = {HB: 5, ACK: 2, NAK: 3, FIRED: 3, ST: 7, MODE: 3, ERR: 3}  # HB,<mode>,<queue>,<encoder>,<ctrl_ms>
REJECTS = (REJ, REJT, REJE)
CLOCK_MOD = 2**32  # the controller's millisecond clock and encoder count wrap here

# Controller modes and NAK reasons
MODE_RUN, MODE_DIVERT, MODE_STOP = "RUN", "DIVERT", "STOP"
NAK_REASONS = ("CRC", "SYNTAX", "FULL", "UNKNOWN", "RANGE")
# HOLD reasons (the controller reports MODE,<DIVERT|STOP>,HOST_HOLD; the reason is for its log and the host's)
HOLD_SOURCE_STALL = "SOURCE_STALL"  # the camera stalled: parts pass it unseen, no reject is sent for them
HOLD_REJECT_UNACKED = "REJECT_UNACKED"  # a reject could not be acknowledged before its deadline
HOST_HOLD = "HOST_HOLD"  # the MODE reason for a hold


class ProtocolError(ValueError):
    """A line that cannot be trusted: bad framing, checksum or field count. ``reason`` is a NAK reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    type: str
    fields: tuple[str, ...] = ()

    def field_int(self, i: int) -> int:
        try:
            return int(self.fields[i])
        except (IndexError, ValueError):
            raise ProtocolError("SYNTAX", f"{self.type} field {i + 1} is not an integer: {self.fields}") from None


def _crc8_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_TABLE = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8/SMBUS: poly 0x07, init 0, no reflection, no final xor. crc8(b'123456789') == 0xF4."""
    crc = 0
    for b in data:
        crc = _TABLE[crc ^ b]
    return crc


def encode(seq: int, type_: str, *fields: object) -> bytes:
    """One framed line. Fields must not contain ``$ * , \\n`` (checked: a bad field is a programming error)."""
    body = ",".join([str(seq % SEQ_MOD), type_, *(str(f) for f in fields)])
    if any(c in body for c in "$*\r\n") or not body.isascii():
        raise ValueError(f"field contains a framing character: {body!r}")
    raw = body.encode("ascii")
    line = b"$" + raw + b"*" + f"{crc8(raw):02X}".encode() + b"\n"
    if len(line) > MAX_LINE:
        raise ValueError(f"line longer than {MAX_LINE} bytes: {line!r}")
    return line


def decode(line: bytes, expected: dict[str, int] | None = None) -> Message:
    """Parse one line (with or without its newline). ``expected`` maps type -> field count (incl. type).

    Raises ProtocolError("CRC"|"SYNTAX"|"UNKNOWN", ...): the caller NAKs it and counts it.
    """
    line = line.rstrip(b"\r\n")
    if not line.startswith(b"$") or len(line) < 5 or line[-3:-2] != b"*":
        raise ProtocolError("SYNTAX", f"not a framed line: {line[:40]!r}")
    raw, cc = line[1:-3], line[-2:]
    try:
        want = int(cc, 16)
    except ValueError:
        raise ProtocolError("SYNTAX", f"checksum is not hex: {cc!r}") from None
    if crc8(raw) != want:
        raise ProtocolError("CRC", f"checksum {cc.decode('ascii', 'replace')} != {crc8(raw):02X}")
    try:
        parts = raw.decode("ascii").split(",")
    except UnicodeDecodeError:
        raise ProtocolError("SYNTAX", "non-ASCII bytes") from None
    if len(parts) < 2 or not parts[0].isdigit():
        raise ProtocolError("SYNTAX", f"no sequence number: {raw[:40]!r}")
    msg = Message(int(parts[0]), parts[1], tuple(parts[2:]))
    if expected is not None:
        check(msg, expected)
    return msg


def check(msg: Message, expected: dict[str, int]) -> None:
    """A line with a good checksum but an unknown type or the wrong field count (its seq can be trusted)."""
    if msg.type not in expected:
        raise ProtocolError("UNKNOWN", f"unknown message type {msg.type!r}")
    if len(msg.fields) + 1 != expected[msg.type]:
        raise ProtocolError("SYNTAX", f"{msg.type} needs {expected[msg.type] - 1} fields, got {len(msg.fields)}")


class LineFramer:
    """Split a byte stream into candidate lines; noise before a ``$`` and over-long lines are dropped, counted.

    A line starts at ``$`` (a new ``$`` restarts it, so a lost newline costs one message, not two).
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self.dropped_bytes = 0
        self.overlong = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        for b in data:
            if b == 0x24:  # '$'
                if self._buf:
                    self.dropped_bytes += len(self._buf)
                self._buf = bytearray(b"$")
            elif not self._buf:
                if b not in (0x0A, 0x0D):
                    self.dropped_bytes += 1
            elif b == 0x0A:
                lines.append(bytes(self._buf))
                self._buf = bytearray()
            else:
                self._buf.append(b)
                if len(self._buf) > self.max_line:
                    self.overlong += 1
                    self.dropped_bytes += len(self._buf)
                    self._buf = bytearray()
        return lines


class SeqCounter:
    """The sender's 16-bit sequence counter."""

    def __init__(self, start: int = 0) -> None:
        self._n = start % SEQ_MOD

    def next(self) -> int:
        n = self._n
        self._n = (self._n + 1) % SEQ_MOD
        return n
