"""Delivery: events to the maker's backend, notices to the owner.

``mqtt`` drains the store's outbox over MQTT (paho-mqtt, TLS, QoS 1) and is the
only module that imports paho; ``owner_channel`` sends owner notices to the head
unit over CAN and reads its answers. Neither parses vehicle frames nor decides
anything: they take events and notices and report what happened. May import
``config``, ``core`` (events, notices), ``canbus.dbc`` (to encode the notice
frames), ``store`` and ``errors``.
"""
