"""Whether a host name or address is this machine (no network between us and it).

Shared by the uplink (``delivery``) and the reference subscriber (``api``): both
refuse to send events or credentials in clear text to any other host. A module of
its own, like ``errors``, so that neither stage imports the other for it.
"""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127/8, ::1). Not ``*.localhost``:
    paho and the subscriber hand such a name to the resolver, which may send it anywhere,
    so it needs TLS like any remote name."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
