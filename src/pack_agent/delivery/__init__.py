"""Delivery: events to the maker's backend, notices to the owner.

``mqtt`` drains the store's outbox over MQTT (paho-mqtt, TLS, QoS 1) behind the
``uplink.Uplink`` interface; ``mqtt_connection`` (TLS, the paho client, why a link
failed) and ``mqtt_messages`` (event properties, status, last will) are its parts, and
these three are the only modules here that import paho; ``owner_channel`` sends owner
notices to the head unit over CAN and reads its answers. None of them parses vehicle frames
nor decides anything: they take events and notices and report what happened. May import
``config``, ``core`` (events, notices), ``canbus.dbc`` (to encode the notice frames),
``store``, ``errors`` and ``loopback``.
"""
