"""Shared fixtures: a private mosquitto (``broker``) and a recording ``Subscriber``
(``subscribe(broker)``).

Tests that need a broker skip when mosquitto is not installed, except in CI
(``CI`` set), where it is installed on purpose and its absence is a failure.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from pack_agent.dev.broker import LocalBroker, find_mosquitto


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    found = find_mosquitto()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("mosquitto is required in CI (apt-get install mosquitto)")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return found


@pytest.fixture
def broker(mosquitto_binary: str) -> Iterator[LocalBroker]:
    """A running mosquitto on a free 127.0.0.1 port, removed after the test."""
    with LocalBroker(binary=mosquitto_binary) as b:
        yield b


@pytest.fixture
def subscribe() -> Iterator[Callable[..., Subscriber]]:
    """``subscribe(broker, prefix="pack-agent/v1", protocol="5")``: a ``Subscriber``
    that is closed after the test."""
    made: list[Subscriber] = []

    def make(broker: LocalBroker, *args: Any, **kwargs: Any) -> Subscriber:
        made.append(Subscriber(broker, *args, **kwargs))
        return made[-1]

    yield make
    for sub in made:
        sub.close()


class Received(NamedTuple):
    topic: str
    payload: dict[str, Any]  # the JSON object; {"_raw": text} if it was not one
    retain: bool
    properties: dict[str, Any]  # MQTT v5 properties by name (ContentType, UserProperty...)


class Subscriber:
    """A backend stand-in: records every message under ``<prefix>/#``.

    - ``events``: payloads of ``.../events/...`` messages, in arrival order,
      duplicates kept (de-duplicate by ``event_id`` yourself when that is the point).
    - ``statuses``: payloads of ``.../status`` messages, retained ones included.
    - ``messages``: every ``Received`` (topic, payload, retain, properties).
    - ``wait_for(predicate, timeout)``: wait until ``predicate(subscriber)`` is true,
      else fail the test saying what was received.
    - ``subscribed`` / ``wait_subscribed()``: after a broker restart, wait until it
      is back (it reconnects by itself, every 0.1 s at most).

    It subscribes at QoS 0: it never sends anything the broker could leave unread,
    so a killed broker's last deliveries reach it intact. The constructor returns
    once the subscription is in place. Use it as a context manager.
    """

    def __init__(
        self,
        broker: LocalBroker,
        prefix: str = "pack-agent/v1",
        *,
        protocol: str = "5",
        timeout: float = 5.0,
    ) -> None:
        self.topic = f"{prefix}/#"
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._subscribed = threading.Event()
        v5 = protocol == "5"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        )
        self._client.reconnect_delay_set(0.02, 0.1)  # type: ignore[arg-type]
        self._client.on_connect = lambda c, *_: c.subscribe(self.topic, qos=0)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_disconnect = lambda *_: self._subscribed.clear()
        self._client.on_message = self._on_message
        self._client.connect_async(broker.host, broker.port, keepalive=10)
        self._client.loop_start()
        try:
            self.wait_subscribed(timeout)
        except AssertionError:
            self.close()
            raise

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        text = msg.payload.decode("utf-8", errors="replace")
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            payload = {"_raw": text}
        props = {}
        if msg.properties is not None:
            props = {k: v for k, v in msg.properties.json().items() if v is not None}
        with self._lock:
            self._messages.append(Received(msg.topic, payload, bool(msg.retain), props))

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def wait_subscribed(self, timeout: float = 5.0) -> None:
        if not self._subscribed.wait(timeout):
            raise AssertionError(f"subscriber not subscribed to {self.topic} within {timeout} s")

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m.payload for m in self.messages if "/events/" in m.topic]

    @property
    def statuses(self) -> list[dict[str, Any]]:
        return [m.payload for m in self.messages if m.topic.endswith("/status")]

    def wait_for(self, predicate: Callable[[Subscriber], bool], timeout: float = 5.0) -> Subscriber:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                msgs = self.messages
                raise AssertionError(
                    f"condition not met within {timeout} s; received {len(msgs)} messages, "
                    f"last: {msgs[-3:]}"
                )
            time.sleep(0.01)
        return self

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
