"""A reader's local copy of the store, kept current from shared memory.

Theory of operation
-------------------
A :class:`Replica` is a :class:`~papertiger.state.State` plus a
:class:`~.log.LogReader`.  It starts from the newest checkpoint and, on every
read, *catches up*: one 8-byte read of the control block's ``head``; when it
has moved, the new effects are applied with the very code the manager ran.
The read is then answered from the local state without asking anyone.

A write returns only after its effect is published, so a read that starts
after a write returned (in any process) sees it: read-after-write holds
across processes.

When the log segment a replica needs next has been retired (it was idle
through several checkpoints), it reloads from the newest checkpoint.

One replica may be shared by threads: catch-up and the read that follows
run under a lock, because applying an effect mutates the state.
"""

from __future__ import annotations

import threading
from typing import Any

from ..state import State
from .log import OFF_HEAD, U64, Behind, LogReader

__all__ = ["Replica"]


class Replica:
    """The local state of one reader process, caught up on demand."""

    def __init__(self, control_name: str) -> None:
        self.reader = LogReader(control_name)
        self.lock = threading.RLock()
        self.state = State()
        self.seq = 0
        self.effects_applied = 0
        self._cbuf = self.reader.control.buf
        self._reload()

    def _reload(self) -> None:
        seq, snapshot = self.reader.load_checkpoint()
        self.state = State.from_snapshot(snapshot)
        self.seq = seq

    def catch_up(self) -> State:
        """Apply what is new; return the current state. Call with :attr:`lock` held.

        O(1) when nothing is new (one 8-byte read of shared memory), else
        O(effects behind).
        """
        head = U64.unpack_from(self._cbuf, OFF_HEAD)[0]
        if head != self.seq:
            self._advance(head)
        return self.state

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

    @property
    def head(self) -> int:
        """The newest published seq (may be ahead of :attr:`seq`)."""
        return int(U64.unpack_from(self._cbuf, OFF_HEAD)[0])

    @property
    def manager_pid(self) -> int:
        return self.reader.control.pid

    def stopped(self) -> bool:
        from .log import STATUS_STOPPED

        return self.reader.control.status == STATUS_STOPPED

    def close(self) -> None:
        self._cbuf = None  # type: ignore[assignment]
        self.reader.close()

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
