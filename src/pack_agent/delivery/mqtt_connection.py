"""The uplink's connection: transport security, the paho client, and why a link failed.

Owns everything about *reaching* the broker, none of the outbox: the refusal to
send in clear text across a network (:func:`check_transport_security`), the paho
client as the uplink needs it (:func:`make_client`: TLS with host-name checks,
credentials, reconnect back-off, the in-flight window, the retained last will),
paho's own log (:class:`PahoLog`) and the words for a failed or lost connection
(:func:`why_unreachable`, :func:`why_lost`). The drain loop that uses the client
is :class:`pack_agent.delivery.mqtt.MqttUplink`.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes

from pack_agent.config import MqttSettings
from pack_agent.delivery.mqtt_messages import status_properties
from pack_agent.errors import PackAgentError
from pack_agent.loopback import is_loopback

__all__ = [
    "ClientFactory",
    "PahoLog",
    "check_transport_security",
    "jittered",
    "make_client",
    "why_lost",
    "why_unreachable",
]

# the name it had before the split: `pack-agent demo` and log configurations set its level
_paho_log = logging.getLogger("pack_agent.delivery.mqtt.paho")


class PahoLog:
    """What paho logs, for one uplink. paho reports some failures only in its log (a
    broker that refuses this vehicle's certificate sends a TLS alert that paho meets
    as "failed to receive on socket: ... certificate expired"): its errors go to the
    uplink, which says them once at WARNING, instead of an ERROR line per retry.
    Everything else goes to the ``pack_agent.delivery.mqtt.paho`` logger."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self._report = report
        # paho logs two DEBUG lines per event: decide once (when the uplink is made)
        self._forward_from = _paho_log.getEffectiveLevel()

    def log(self, level: int, msg: str, *args: Any) -> None:
        if level < logging.ERROR:
            if level >= self._forward_from:
                _paho_log.log(level, msg, *args)
            return
        text = msg % args if args else msg
        if not text.startswith("Client is not connected"):  # every failed reconnect
            self._report(text)


ClientFactory = Callable[..., mqtt.Client]

# the first reconnect delay after a lost connection is reconnect_min_s times a factor drawn
# from this range; paho doubles it after each failed attempt, so every later one keeps it
RECONNECT_JITTER = (0.5, 1.5)


def jittered(min_s: float, rng: random.Random | None = None) -> float:
    """The first reconnect delay after a lost connection: ``min_s`` spread over
    ``RECONNECT_JITTER``. A broker restart drops a whole fleet at one instant; without
    jitter every vehicle would knock again at the same instants (min, 2 min, 4 min...),
    a reconnect storm per step (bench/fleet.py measures the spread)."""
    low, high = RECONNECT_JITTER
    return min_s * (rng or random).uniform(low, high)


def check_transport_security(settings: MqttSettings) -> None:
    """Refuse to send events and credentials in clear text across a network."""
    if settings.tls or settings.allow_insecure or is_loopback(settings.host):
        return
    raise PackAgentError(
        f"mqtt.host is {settings.host!r}, not this machine, and mqtt.tls is not set: events "
        "and credentials would cross the network unencrypted. Configure [mqtt.tls] (ca_file, "
        "and cert_file/key_file for a client certificate), or set mqtt.allow_insecure = true "
        "if the network itself is trusted."
    )


def make_client(
    settings: MqttSettings,
    factory: ClientFactory,
    *,
    client_id: str,
    status_topic: str,
    will: str,
    report: Callable[[str], None],
) -> mqtt.Client:
    """A paho client configured for the uplink, not yet connected and without callbacks:
    ``will`` is the retained status the broker publishes on ``status_topic`` if the
    connection dies; paho's errors go to ``report``."""
    s = settings
    client = factory(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if s.protocol == "5" else mqtt.MQTTv311,
    )
    client.enable_logger(PahoLog(report))  # type: ignore[arg-type]
    client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)  # type: ignore[arg-type]
    client.max_inflight_messages_set(s.max_inflight)
    if s.username is not None:
        password = s.password.get_secret_value() if s.password is not None else None
        client.username_pw_set(s.username, password)
    if s.tls is not None:
        try:  # PROTOCOL_TLS_CLIENT checks the host name; never tls_insecure_set(True)
            client.tls_set(
                ca_certs=s.tls.ca_file,
                certfile=s.tls.cert_file,
                keyfile=s.tls.key_file,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise PackAgentError(f"mqtt.tls: cannot load the certificates: {exc}") from None
    client.will_set(
        status_topic,
        will,
        qos=1,
        retain=True,
        properties=status_properties(s.protocol == "5", PacketTypes.WILLMESSAGE),
    )
    return client


def why_lost(settings: MqttSettings, text: str) -> str:
    """What paho logged as an error, with a hint when the broker refused our certificate."""
    s = settings
    if "alert" in text and ("certificate" in text or "unknown ca" in text):
        return (
            f"{s.host}:{s.port} refused this vehicle's TLS certificate (mqtt.tls.cert_file): {text}"
        )
    return f"{s.host}:{s.port}: {text}"


def why_unreachable(settings: MqttSettings, exc: BaseException | None) -> str:
    """The reason a connection attempt failed, with a hint for TLS failures."""
    s = settings
    where = f"cannot reach {s.host}:{s.port}"
    if exc is None:
        return where
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"{where}: TLS: the broker's certificate was refused: {exc.verify_message} "
            f"(checked against mqtt.tls.ca_file and the host name {s.host!r})"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"{where}: TLS handshake failed: {exc} (is this vehicle's certificate, "
            "mqtt.tls.cert_file, signed by the broker's CA and still valid?)"
        )
    return f"{where}: {exc}"
