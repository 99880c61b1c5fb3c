"""The store: the only code that touches SQLite.

One database file (WAL) holds the outbox of events not yet acknowledged by the
broker and the agent's own state (pack identity, rule windows and latches,
notice bookkeeping), written in the same transaction as the event a change
causes. Also holds writes while the volume is full and recovers them. May
import ``core.events`` and ``errors``; nothing else of the project.
"""

from pack_agent.store.database import Store

__all__ = ["Store"]
