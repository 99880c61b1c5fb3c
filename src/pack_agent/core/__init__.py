"""The pure core: what a pack is, what its readings mean, what must be said.

Codes (GB/T 34014), the pack tracker, the time line, the SOH trend, the
scrapping policy and its rule engines (``rules/``), owner notices and their
catalogue, and the event models. Nothing here does I/O or reads a clock: time
and data come in as arguments, so every test of it is fast and deterministic.
It may import ``config`` (rule and notice settings, as data) and ``errors``;
never ``canbus``, ``store``, ``delivery``, ``runtime``, python-can or paho.
"""
