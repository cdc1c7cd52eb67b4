"""A reader's local copy of the store, kept current from shared memory.

Theory of operation
-------------------
A :class:`Replica` is a :class:`~papertiger.core.state.State` plus a
:class:`~.log.LogReader`.  It starts from the newest checkpoint and, on every
read, *catches up*: one 8-byte read of the control block's ``head``; when it
has moved, the new effects are applied with the very code the manager ran.
The read is then answered from the local state without asking anyone.

A write returns only after its effect is published, so a read that starts
after a write returned (in any process) sees it: read-after-write holds
across processes.

When the log segment a replica needs next has been retired (it was idle
through several checkpoints), it reloads from the newest checkpoint.

The replica owns its lock: every query method (:meth:`get`, :meth:`page`,
:meth:`count`, :meth:`find`, :meth:`records`, :meth:`partitions`) catches up
and answers under it, and returns packed bytes that stay valid after the
lock is released (decoding happens outside).  :meth:`read` hands the whole
caught-up state to code that needs more than one query under one lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from ..core.pagination import ListQuery, newest_first, select_page
from ..core.state import State
from ..namespace import Namespace
from .log import OFF_HEAD, STATUS_STOPPED, U64, Behind, LogReader

__all__ = ["Replica"]


class Replica:
    """The local state of one reader process, caught up on demand. Thread-safe."""

    def __init__(self, control_name: str) -> None:
        self.reader = LogReader(control_name)
        self._lock = threading.RLock()
        self.state = State()
        self.seq = 0
        self.effects_applied = 0
        self._cbuf = self.reader.control.buf
        self._reload()

    # -- queries (each O(1) to catch up when nothing is new) -------------------------
    def get(self, table: str, ns: Namespace, record_id: str) -> bytes | None:
        """The packed record, or None. O(1)."""
        with self._lock:
            return self._caught_up().get(table, ns, record_id)

    def page(
        self, table: str, ns: Namespace, query: ListQuery, resource: str
    ) -> tuple[list[bytes], bool]:
        """One page and ``has_more`` (:func:`~papertiger.core.pagination.select_page`)."""
        with self._lock:
            partition = self._caught_up().partition(table, ns)
            return select_page(partition, query, resource)

    def count(self, table: str, ns: Namespace) -> int:
        """Records of ``table`` in ``ns``. O(1)."""
        with self._lock:
            return self._caught_up().count(table, ns)

    def find(self, table: str, ns: Namespace, field: str, value: Any) -> list[bytes]:
        """Packed records whose indexed ``field`` is ``value``, newest first. O(log n + k)."""
        with self._lock:
            partition = self._caught_up().partition(table, ns)
            return partition.find(field, value) if partition is not None else []

    def records(self, table: str, ns: Namespace) -> list[bytes]:
        """Every packed record of the partition, newest first. O(n)."""
        with self._lock:
            partition = self._caught_up().partition(table, ns)
            return list(newest_first(partition)) if partition is not None else []

    def ids(self, table: str, ns: Namespace) -> list[str]:
        """The ids in the partition, in no particular order. O(n)."""
        with self._lock:
            partition = self._caught_up().partition(table, ns)
            return list(partition.records) if partition is not None else []

    def partitions(
        self, under: Namespace | None = None, table: str | None = None
    ) -> list[tuple[str, Namespace, int]]:
        """``(table, namespace, count)`` of the non-empty partitions, sorted."""
        with self._lock:
            found = self._caught_up().partitions(under, table)
            return [(name, ns, len(partition)) for name, ns, partition in found]

    @contextlib.contextmanager
    def read(self) -> Iterator[State]:
        """The caught-up state, for the ``with`` block; nothing changes it meanwhile."""
        with self._lock:
            yield self._caught_up()

    # -- catching up ------------------------------------------------------------------
    def catch_up(self) -> None:
        """Apply whatever is new now (a read does it anyway)."""
        with self._lock:
            self._caught_up()

    def _caught_up(self) -> State:
        """Apply what is new; return the state. O(1) when nothing is (an 8-byte read)."""
        head = U64.unpack_from(self._cbuf, OFF_HEAD)[0]
        if head != self.seq:
            self._advance(head)
        return self.state

    def _reload(self) -> None:
        seq, snapshot = self.reader.load_checkpoint()
        self.state = State.from_snapshot(snapshot)
        self.seq = seq

    def _advance(self, head: int) -> None:
        before = self.seq
        apply = self.state.apply
        while self.seq < head:
            try:
                self.seq = self.reader.follow(self.seq, head, apply)
            except Behind:
                self._reload()
                apply = self.state.apply
                head = max(head, self.seq)
        self.effects_applied += max(0, self.seq - before)

    # -- the manager, seen from here ----------------------------------------------------
    @property
    def head(self) -> int:
        """The newest published seq (may be ahead of :attr:`seq`)."""
        return int(U64.unpack_from(self._cbuf, OFF_HEAD)[0])

    @property
    def manager_pid(self) -> int:
        return self.reader.control.pid

    def stopped(self) -> bool:
        return self.reader.control.status == STATUS_STOPPED

    def close(self) -> None:
        self._cbuf = None  # type: ignore[assignment]
        self.reader.close()

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
