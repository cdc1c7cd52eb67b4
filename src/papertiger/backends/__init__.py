"""Backends: where the store's records live, behind one seam (:class:`Backend`).

================  ===========================================================
:mod:`.base`      the interface a :class:`~papertiger.Store` needs
:mod:`.shm`       the shared-memory engine: one machine, reads without asking
:mod:`.redis`     Redis or Redis Cluster: many machines, one store
================  ===========================================================

A process uses one backend at a time, chosen on first use, in this order:

1. the backend named last by ``papertiger.connect(url)``,
   ``papertiger.connect(address, authkey)``, or an open :func:`serve` or
   :func:`use_backend` block;
2. ``PAPERTIGER_URL`` in the environment: the Redis backend at that URL;
3. the shared-memory engine, which finds (or starts) its manager as
   :mod:`papertiger.engine.connection` describes.

The choice is cached; every call of :func:`current_backend` after the first
is one global read.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from .. import env
from ..engine import connection
from ..errors import InvalidRequest
from .base import Backend, PartitionInfo, TableSpec
from .shm import ShmBackend
from .urls import REDIS_SCHEMES, redact

__all__ = [
    "Backend",
    "PartitionInfo",
    "ShmBackend",
    "TableSpec",
    "backend_for_url",
    "connect",
    "current_backend",
    "disconnect",
    "in_use",
    "serve",
    "use_backend",
]

SHM = ShmBackend()

_lock = threading.RLock()
_backend: Backend | None = None
_explicit: Backend | None = None
_by_url: dict[str, Backend] = {}


def _reset() -> None:
    global _backend
    _backend = None


connection.on_change.append(_reset)


def current_backend() -> Backend:
    """The backend store calls use (see the module doc). O(1) after the first call."""
    backend = _backend
    if backend is not None:
        return backend
    return _choose()


def _choose() -> Backend:
    global _backend
    with _lock:
        if _explicit is not None:
            chosen = _explicit
        else:
            url = env.url()
            chosen = backend_for_url(url) if url else SHM
        _backend = chosen
        return chosen


def in_use() -> bool:
    """True when this process has talked to a store (never connects by itself). O(backends)."""
    explicit = _explicit
    return (
        SHM.in_use()
        or any(backend.in_use() for backend in list(_by_url.values()))
        or (explicit is not None and explicit.in_use())
    )


def backend_for_url(url: str) -> Backend:
    """The backend a URL names (one per URL in this process). O(1) once made.

    ``redis://``, ``rediss://`` and ``unix://`` select Redis,
    ``redis+cluster://`` and ``rediss+cluster://`` a Redis Cluster (see
    :func:`.redis_layout.parse_redis_url` for the forms and options, such as
    ``?prefix=``); anything else is refused with
    :class:`~papertiger.InvalidRequest`.
    """
    with _lock:
        backend = _by_url.get(url)
        if backend is None:
            scheme = url.partition("://")[0].lower() if "://" in url else ""
            if scheme not in REDIS_SCHEMES:
                raise InvalidRequest(
                    f"Invalid url: {redact(url)} names no papertiger backend; use "
                    "redis://host:port/db, rediss://..., unix:///path/redis.sock?db=N, "
                    "redis+cluster://host:port (or, for a shared-memory manager, "
                    "connect(address, authkey)).",
                    param="url",
                )
            # only processes that use Redis import redis-py
            from .redis import RedisBackend

            backend = _by_url[url] = RedisBackend.from_url(url)
        return backend


def connect(url_or_address: str, authkey: bytes | str | None = None) -> Backend:
    """Use a store from now on in this process (and the processes it forks).

    With one argument, a URL: ``redis://host:port/db``, ``rediss://...``,
    ``unix:///path/redis.sock?db=N`` (Redis; see the README for Redis
    Cluster).  With two, a shared-memory manager's socket address and authkey
    (bytes, or the hex papertiger prints).  Returns the backend; raises
    :class:`~papertiger.StoreUnavailable` when nothing answers.
    """
    global _explicit
    if authkey is None:
        backend = backend_for_url(url_or_address)
        backend.ping()
    else:
        connection.connect_manager(url_or_address, authkey)
        backend = SHM
    with _lock:
        _explicit = backend
        _reset()
    return backend


def disconnect() -> None:
    """Forget every connection; the next store call chooses again (see the module doc)."""
    global _explicit
    with _lock:
        _explicit = None
        backends = list(_by_url.values())
        _by_url.clear()
        _reset()
    for backend in backends:
        backend.close()
    connection.disconnect_manager()


@contextlib.contextmanager
def use_backend(backend: Backend) -> Iterator[Backend]:
    """Make ``backend`` this process's store for the ``with`` block (tests, tools)."""
    global _explicit
    with _lock:
        saved = _explicit
        _explicit = backend
        _reset()
    try:
        yield backend
    finally:
        with _lock:
            _explicit = saved
            _reset()


@contextlib.contextmanager
def serve(**options: Any) -> Iterator[connection.Server]:
    """Start a shared-memory manager for the ``with`` block; this process and its children
    use it, whatever else was chosen before.  Yields a :class:`~papertiger.Server`.

    Options: ``segment_bytes``, ``checkpoint_bytes`` (small values force frequent
    segment switches and checkpoints), ``address`` (the socket path).

    >>> import papertiger
    >>> with papertiger.serve() as server:
    ...     server.pid > 0
    True
    """
    with connection.serve(**options) as server, use_backend(SHM):
        yield server
