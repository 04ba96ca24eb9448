"""A stand-in for systemd's end of NOTIFY_SOCKET, shared by the service tests."""

from __future__ import annotations

import socket
import time


class Listener:
    """What systemd does with NOTIFY_SOCKET: receive datagrams; here each is kept with its arrival time."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[tuple[float, str]] = []

    def next(self, timeout_s: float) -> str | None:
        self.sock.settimeout(timeout_s)
        try:
            data = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        self.messages.append((time.monotonic(), data))
        return data

    def wait_for(self, key: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            msg = self.next(left)
            if msg is not None and key in msg.split("\n"):
                return msg
        raise AssertionError(f"no {key} within {timeout_s} s; got {[m for _, m in self.messages]}")

    def collect(self, seconds: float) -> list[tuple[float, str]]:
        out, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.next(left) is not None:
                out.append(self.messages[-1])
        return out

    def close(self) -> None:
        self.sock.close()
