"""POSIX shared-memory segments with an explicit owner.

Theory of operation
-------------------
Only the manager creates and unlinks segments; everyone else attaches
read-only.  This module uses the same primitive as
``multiprocess.shared_memory`` (``_posixshmem.shm_open`` + ``mmap``) and the
same resource tracker (``multiprocess.resource_tracker``), but keeps the
two roles apart, which that class does not do on Python < 3.13:

* :meth:`Segment.create` (manager): ``O_CREAT | O_EXCL``, mode 0600, checks
  free space, then reserves the pages with ``posix_fallocate`` so that a full
  ``/dev/shm`` is an :class:`~papertiger.errors.StoreError` now rather than a
  SIGBUS later.  It registers the name with the manager's resource tracker,
  so a SIGKILLed manager's segments are unlinked when its tracker notices.
  ``PAPERTIGER_SHM_MAX_BYTES`` (:data:`ENV_SHM_MAX_BYTES`) caps the bytes one
  manager may hold reserved, checked the same way: a machine shared with
  others (or a test) can bound the store, or simulate a nearly full
  ``/dev/shm``, without filling the real one.
* :meth:`Segment.attach` (readers): ``O_RDONLY`` and ``PROT_READ``, never
  registered with any tracker, so a reader that exits (or is killed) can
  never unlink what it attached (CPython gh-82300).

Every segment starts with a 64-byte header (:data:`HEADER`): magic, layout
version, kind, payload capacity, payload length, generation and first
sequence number.  The mapped size is page-rounded, so readers trust the
header, never the size of the mapping.

Names are short (macOS allows 31 bytes) and carry the manager's pid and a
run id: ``ptg_<pid>_<run>_<kind><n>``.  :func:`sweep_dead` removes the
segments of managers that no longer exist.
"""

from __future__ import annotations

import _posixshmem  # the primitive multiprocess.shared_memory uses
import errno
import logging
import mmap
import os
import struct
from collections.abc import Iterator

from .. import env
from ..errors import StoreError

__all__ = [
    "ENV_SHM_MAX_BYTES",
    "HEADER",
    "HEADER_SIZE",
    "KIND_CHECKPOINT",
    "KIND_CONTROL",
    "KIND_LOG",
    "NAME_PREFIX",
    "Segment",
    "list_segments",
    "shm_free_bytes",
    "sweep_dead",
]

log = logging.getLogger("papertiger.shm")

MAGIC = b"PTGSEG\x00\x01"
LAYOUT_VERSION = 1
#: magic, layout version, kind, capacity, length, generation, first seq, reserved
HEADER = struct.Struct("<8sIIQQQQ16x")
HEADER_SIZE = HEADER.size  # 64
KIND_CONTROL, KIND_LOG, KIND_CHECKPOINT = 1, 2, 3
NAME_PREFIX = "ptg_"
SHM_DIR = "/dev/shm"
_MIN_FREE_MARGIN = 4 * 1024 * 1024
#: Caps the bytes of shared memory one manager may hold reserved (unset: no cap).
ENV_SHM_MAX_BYTES = env.SHM_MAX_BYTES
_reserved = 0  # bytes of the segments this process created and has not unlinked yet


def _check_shm_cap(size: int, name: str) -> None:
    """Raise :class:`StoreError` when reserving ``size`` more bytes would pass the cap."""
    cap = env.shm_max_bytes()
    if cap is None:
        return
    if _reserved + size > cap:
        raise StoreError(
            f"/dev/shm is full for this store: it holds {_reserved} bytes and needs {size} "
            f"more for segment {name}, but {ENV_SHM_MAX_BYTES} allows {cap}. Raise "
            f"{ENV_SHM_MAX_BYTES}, or clear data the store no longer needs."
        )


def shm_free_bytes() -> int | None:
    """Bytes free in ``/dev/shm``, or None where there is no such directory."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _tracker_register(name: str) -> None:
    from multiprocess import resource_tracker

    resource_tracker.register(name, "shared_memory")


def _tracker_unregister(name: str) -> None:
    from multiprocess import resource_tracker

    resource_tracker.unregister(name, "shared_memory")


class Segment:
    """One mapped shared-memory segment; ``buf`` is a memoryview of the whole mapping."""

    __slots__ = ("_mmap", "buf", "capacity", "fd", "name", "owned", "tracked")

    def __init__(self, name: str, mapping: mmap.mmap, owned: bool, tracked: bool) -> None:
        self.name = name
        self._mmap = mapping
        self.buf = memoryview(mapping)
        self.owned = owned
        self.tracked = tracked
        self.capacity = 0
        #: the segment's descriptor, kept open by ``attach(keep_fd=True)`` (else None)
        self.fd: int | None = None

    # -- creation (manager only) -------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        kind: int,
        capacity: int,
        *,
        generation: int = 0,
        first_seq: int = 0,
        track: bool = True,
    ) -> Segment:
        """Create ``name`` with room for ``capacity`` payload bytes, mode 0600.

        Raises :class:`StoreError` when ``/dev/shm`` lacks the room. O(capacity)
        (the pages are reserved up front).
        """
        global _reserved
        size = HEADER_SIZE + capacity
        _check_shm_cap(size, name)
        free = shm_free_bytes()
        if free is not None and free < size + _MIN_FREE_MARGIN:
            raise StoreError(
                f"/dev/shm has {free} bytes free; the store needs {size} more for segment "
                f"{name}. Free space in /dev/shm (run 'papertiger gc' to remove stale "
                "segments) or mount it larger."
            )
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        try:
            try:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(fd, 0, size)
                else:  # pragma: no cover - macOS
                    os.ftruncate(fd, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
                    raise StoreError(
                        f"/dev/shm is full: could not reserve {size} bytes for segment {name} "
                        f"({exc.strerror}). Free space in /dev/shm or mount it larger."
                    ) from None
                raise
            mapping = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            _posixshmem.shm_unlink("/" + name)
            raise
        os.close(fd)
        _reserved += size
        if track:
            _tracker_register("/" + name)
        seg = cls(name, mapping, owned=True, tracked=track)
        seg.capacity = capacity
        HEADER.pack_into(
            seg.buf, 0, MAGIC, LAYOUT_VERSION, kind, capacity, 0, generation, first_seq
        )
        return seg

    @classmethod
    def adopt(cls, name: str, capacity: int, *, tracked: bool) -> Segment:
        """Take ownership of ``name``, created (and filled) by a forked child of this process.

        The result is unmapped: only :meth:`unlink` and the figures are used.
        """
        global _reserved
        seg = cls.__new__(cls)
        seg.name, seg.owned, seg.tracked = name, True, tracked
        seg._mmap = None  # type: ignore[assignment]
        seg.fd = None
        seg.buf = memoryview(b"")
        seg.capacity = capacity
        _reserved += HEADER_SIZE + capacity
        return seg

    # -- attaching (everyone else) ---------------------------------------------
    @classmethod
    def attach(
        cls, name: str, kind: int, *, writable: bool = False, keep_fd: bool = False
    ) -> Segment:
        """Map an existing segment read-only (or read-write), untracked; check its header.

        With ``keep_fd``, the descriptor stays open as :attr:`fd` (for ``pread``)
        until :meth:`close`.  Raises FileNotFoundError when the segment is gone
        and :class:`StoreError` when it is not one of ours.
        """
        flags = os.O_RDWR if writable else os.O_RDONLY
        fd = _posixshmem.shm_open("/" + name, flags, mode=0o600)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise StoreError(f"segment {name} is {size} bytes: too small to be ours")
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mapping = mmap.mmap(fd, size, prot=prot)
        except BaseException:
            os.close(fd)
            raise
        if not keep_fd:
            os.close(fd)
        seg = cls(name, mapping, owned=False, tracked=False)
        seg.fd = fd if keep_fd else None
        magic, version, seg_kind, capacity, _, _, _ = HEADER.unpack_from(seg.buf, 0)
        if magic != MAGIC or version != LAYOUT_VERSION or seg_kind != kind:
            seg.close()
            raise StoreError(
                f"segment {name} is not a papertiger segment of kind {kind} "
                f"(magic {magic!r}, version {version}, kind {seg_kind}); "
                "is another papertiger version running?"
            )
        if HEADER_SIZE + capacity > size:
            seg.close()
            raise StoreError(
                f"segment {name} is truncated or damaged: its header claims {capacity} bytes "
                f"but the segment holds {size - HEADER_SIZE}."
            )
        seg.capacity = capacity
        return seg

    @property
    def mapping(self) -> mmap.mmap | None:
        """The mapping itself (slicing it copies bytes in one step), or None once closed."""
        return self._mmap

    # -- header fields -------------------------------------------------------
    @property
    def length(self) -> int:
        return int(HEADER.unpack_from(self.buf, 0)[4])

    @property
    def generation(self) -> int:
        return int(HEADER.unpack_from(self.buf, 0)[5])

    @property
    def first_seq(self) -> int:
        return int(HEADER.unpack_from(self.buf, 0)[6])

    def set_length(self, length: int) -> None:
        struct.pack_into("<Q", self.buf, 24, length)

    # -- release --------------------------------------------------------------
    def close(self) -> None:
        """Unmap (and close :attr:`fd`). Safe to call twice."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self._mmap is None:
            return
        try:
            self.buf.release()
            self._mmap.close()
        except BufferError:  # an exported view is still alive; the GC unmaps later
            pass
        self._mmap = None  # type: ignore[assignment]

    def unlink(self) -> None:
        """Remove the name (owner only); mappings elsewhere stay valid until closed."""
        if not self.owned:
            raise StoreError(f"segment {self.name} is not owned by this process")
        global _reserved
        unlink_segment(self.name, tracked=self.tracked)
        self.owned = False
        _reserved -= HEADER_SIZE + self.capacity


def unlink_segment(name: str, *, tracked: bool | None) -> bool:
    """Unlink ``name``; False when it was already gone.

    ``tracked``: unregister it from the resource tracker too; None: only when
    it existed (a segment that a forked child may or may not have created).
    """
    try:
        _posixshmem.shm_unlink("/" + name)
        gone = True
    except FileNotFoundError:
        gone = False
    if tracked or (tracked is None and gone):
        try:
            _tracker_unregister("/" + name)
        except Exception:  # pragma: no cover - tracker already gone at interpreter exit
            pass
    return gone


def list_segments(prefix: str = NAME_PREFIX) -> Iterator[str]:
    """Names of our segments in ``/dev/shm`` (Linux); nothing where it cannot be listed."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            yield name


def owner_pid(name: str, prefix: str = NAME_PREFIX) -> int | None:
    """The manager pid encoded in a segment name, or None when it is not ours."""
    parts = name.split("_")
    if len(parts) < 3 or parts[0] + "_" != prefix or not parts[1].isdigit():
        return None
    return int(parts[1])


def pid_alive(pid: int) -> bool:
    """True when a process ``pid`` exists (zombies count as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def sweep_dead(*, exclude_pid: int | None = None, prefix: str = NAME_PREFIX) -> list[str]:
    """Unlink segments whose owning manager is dead; return the names removed.

    ``prefix``: the names to consider (tests use their own, which no manager
    sweeps). O(entries in /dev/shm).
    """
    removed = []
    for name in list_segments(prefix):
        pid = owner_pid(name, prefix)
        if pid is None or pid == exclude_pid or pid_alive(pid):
            continue
        if unlink_segment(name, tracked=False):
            removed.append(name)
    if removed:
        log.warning(
            "removed %d stale segment(s) of dead managers: %s", len(removed), ", ".join(removed)
        )
    return removed
