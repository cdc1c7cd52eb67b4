"""Running a daemon: a manager on the state directory's socket, with its files.

Theory of operation
-------------------
A daemon is an ordinary :class:`~papertiger.engine.manager.Manager` plus the
files of :mod:`.paths`.  Start-up (:func:`run`): take the lock, remove what
a dead daemon left (state file, socket; the manager itself removes dead
managers' segments), load the data file if any (a bad file stops everything
*before* any shared memory exists), start the manager on ``daemon.sock``,
write the state file, then report ready.  ``python -m papertiger.daemon`` is
the detached process :func:`papertiger.daemon.control.start` launches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..engine.log import DEFAULT_CHECKPOINT_BYTES, DEFAULT_SEGMENT_BYTES
from ..engine.manager import Manager, ManagerConfig
from ..engine.persistence import (
    DEFAULT_CHANGES,
    DEFAULT_INTERVAL,
    Snapshotter,
    check_writable,
    load_state,
)
from ..errors import DaemonRunning, StoreError
from .paths import daemon_paths, ensure_state_dir
from .statefile import (
    DaemonInfo,
    find_daemon,
    process_start,
    read_state,
    remove_stale_files,
    take_lock,
    write_state,
)

__all__ = ["DaemonConfig", "DaemonManager", "main", "run"]

log = logging.getLogger("papertiger.daemon")

LOG_ROTATE_BYTES = 4 * 1024 * 1024


@dataclass
class DaemonConfig:
    """How to run a daemon; plain data, JSON-friendly (it crosses into the detached process)."""

    state_dir: str | None = None
    data: str | None = None
    snapshot_interval: float = DEFAULT_INTERVAL
    snapshot_changes: int = DEFAULT_CHANGES
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES
    log_level: str = "INFO"
    #: also serve Stripe's HTTP API at ``[HOST:]PORT`` (a child process; see papertiger.http)
    http: str | None = None

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> DaemonConfig:
        return cls(**json.loads(text))


class DaemonManager(Manager):
    """A manager whose ``stats`` also describe the daemon around it."""

    state_file: str | None = None
    log_file: str | None = None
    snapshotter: Snapshotter | None = None
    http_url: str | None = None

    def stats(self) -> dict[str, Any]:
        figures = super().stats()
        log_bytes = None
        if self.log_file is not None:
            with contextlib.suppress(OSError):
                log_bytes = os.stat(self.log_file).st_size
        figures["daemon"] = {
            "state_file": self.state_file,
            "log_file": self.log_file,
            "log_file_bytes": log_bytes,
            "data": None if self.snapshotter is None else self.snapshotter.stats(),
            "http": self.http_url,
        }
        return figures


def _rotate_log(log_file: Path) -> None:
    """Keep one old log: rename a big ``daemon.log`` and reopen stderr on a fresh one."""
    try:
        if os.fstat(2).st_ino != os.stat(log_file).st_ino:
            return  # stderr is not the log (foreground, or redirected elsewhere)
        if os.stat(log_file).st_size < LOG_ROTATE_BYTES:
            return
        os.replace(log_file, str(log_file) + ".1")
        fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:
        pass


def run(
    config: DaemonConfig,
    ready: Callable[[dict[str, Any]], None] | None = None,
    *,
    log_file: str | None = None,
) -> None:
    """Run a daemon in this process until it is stopped (``shutdown``, SIGTERM, SIGINT).

    ``ready`` receives the start-up report: the manager's info plus
    ``authkey`` (hex), ``state_file``, ``log_file``, ``removed`` (what a
    dead daemon left), ``swept`` (dead managers' segments) and ``loaded``.
    Raises :class:`DaemonRunning` when another daemon holds the state
    directory, and :class:`~.persistence.DataFileError` for a bad data file.
    """
    paths = ensure_state_dir(daemon_paths(config.state_dir))
    running = find_daemon(paths, clean=False)
    lock_fd = None if running is not None else take_lock(paths)
    if lock_fd is None:
        info = running or read_state(paths)
        where = f" (pid {info.pid}, {info.address})" if info else ""
        raise DaemonRunning(
            f"a papertiger daemon is already running for {paths.dir}{where}. "
            "Stop it first with 'papertiger daemon stop'.",
            info,
        )
    try:
        if log_file is not None:
            _rotate_log(Path(log_file))
        removed = remove_stale_files(paths)
        if removed:
            log.warning("removed what a dead daemon left: %s", ", ".join(removed))
        loaded = None
        state = None
        if config.data is not None:
            check_writable(config.data)
            state = load_state(config.data)
            if state is not None:
                loaded = {"path": config.data, "records": state.total_records()}
        authkey = secrets.token_bytes(32)
        http = None if config.http is None else _start_http(str(paths.socket), authkey, config.http)
        manager = DaemonManager(
            ManagerConfig(
                address=str(paths.socket),
                authkey=authkey,
                segment_bytes=config.segment_bytes,
                checkpoint_bytes=config.checkpoint_bytes,
            )
        )
        manager.state_file = str(paths.state)
        manager.log_file = log_file
        if state is not None:
            manager.replace_state(state)
            log.info("loaded %d record(s) from %s", state.total_records(), config.data)
        if config.data is not None:
            manager.snapshotter = Snapshotter(
                config.data, interval=config.snapshot_interval, changes=config.snapshot_changes
            )
        info = DaemonInfo(
            address=manager.address,
            authkey=manager.config.authkey,
            pid=os.getpid(),
            pid_start=process_start(os.getpid()),
            control=manager.control_name,
            started=manager.started,
            version=__version__,
            data=config.data,
            log_file=log_file,
            state_file=str(paths.state),
        )

        def forget_state_file(m: Manager) -> None:
            current = read_state(paths)
            if current is not None and current.pid == info.pid:
                with contextlib.suppress(FileNotFoundError):
                    paths.state.unlink()

        manager.on_stop.append(forget_state_file)  # first: no client finds a stopping daemon
        if http is not None:
            proc, manager.http_url = http
            manager.on_stop.append(lambda m: stop_process(proc))
        if manager.snapshotter is not None:
            manager.snapshotter.attach(manager)

        def on_ready(manager_info: dict[str, Any]) -> None:
            write_state(paths, info)
            log.info(
                "daemon pid %d serving at %s (state file %s%s)",
                info.pid,
                info.address,
                paths.state,
                f", data file {config.data}" if config.data else "",
            )
            if ready is not None:
                ready(
                    {
                        **manager_info,
                        "authkey": info.authkey.hex(),
                        "state_file": str(paths.state),
                        "log_file": log_file,
                        "removed": removed,
                        "swept": list(manager.swept),
                        "loaded": loaded,
                        "data": config.data,
                        "http": manager.http_url,
                    }
                )

        manager.serve_forever(on_ready)
        log.info("daemon pid %d stopped", info.pid)
    finally:
        os.close(lock_fd)


def _start_http(
    socket_path: str, authkey: bytes, address: str
) -> tuple[subprocess.Popen[bytes], str]:
    """Serve Stripe's HTTP API over this daemon's store, in a child that follows it out.

    Started before the manager exists (the child connects on its first
    request), so a port that cannot be bound fails the start with nothing
    to undo.  Returns the child and its URL.
    """
    from .. import env
    from ..http.server import parse_address, start_server_process

    try:
        host, port = parse_address(address)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    store_env = {
        env.ADDRESS: socket_path,
        env.AUTHKEY: authkey.hex(),
        env.URL: None,
        env.START: None,
        env.NAMESPACE: None,
    }
    proc, server = start_server_process(host, port, store_env, owner_pid=os.getpid())
    log.info("serving Stripe's HTTP API at %s (pid %d)", server.url, server.pid)
    return proc, server.url


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Stop the HTTP child (imported here only when there is one)."""
    from ..http.server import stop_process as stop

    stop(proc)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s papertiger[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    """Entry point of the detached daemon process (``python -m papertiger.daemon``).

    Reads one JSON line (:class:`DaemonConfig`) from stdin, prints one JSON
    line when ready (or ``{"error": ...}``), then detaches stdout.
    """
    line = sys.stdin.readline()
    if not line:
        sys.exit("papertiger daemon: expected one JSON line of configuration on stdin")
    config = DaemonConfig.from_json(line)
    configure_logging(config.log_level)
    log_file = str(daemon_paths(config.state_dir).log)

    def ready(report: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    try:
        run(config, ready, log_file=log_file)
    except DaemonRunning as exc:
        print(json.dumps({"error": str(exc), "running": True}), flush=True)
        sys.exit(1)
    except StoreError as exc:
        log.error("%s", exc)
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(1)
