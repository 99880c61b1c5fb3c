"""``localbus``: a python-can interface that joins processes on one machine, without vcan.

python-can's ``virtual`` bus lives inside one process, and vcan needs a kernel
module that containers and CI machines often lack. ``localbus`` connects every
bus opened on the same channel (a directory) through Unix datagram sockets: a
frame sent by one process reaches all the others, like frames on a wire. It
never touches the network. Use it to run ``pack-agent simulate`` and
``pack-agent run`` as separate processes on a bench, and in tests that kill the
agent process.

    can.Bus(interface="localbus", channel="/tmp/pack-agent-bus")

Each node has a receive buffer like a CAN socket's (``rx_buffer`` frames,
filled by a reader thread), so a process that pauses for a few hundred
milliseconds (a disk flush) loses nothing. A node that does not read for 250 ms
(stopped, hung) loses frames for the next second, counted in the sender's
``dropped``, as on a real bus: one stuck node never stops the others
(``backpressure_s`` sets the 250 ms: a simulator that must lose nothing while it
follows a slow agent, ``pack-agent simulate --follow``, waits longer). A full
receive buffer drops the newest frames, counted in ``rx_dropped``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import can

# timestamp, arbitration id, flags, dlc; then up to 64 data bytes
_HEADER = struct.Struct("<dIBB")
_EXT, _RTR, _ERR, _FD, _BRS, _ESI = 1, 2, 4, 8, 16, 32
_PEERS_REFRESH_S = 0.2
_BACKPRESSURE_S = 0.25
_STALL_S = 1.0


def encode_frame(msg: can.Message) -> bytes:
    flags = (
        (_EXT if msg.is_extended_id else 0)
        | (_RTR if msg.is_remote_frame else 0)
        | (_ERR if msg.is_error_frame else 0)
        | (_FD if msg.is_fd else 0)
        | (_BRS if msg.bitrate_switch else 0)
        | (_ESI if msg.error_state_indicator else 0)
    )
    return _HEADER.pack(msg.timestamp, msg.arbitration_id, flags, msg.dlc) + bytes(msg.data)


def decode_frame(raw: bytes, channel: str) -> can.Message:
    ts, arb, flags, dlc = _HEADER.unpack_from(raw)
    return can.Message(
        timestamp=ts,
        arbitration_id=arb,
        is_extended_id=bool(flags & _EXT),
        is_remote_frame=bool(flags & _RTR),
        is_error_frame=bool(flags & _ERR),
        is_fd=bool(flags & _FD),
        bitrate_switch=bool(flags & _BRS),
        error_state_indicator=bool(flags & _ESI),
        dlc=dlc,
        data=raw[_HEADER.size :],
        channel=channel,
        is_rx=True,
    )


class LocalBus(can.BusABC):
    """One node on a local, multi-process CAN bus; ``channel`` is the bus's directory."""

    def __init__(
        self,
        channel: Any = "/tmp/pack-agent-localbus",
        preserve_timestamps: bool = False,
        receive_own_messages: bool = False,
        rx_buffer: int = 20_000,
        backpressure_s: float = _BACKPRESSURE_S,
        **kwargs: Any,
    ) -> None:
        self.channel_info = f"localbus {channel}"
        self._dir = Path(str(channel))
        self._dir.mkdir(parents=True, exist_ok=True)
        self._path = self._dir / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.sock"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self._path))
        self._sock.setblocking(False)
        self._preserve = preserve_timestamps
        self._backpressure_s = float(backpressure_s)
        self._own = receive_own_messages
        self._peers: list[str] = []
        self._stalled: dict[str, float] = {}
        self._peers_at = 0.0
        self.dropped = 0
        self.rx_dropped = 0
        self._closed = False
        self._rx: queue.Queue[bytes] = queue.Queue(maxsize=rx_buffer)
        self._reader = threading.Thread(
            target=self._read, name=f"localbus-rx {self._path.name}", daemon=True
        )
        self._reader.start()
        super().__init__(channel=channel, **kwargs)

    def _read(self) -> None:
        """The receive buffer: drains the socket as the kernel drains a CAN controller."""
        while not self._closed:
            try:
                ready, _, _ = select.select([self._sock], [], [], 0.2)
                if not ready:
                    continue
                raw = self._sock.recv(_HEADER.size + 64)
            except BlockingIOError:
                continue
            except OSError:
                return  # closed
            try:
                self._rx.put_nowait(raw)
            except queue.Full:
                self.rx_dropped += 1

    def _refresh_peers(self) -> None:
        now = time.monotonic()
        if now - self._peers_at < _PEERS_REFRESH_S:
            return
        self._peers_at = now
        mine = str(self._path)
        self._peers = [str(p) for p in self._dir.glob("*.sock") if self._own or str(p) != mine]

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if self._closed:
            raise can.CanOperationError("localbus is shut down")
        if not self._preserve:
            msg = can.Message(
                timestamp=time.time(),
                arbitration_id=msg.arbitration_id,
                is_extended_id=msg.is_extended_id,
                is_remote_frame=msg.is_remote_frame,
                is_error_frame=msg.is_error_frame,
                is_fd=msg.is_fd,
                bitrate_switch=msg.bitrate_switch,
                error_state_indicator=msg.error_state_indicator,
                dlc=msg.dlc,
                data=msg.data,
            )
        raw = encode_frame(msg)
        self._refresh_peers()
        for peer in list(self._peers):
            self._send_to(peer, raw)

    def _send_to(self, peer: str, raw: bytes) -> None:
        """A receiver's queue is short (net.unix.max_dgram_qlen, often 10 frames): wait
        briefly (``backpressure_s``) for a living node to read, but drop for a second to
        one that is stuck."""
        now = time.monotonic()
        if self._stalled.get(peer, 0.0) > now:
            self.dropped += 1
            return
        deadline = now + self._backpressure_s
        while True:
            try:
                self._sock.sendto(raw, peer)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._stalled[peer] = time.monotonic() + _STALL_S
                    self.dropped += 1
                    return
                time.sleep(0.0005)
            except (ConnectionRefusedError, FileNotFoundError):
                self._forget(peer)  # a node that died without closing
                return

    def _forget(self, peer: str) -> None:
        with contextlib.suppress(ValueError):
            self._peers.remove(peer)
        with contextlib.suppress(OSError):
            os.unlink(peer)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        if self._closed:
            raise can.CanOperationError("localbus is shut down")
        try:
            if timeout is None:
                raw = self._rx.get()  # python-can: None waits for a frame
            elif timeout <= 0:
                raw = self._rx.get_nowait()
            else:
                raw = self._rx.get(timeout=timeout)
        except queue.Empty:
            return None, False
        return decode_frame(raw, str(self._dir)), False

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        super().shutdown()
        self._reader.join(1.0)
        self._sock.close()
        with contextlib.suppress(OSError):
            self._path.unlink()
