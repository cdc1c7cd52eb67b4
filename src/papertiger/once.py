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

import threading
from collections.abc import Callable
from typing import Any

from . import env
from .errors import StoreError

__all__ = ["ENV_ONCE_SCOPE", "once"]

#: Environment variable naming the scope that prefixes every ``once`` key.
ENV_ONCE_SCOPE = env.ONCE_SCOPE

# keys whose factory this thread is running: a nested once() of the same key
# would wait for itself forever
_running = threading.local()


def once(key: str, factory: Callable[[], Any]) -> Any:
    """Return the stored result for ``key``, running ``factory()`` if nobody has yet.

    Once the result is stored, a call costs one read of the backend (on
    shared memory: of this process's replica, no request to the manager) plus
    decoding the result.  Raises :class:`TypeError` when ``factory`` is not
    callable, and :class:`~papertiger.StoreError` when called again for the
    same key from inside its own factory.

    >>> import papertiger
    >>> with papertiger.serve():
    ...     papertiger.once("catalogue", lambda: {"products": ["prod_1"]})
    {'products': ['prod_1']}
    """
    import msgpack  # here: importing papertiger costs nothing of the store until used

    from .backends import current_backend
    from .core.records import check_id, pack_value

    check_id(key, "key")
    if not callable(factory):
        raise TypeError(
            f"once(key, factory): factory must be callable, got {type(factory).__name__}."
        )
    scope = env.once_scope()
    if scope:
        key = check_id(f"{scope}:{key}", "key")
    running: set[str] = _running.__dict__.setdefault("keys", set())
    if key in running:
        raise StoreError(
            f"once({key!r}) was called again from inside its own factory, which would wait "
            "for itself forever; use a different key for the inner call."
        )
    backend = current_backend()
    stored = backend.once_get(key)  # made already: no claim, no waiting
    if stored is None:

        def make() -> bytes:
            running.add(key)
            try:
                return pack_value(factory(), "value")
            finally:
                running.discard(key)

        stored = backend.once(key, make)
    try:
        return msgpack.unpackb(stored)
    except Exception as exc:
        raise StoreError(
            f"The stored result of once({key!r}) could not be decoded ({type(exc).__name__}: "
            f"{exc}); something else wrote it. Forget it (its backend's once_forget) to make "
            "it again."
        ) from None
