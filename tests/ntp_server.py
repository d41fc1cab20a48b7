"""A real SNTP server for the tests (RFC 4330 server replies over UDP on 127.0.0.1, a free port).

Its clock is the machine's clock plus ``shift_s`` (so a shift of -2.5 makes the device clock look 2.5 s
ahead). Faults on request: a stratum (0 = kiss-o'-death with ``kiss_code``), a leap indicator, silence,
a wrong originate timestamp, a reply mode or version, time spent in the server, a slow inbound path.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from types import TracebackType

NTP_EPOCH_OFFSET = 2208988800


def _ntp(t: float) -> bytes:
    t += NTP_EPOCH_OFFSET
    sec = int(t)
    return struct.pack("!II", sec & 0xFFFFFFFF, int((t - sec) * 2**32) & 0xFFFFFFFF)


class SntpServer:
    """``with SntpServer(shift_s=-2.5) as srv: query(srv.address, ...)``; attributes may change while it runs."""

    def __init__(self, shift_s: float = 0.0, *, stratum: int = 1, leap: int = 0, kiss_code: str = "",
                 silent: bool = False, wrong_originate: bool = False, mode: int = 4, version: int | None = None,
                 hold_s: float = 0.0, inbound_lag_s: list[float] | None = None) -> None:
        self.shift_s = shift_s
        self.stratum = stratum
        self.leap = leap
        self.kiss_code = kiss_code
        self.silent = silent
        self.wrong_originate = wrong_originate
        self.mode = mode
        self.version = version  # None: the request's
        self.hold_s = hold_s  # between receiving and transmitting (shows up as server time, not delay)
        # request i waits inbound_lag_s[i] before it is "received": a slow path towards the server, which
        # lengthens the round trip and, being one-way, skews that sample's offset by half of it
        self.inbound_lag_s = list(inbound_lag_s or [])
        self.requests = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"sntp-{self.port}", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(1024)
            except TimeoutError:
                continue
            except OSError:
                return
            if self.requests < len(self.inbound_lag_s):
                time.sleep(self.inbound_lag_s[self.requests])
            received = time.time() + self.shift_s
            if len(data) < 48:
                continue
            self.requests += 1
            if self.silent:
                continue
            version = self.version if self.version is not None else (data[0] >> 3) & 0x7
            originate = _ntp(time.time() - 100.0) if self.wrong_originate else data[40:48]
            ref_id = self.kiss_code.encode("ascii").ljust(4, b"\0") if self.stratum == 0 else b"GPS\0"
            if self.hold_s:
                time.sleep(self.hold_s)
            header = struct.pack("!BBbbII4s", (self.leap << 6) | (version << 3) | self.mode, self.stratum,
                                 4, -20, 0, 0, ref_id)
            reply = header + _ntp(received - 10.0) + originate + _ntp(received) + _ntp(time.time() + self.shift_s)
            self._sock.sendto(reply, peer)

    def __enter__(self) -> SntpServer:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
