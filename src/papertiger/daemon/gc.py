"""``papertiger gc``: remove what dead managers left, never what a live one holds."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..engine.manager import SOCKET_NAME
from ..engine.shm import list_segments, owner_pid, pid_alive, unlink_segment
from .paths import DaemonPaths, daemon_paths, dir_problem
from .statefile import read_state, remove_stale_files, try_lock

__all__ = ["collect_garbage"]

#: Embedded managers put their socket in ``<tempdir>/ptg-XXXXXXXX/store.sock``.
EMBEDDED_DIR_PREFIX = "ptg-"
#: A socket younger than this is never considered stale by :func:`collect_garbage`.
STALE_SOCKET_AGE = 60.0


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
    if paths.state.exists() and not dir_problem(paths.dir):
        info = read_state(paths)
        if info is None or not info.alive():
            if dry_run:
                found.append(f"state file {paths.state}")
            else:
                with try_lock(paths) as locked:
                    if locked:
                        found += remove_stale_files(paths)
    for sock_path in _stale_embedded_sockets():
        if not dry_run:
            with contextlib.suppress(OSError):
                sock_path.unlink()
            with contextlib.suppress(OSError):
                sock_path.parent.rmdir()
        found.append(f"socket {sock_path} (dead embedded manager)")
    return found
