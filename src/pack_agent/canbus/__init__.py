"""The CAN stage: buses in, readings out.

Owns everything that knows python-can, cantools, ISO-TP and the frame layout:
opening buses with kernel filters (``source``), the guard that keeps a failing
bus from taking the daemon down (``guard``), DBC loading and checks (``dbc``),
frame-to-reading decoding (``decoder``, ``expression``), UDS reads (``uds``)
and recorded logs (``logs``). It may import ``config``, ``errors`` and the
hand-off types of ``core.readings``; never ``store``, ``delivery`` or
``runtime``, and never paho.
"""
