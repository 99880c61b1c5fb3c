"""The pack code and metrics from UDS ReadDataByIdentifier (0x22) over ISO-TP (can-isotp).

For BMSs that only answer diagnostics. ``UdsPoller`` runs one thread that polls
every configured request at its interval, each on its own bus handle filtered
to its response id (SocketCAN gives every socket its own copy of the traffic,
so the agent's main socket is untouched), retries timeouts with tenacity, and
puts ``UdsResult``s on a queue the agent drains on its own thread.
Request building and response parsing are pure functions.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pack_agent.config import AgentConfig, UdsRequest, UdsValue

if TYPE_CHECKING:
    import can

log = logging.getLogger(__name__)

READ_DATA_BY_IDENTIFIER = 0x22
POSITIVE_OFFSET = 0x40
NEGATIVE_RESPONSE = 0x7F
NRC_BUSY_REPEAT = 0x21
NRC_RESPONSE_PENDING = 0x78
NRC_NAMES = {
    0x10: "generalReject",
    0x11: "serviceNotSupported",
    0x12: "subFunctionNotSupported",
    0x13: "incorrectMessageLengthOrInvalidFormat",
    0x14: "responseTooLong",
    0x21: "busyRepeatRequest",
    0x22: "conditionsNotCorrect",
    0x31: "requestOutOfRange",
    0x33: "securityAccessDenied",
    0x78: "requestCorrectlyReceived-ResponsePending",
    0x7F: "serviceNotSupportedInActiveSession",
}


class UdsNegativeResponse(Exception):
    """The ECU answered 0x7F: it is alive, but will not give this DID."""

    def __init__(self, did: int, nrc: int) -> None:
        self.did, self.nrc = did, nrc
        name = NRC_NAMES.get(nrc, "unknown")
        super().__init__(f"negative response to DID 0x{did:04X}: NRC 0x{nrc:02X} ({name})")


class UdsTimeout(Exception):
    """No (complete) answer within the timeout."""


class UdsProtocolError(Exception):
    """An answer that is not a response to our request."""


class UdsWrongDid(UdsProtocolError):
    """A positive response for another DID."""


def read_request(did: int) -> bytes:
    return bytes([READ_DATA_BY_IDENTIFIER]) + did.to_bytes(2, "big")


def parse_response(did: int, payload: bytes) -> bytes:
    """The DID's data from a positive response; raises for a negative or a foreign one."""
    if len(payload) >= 3 and payload[0] == NEGATIVE_RESPONSE:
        if payload[1] == READ_DATA_BY_IDENTIFIER:
            raise UdsNegativeResponse(did, payload[2])
        raise UdsProtocolError(f"negative response to service 0x{payload[1]:02X}")
    if len(payload) < 3 or payload[0] != READ_DATA_BY_IDENTIFIER + POSITIVE_OFFSET:
        raise UdsProtocolError(f"not a ReadDataByIdentifier response: {payload[:8].hex(' ')}")
    got = int.from_bytes(payload[1:3], "big")
    if got != did:
        raise UdsWrongDid(f"response for DID 0x{got:04X}, asked 0x{did:04X}")
    return payload[3:]


def extract_value(spec: UdsValue, data: bytes) -> float:
    """``length`` bytes from ``start_byte`` of the DID data, scaled; raises ValueError when
    the answer is too short or outside ``minimum``..``maximum``."""
    end = spec.start_byte + spec.length
    if len(data) < end:
        raise ValueError(f"{len(data)} data bytes, need {end}")
    raw = int.from_bytes(data[spec.start_byte : end], spec.byte_order, signed=spec.signed)
    value = raw * spec.scale + spec.offset
    if (spec.minimum is not None and value < spec.minimum) or (
        spec.maximum is not None and value > spec.maximum
    ):
        raise ValueError(f"{value:g} outside {spec.minimum}..{spec.maximum}")
    return value


def decode_text(data: bytes) -> str:
    """A code as the BMS stores it: ASCII, NUL- or space-padded."""
    return data.decode("latin-1").strip("\x00 ")


@dataclass(frozen=True)
class UdsJob:
    """One polled request: ``target`` is ``pack_code`` or a metric name."""

    target: str
    bus: str
    request: UdsRequest

    @property
    def source(self) -> str:
        return f"uds:{self.target}"

    @property
    def link(self) -> tuple[str, int, int, bool]:
        r = self.request
        return (self.bus, r.request_id, r.response_id, r.extended_id)


@dataclass(frozen=True)
class UdsResult:
    """What one poll gave: ``outcome`` is ``value``, ``text``, ``negative``, ``timeout`` or
    ``invalid`` (an answer that could not be used)."""

    job: UdsJob
    outcome: str
    time: float
    value: float | None = None
    text: str | None = None
    detail: str = ""


def jobs_from_config(config: AgentConfig) -> list[UdsJob]:
    default_bus = config.buses[0].name
    jobs = [
        UdsJob(metric, ref.uds.bus or ref.bus or default_bus, ref.uds)
        for metric, ref in config.metrics.items()
        if ref.uds is not None
    ]
    pc = config.pack_code
    if pc.source == "uds" and pc.uds is not None:
        jobs.append(UdsJob("pack_code", pc.uds.bus or pc.bus or default_bus, pc.uds))
    return jobs


class UdsClient:
    """One ISO-TP link (request id -> response id) on its own bus handle."""

    def __init__(self, bus: can.BusABC, request: UdsRequest) -> None:
        import isotp

        mode = (
            isotp.AddressingMode.Normal_29bits
            if request.extended_id
            else isotp.AddressingMode.Normal_11bits
        )
        self._bus = bus
        self._request = request
        self._stack = isotp.CanStack(
            bus,
            address=isotp.Address(mode, txid=request.request_id, rxid=request.response_id),
            params={"tx_data_min_length": 8, "tx_padding": 0x00, "blocking_send": False},
        )
        self._stack.start()

    def read_did(self, did: int, timeout_s: float) -> bytes:
        """One request, one answer (waiting on through 'response pending')."""
        while self._stack.available():  # a late answer to an earlier try
            self._stack.recv(block=False)
        self._stack.send(read_request(did))
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UdsTimeout(f"no answer to DID 0x{did:04X} within {timeout_s:g} s")
            payload = self._stack.recv(block=True, timeout=left)
            if payload is None:
                continue
            try:
                return parse_response(did, bytes(payload))
            except UdsWrongDid:
                continue  # a late answer to another request on this link
            except UdsNegativeResponse as exc:
                if exc.nrc != NRC_RESPONSE_PENDING:
                    raise
                deadline = time.monotonic() + max(timeout_s, 5.0)  # P2* extended wait

    def close(self) -> None:
        try:
            self._stack.stop()
        finally:
            self._bus.shutdown()


class UdsPoller:
    """Polls every job at its interval on one thread; results go to ``results``."""

    def __init__(
        self,
        jobs: list[UdsJob],
        open_bus: Callable[[UdsJob], can.BusABC],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jobs = jobs
        self.results: queue.SimpleQueue[UdsResult] = queue.SimpleQueue()
        self._clock = clock
        # one ISO-TP link per (bus, request id, response id): jobs on the same ECU share it,
        # so only one stack answers the ECU's flow control and reads its responses
        self._clients: dict[tuple[str, int, int, bool], UdsClient] = {}
        try:
            for job in jobs:
                if job.link not in self._clients:
                    self._clients[job.link] = UdsClient(open_bus(job), job.request)
        except Exception:
            self.close()
            raise
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pack-agent-uds", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def drain(self) -> list[UdsResult]:
        out = []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    def _run(self) -> None:
        next_due = [0.0] * len(self.jobs)
        while not self._stop.is_set():
            t = time.monotonic()
            for i, job in enumerate(self.jobs):
                if self._stop.is_set():
                    return
                if t >= next_due[i]:
                    next_due[i] = t + job.request.interval_s
                    self.results.put(self.poll_once(job))
            wait = min(next_due) - time.monotonic()
            self._stop.wait(max(0.01, min(wait, 1.0)))

    def poll_once(self, job: UdsJob) -> UdsResult:
        """One request with ``retries`` further tries on timeout or 'busy, repeat request'."""
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

        req = job.request

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, UdsTimeout) or (
                isinstance(exc, UdsNegativeResponse) and exc.nrc == NRC_BUSY_REPEAT
            )

        client = self._clients[job.link]
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(req.retries + 1),
                retry=retry_if_exception(retryable),
                wait=wait_fixed(min(0.1, req.timeout_s)),
                reraise=True,
            ):
                with attempt:
                    data = client.read_did(req.did, req.timeout_s)
        except UdsNegativeResponse as exc:
            return UdsResult(job, "negative", self._clock(), detail=str(exc))
        except UdsTimeout as exc:
            return UdsResult(
                job, "timeout", self._clock(), detail=f"{exc} ({req.retries + 1} tries)"
            )
        except Exception as exc:  # a foreign answer, an ISO-TP error, a bus error
            return UdsResult(job, "invalid", self._clock(), detail=str(exc))
        now = self._clock()
        if isinstance(req, UdsValue):
            try:
                return UdsResult(job, "value", now, value=extract_value(req, data))
            except ValueError as exc:
                return UdsResult(job, "invalid", now, detail=f"DID 0x{req.did:04X}: {exc}")
        return UdsResult(job, "text", now, text=decode_text(data))

    def close(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=5)
        for client in self._clients.values():
            client.close()


def uds_max_age(request: UdsRequest, bms_timeout_s: float) -> float:
    """How long a UDS reading stays fresh: until the next poll, all its tries, and the
    usual BMS timeout have passed."""
    return request.interval_s + (request.retries + 1) * request.timeout_s + bms_timeout_s


def job_filters(job: UdsJob) -> list[dict[str, Any]]:
    from pack_agent.canbus.source import can_filters

    return can_filters([(job.request.response_id, job.request.extended_id)])
