"""The SQLite store-and-forward buffer (see store.py for the durability, clock and bounds rules)."""

from __future__ import annotations

from edge.store.model import POLICIES, BufferStats, Policy, StoredReading, StoreError, StoreLimits
from edge.store.store import Store
from edge.store.writer import StoreWriter

__all__ = [
    "POLICIES",
    "BufferStats",
    "Policy",
    "Store",
    "StoreError",
    "StoreLimits",
    "StoreWriter",
    "StoredReading",
]
