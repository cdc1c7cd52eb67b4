"""The state file: how a running daemon is found, and who may change it.

Theory of operation
-------------------
Only the holder of ``daemon.lock`` may write, replace or remove
``daemon.json`` and ``daemon.sock``.  The kernel drops an flock when its
holder dies, however it dies, so a SIGKILLed daemon never blocks the next
one, and two racing ``start`` commands cannot both win.

**Discovery** (:func:`discover`, run by a client's first store call when no
variable is set) costs a stat and a small read: it trusts the state file when
its pid is alive *and* started when the file says (so a recycled pid is not
mistaken for the daemon).  A state file whose daemon is dead is removed, but
only under the lock, so a daemon that is starting is never robbed of its
fresh file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .. import env
from ..engine.shm import pid_alive
from .paths import DaemonPaths, daemon_paths, dir_problem

__all__ = ["DaemonInfo", "discover", "find_daemon", "read_state", "write_state"]

log = logging.getLogger("papertiger.daemon")

LOCK_WAIT = 2.0


@dataclass
class DaemonInfo:
    """What the state file says about a running daemon."""

    address: str
    authkey: bytes
    pid: int
    pid_start: int | None
    control: str
    started: float
    version: str
    data: str | None
    log_file: str | None
    state_file: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "address": self.address,
                "authkey": self.authkey.hex(),
                "pid": self.pid,
                "pid_start": self.pid_start,
                "control": self.control,
                "started": self.started,
                "version": self.version,
                "data": self.data,
                "log_file": self.log_file,
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, state_file: str) -> DaemonInfo:
        raw = json.loads(text)
        return cls(
            address=str(raw["address"]),
            authkey=bytes.fromhex(raw["authkey"]),
            pid=int(raw["pid"]),
            pid_start=None if raw.get("pid_start") is None else int(raw["pid_start"]),
            control=str(raw["control"]),
            started=float(raw["started"]),
            version=str(raw.get("version", "")),
            data=raw.get("data"),
            log_file=raw.get("log_file"),
            state_file=state_file,
        )

    @property
    def prefix(self) -> str:
        """The segment-name prefix of this daemon's manager."""
        return self.control[:-2]

    def alive(self) -> bool:
        """True while the daemon's process runs (a recycled pid does not count). O(1)."""
        if not pid_alive(self.pid):
            return False
        if self.pid_start is None:
            return True
        now = process_start(self.pid)
        return now is None or now == self.pid_start

    def environ(self) -> dict[str, str]:
        """The variables that point a process at this daemon explicitly."""
        return env.for_manager(self.address, self.authkey)


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, Linux); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b") ", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def read_state(paths: DaemonPaths) -> DaemonInfo | None:
    """The state file's contents if it is present, ours and well formed; else None."""
    try:
        fd = os.open(paths.state, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077 or st.st_size > 65536:
            return None
        text = os.read(fd, 65536).decode()
    except (OSError, UnicodeDecodeError):
        return None
    finally:
        os.close(fd)
    try:
        return DaemonInfo.from_json(text, str(paths.state))
    except (ValueError, KeyError, TypeError):
        return None


def write_state(paths: DaemonPaths, info: DaemonInfo) -> None:
    tmp = paths.dir / f".daemon.json.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, info.to_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, paths.state)


@contextlib.contextmanager
def try_lock(paths: DaemonPaths) -> Iterator[bool]:
    """Hold the daemon lock for the block if nobody does; yields whether we got it."""
    try:
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def take_lock(paths: DaemonPaths, wait: float = LOCK_WAIT) -> int | None:
    """Take the daemon lock for the life of this process; None when a daemon holds it.

    Retries for ``wait`` seconds: a client's :func:`discover` may hold it for
    a few microseconds while it removes a stale state file.
    """
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
        if time.monotonic() >= deadline:
            os.close(fd)
            return None
        time.sleep(0.02)


def remove_stale_files(paths: DaemonPaths) -> list[str]:
    """Remove a dead daemon's state file and socket. Call only with the lock held."""
    removed = []
    old = read_state(paths)
    if paths.state.exists() or paths.state.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            paths.state.unlink()
            what = f"state file {paths.state}"
            removed.append(what + (f" (dead daemon pid {old.pid})" if old else " (unreadable)"))
    if paths.socket.exists() or paths.socket.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            paths.socket.unlink()
            removed.append(f"socket {paths.socket}")
    for leftover in paths.dir.glob(".daemon.json.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            removed.append(f"temporary file {leftover}")
    return removed


def find_daemon(paths: DaemonPaths | None = None, *, clean: bool = True) -> DaemonInfo | None:
    """The running daemon's state, or None. O(1).

    With ``clean``, a dead daemon's state file and socket are removed (under
    the lock, so never a starting daemon's).
    """
    paths = paths or daemon_paths()
    if not paths.state.exists():
        return None
    if dir_problem(paths.dir):
        return None  # not a directory we can trust
    info = read_state(paths)
    if info is not None and info.alive():
        return info
    if not clean:
        return None
    with try_lock(paths) as locked:
        if locked:
            removed = remove_stale_files(paths)
            if removed:
                log.info("removed what a dead daemon left: %s", ", ".join(removed))
    return None


def discover() -> tuple[str, bytes] | None:
    """The running daemon's ``(address, authkey)`` from its state file, or None.

    Clients call this (see :mod:`papertiger.engine.connection`) when neither ``connect`` nor
    ``PAPERTIGER_ADDRESS`` names a manager.  Costs a stat and a small read;
    a state file left by a dead daemon is ignored and removed.
    """
    try:
        info = find_daemon()
    except Exception as exc:  # discovery must never break a client that can do without it
        log.debug("daemon discovery failed: %r", exc)
        return None
    return None if info is None else (info.address, info.authkey)
