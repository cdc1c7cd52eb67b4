"""Which shared-memory manager this process uses: discovery, serve, connect.

A process uses one manager at a time, found in this order (the one place
discovery is written):

1. an explicit :func:`connect_manager` (``papertiger.connect(address, authkey)``)
   or an open :func:`serve` / :func:`use_manager` block;
2. ``PAPERTIGER_ADDRESS`` / ``PAPERTIGER_AUTHKEY`` (a parent's :func:`serve`,
   the pytest plugin, or a daemon you point at); with ``PAPERTIGER_START``
   the manager is started there on first use if nobody answers
   (:func:`~.spawn.ensure_manager`);
3. the daemon's state file (``papertiger daemon start``), when one is running;
4. the embedded default: a private manager started on first use, owned by
   this process and stopped when it exits.  It also exports the two
   variables, so child processes share it.

:func:`find_manager` does steps 2 and 3 without starting anything (the read
commands use it).  The first store call pays for the discovery; later calls
cost one global lookup.  A forked child drops its parent's connection (it
cannot share a socket) and reconnects on first use, keeping nothing but the
address.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .. import env
from ..errors import StoreUnavailable
from .client import Channel, Client
from .log import DEFAULT_CHECKPOINT_BYTES, DEFAULT_SEGMENT_BYTES
from .protocol import request
from .spawn import ManagerProcess, ensure_manager, forget_owned_after_fork

__all__ = [
    "Server",
    "connect_manager",
    "current_client",
    "disconnect_manager",
    "find_manager",
    "on_change",
    "serve",
    "use_manager",
]

_lock = threading.RLock()
_client: Client | None = None
#: (address, authkey, owner pid when the manager is started on demand)
_explicit: tuple[str, bytes, int | None] | None = None
_embedded: ManagerProcess | None = None
#: Called (no arguments) whenever the manager this process uses may have changed.
on_change: list[Callable[[], None]] = []


def _changed() -> None:
    for callback in on_change:
        callback()


def _after_fork_in_child() -> None:
    global _client, _lock, _embedded
    inherited = _client
    if inherited is not None:
        # Not ours to use; close our copies so the manager sees the parent's
        # connection end when the parent closes it (once() hand-overs rely on it).
        with contextlib.suppress(Exception):
            inherited.conn.close()
        with contextlib.suppress(Exception):
            inherited.replica.close()
    _client = None
    _embedded = None  # nor is its manager ours to stop
    forget_owned_after_fork()
    _lock = threading.RLock()
    _changed()


os.register_at_fork(after_in_child=_after_fork_in_child)


def find_manager() -> tuple[str, bytes] | None:
    """``(address, authkey)`` from the environment, else from a running daemon; or None.

    Never starts anything.  Costs a dict lookup, or a stat and a small read
    of the daemon's state file.
    """
    found = env.manager()
    if found is not None:
        return found
    from ..daemon.statefile import discover  # the daemon's file, read only here

    return discover()


def current_client() -> Client:
    """The connection store calls use, established on first use (see module doc)."""
    client = _client
    if client is not None:
        return client
    return _establish()


def _establish() -> Client:
    global _client, _embedded
    with _lock:
        if _client is not None:
            return _client
        if _explicit is not None:
            _client = _connect(*_explicit)
            return _client
        found = env.manager()
        if found is not None:
            owner = env.get(env.START)
            _client = _connect(*found, _owner_pid(owner) if owner else None)
            return _client
        found = find_manager()
        if found is not None:
            _client = Client(*found)
            return _client
        _embedded = ManagerProcess()
        os.environ.update(_embedded.environ())
        atexit.register(_stop_embedded)
        _client = Client(_embedded.address, _embedded.authkey)
        return _client


def _connect(address: str, authkey: bytes, start_owner: int | None) -> Client:
    if start_owner is not None:
        ensure_manager(address, authkey, owner_pid=start_owner)
    return Client(address, authkey)


def _owner_pid(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise StoreUnavailable(
            f"{env.START} must be the pid of the process that owns the run's store, "
            f"got {text!r}; unset it."
        ) from None


def _stop_embedded() -> None:
    global _client, _embedded
    embedded = _embedded
    if embedded is None or embedded.owner_pid != os.getpid():
        return
    if _client is not None:
        _client.close()
        _client = None
    embedded.stop()
    _embedded = None
    for key, value in embedded.environ().items():
        if os.environ.get(key) == value:
            del os.environ[key]
    _changed()


def connect_manager(address: str, authkey: bytes | str) -> Client:
    """Use the manager at ``address`` from now on in this process (and its forks).

    ``authkey`` may be bytes or the hex string papertiger prints.  Raises
    :class:`StoreUnavailable` when no manager answers or the key is refused.
    """
    global _client, _explicit
    key = bytes.fromhex(authkey) if isinstance(authkey, str) else bytes(authkey)
    client = Client(address, key)
    with _lock:
        old = _client
        _client, _explicit = client, (address, key, None)
    if old is not None:
        old.close()
    _changed()
    return client


def disconnect_manager() -> None:
    """Forget the current connection; the next store call discovers again."""
    global _client, _explicit
    with _lock:
        old, _client, _explicit = _client, None, None
    if old is not None:
        old.close()
    _changed()


def connected() -> bool:
    """True when this process holds a connection to a manager. O(1)."""
    return _client is not None


class Server:
    """What :func:`serve` yields: the running manager's address, key and figures."""

    def __init__(self, process: ManagerProcess) -> None:
        self.process = process
        self.address = process.address
        self.authkey = process.authkey
        self.pid = process.pid
        self.control = process.control

    def environ(self) -> dict[str, str]:
        return self.process.environ()

    def stats(self) -> dict[str, Any]:
        """Tables, namespaces, counts, log and shared-memory figures, from this manager."""
        channel = Channel(self.address, self.authkey, self.pid)
        try:
            return dict(channel.request(request("stats"))[1])
        finally:
            channel.close()

    def __repr__(self) -> str:
        return f"<papertiger.Server pid={self.pid} address={self.address!r}>"


Server.__module__ = "papertiger"


@contextlib.contextmanager
def use_manager(
    address: str,
    authkey: bytes,
    *,
    client: Client | None = None,
    start_owner: int | None = None,
) -> Iterator[None]:
    """Point this process and the children it starts at a manager, for the ``with`` block.

    Store calls in the block use the manager at ``address`` (connecting on
    first use, unless ``client`` is already connected to it), and
    ``PAPERTIGER_ADDRESS`` / ``PAPERTIGER_AUTHKEY`` are exported (any
    ``PAPERTIGER_URL`` is hidden).  With ``start_owner`` (a pid), the manager
    is started on first use if nobody answers there (see :mod:`.spawn`).  On
    exit the previous connection and variables come back, and the block's own
    connection is closed.
    """
    global _client, _explicit
    with _lock:
        saved = (_client, _explicit)
        _client, _explicit = client, (address, authkey, start_owner)
    _changed()
    exported = {
        env.ADDRESS: address,
        env.AUTHKEY: authkey.hex(),
        env.URL: None,
        env.START: None if start_owner is None else str(start_owner),
    }
    try:
        with env.exported(exported):
            yield
    finally:
        with _lock:
            mine = _client
            _client, _explicit = saved
        if mine is not None and mine is not saved[0]:
            mine.close()
        _changed()


@contextlib.contextmanager
def serve(
    *,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
    address: str | None = None,
) -> Iterator[Server]:
    """Start a manager for the ``with`` block; this process and its children use it.

    Exports ``PAPERTIGER_ADDRESS`` / ``PAPERTIGER_AUTHKEY`` while open and
    restores the previous connection and variables on exit, when the manager
    stops and its shared memory is removed (see :func:`use_manager`).

    ``segment_bytes`` and ``checkpoint_bytes`` size the log (small values
    force frequent segment switches and checkpoints, which tests use).
    """
    process = ManagerProcess(
        address=address, segment_bytes=segment_bytes, checkpoint_bytes=checkpoint_bytes
    )
    try:
        client = Client(process.address, process.authkey)
        with use_manager(process.address, process.authkey, client=client):
            yield Server(process)
    finally:
        process.stop()
