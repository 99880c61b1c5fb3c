"""The backend contract: what a subscriber to the vehicle's topics can rely on.

``models`` types every event's data (the one source of the published JSON
Schema), ``schema`` writes those schemas, ``subscriber`` is the reference
backend behind ``pack-agent listen`` (with ``ordering``, its pure de-duplication and
seq bookkeeping, and ``sinks``, where it keeps events). May import ``core.events``,
``errors`` and ``loopback`` (and paho, in the subscriber), never ``delivery``; the
daemon never imports this package.
"""
