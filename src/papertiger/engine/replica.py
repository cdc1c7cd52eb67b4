"""A reader's view of the store: the newest checkpoint in place, plus the log since.

Theory of operation
-------------------
A :class:`Replica` is a :class:`~papertiger.core.layered.LayeredState` over
the newest checkpoint, which it reads in place from shared memory
(:mod:`.layout`: nothing is copied when it attaches, a record is decoded
only when a read asks for it), plus a :class:`~.log.LogReader`.  Its
private memory is the *overlay*: what was logged since that checkpoint.

On every read it *catches up*: one 16-byte read of the control block
(``head`` and the checkpoint generation).  When a newer checkpoint was
published, the replica moves to it (drops its overlay, attaches the new
image, replays the log written since it); when ``head`` moved, the new
effects are applied with the very code the manager ran.  The read is then
answered without asking anyone.  Order keys are the same in every image, so
a page walk (``starting_after`` / ``ending_before``) stays exact across the
move.

A write returns only after its effect is published, so a read that starts
after a write returned (in any process) sees it: read-after-write holds
across processes.

A replica idle through several checkpoints keeps answering from the image it
holds (its mapping outlives the manager's unlink) until its next read, which
moves it to the newest one; when the log segment it needs next has been
retired, it does the same.

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

from ..core.layered import LayeredState
from ..core.pagination import ListQuery, select_page
from ..namespace import Namespace
from .layout import Checkpoint
from .log import (
    HEAD_GEN,
    OFF_HEAD,
    STATUS_STOPPED,
    TRIM_AFTER_RECORDS,
    U64,
    Behind,
    LogReader,
    release_freed_memory,
)

__all__ = ["Replica"]


class Replica:
    """The view of one reader process, caught up on demand. Thread-safe."""

    def __init__(self, control_name: str) -> None:
        self.reader = LogReader(control_name)
        self._lock = threading.RLock()
        self.state = LayeredState()
        self.checkpoint: Checkpoint | None = None
        self.seq = 0
        #: the checkpoint generation (seqlock) last seen
        self._gen = -1
        #: (seq, gen): what the control block says when nothing is new
        self._seen = (0, -1)
        self.effects_applied = 0
        self._cbuf = self.reader.control.buf
        try:
            self._reload()
        except BaseException:
            self.reader.close()
            raise

    # -- queries (each O(1) to catch up when nothing is new) -------------------------
    def get(self, table: str, ns: Namespace, record_id: str) -> bytes | None:
        """The packed record, or None. O(1)."""
        with self._lock:
            if HEAD_GEN.unpack_from(self._cbuf, OFF_HEAD) != self._seen:
                self._catch_up()
            return self.state.get(table, ns, record_id)

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
            return list(partition.newest_first()) if partition is not None else []

    def ids(self, table: str, ns: Namespace) -> list[str]:
        """The ids in the partition, in no particular order. O(n)."""
        with self._lock:
            partition = self._caught_up().partition(table, ns)
            return partition.ids() if partition is not None else []

    def partitions(
        self, under: Namespace | None = None, table: str | None = None
    ) -> list[tuple[str, Namespace, int]]:
        """``(table, namespace, count)`` of the non-empty partitions, sorted."""
        with self._lock:
            found = self._caught_up().partitions(under, table)
            return [(name, ns, len(partition)) for name, ns, partition in found]

    @contextlib.contextmanager
    def read(self) -> Iterator[LayeredState]:
        """The caught-up state, for the ``with`` block; nothing changes it meanwhile.

        It answers what a :class:`~papertiger.core.state.State` answers
        (``get``, ``partition``, ``count``, ``partitions``...); records of the
        checkpoint stay in shared memory until asked for.
        """
        with self._lock:
            yield self._caught_up()

    # -- catching up ------------------------------------------------------------------
    def catch_up(self) -> None:
        """Apply whatever is new now (a read does it anyway)."""
        with self._lock:
            self._caught_up()

    def _caught_up(self) -> LayeredState:
        """Apply what is new; return the state. O(1) when nothing is (a 16-byte read)."""
        if HEAD_GEN.unpack_from(self._cbuf, OFF_HEAD) != self._seen:
            self._catch_up()
        return self.state

    def _reload(self) -> None:
        """Move to the newest checkpoint: attach it, drop the overlay."""
        seq, image = self.reader.load_checkpoint()
        old = self.checkpoint
        if old is not None:
            image.inherit(old)  # what it verified of the old image stays verified
        dropped = self.state.records_put
        self.state = LayeredState(image)
        self.checkpoint = image
        self.seq = seq
        if old is not None:
            old.close()
        if dropped >= TRIM_AFTER_RECORDS:
            release_freed_memory()

    def _catch_up(self) -> None:
        head, gen = HEAD_GEN.unpack_from(self._cbuf, OFF_HEAD)
        if gen != self._gen:
            self._gen = gen
            number, _ = self.reader.control.checkpoint_pointer()
            if self.checkpoint is None or number != self.checkpoint.number:
                self._reload()
        while self.seq < head:
            start = self.seq
            try:
                self.seq = self.reader.follow(self.seq, head, self.state.apply)
            except Behind:
                self._reload()
            self.effects_applied += max(0, self.seq - start)
            head = max(head, self.seq)
        self._seen = (self.seq, self._gen)

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
        with self._lock:
            self.state = LayeredState()
            if self.checkpoint is not None:
                self.checkpoint.close()
                self.checkpoint = None
            self._cbuf = None  # type: ignore[assignment]
            self.reader.close()

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
