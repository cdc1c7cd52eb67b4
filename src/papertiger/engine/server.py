"""Where the manager lives and how a process finds it: serve, connect, discovery.

A process uses one manager at a time, found in this order:

1. an explicit :func:`connect` (or an open :func:`serve` block);
2. ``PAPERTIGER_ADDRESS`` / ``PAPERTIGER_AUTHKEY`` (a parent's :func:`serve`,
   the pytest plugin, or a daemon you point at);
3. the daemon's state file (``papertiger daemon start``), when one is running;
4. the embedded default: a private manager started on first use, owned by
   this process and stopped when it exits.  It also exports the two
   variables, so child processes share it.

The first store call pays for the discovery; later calls cost one global
lookup.  A forked child drops its parent's connection (it cannot share a
socket) and reconnects on first use, keeping nothing but the address.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import selectors
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import StoreError, StoreUnavailable
from .client import Client
from .log import DEFAULT_CHECKPOINT_BYTES, DEFAULT_SEGMENT_BYTES
from .manager import ManagerConfig
from .shm import list_segments, unlink_segment

__all__ = [
    "ENV_ADDRESS",
    "ENV_AUTHKEY",
    "ManagerProcess",
    "Server",
    "connect",
    "current_client",
    "disconnect",
    "serve",
    "use_manager",
]

ENV_ADDRESS = "PAPERTIGER_ADDRESS"
ENV_AUTHKEY = "PAPERTIGER_AUTHKEY"
START_TIMEOUT = 30.0


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


class ManagerProcess:
    """A manager subprocess owned by this process.

    With ``watch_owner`` (the default) the manager stops by itself when this
    process exits, however it exits: it watches its stdin, which only this
    process holds open.
    """

    def __init__(
        self,
        *,
        address: str | None = None,
        authkey: bytes | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
        watch_owner: bool = True,
        log_level: str | None = None,
    ) -> None:
        self.authkey = authkey if authkey is not None else secrets.token_bytes(32)
        self._own_dir = address is None  # the manager made the socket's directory
        config = ManagerConfig(
            address=address,
            authkey=self.authkey,
            segment_bytes=segment_bytes,
            checkpoint_bytes=checkpoint_bytes,
            watch_stdin=watch_owner,
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH")) if p
        )
        env.pop(ENV_ADDRESS, None)
        env.pop(ENV_AUTHKEY, None)
        if log_level:
            env["PAPERTIGER_LOG_LEVEL"] = log_level
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "papertiger.engine"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((config.to_json() + "\n").encode())
        self.proc.stdin.flush()
        self.info = self._await_ready()
        self.address: str = self.info["address"]
        self.pid: int = int(self.info["pid"])
        self.control: str = self.info["control"]
        self.owner_pid = os.getpid()
        _owned_managers.add(self)

    def _await_ready(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.proc.kill()
                    self.proc.wait()
                    raise StoreUnavailable(
                        f"the papertiger manager did not start within {START_TIMEOUT:.0f} s."
                    )
                if sel.select(remaining):
                    break
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            raise StoreUnavailable(
                f"the papertiger manager exited during start-up (exit code {code}); "
                "its error is on stderr above."
            )
        info = json.loads(line)
        if "error" in info:
            self.proc.wait()
            raise StoreError(f"the papertiger manager could not start: {info['error']}")
        return dict(info)

    @property
    def prefix(self) -> str:
        return self.control[:-2]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the manager and make sure none of its segments are left."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()  # EOF: the manager stops cleanly
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        for name in list_segments(self.prefix):
            unlink_segment(name, tracked=False)
        sock_dir = os.path.dirname(self.address)
        if self._own_dir and os.path.basename(sock_dir).startswith("ptg-"):
            with contextlib.suppress(OSError):
                os.unlink(self.address)
            with contextlib.suppress(OSError):
                os.rmdir(sock_dir)

    def environ(self) -> dict[str, str]:
        """The variables that point a process at this manager."""
        return {ENV_ADDRESS: self.address, ENV_AUTHKEY: self.authkey.hex()}


# -- the process-wide connection --------------------------------------------------

_lock = threading.RLock()
_client: Client | None = None
_explicit: tuple[str, bytes] | None = None
_embedded: ManagerProcess | None = None
#: Managers this process started; a forked child closes its copies of their stdin
#: pipes, or the manager would never see EOF when its owner stops or dies.
_owned_managers: weakref.WeakSet[ManagerProcess] = weakref.WeakSet()


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
    for owned in list(_owned_managers):
        if owned.proc.stdin is not None:
            with contextlib.suppress(OSError):
                owned.proc.stdin.close()
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def current_client() -> Client:
    """The connection store calls use, established on first use (see module doc)."""
    client = _client
    if client is not None:
        return client
    return _establish()


def _authkey_from_env() -> bytes:
    text = os.environ.get(ENV_AUTHKEY)
    if not text:
        raise StoreUnavailable(
            f"{ENV_ADDRESS} is set but {ENV_AUTHKEY} is not; set both (the authkey as hex)."
        )
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise StoreUnavailable(f"{ENV_AUTHKEY} must be hex, as printed by papertiger.") from None


def _establish() -> Client:
    global _client, _embedded
    with _lock:
        if _client is not None:
            return _client
        if _explicit is not None:
            _client = Client(*_explicit)
            return _client
        address = os.environ.get(ENV_ADDRESS)
        if address:
            _client = Client(address, _authkey_from_env())
            return _client
        found = _daemon_address()
        if found is not None:
            _client = Client(*found)
            return _client
        _embedded = ManagerProcess()
        os.environ.update(_embedded.environ())
        atexit.register(_stop_embedded)
        _client = Client(_embedded.address, _embedded.authkey)
        return _client


def _daemon_address() -> tuple[str, bytes] | None:
    """The running daemon's address and authkey from its state file, if any."""
    try:
        from .daemon import discover  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    found: tuple[str, bytes] | None = discover()
    return found


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


def connect(address: str, authkey: bytes | str) -> Client:
    """Use the manager at ``address`` from now on in this process (and its forks).

    ``authkey`` may be bytes or the hex string papertiger prints.  Raises
    :class:`StoreUnavailable` when no manager answers or the key is refused.
    """
    global _client, _explicit
    key = bytes.fromhex(authkey) if isinstance(authkey, str) else bytes(authkey)
    client = Client(address, key)
    with _lock:
        old = _client
        _client, _explicit = client, (address, key)
    if old is not None:
        old.close()
    return client


def disconnect() -> None:
    """Forget the current connection; the next store call discovers again."""
    global _client, _explicit
    with _lock:
        old, _client, _explicit = _client, None, None
    if old is not None:
        old.close()


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
        """Tables, namespaces, counts, log and shared-memory figures, from the manager."""
        return dict(current_client().request(["stats"])[1])


@contextlib.contextmanager
def use_manager(address: str, authkey: bytes, *, client: Client | None = None) -> Iterator[None]:
    """Point this process and the children it starts at a manager, for the ``with`` block.

    Store calls in the block use the manager at ``address`` (connecting on
    first use, unless ``client`` is already connected to it), and
    ``PAPERTIGER_ADDRESS`` / ``PAPERTIGER_AUTHKEY`` are exported.  On exit the
    previous connection and variables come back, and the block's own
    connection is closed.
    """
    global _client, _explicit
    saved_env = {k: os.environ.get(k) for k in (ENV_ADDRESS, ENV_AUTHKEY)}
    with _lock:
        saved = (_client, _explicit)
        _client, _explicit = client, (address, authkey)
    os.environ.update({ENV_ADDRESS: address, ENV_AUTHKEY: authkey.hex()})
    try:
        yield
    finally:
        with _lock:
            mine = _client
            _client, _explicit = saved
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if mine is not None and mine is not saved[0]:
            mine.close()


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
