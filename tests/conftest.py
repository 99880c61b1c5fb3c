"""Shared fixtures: a private mosquitto (``broker``) and a recording ``Subscriber``
(``subscribe(broker)``).

Tests that need a broker skip when mosquitto is not installed, except in CI
(``CI`` set), where it is installed on purpose and its absence is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
import pytest
from hypothesis import settings
from paho.mqtt.enums import CallbackAPIVersion

from pack_agent.dev.broker import LocalBroker, find_mosquitto

# scripts/test runs the other Pythons' unit tests beside the whole suite at the lowest CPU
# priority (--hypothesis-profile=beside): there an example's wall time says how busy the
# machine is, not how fast the code is, so Hypothesis's 200 ms deadline is off (the whole
# suite keeps it)
settings.register_profile("beside", deadline=None)

# --- kinds of tests ----------------------------------------------------------------------
# Every test gets exactly the kinds below (markers registered in pyproject.toml, run with
# --strict-markers), so `pytest -m unit` runs the fast ones in seconds. A test's own
# @pytest.mark.<kind> wins; otherwise: the `broker` fixture makes it `broker`, its file's row
# in FILE_KINDS gives the rest, and a test with no kind is `unit`. A `unit` test that starts a
# process (a child python, mosquitto) fails, naming the kind it needs instead.
KINDS = ("unit", "broker", "subprocess", "contract", "bench", "slow")
FILE_KINDS: dict[str, tuple[str, ...]] = {
    # key: a file under tests/, or "file::test_name" (all its parameters); a test's row wins
    # over its file's. Keep it short: a file of one kind is one row.
    # documents (docs/, schemas, the AsyncAPI file, examples, the layout table) agree with code
    "test_docs.py": ("contract",),
    "test_layout.py": ("contract",),
    "test_deploy.py": ("contract", "subprocess"),
    "api/test_asyncapi.py": ("contract",),
    "api/test_mqtt_api_doc.py": ("contract",),
    "api/test_schema.py": ("contract",),
    "config/test_examples.py": ("contract",),
    # benchmarks, run small
    "test_bench.py": ("bench", "subprocess", "slow"),
    # a child python or pack-agent (or openssl)
    "api/test_subscriber.py::test_listen_deduplicates_reports_gaps_and_stores": ("subprocess",),
    "api/test_subscriber.py::test_listen_prints_jsonl_and_fails_when_count_is_not_reached": (
        "subprocess",
    ),
    "api/test_subscriber.py::test_listen_refuses_plaintext_to_a_remote_broker": ("subprocess",),
    "api/test_subscriber.py::test_listen_reports_and_stores_a_seq_that_arrives_with_a_second_event_id": (  # noqa: E501
        "subprocess",
    ),
    "cli/test_cli_code.py::test_real_subprocess_json": ("subprocess",),
    "cli/test_cli_imports.py": ("subprocess",),
    "cli/test_cli_run.py": ("subprocess",),
    "config/test_isolated.py": ("subprocess",),
    "delivery/test_delivery.py": ("subprocess",),
    "delivery/test_mqtt_deletes.py": ("subprocess",),
    "api/test_postgres_sink.py": ("subprocess",),  # a private PostgreSQL (dev/postgres.py)
    "delivery/test_mqtt.py::test_reconnect_delay_is_jittered_per_vehicle": ("broker",),
    "delivery/test_mqtt.py::test_last_will_says_offline_when_the_agent_dies": ("subprocess",),
    "dev/test_chart.py::test_the_daemon_never_imports_plotting_or_the_demo": ("subprocess",),
    "dev/test_localbus.py": ("subprocess",),
    "test_version.py": ("subprocess",),
    "store/test_store.py::test_kill_during_appends_loses_nothing_that_was_confirmed": (
        "subprocess",
    ),
    # mosquitto started by the test itself, not by the `broker` fixture
    "delivery/test_mqtt.py::test_broker_absent_at_start_then_started": ("broker",),
    "delivery/test_mqtt.py::test_refused_puback_keeps_the_event_and_backs_off": ("broker",),
    "delivery/test_mqtt.py::test_tls_delivers_and_checks_the_host_name": ("broker", "subprocess"),
    "delivery/test_broker_acl.py": ("broker", "subprocess"),  # openssl: the deploy PKI
    "runtime/test_daemon.py::test_broker_absent_at_start_keeps_events_until_it_comes": ("broker",),
    "dev/test_demo.py": ("broker", "slow"),
    # the stories: agents SIGKILLed, two processes, simulated years
    "store/test_crash_consistency.py": ("broker", "subprocess", "slow"),
    "store/test_powercut.py": ("subprocess",),  # the agent or the store under an LD_PRELOAD shim
    "store/test_powercut.py::test_power_cuts_over_a_story": ("broker", "subprocess", "slow"),
    "runtime/test_two_processes.py": ("broker", "subprocess", "slow"),
    # no process, but seconds each: simulated days through a whole agent, fuzzing,
    # property tests with many examples
    "test_fuzz.py": ("slow",),
    "runtime/test_daemon_flash_wear.py": ("slow",),
    "runtime/test_ignition_replay.py": ("slow",),
    "canbus/test_mapping.py::test_real_databases_give_a_starter_that_check_config_accepts": (
        "slow",
    ),
    "delivery/test_delivery.py::test_agent_sigkilled_mid_stream_and_restarted": (
        "broker",
        "subprocess",
        "slow",
    ),
    "runtime/test_agent_policy.py": ("slow",),
    "runtime/test_replay.py": ("slow",),
    "canbus/test_uds.py": ("slow",),
    "canbus/test_source.py::test_two_buses_end_to_end": ("slow",),
    "canbus/test_decoder.py::test_field_readers_agree_with_cantools_on_every_signal": ("slow",),
    "canbus/test_decoder.py::test_assembler_only_returns_codes_made_of_seen_pages": ("slow",),
    "canbus/test_decoder.py::test_garbage_on_mapped_ids_never_raises": ("slow",),
    "core/test_codes.py::test_random_text_raises_only_invalid_code": ("slow",),
    "core/test_codes.py::test_tractus_x_matches_fail_only_on_the_stricter_date_rules": ("slow",),
    "core/test_timeline.py::test_a_day_in_2035_decides_as_a_run_whose_clock_never_jumped": (
        "slow",
    ),
    "core/test_timeline.py::test_single_wild_stamps_never_decide_or_rebase": ("slow",),
    "core/test_timeline.py::test_single_wild_stamps_never_move_the_line": ("slow",),
    "core/test_trend.py::test_state_round_trip_anywhere": ("slow",),
    "core/test_policy.py::test_single_outliers_never_decide": ("slow",),
    "core/test_policy.py::test_jitter_around_the_line_never_decides": ("slow",),
    "core/test_policy.py::test_repeated_and_out_of_order_stamps_never_decide": ("slow",),
    "core/test_policy.py::test_a_restart_anywhere_gives_the_same_decisions": ("slow",),
    "core/test_policy.py::test_never_decides_without_a_full_run_below": ("slow",),
    "store/test_store_faults.py::test_an_unreadable_file_is_moved_aside_and_a_fresh_store_begun": (
        "slow",
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        if any(item.get_closest_marker(k) for k in KINDS):
            continue
        file = item.path.relative_to(tests_dir).as_posix()
        name = getattr(item, "originalname", item.name)
        kinds = set(FILE_KINDS.get(f"{file}::{name}", FILE_KINDS.get(file, ())))
        if "broker" in getattr(item, "fixturenames", ()):
            kinds.add("broker")
        for kind in sorted(kinds) or ["unit"]:
            item.add_marker(getattr(pytest.mark, kind))


@pytest.fixture(autouse=True)
def _unit_starts_no_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """A `unit` test must not start a child process (python, mosquitto, pack-agent)."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    real_init = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
        raise AssertionError(
            f"a unit test started a process ({args!r}): mark it "
            "@pytest.mark.subprocess (or broker), or list its file in conftest.FILE_KINDS"
        )

    subprocess.Popen.__init__ = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = real_init  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def ageing_frames() -> list[Any]:
    """Every frame of the ``ageing`` scenario (about three years), read only."""
    from test_agent_policy import AGEING

    from pack_agent.canbus.checks import load_and_check
    from pack_agent.config import load_config, reference_config_path
    from pack_agent.dev.sim.logfile import scenario_frames

    db = load_and_check(load_config(reference_config_path()))
    return list(scenario_frames(AGEING, db))


@pytest.fixture(scope="session")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, ageing_frames: list[Any]) -> Any:
    """One uninterrupted agent run of the ageing scenario (test_agent_policy.Run, closed),
    the reference that the restarted, jumped and replayed runs are compared with; one for
    the session (tests/runtime/test_agent_policy.py and tests/core/test_timeline.py)."""
    from test_agent_policy import Run, config

    run = Run(config(tmp_path_factory.mktemp("whole"), "whole"))
    run.feed(ageing_frames)
    run.close()
    return run


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
