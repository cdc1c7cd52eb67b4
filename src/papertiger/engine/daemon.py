"""The daemon: a long-lived manager that the user's processes find by themselves.

Theory of operation
-------------------
A daemon is an ordinary :class:`~.manager.Manager` plus three files in a
per-user **state directory** (mode 0700)::

    $PAPERTIGER_STATE_DIR                    when set (tests use a temporary one), else
    $XDG_RUNTIME_DIR/papertiger/             when that runtime directory exists, else
    <tempdir>/papertiger-<uid>/

    daemon.lock   held (flock) by the running daemon for its whole life
    daemon.json   the state file, 0600: address, authkey, pid, control block...
    daemon.sock   the Unix socket, 0600
    daemon.log    the detached daemon's log (stderr)

**Exclusion.**  Only the holder of ``daemon.lock`` may write, replace or
remove ``daemon.json`` and ``daemon.sock``.  The kernel drops an flock when
its holder dies, however it dies, so a SIGKILLed daemon never blocks the
next one, and two racing ``start`` commands cannot both win.

**Discovery** (:func:`discover`, run by a client's first store call when no
variable is set) costs a stat and a small read: it trusts the state file when
its pid is alive *and* started when the file says (so a recycled pid is not
mistaken for the daemon).  A state file whose daemon is dead is removed, but
only under the lock, so a daemon that is starting is never robbed of its
fresh file.

**Start-up** (:func:`run`): take the lock, remove what a dead daemon left
(state file, socket; the manager itself removes dead managers' segments),
load the data file if any (a bad file stops everything *before* any shared
memory exists), start the manager on ``daemon.sock``, write the state file,
then report ready.  :func:`start` runs that in a detached process (new
session, ``cwd /``, stdio to ``daemon.log``) and returns its ready report.

**Stop** (:func:`stop`): the ``shutdown`` operation, wait for the pid to go,
SIGTERM (then SIGKILL) if it does not; then unlink whatever of its segments,
state file and socket is left.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import selectors
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import StoreError, StoreUnavailable
from .client import Channel
from .log import DEFAULT_CHECKPOINT_BYTES, DEFAULT_SEGMENT_BYTES
from .manager import SOCKET_NAME, Manager, ManagerConfig
from .persistence import (
    DEFAULT_CHANGES,
    DEFAULT_INTERVAL,
    Snapshotter,
    check_writable,
    load_state,
)
from .shm import list_segments, owner_pid, pid_alive, unlink_segment

__all__ = [
    "ENV_STATE_DIR",
    "DaemonConfig",
    "DaemonInfo",
    "DaemonPaths",
    "DaemonRunning",
    "NoDaemon",
    "collect_garbage",
    "daemon_paths",
    "discover",
    "find_daemon",
    "query",
    "run",
    "start",
    "stop",
]

log = logging.getLogger("papertiger.daemon")

ENV_STATE_DIR = "PAPERTIGER_STATE_DIR"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOCK_WAIT = 2.0
LOG_ROTATE_BYTES = 4 * 1024 * 1024
#: Longest Unix socket path every platform accepts (macOS: 104 bytes with the NUL).
MAX_SOCKET_PATH = 103
#: Embedded managers put their socket in ``<tempdir>/ptg-XXXXXXXX/store.sock``.
EMBEDDED_DIR_PREFIX = "ptg-"
#: A socket younger than this is never considered stale by :func:`collect_garbage`.
STALE_SOCKET_AGE = 60.0


class DaemonRunning(StoreError):
    """A daemon is already running for this state directory."""

    def __init__(self, message: str, info: DaemonInfo | None = None) -> None:
        super().__init__(message)
        self.info = info


class NoDaemon(StoreError):
    """No daemon is running for this state directory."""


# -- where things live ----------------------------------------------------------------


@dataclass(frozen=True)
class DaemonPaths:
    """The files of one state directory."""

    dir: Path

    @property
    def state(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def socket(self) -> Path:
        return self.dir / "daemon.sock"

    @property
    def lock(self) -> Path:
        return self.dir / "daemon.lock"

    @property
    def log(self) -> Path:
        return self.dir / "daemon.log"


def _default_state_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            st = os.stat(runtime)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            return Path(runtime) / "papertiger"
    return Path(tempfile.gettempdir()) / f"papertiger-{os.getuid()}"


def daemon_paths(state_dir: str | os.PathLike[str] | None = None) -> DaemonPaths:
    """The state directory's files: ``state_dir``, else ``$PAPERTIGER_STATE_DIR``, else the default.

    Creates nothing. O(1).
    """
    if state_dir is None:
        state_dir = os.environ.get(ENV_STATE_DIR) or _default_state_dir()
    return DaemonPaths(Path(os.path.abspath(state_dir)))


def ensure_state_dir(paths: DaemonPaths) -> DaemonPaths:
    """Create the state directory (0700) or check that an existing one is private to us."""
    try:
        os.makedirs(paths.dir.parent, mode=0o700, exist_ok=True)
        os.mkdir(paths.dir, 0o700)
        os.chmod(paths.dir, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(
            f"cannot create the papertiger state directory {paths.dir}: {exc.strerror}. "
            f"Point {ENV_STATE_DIR} at a directory you own."
        ) from None
    problem = _dir_problem(paths.dir)
    if problem:
        raise StoreError(
            f"the papertiger state directory {paths.dir} {problem}; it must be a directory "
            f"owned by you with mode 0700. Fix it (chmod 700 {paths.dir}) or point "
            f"{ENV_STATE_DIR} elsewhere."
        )
    if len(os.fsencode(paths.socket)) > MAX_SOCKET_PATH:
        raise StoreError(
            f"the socket path {paths.socket} is longer than {MAX_SOCKET_PATH} bytes, the most a "
            f"Unix socket allows. Point {ENV_STATE_DIR} at a shorter directory."
        )
    return paths


def _dir_problem(path: Path) -> str | None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.getuid():
        return f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    if st.st_mode & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}"
    return None


# -- the state file -------------------------------------------------------------------


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
        now = _process_start(self.pid)
        return now is None or now == self.pid_start

    def environ(self) -> dict[str, str]:
        """The variables that point a process at this daemon explicitly."""
        return {"PAPERTIGER_ADDRESS": self.address, "PAPERTIGER_AUTHKEY": self.authkey.hex()}


def _process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, Linux); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b") ", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _read_state(paths: DaemonPaths) -> DaemonInfo | None:
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


def _write_state(paths: DaemonPaths, info: DaemonInfo) -> None:
    tmp = paths.dir / f".daemon.json.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, info.to_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, paths.state)


@contextlib.contextmanager
def _try_lock(paths: DaemonPaths) -> Iterator[bool]:
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


def _take_lock(paths: DaemonPaths, wait: float = LOCK_WAIT) -> int | None:
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


def _remove_stale_files(paths: DaemonPaths) -> list[str]:
    """Remove a dead daemon's state file and socket. Call only with the lock held."""
    removed = []
    old = _read_state(paths)
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
    if _dir_problem(paths.dir):
        return None  # not a directory we can trust
    info = _read_state(paths)
    if info is not None and info.alive():
        return info
    if not clean:
        return None
    with _try_lock(paths) as locked:
        if locked:
            removed = _remove_stale_files(paths)
            if removed:
                log.info("removed what a dead daemon left: %s", ", ".join(removed))
    return None


def discover() -> tuple[str, bytes] | None:
    """The running daemon's ``(address, authkey)`` from its state file, or None.

    Clients call this (see :mod:`.server`) when neither :func:`connect` nor
    ``PAPERTIGER_ADDRESS`` names a manager.  Costs a stat and a small read;
    a state file left by a dead daemon is ignored and removed.
    """
    try:
        info = find_daemon()
    except Exception as exc:  # discovery must never break a client that can do without it
        log.debug("daemon discovery failed: %r", exc)
        return None
    return None if info is None else (info.address, info.authkey)


# -- running a daemon -----------------------------------------------------------------


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
    lock_fd = None if running is not None else _take_lock(paths)
    if lock_fd is None:
        info = running or _read_state(paths)
        where = f" (pid {info.pid}, {info.address})" if info else ""
        raise DaemonRunning(
            f"a papertiger daemon is already running for {paths.dir}{where}. "
            "Stop it first with 'papertiger daemon stop'.",
            info,
        )
    try:
        if log_file is not None:
            _rotate_log(Path(log_file))
        removed = _remove_stale_files(paths)
        if removed:
            log.warning("removed what a dead daemon left: %s", ", ".join(removed))
        loaded = None
        state = None
        if config.data is not None:
            check_writable(config.data)
            state = load_state(config.data)
            if state is not None:
                loaded = {"path": config.data, "records": state.total_records()}
        manager = DaemonManager(
            ManagerConfig(
                address=str(paths.socket),
                authkey=secrets.token_bytes(32),
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
            pid_start=_process_start(os.getpid()),
            control=manager.control_name,
            started=manager.started,
            version=__version__,
            data=config.data,
            log_file=log_file,
            state_file=str(paths.state),
        )

        def forget_state_file(m: Manager) -> None:
            current = _read_state(paths)
            if current is not None and current.pid == info.pid:
                with contextlib.suppress(FileNotFoundError):
                    paths.state.unlink()

        manager.on_stop.append(forget_state_file)  # first: no client finds a stopping daemon
        if manager.snapshotter is not None:
            manager.snapshotter.attach(manager)

        def on_ready(manager_info: dict[str, Any]) -> None:
            _write_state(paths, info)
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
                    }
                )

        manager.serve_forever(on_ready)
        log.info("daemon pid %d stopped", info.pid)
    finally:
        os.close(lock_fd)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s papertiger[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    """Entry point of the detached daemon process (``python -m papertiger.engine.daemon``).

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


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


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
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
    for name in ("PAPERTIGER_ADDRESS", "PAPERTIGER_AUTHKEY"):
        env.pop(name, None)
    log_fd = os.open(paths.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "papertiger.engine.daemon"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log_fd,
            cwd="/",
            env=env,
            close_fds=True,
            start_new_session=True,
        )
    finally:
        os.close(log_fd)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((config.to_json() + "\n").encode())
    proc.stdin.close()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            proc.wait()
            raise StoreUnavailable(
                f"the papertiger daemon did not start within {timeout:.0f} s; "
                f"see its log {paths.log}."
            )
    line = proc.stdout.readline()
    proc.stdout.close()
    if not line:
        code = proc.wait()
        raise StoreError(
            f"the papertiger daemon exited during start-up (exit code {code}). "
            f"Its log {paths.log} ends with:\n{_tail(paths.log)}"
        )
    report: dict[str, Any] = json.loads(line)
    if "error" in report:
        proc.wait()
        if report.get("running"):
            raise DaemonRunning(str(report["error"]), _read_state(paths))
        raise StoreError(str(report["error"]))
    # The daemon outlives us: forget it without waiting (it is in its own session).
    proc.returncode = 0
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
        return channel.request([op])[1]
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
    removed = [f"segment {name}" for name in _unlink_prefix(info.prefix)]
    with _try_lock(paths) as locked:
        if locked:
            current = _read_state(paths)
            if current is None or current.pid == info.pid:
                removed += _remove_stale_files(paths)
    return StopReport(pid=info.pid, how=how, removed=removed)


def _unlink_prefix(prefix: str) -> list[str]:
    return [name for name in list(list_segments(prefix)) if unlink_segment(name, tracked=False)]


# -- garbage collection -------------------------------------------------------------------


def _stale_embedded_sockets() -> Iterator[Path]:
    """Sockets of dead embedded managers: ``<tempdir>/ptg-*/store.sock`` nobody listens on."""
    root = Path(tempfile.gettempdir())
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(EMBEDDED_DIR_PREFIX)]
    except OSError:
        return
    now = time.time()
    for directory in candidates:
        sock_path = directory / SOCKET_NAME
        try:
            st_dir = os.lstat(directory)
            if not stat.S_ISDIR(st_dir.st_mode) or st_dir.st_uid != os.getuid():
                continue
            if os.listdir(directory) != [SOCKET_NAME]:
                continue
            st = os.lstat(sock_path)
        except OSError:
            continue
        if not stat.S_ISSOCK(st.st_mode) or now - st.st_mtime < STALE_SOCKET_AGE:
            continue
        if _nobody_listens(str(sock_path)):
            yield sock_path


def _nobody_listens(address: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(address)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False


def collect_garbage(paths: DaemonPaths | None = None, *, dry_run: bool = False) -> list[str]:
    """Remove what dead managers left; return a line per thing removed (or found, ``dry_run``).

    Segments of managers whose pid is gone, a dead daemon's state file and
    socket, and dead embedded managers' sockets (only those older than a
    minute that refuse connections).  A live manager's files are never
    touched. O(entries in /dev/shm and the temporary directory).
    """
    paths = paths or daemon_paths()
    found: list[str] = []
    for name in sorted(list_segments()):
        pid = owner_pid(name)
        if pid is None or pid_alive(pid):
            continue
        if dry_run or unlink_segment(name, tracked=False):
            found.append(f"segment {name} (dead manager pid {pid})")
    if paths.state.exists() and not _dir_problem(paths.dir):
        info = _read_state(paths)
        if info is None or not info.alive():
            if dry_run:
                found.append(f"state file {paths.state}")
            else:
                with _try_lock(paths) as locked:
                    if locked:
                        found += _remove_stale_files(paths)
    for sock_path in _stale_embedded_sockets():
        if not dry_run:
            with contextlib.suppress(OSError):
                sock_path.unlink()
            with contextlib.suppress(OSError):
                sock_path.parent.rmdir()
        found.append(f"socket {sock_path} (dead embedded manager)")
    return found


if __name__ == "__main__":
    main()
