"""``once(key)`` claims: who runs a factory, who waits, who takes over. No I/O.

Theory of operation
-------------------
The rules, for one key (callers are the manager's connections, opaque here):

1. A result is stored: every caller gets it at once (the manager checks its
   state before asking :class:`Claims`).
2. Nobody holds the claim: the caller takes it and is told to **run** the
   factory.
3. Somebody holds it: the caller **waits** (joins the key's queue, oldest
   first); its reply is held back.
4. The holder stores a result (:meth:`Claims.done`): the claim ends and every
   waiter is sent the result.
5. The holder gives up (its factory raised: :meth:`Claims.abandon`) or goes
   away (its connection closed: :meth:`Claims.drop`): the oldest waiter that
   is still connected takes the claim and is told to run.  A waiter that goes
   away just leaves the queue.

So exactly one caller runs the factory at a time, a result is made by one
caller, and no claim outlives its holder.  Every method returns what the
manager must send (``[(caller, message), ...]``); the manager does the I/O.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

__all__ = ["ONCE_NAMESPACE", "ONCE_TABLE", "Claims"]

#: Where ``once`` results are stored: a table outside every namespace of the stores.
ONCE_TABLE = "_once"
ONCE_NAMESPACE = ("_once",)

RUN = ["run"]


class Claims:
    """The claims and queues of every key still being made.

    >>> c = Claims()
    >>> c.claim("a", "k"), c.claim("b", "k"), c.claim("c", "k")
    ('run', 'wait', 'wait')
    >>> c.drop("a")          # the holder died: the oldest waiter runs
    [('b', ['run'])]
    >>> c.done("b", "k", b"\\xc0")
    [('c', ['done', b'\\xc0'])]
    """

    def __init__(self) -> None:
        self.holders: dict[str, Hashable] = {}
        self.waiters: dict[str, list[Hashable]] = {}

    def claim(self, caller: Hashable, key: str) -> str:
        """``"run"`` (the caller holds the claim now) or ``"wait"``. O(1)."""
        if key in self.holders:
            self.waiters.setdefault(key, []).append(caller)
            return "wait"
        self.holders[key] = caller
        return "run"

    def holds(self, caller: Hashable, key: str) -> bool:
        return self.holders.get(key) is caller

    def done(self, caller: Hashable, key: str, result: Any) -> list[tuple[Hashable, Any]]:
        """The holder stored ``result``: release the key; tell every waiter. O(waiters)."""
        if not self.holds(caller, key):
            return []
        del self.holders[key]
        return [(waiter, ["done", result]) for waiter in self.waiters.pop(key, [])]

    def abandon(self, caller: Hashable, key: str) -> list[tuple[Hashable, Any]]:
        """The holder's factory failed: the oldest waiter takes over. O(1)."""
        if not self.holds(caller, key):
            return []
        return self._hand_over(key)

    def drop(self, caller: Hashable) -> list[tuple[Hashable, Any]]:
        """``caller`` went away: leave every queue; hand over every claim it held.

        O(keys being made).
        """
        for queue in self.waiters.values():
            while caller in queue:
                queue.remove(caller)
        sends: list[tuple[Hashable, Any]] = []
        for key in [k for k, holder in self.holders.items() if holder is caller]:
            sends.extend(self._hand_over(key))
        return sends

    def _hand_over(self, key: str) -> list[tuple[Hashable, Any]]:
        del self.holders[key]
        queue = self.waiters.pop(key, [])
        if not queue:
            return []
        nxt = queue.pop(0)
        self.holders[key] = nxt
        if queue:
            self.waiters[key] = queue
        return [(nxt, RUN)]
