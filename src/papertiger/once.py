"""``once(key, factory)``: data a whole run needs, made exactly once.

The replacement for pytest-xdist's filelock recipe.  The first caller
anywhere in the run (any process using the same manager) runs
``factory()``; every other caller waits, then gets the same stored result.
If the caller dies or its factory raises, the oldest waiter runs the factory
instead.  The claim is an atomic step inside the manager, and results are
stored outside every namespace, so per-test cleanup never removes them.

Results must be msgpack-able (dicts with str keys, lists, str, int, float,
bool, None, bytes); every caller, the first included, gets the decoded
stored value, so all of them see exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack

from .commands import check_id, pack_value
from .engine.server import current_client
from .errors import StoreError

__all__ = ["once"]


def once(key: str, factory: Callable[[], Any]) -> Any:
    """Return the stored result for ``key``, running ``factory()`` if nobody has yet.

    >>> import papertiger
    >>> with papertiger.serve():
    ...     papertiger.once("catalogue", lambda: {"products": ["prod_1"]})
    {'products': ['prod_1']}
    """
    check_id(key, "key")
    if not callable(factory):
        raise StoreError("once(key, factory): factory must be callable")
    client = current_client()
    channel = client.channel()  # waiting must not hold this process's main connection
    try:
        while True:
            _, result = channel.request(["once", key])
            if result[0] == "done":
                return msgpack.unpackb(result[1])
            try:
                value = factory()
                packed = pack_value(value, "value")
            except BaseException:
                channel.request(["once_abandon", key])
                raise
            channel.request(["once_done", key, packed])
            return msgpack.unpackb(packed)
    finally:
        channel.close()
