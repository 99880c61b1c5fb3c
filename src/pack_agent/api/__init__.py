"""The backend contract: what a subscriber to the vehicle's topics can rely on.

``models`` types every event's data (the one source of the published JSON
Schema), ``schema`` writes those schemas, ``subscriber`` is the reference
backend behind ``pack-agent listen``. May import ``core.events`` and ``errors``
(and paho, in the subscriber); the daemon never imports this package.
"""
