"""Starting managers: as a child of this process, or on demand for a whole test run.

Theory of operation
-------------------
A manager runs as ``python -m <module>`` in a fresh interpreter (never a
fork of a process that has threads and connections).  It reads one JSON line
of configuration from stdin and prints one JSON line when it is ready, or
``{"error": ...}``; :func:`start_process` does that handshake, with a
timeout, for the embedded manager here and for the daemon
(:mod:`papertiger.daemon.control`).

:class:`ManagerProcess` is a manager owned by this process: it stops when its
owner closes its stdin, which happens however the owner exits.

**On demand** (:func:`ensure_manager`): a test run must not pay for a manager
that no test uses, yet every process of the run must share one.  The run's
first process picks a private socket address and an authkey and hands them
to every worker, with ``PAPERTIGER_START`` naming the *owner* (its pid); no
manager runs yet.  The first store call in any process finds nobody at the
address and, under an ``flock`` on ``<address>.lock`` (so two workers never
both start one), starts a detached manager there that watches the owner's pid
and exits when the owner does.  Everyone else connects to it.  The owner stops
it at the end of the run (:func:`stop_manager_at`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import selectors
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from .. import env
from ..errors import StoreError, StoreUnavailable
from .log import DEFAULT_CHECKPOINT_BYTES, DEFAULT_SEGMENT_BYTES
from .shm import list_segments, pid_alive, unlink_segment

__all__ = [
    "START_TIMEOUT",
    "ManagerProcess",
    "child_env",
    "ensure_manager",
    "package_root",
    "start_process",
    "stop_manager_at",
]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

#: Managers this process started; a forked child closes its copies of their stdin
#: pipes, or the manager would never see EOF when its owner stops or dies.
owned_managers: weakref.WeakSet[ManagerProcess] = weakref.WeakSet()


def package_root() -> str:
    """The directory that holds the ``papertiger`` package (put on a child's path)."""
    return str(Path(__file__).resolve().parents[2])


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a manager or daemon child.

    The package is on ``PYTHONPATH`` (so a checkout works without installing)
    and every variable that would point the child at another store is removed.
    """
    child = {k: v for k, v in os.environ.items() if k not in env.CONNECTION}
    child["PYTHONPATH"] = os.pathsep.join(p for p in (package_root(), child.get("PYTHONPATH")) if p)
    child.update(extra)
    return child


def start_process(
    module: str,
    config: str,
    *,
    keep_stdin: bool,
    log_path: str | os.PathLike[str] | None = None,
    detached: bool = False,
    timeout: float = START_TIMEOUT,
    what: str = "the papertiger manager",
    check: bool = True,
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Run ``python -m module``, send it ``config`` (one line), await its ready report.

    ``keep_stdin`` leaves stdin open (the child watches it to follow its
    owner out).  ``log_path``: the child's stderr is appended there (else it
    shares ours).  ``detached``: the child runs in its own session, from
    ``/``, and is never waited for: it outlives us.  Raises
    :class:`StoreUnavailable` when the child does not report within
    ``timeout`` or exits, and (with ``check``) :class:`StoreError` with the
    child's own message when it reports an error.
    """
    log_fd = None
    if log_path is not None:
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            env=child_env(),
            close_fds=True,
            cwd="/" if detached else None,
            start_new_session=detached,
        )
    finally:
        if log_fd is not None:
            os.close(log_fd)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((config + "\n").encode())
    proc.stdin.flush()
    if not keep_stdin:
        proc.stdin.close()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            proc.wait()
            raise StoreUnavailable(f"{what} did not start within {timeout:.0f} s.")
    line = proc.stdout.readline()
    if not line:
        code = proc.wait()
        raise StoreUnavailable(
            f"{what} exited during start-up (exit code {code}); its error is in its log (stderr)."
        )
    report: dict[str, Any] = json.loads(line)
    if "error" in report:
        proc.wait()
        if check:
            raise StoreError(f"{what} could not start: {report['error']}")
    elif detached:
        proc.returncode = 0  # it outlives us: never wait for it
        proc.stdout.close()
    return proc, report


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
    ) -> None:
        self.authkey = authkey if authkey is not None else secrets.token_bytes(32)
        self._own_dir = address is None  # the manager made the socket's directory
        from .manager import ManagerConfig  # here: a reader never imports the manager

        config = ManagerConfig(
            address=address,
            authkey=self.authkey,
            segment_bytes=segment_bytes,
            checkpoint_bytes=checkpoint_bytes,
            watch_stdin=watch_owner,
        )
        self.proc, self.info = start_process("papertiger.engine", config.to_json(), keep_stdin=True)
        self.address: str = self.info["address"]
        self.pid: int = int(self.info["pid"])
        self.control: str = self.info["control"]
        self.owner_pid = os.getpid()
        owned_managers.add(self)

    @property
    def prefix(self) -> str:
        """The segment-name prefix of this manager's run."""
        return self.control[:-2]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the manager and make sure none of its segments are left."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # EOF: the manager stops cleanly
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
        remove_leftovers(self.prefix)
        sock_dir = os.path.dirname(self.address)
        if self._own_dir and os.path.basename(sock_dir).startswith("ptg-"):
            with contextlib.suppress(OSError):
                os.unlink(self.address)
            with contextlib.suppress(OSError):
                os.rmdir(sock_dir)

    def environ(self) -> dict[str, str]:
        """The variables that point a process at this manager."""
        return env.for_manager(self.address, self.authkey)


def remove_leftovers(prefix: str) -> list[str]:
    """Unlink every segment whose name starts with ``prefix`` (a stopped manager's)."""
    return [name for name in list_segments(prefix) if unlink_segment(name, tracked=False)]


def forget_owned_after_fork() -> None:
    """In a forked child: close the inherited stdin pipes of the parent's managers."""
    for owned in list(owned_managers):
        if owned.proc.stdin is not None:
            with contextlib.suppress(OSError):
                owned.proc.stdin.close()


# -- on demand -----------------------------------------------------------------------------


def answers(address: str) -> bool:
    """True when something accepts connections on the Unix socket ``address``. O(1)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


def ensure_manager(
    address: str, authkey: bytes, owner_pid: int, timeout: float = START_TIMEOUT
) -> None:
    """Make sure a manager serves ``address``: start one (detached) unless one does.

    Under an ``flock`` on ``<address>.lock``, so concurrent callers start one
    manager between them.  The manager exits when ``owner_pid`` does.  O(1)
    when it already runs (one connect).
    """
    if answers(address):
        return
    if not pid_alive(owner_pid):
        raise StoreUnavailable(
            f"the process that owns this run's store (pid {owner_pid}) has exited; "
            f"unset {env.START} and {env.ADDRESS} or start a new run."
        )
    lock_fd = os.open(address + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if answers(address):
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)  # a socket left by a manager that died
        from .manager import ManagerConfig

        config = ManagerConfig(address=address, authkey=authkey, watch_pid=owner_pid)
        start_process(
            "papertiger.engine",
            config.to_json(),
            keep_stdin=False,
            log_path=address + ".log",
            detached=True,
            timeout=timeout,
        )
    finally:
        os.close(lock_fd)


def stop_manager_at(address: str, authkey: bytes, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the manager serving ``address`` (if any) and remove what it left.

    Returns True when there was one.  Waits up to ``timeout`` for it to exit,
    then SIGKILLs it; its segments, socket and lock file are removed either way.
    """
    from .client import Channel  # here: importing it costs a client-only import chain
    from .protocol import request

    if not answers(address):
        return False
    try:
        channel = Channel(address, authkey)
    except StoreError:
        return False
    try:
        _, info = channel.request(request("hello"))
        with contextlib.suppress(StoreError):
            channel.request(request("shutdown"))
    finally:
        channel.close()
    pid = int(info["pid"])
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    remove_leftovers(str(info["control"])[:-2])
    for path in (address, address + ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return True
