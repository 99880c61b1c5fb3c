"""The store: the only code that touches SQLite.

One database file (WAL) holds the outbox of events not yet acknowledged by the
broker and the agent's own state (pack identity, rule windows and latches,
notice bookkeeping), written in the same transaction as the event a change
causes. ``database`` (the connection, pragmas, transactions: the ``Store``),
``outbox``, ``state`` (every state key, by name), ``durable`` (what is synced
when), ``diskfull`` (the volume's reserve; writes held in memory while it is full),
``recovery`` (a damaged file moved aside),
``view`` (read without writing). May import ``core.events`` and ``errors``;
nothing else of the project.
"""

from pack_agent.store.database import DELETE_BATCH, Store, StoreDamaged
from pack_agent.store.diskfull import StoreSpaceShort
from pack_agent.store.recovery import open_store
from pack_agent.store.view import read_only_view

__all__ = [
    "DELETE_BATCH",
    "Store",
    "StoreDamaged",
    "StoreSpaceShort",
    "open_store",
    "read_only_view",
]
