"""The head unit's answer, authenticated in the manner of AUTOSAR SecOC.

With a key shared with the head unit (``[notice] key_file``) every answer frame
carries the first 16 bits of an AES-128-CMAC over the frame's data id, the notice's
sequence number, the response, the attempt's challenge and a freshness value; a
frame whose MAC does not match is refused. ``cryptography`` is imported only when
a key is configured (the daemon's import time and memory stay as they were).
"""

from __future__ import annotations

MAC_BITS = 16


class AnswerMac:
    """Computes the truncated MAC of one answer (the agent checks it, the head unit signs)."""

    def __init__(self, key: bytes, data_id: int) -> None:
        from cryptography.hazmat.primitives.ciphers import algorithms

        self._algorithm = algorithms.AES(key)  # raises ValueError for a wrong key size
        self._data_id = (data_id & 0xFFFF).to_bytes(2, "big")

    def mac(self, seq: int, response: int, challenge: int, freshness: int) -> int:
        from cryptography.hazmat.primitives.cmac import CMAC

        c = CMAC(self._algorithm)
        c.update(
            self._data_id
            + bytes((seq & 0xFF, response & 0xFF))
            + (challenge & 0xFFFF).to_bytes(2, "big")
            + bytes((freshness & 0xFF,))
        )
        # little-endian: the Intel signal puts the CMAC's first byte in the first byte
        return int.from_bytes(c.finalize()[: MAC_BITS // 8], "little")
