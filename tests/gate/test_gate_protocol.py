"""The line codec: CRC, framing, and every way a line can be bad."""

from __future__ import annotations

import pytest

from inspector.gate import protocol as P


def test_crc8_check_value() -> None:
    assert P.crc8(b"123456789") == 0xF4  # the published CRC-8/SMBUS check value


def test_round_trip() -> None:
    line = P.encode(65537, P.REJ, 42, -3)
    assert line.startswith(b"$1,REJ,42,-3*") and line.endswith(b"\n")
    msg = P.decode(line, P.HOST_TYPES)
    assert (msg.seq, msg.type, msg.fields, msg.field_int(1)) == (1, "REJ", ("42", "-3"), -3)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"$1,REJ,42,100*00", "CRC"),  # wrong checksum
        (b"1,REJ,42,100*00", "SYNTAX"),  # no '$'
        (b"$1,REJ,42,100", "SYNTAX"),  # no checksum
        (b"$1,REJ,42,100*G1", "SYNTAX"),  # checksum not hex
        (P.encode(1, "FOO", 1).rstrip(), "UNKNOWN"),
        (P.encode(1, P.REJ, 42).rstrip(), "SYNTAX"),  # one field short
        (P.encode(1, P.REJ, 42, 1, 2).rstrip(), "SYNTAX"),  # one field too many
        (b"$" + b"x,REJ*" + f"{P.crc8(b'x,REJ'):02X}".encode(), "SYNTAX"),  # sequence not a number
    ],
)
def test_bad_lines(line: bytes, reason: str) -> None:
    with pytest.raises(P.ProtocolError) as exc:
        P.decode(line, P.HOST_TYPES)
    assert exc.value.reason == reason


def test_field_int_rejects_text() -> None:
    msg = P.decode(P.encode(3, P.REJ, "abc", 5), P.HOST_TYPES)
    with pytest.raises(P.ProtocolError, match="not an integer"):
        msg.field_int(0)


@pytest.mark.parametrize("bad", ["a$b", "a*b", "a\nb", "é"])
def test_encode_refuses_framing_characters(bad: str) -> None:
    with pytest.raises(ValueError):
        P.encode(1, P.ERR, 1, bad)


def test_framer_skips_noise_and_restarts_on_dollar() -> None:
    f = P.LineFramer()
    good = P.encode(7, P.ACK, 3)
    lines = f.feed(b"\x00\xffnoise" + good[:6] + b"$" + good[1:] + b"\r\n" + good)
    # the cut line is abandoned at the next '$'; both full copies come out
    assert lines == [b"$" + good[1:-1], good[:-1]]
    assert f.dropped_bytes == len(b"\x00\xffnoise") + 6  # noise and the cut line; CR/LF between lines are not


def test_framer_drops_overlong_lines() -> None:
    f = P.LineFramer(max_line=20)
    assert f.feed(b"$" + b"9" * 50 + b"\n" + P.encode(1, P.ACK, 1)) == [P.encode(1, P.ACK, 1)[:-1]]
    assert f.overlong == 1


def test_sequence_wraps() -> None:
    c = P.SeqCounter(P.SEQ_MOD - 1)
    assert [c.next(), c.next()] == [P.SEQ_MOD - 1, 0]
