"""The virtual BMS's diagnostic side: answers UDS ReadDataByIdentifier (0x22) over ISO-TP.

``VirtualUdsBms`` serves a table of DIDs on its own bus handle; a DID it does
not know gets the negative response requestOutOfRange (0x7F 22 31). Tests and
demos can make it go silent (``answering = False``) or refuse a DID with any
negative response code (``refuse``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pack_agent.canbus.uds import NEGATIVE_RESPONSE, READ_DATA_BY_IDENTIFIER

if TYPE_CHECKING:
    import can

    from pack_agent.dev.sim.scenario import DayState
    from pack_agent.dev.sim.vehicle import VirtualVehicle

NRC_REQUEST_OUT_OF_RANGE = 0x31
NRC_SERVICE_NOT_SUPPORTED = 0x11
NRC_CONDITIONS_NOT_CORRECT = 0x22

DidValue = bytes | Callable[[], bytes]


def pack_code_record(code: str) -> bytes:
    """The pack code as the virtual BMS stores it under its DID: 24 ASCII bytes."""
    return code.encode("ascii").ljust(24, b"\0")


def hyundai_0105_record(soh: float, start_byte: int = 24) -> bytes:
    """A DID 0x0105-style record with SOH (0.1 %, two bytes big-endian) at ``start_byte``;
    the other bytes are filler, as on the real BMS where they carry cell data."""
    record = bytearray(range(1, start_byte + 8))
    record[start_byte : start_byte + 2] = round(soh * 10).to_bytes(2, "big")
    return bytes(record)


def vehicle_dids(
    vehicle: VirtualVehicle, code_did: int = 0xF1A0, soh_did: int = 0x0105
) -> dict[int, DidValue]:
    """The DIDs of a ``VirtualVehicle``'s BMS, following its scenario day by day: the same
    pack code and SOH it broadcasts, now also answered over diagnostics."""

    def state() -> DayState:
        if vehicle.day is None:
            raise LookupError("the vehicle has not started its scenario")
        return vehicle.day

    return {
        code_did: lambda: pack_code_record(state().code),
        soh_did: lambda: hyundai_0105_record(state().soh),
    }


class VirtualUdsBms:
    """A diagnostic server for one request/response id pair, on its own thread."""

    def __init__(
        self,
        bus: can.BusABC,
        request_id: int,
        response_id: int,
        dids: dict[int, DidValue],
        extended_id: bool = False,
    ) -> None:
        import isotp

        mode = (
            isotp.AddressingMode.Normal_29bits
            if extended_id
            else isotp.AddressingMode.Normal_11bits
        )
        self.bus = bus
        self.dids = dict(dids)
        self.answering = True
        self.refuse: dict[int, int] = {}  # DID -> negative response code
        self.requests = 0
        self._stack = isotp.CanStack(
            bus,
            address=isotp.Address(mode, txid=response_id, rxid=request_id),
            params={"tx_data_min_length": 8, "tx_padding": 0x00, "blocking_send": False},
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtual-uds-bms", daemon=True)

    def answer(self, payload: bytes) -> bytes:
        """The response to one request (pure, for tests)."""
        if len(payload) < 1 or payload[0] != READ_DATA_BY_IDENTIFIER:
            service = payload[0] if payload else 0
            return bytes([NEGATIVE_RESPONSE, service, NRC_SERVICE_NOT_SUPPORTED])
        if len(payload) != 3:
            return bytes([NEGATIVE_RESPONSE, READ_DATA_BY_IDENTIFIER, 0x13])
        did = int.from_bytes(payload[1:3], "big")
        if did in self.refuse:
            return bytes([NEGATIVE_RESPONSE, READ_DATA_BY_IDENTIFIER, self.refuse[did]])
        value = self.dids.get(did)
        if value is None:
            return bytes([NEGATIVE_RESPONSE, READ_DATA_BY_IDENTIFIER, NRC_REQUEST_OUT_OF_RANGE])
        try:
            data = value() if callable(value) else value
        except LookupError:  # nothing to report yet
            return bytes([NEGATIVE_RESPONSE, READ_DATA_BY_IDENTIFIER, NRC_CONDITIONS_NOT_CORRECT])
        return bytes([READ_DATA_BY_IDENTIFIER + 0x40]) + payload[1:3] + data

    def _run(self) -> None:
        while not self._stop.is_set():
            payload = self._stack.recv(block=True, timeout=0.05)
            if payload is None:
                continue
            self.requests += 1
            if self.answering:
                self._stack.send(self.answer(bytes(payload)))

    def start(self) -> VirtualUdsBms:
        self._stack.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._stack.stop()

    def __enter__(self) -> VirtualUdsBms:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
