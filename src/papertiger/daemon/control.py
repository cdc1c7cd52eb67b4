"""Controlling a daemon from outside: start it detached, query it, stop it.

:func:`start` runs :mod:`.run` in a detached process (new session, ``cwd /``,
stdio to ``daemon.log``) and returns its ready report.  :func:`stop` sends
the ``shutdown`` operation, waits for the pid to go, SIGTERM (then SIGKILL)
if it does not; then unlinks whatever of its segments, state file and socket
is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine.client import Channel
from ..engine.protocol import request
from ..engine.spawn import START_TIMEOUT, STOP_TIMEOUT, remove_leftovers, start_process
from ..errors import DaemonRunning, NoDaemon, StoreError, StoreUnavailable
from .paths import DaemonPaths, daemon_paths, ensure_state_dir
from .run import DaemonConfig
from .statefile import DaemonInfo, find_daemon, read_state, remove_stale_files, try_lock

__all__ = ["START_TIMEOUT", "STOP_TIMEOUT", "StopReport", "query", "start", "stop"]

log = logging.getLogger("papertiger.daemon")


def start(config: DaemonConfig, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Start a detached daemon and return its ready report (see :func:`run`).

    Raises :class:`DaemonRunning` when one already runs, and
    :class:`StoreError` with the daemon's own message when it cannot start.
    """
    paths = ensure_state_dir(daemon_paths(config.state_dir))
    config.state_dir = str(paths.dir)
    if config.data is not None:
        config.data = os.path.abspath(config.data)
    running = find_daemon(paths, clean=False)  # the daemon cleans up, and says what it removed
    if running is not None:
        raise DaemonRunning(
            f"a papertiger daemon is already running (pid {running.pid}, {running.address}). "
            "Stop it first with 'papertiger daemon stop'.",
            running,
        )
    try:
        _, report = start_process(
            "papertiger.daemon",
            config.to_json(),
            keep_stdin=False,
            log_path=paths.log,
            detached=True,
            timeout=timeout,
            what="the papertiger daemon",
            check=False,
        )
    except StoreUnavailable as exc:
        raise StoreUnavailable(
            f"{exc} Its log {paths.log} ends with:\n{_tail(paths.log)}"
        ) from None
    if "error" in report:
        if report.get("running"):
            raise DaemonRunning(str(report["error"]), read_state(paths))
        raise StoreError(str(report["error"]))
    return report


def _tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def query(info: DaemonInfo, op: str = "stats") -> Any:
    """Send one operation to the daemon and return its result (``stats``, ``hello``...)."""
    channel = Channel(info.address, info.authkey, info.pid)
    try:
        return channel.request(request(op))[1]
    finally:
        channel.close()


@dataclass
class StopReport:
    """What :func:`stop` did."""

    pid: int
    how: str  # "shutdown", "SIGTERM" or "SIGKILL"
    removed: list[str]


def _wait_gone(info: DaemonInfo, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while info.alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop(paths: DaemonPaths | None = None, timeout: float = STOP_TIMEOUT) -> StopReport:
    """Stop the running daemon and remove its segments, state file and socket.

    Asks politely (the ``shutdown`` operation), waits ``timeout`` seconds,
    then sends SIGTERM, then SIGKILL.  Raises :class:`NoDaemon` when none runs.
    """
    paths = paths or daemon_paths()
    info = find_daemon(paths)
    if info is None:
        raise NoDaemon(f"no papertiger daemon is running (state directory {paths.dir}).")
    how = "shutdown"
    try:
        query(info, "shutdown")
    except StoreError as exc:
        log.info("shutdown request failed (%s); sending SIGTERM", exc)
        how = "SIGTERM"
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGTERM)
    if not _wait_gone(info, timeout):
        if how == "shutdown":
            how = "SIGTERM"
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGTERM)
        if not _wait_gone(info, 5.0):
            how = "SIGKILL"
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
            _wait_gone(info, 5.0)
    removed = [f"segment {name}" for name in remove_leftovers(info.prefix)]
    with try_lock(paths) as locked:
        if locked:
            current = read_state(paths)
            if current is None or current.pid == info.pid:
                removed += remove_stale_files(paths)
    return StopReport(pid=info.pid, how=how, removed=removed)
