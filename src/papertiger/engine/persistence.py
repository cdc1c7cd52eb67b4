"""Snapshots of the store on disk: the opt-in ``--data FILE`` of a daemon.

Theory of operation
-------------------
A data file is one snapshot of the whole :class:`~papertiger.state.State`
(``State.snapshot()``, msgpack) behind a fixed 32-byte header::

    0   magic     8s   b"PTGDATA\\0"
    8   version   u32  FILE_VERSION (a newer file is refused, not guessed at)
    12  flags     u32  0
    16  length    u64  payload bytes that follow the header
    24  crc32     u32  of the payload
    28  reserved  u32  0

So a file cut short (a full disk, a copy interrupted) fails the length check
and a file changed in place fails the checksum, before any byte of it is
trusted.  A file that fails either is *never* overwritten: the manager
refuses to start and says how to move it aside.

Writes are atomic: the snapshot goes to a temporary file in the same
directory, is fsynced, renamed over the old file, and the directory is
fsynced.  A crash at any point leaves either the old file or the new one.

:class:`Snapshotter` attaches to a manager's hooks: it counts writes
(``on_write``), saves when enough changes piled up or enough time passed
since the first unsaved one (``on_tick``), and saves once more on a clean
stop (``on_stop``).  The snapshot *dict* is taken on the manager's thread
(O(records), no copying of record bytes: they are immutable), the encoding,
fsync and rename happen on a background thread, so a slow disk never stalls
the writers.  One save is in flight at a time.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from typing import TYPE_CHECKING, Any

import msgpack

from ..core.state import State
from ..errors import DataFileError, StoreError

if TYPE_CHECKING:  # pragma: no cover
    from .manager import Manager

__all__ = [
    "FILE_HEADER",
    "FILE_MAGIC",
    "FILE_VERSION",
    "DataFileError",
    "Snapshotter",
    "check_writable",
    "load_state",
    "read_snapshot",
    "write_snapshot",
]

log = logging.getLogger("papertiger.persistence")

FILE_MAGIC = b"PTGDATA\x00"
FILE_VERSION = 1
#: magic, version, flags, payload length, crc32 of the payload, reserved
FILE_HEADER = struct.Struct("<8sIIQII")
DEFAULT_INTERVAL = 60.0
DEFAULT_CHANGES = 1000


def _unusable(path: str, what: str) -> DataFileError:
    return DataFileError(
        f"the data file {path} {what}. It was not loaded and will not be "
        f"overwritten. Move it aside to start with an empty store (mv {path} {path}.bad), "
        "or restore a good copy, then start again."
    )


def write_snapshot(path: str, snapshot: dict[str, Any]) -> int:
    """Write ``snapshot`` to ``path`` atomically (mode 0600); returns the file's size.

    O(size of the snapshot).  Raises OSError when the disk refuses; the old
    file is then untouched.
    """
    payload = msgpack.packb(
        {"format": "papertiger.state", "saved_at": time.time(), "state": snapshot},
        use_bin_type=True,
    )
    header = FILE_HEADER.pack(FILE_MAGIC, FILE_VERSION, 0, len(payload), zlib.crc32(payload), 0)
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(header + payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - some filesystems refuse to open directories
        return FILE_HEADER.size + len(payload)
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)
    return FILE_HEADER.size + len(payload)


def read_snapshot(path: str) -> dict[str, Any] | None:
    """The snapshot stored in ``path``; None when there is no such file.

    Raises :class:`DataFileError` when the file is truncated, corrupt, not a
    papertiger data file, or written by a newer version. O(file size).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise _unusable(path, "is a directory") from None
    if len(data) < FILE_HEADER.size:
        if data and not FILE_MAGIC.startswith(data[: len(FILE_MAGIC)]):
            raise _unusable(path, "is not a papertiger data file (wrong magic)")
        raise _unusable(
            path,
            f"is truncated: {len(data)} bytes, shorter than its {FILE_HEADER.size}-byte header",
        )
    magic, version, _, length, crc, _ = FILE_HEADER.unpack_from(data, 0)
    if magic != FILE_MAGIC:
        raise _unusable(path, f"is not a papertiger data file (magic {magic!r})")
    if version != FILE_VERSION:
        raise _unusable(
            path,
            f"has format version {version}; this papertiger reads version {FILE_VERSION}. "
            "Use the papertiger version that wrote it",
        )
    payload = memoryview(data)[FILE_HEADER.size :]
    if len(payload) < length:
        raise _unusable(
            path,
            f"is truncated: its header promises {length} bytes of data, it holds {len(payload)}",
        )
    if len(payload) > length:
        raise _unusable(
            path, f"is corrupt: {len(payload) - length} unexpected bytes after the snapshot"
        )
    if zlib.crc32(payload) != crc:
        raise _unusable(path, "is corrupt: its checksum does not match its contents")
    try:
        body = msgpack.unpackb(payload)
        snapshot = body["state"]
        if body.get("format") != "papertiger.state" or not isinstance(snapshot, dict):
            raise ValueError("unexpected layout")
    except Exception as exc:
        raise _unusable(path, f"is corrupt: its snapshot cannot be decoded ({exc})") from None
    return snapshot  # type: ignore[no-any-return]


def check_writable(path: str) -> None:
    """Raise :class:`DataFileError` now if snapshots could not be saved to ``path`` later."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DataFileError(
            f"the directory of the data file {path} does not exist; create it "
            f"(mkdir -p {directory}) or choose another --data path."
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataFileError(
            f"the directory of the data file {path} is not writable, so no snapshot could be "
            "saved; choose another --data path or fix its permissions."
        )


def load_state(path: str) -> State | None:
    """The :class:`State` saved in ``path``, None when the file does not exist.

    Raises :class:`DataFileError` as :func:`read_snapshot` does, and when the
    snapshot does not rebuild into a state. O(records x log n).
    """
    snapshot = read_snapshot(path)
    if snapshot is None:
        return None
    try:
        return State.from_snapshot(snapshot)
    except Exception as exc:
        raise _unusable(path, f"is corrupt: its snapshot does not rebuild ({exc!r})") from None


class Snapshotter:
    """Saves a manager's state to ``path``: periodically, and on a clean stop.

    A save starts when ``changes`` writes piled up, or ``interval`` seconds
    after the first unsaved write, whichever comes first.  ``attach`` wires it
    to a manager's ``on_write`` / ``on_tick`` / ``on_stop`` hooks.
    """

    def __init__(
        self, path: str, *, interval: float = DEFAULT_INTERVAL, changes: int = DEFAULT_CHANGES
    ) -> None:
        if interval <= 0:
            raise StoreError(f"the snapshot interval must be positive, got {interval}.")
        if changes < 1:
            raise StoreError(f"the snapshot change count must be at least 1, got {changes}.")
        self.path = os.path.abspath(path)
        self.interval = float(interval)
        self.changes = int(changes)
        self.unsaved = 0
        self.first_unsaved: float | None = None
        self.saves = 0
        self.failures = 0
        self.last_saved: float | None = None
        self.last_size: int | None = None
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def attach(self, manager: Manager) -> None:
        manager.on_write.append(self.on_write)
        manager.on_tick.append(self.on_tick)
        manager.on_stop.append(self.on_stop)

    # -- hooks (the manager's thread) ----------------------------------------------
    def on_write(self, manager: Manager) -> None:
        with self._lock:
            self.unsaved += 1
            if self.first_unsaved is None:
                self.first_unsaved = time.monotonic()

    def on_tick(self, manager: Manager) -> None:
        if not self.unsaved or self.first_unsaved is None:
            return
        due = self.unsaved >= self.changes or time.monotonic() - self.first_unsaved >= self.interval
        if due and (self._thread is None or not self._thread.is_alive()):
            self._start(manager.state.snapshot(), background=True)

    def on_stop(self, manager: Manager) -> None:
        if self._thread is not None:
            self._thread.join()
        if self.unsaved or not os.path.exists(self.path):
            self._start(manager.state.snapshot(), background=False)

    # -- saving ---------------------------------------------------------------
    def _start(self, snapshot: dict[str, Any], *, background: bool) -> None:
        with self._lock:
            covered = self.unsaved
            self.unsaved = 0
            self.first_unsaved = None
        if background:
            self._thread = threading.Thread(
                target=self._save, args=(snapshot, covered), name="papertiger-snapshot", daemon=True
            )
            self._thread.start()
        else:
            self._save(snapshot, covered)

    def _save(self, snapshot: dict[str, Any], covered: int) -> None:
        started = time.monotonic()
        try:
            size = write_snapshot(self.path, snapshot)
        except Exception as exc:
            with self._lock:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                # the changes are still unsaved: count them again so the next tick retries
                self.unsaved += covered
                if self.first_unsaved is None:
                    self.first_unsaved = time.monotonic()
            log.error("could not save the data file %s: %s", self.path, exc)
            return
        with self._lock:
            self.saves += 1
            self.last_saved = time.time()
            self.last_size = size
            self.last_error = None
        log.info(
            "saved %s (%d bytes, %d change(s)) in %.3f s",
            self.path,
            size,
            covered,
            time.monotonic() - started,
        )

    def stats(self) -> dict[str, Any]:
        """Figures for ``papertiger daemon status``."""
        with self._lock:
            return {
                "path": self.path,
                "interval": self.interval,
                "changes": self.changes,
                "unsaved_changes": self.unsaved,
                "saves": self.saves,
                "failures": self.failures,
                "last_saved": self.last_saved,
                "last_size": self.last_size,
                "last_error": self.last_error,
            }
