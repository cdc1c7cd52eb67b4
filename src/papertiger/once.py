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

Keys are global to the manager, unless ``PAPERTIGER_ONCE_SCOPE`` is set: then
every key is read as ``<scope>:<key>``.  The pytest plugin sets it to the
run's id when the run uses a long-lived manager (a daemon), so that results
are made once per run, not once per daemon.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import msgpack

from .commands import check_id, pack_value
from .engine.protocol import ONCE_NAMESPACE, ONCE_TABLE
from .engine.server import current_client
from .errors import StoreError

__all__ = ["ENV_ONCE_SCOPE", "once"]

#: Environment variable naming the scope that prefixes every ``once`` key.
ENV_ONCE_SCOPE = "PAPERTIGER_ONCE_SCOPE"

# keys whose factory this thread is running: a nested once() of the same key
# would wait for itself forever
_running = threading.local()


def once(key: str, factory: Callable[[], Any]) -> Any:
    """Return the stored result for ``key``, running ``factory()`` if nobody has yet.

    Once the result is stored, a call costs a read of this process's replica
    (no request to the manager) plus decoding the result.

    >>> import papertiger
    >>> with papertiger.serve():
    ...     papertiger.once("catalogue", lambda: {"products": ["prod_1"]})
    {'products': ['prod_1']}
    """
    check_id(key, "key")
    if not callable(factory):
        raise StoreError("once(key, factory): factory must be callable")
    scope = os.environ.get(ENV_ONCE_SCOPE)
    if scope:
        key = check_id(f"{scope}:{key}", "key")
    running: set[str] = _running.__dict__.setdefault("keys", set())
    if key in running:
        raise StoreError(
            f"once({key!r}) was called again from inside its own factory, which would wait "
            "for itself forever; use a different key for the inner call."
        )
    client = current_client()
    replica = client.replica
    with replica.lock:  # made already: read it here, no round trip to the manager
        stored = replica.catch_up().get(ONCE_TABLE, ONCE_NAMESPACE, key)
    if stored is not None:
        return msgpack.unpackb(stored)
    channel = client.channel()  # waiting must not hold this process's main connection
    try:
        while True:
            _, result = channel.request(["once", key])
            if result[0] == "done":
                return msgpack.unpackb(result[1])
            running.add(key)
            try:
                value = factory()
                packed = pack_value(value, "value")
            except BaseException:
                channel.request(["once_abandon", key])
                raise
            finally:
                running.discard(key)
            channel.request(["once_done", key, packed])
            return msgpack.unpackb(packed)
    finally:
        channel.close()
