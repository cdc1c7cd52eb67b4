"""The replicated log in shared memory: control block, log segments, checkpoints.

Theory of operation
-------------------
The manager is the only writer.  It publishes three kinds of segment
(see :mod:`.shm` for the common header):

``<prefix>_c`` **control block**, one per run::

    64  head         u64  seq of the last published effect (readers poll this)
    72  ckpt_gen     u64  seqlock over the checkpoint pointer (odd while changing)
    80  ckpt_number  u64  generation of the newest checkpoint segment
    88  ckpt_seq     u64  seq that checkpoint covers
    96  pid          u64  the manager's pid
    104 epoch        u64  when the manager started (ns)
    112 status       u64  1 running, 2 stopped

``<prefix>_l<n>`` **log segments**: entries ``[seq u64][len u32][0 u32]
[payload, padded to 8][seq u64]`` from offset 64.  The payload is one
msgpack-encoded effect.  When an entry does not fit, the manager creates
segment ``n+1`` (large enough for the entry), writes the entry there, then
writes the marker ``seq = END`` where the entry would have gone in segment
``n``.  A full segment is never written again.

``<prefix>_k<n>`` **checkpoints**: ``[log segment u64][log offset u64]``
then the msgpack snapshot of the whole state after ``ckpt_seq``; the two
numbers say where the log continues.

**Publication**: an entry (and any end marker) is written in full, *then*
``head`` is advanced, with one 8-byte store.  The manager may append a group of
entries first and advance ``head`` once (group commit): readers see all of the
group or none of it.  A reader reads ``head`` and
applies entries up to it, so it never reads a half-written entry; the
leading and trailing seq let it verify what it read anyway.

**Checkpoints and retirement**: once the log written since the last
checkpoint exceeds ``max(checkpoint_bytes, size of the last checkpoint)``
(so checkpointing costs amortised O(1) per logged byte), the manager writes
a new checkpoint -- after it applied the entry to its state, so that the
checkpoint covers every entry up to its seq -- and publishes it under the
seqlock.  It then unlinks the
log segments and the checkpoint that only the checkpoint *before* the
previous one needed.  Unlinking never disturbs a reader that has a segment
mapped; a reader that needs a segment that is gone reloads from the newest
checkpoint instead.

**Background checkpoints**: once a checkpoint is large (at least
:data:`BACKGROUND_CHECKPOINT_BYTES`; on Linux), the manager forks a child
that packs the copy-on-write state as of the fork and writes the segment,
while the manager goes on serving.  The checkpoint is published when the
child is done, with the seq and log position of the fork; until then
readers use the previous one.  One child at a time; a failed child is
logged and retried later; stopping the manager kills and cleans up a child
still at work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import struct
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import msgpack

from ..errors import StoreError, StoreUnavailable
from .shm import (
    HEADER_SIZE,
    KIND_CHECKPOINT,
    KIND_CONTROL,
    KIND_LOG,
    NAME_PREFIX,
    Segment,
    pid_alive,
    unlink_segment,
)

__all__ = [
    "ControlBlock",
    "LogPosition",
    "LogReader",
    "LogWriter",
    "segment_names",
]

log = logging.getLogger("papertiger.log")

END = 2**64 - 1
ENTRY_HEAD = struct.Struct("<QII")  # seq, length, reserved
ENTRY_HEAD_SIZE = ENTRY_HEAD.size  # 16
U64 = struct.Struct("<Q")
CONTROL_FIELDS = struct.Struct("<QQQQQQQ")  # head .. status
CONTROL_CAPACITY = 4096 - HEADER_SIZE
OFF_HEAD, OFF_GEN, OFF_CKPT_NUMBER, OFF_CKPT_SEQ, OFF_PID, OFF_EPOCH, OFF_STATUS = (
    64,
    72,
    80,
    88,
    96,
    104,
    112,
)
STATUS_RUNNING, STATUS_STOPPED = 1, 2
CHECKPOINT_POS = struct.Struct("<QQ")

DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
DEFAULT_CHECKPOINT_BYTES = 32 * 1024 * 1024
#: Checkpoints at least this large are written by a forked child, off the request loop.
BACKGROUND_CHECKPOINT_BYTES = 4 * 1024 * 1024


def new_prefix(pid: int | None = None) -> str:
    """``ptg_<pid>_<run>``: unique per manager run, short enough for macOS."""
    return f"{NAME_PREFIX}{os.getpid() if pid is None else pid}_{secrets.token_hex(3)}"


def segment_names(prefix: str) -> tuple[str, Callable[[int], str], Callable[[int], str]]:
    """The control block name and the name makers for log and checkpoint segments."""
    return prefix + "_c", (lambda n: f"{prefix}_l{n}"), (lambda n: f"{prefix}_k{n}")


def _padded(n: int) -> int:
    return (n + 7) & ~7


class ControlBlock:
    """Typed access to the control block's fields."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.buf = segment.buf

    @property
    def head(self) -> int:
        return int(U64.unpack_from(self.buf, OFF_HEAD)[0])

    @property
    def pid(self) -> int:
        return int(U64.unpack_from(self.buf, OFF_PID)[0])

    @property
    def epoch(self) -> int:
        return int(U64.unpack_from(self.buf, OFF_EPOCH)[0])

    @property
    def status(self) -> int:
        return int(U64.unpack_from(self.buf, OFF_STATUS)[0])

    def checkpoint_pointer(self, tries: int = 1000) -> tuple[int, int]:
        """``(ckpt_number, ckpt_seq)`` read consistently under the seqlock."""
        buf = self.buf
        for _ in range(tries):
            gen = U64.unpack_from(buf, OFF_GEN)[0]
            if gen & 1:
                time.sleep(0)
                continue
            number = U64.unpack_from(buf, OFF_CKPT_NUMBER)[0]
            seq = U64.unpack_from(buf, OFF_CKPT_SEQ)[0]
            if U64.unpack_from(buf, OFF_GEN)[0] == gen:
                return int(number), int(seq)
        raise StoreUnavailable("the checkpoint pointer kept changing; is the manager healthy?")


class LogPosition:
    """Where a reader is: segment number, byte offset, last applied seq."""

    __slots__ = ("number", "offset", "seq")

    def __init__(self, number: int, offset: int, seq: int) -> None:
        self.number, self.offset, self.seq = number, offset, seq


class LogWriter:
    """The manager's side: append effects, write checkpoints, retire segments.

    ``append`` is O(len(payload)); a checkpoint is O(state size) but happens
    after at least that many bytes were logged.
    """

    def __init__(
        self,
        prefix: str,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
        snapshot: Callable[[], dict[str, Any]],
        background: bool = sys.platform == "linux",
    ) -> None:
        self.prefix = prefix
        self.segment_bytes = max(4096, segment_bytes)
        self.checkpoint_bytes = max(4096, checkpoint_bytes)
        self._snapshot = snapshot
        self.control_name, self._log_name, self._ckpt_name = segment_names(prefix)
        self.control = Segment.create(self.control_name, KIND_CONTROL, CONTROL_CAPACITY)
        self.cbuf = self.control.buf
        self.seq = 0
        self.segments: dict[int, Segment] = {}
        self.checkpoints: dict[int, tuple[Segment, int]] = {}  # number -> (segment, log segment)
        self.number = 0
        self.current = self._new_log_segment(0, self.segment_bytes)
        self.offset = HEADER_SIZE
        self.bytes_since_checkpoint = 0
        self.last_checkpoint_size = 0
        self.checkpoint_count = 0
        #: write large checkpoints from a forked child (POSIX fork; Linux by default)
        self.background = background
        self._pending: tuple[int, int, int, str, int, int] | None = None
        self.background_checkpoints = 0
        CONTROL_FIELDS.pack_into(
            self.cbuf, OFF_HEAD, 0, 0, 0, 0, os.getpid(), time.time_ns(), STATUS_RUNNING
        )
        self.write_checkpoint()

    def _new_log_segment(self, number: int, capacity: int) -> Segment:
        seg = Segment.create(
            self._log_name(number), KIND_LOG, capacity, generation=number, first_seq=self.seq + 1
        )
        self.segments[number] = seg
        return seg

    # -- appending ---------------------------------------------------------------
    def append(self, payload: bytes, *, publish: bool = True) -> int:
        """Write one entry and, unless ``publish`` is false, publish it; returns its seq.

        With ``publish=False`` the entry is written but readers do not see it
        until :meth:`publish`: a group of entries appended that way becomes
        visible at once.  O(len(payload)).
        """
        length = len(payload)
        need = ENTRY_HEAD_SIZE + _padded(length) + 8
        seq = self.seq + 1
        seg, off = self.current, self.offset
        # Keep 16 bytes free at the end of every segment for the end marker.
        if off + need + ENTRY_HEAD_SIZE > HEADER_SIZE + seg.capacity:
            number = self.number + 1
            new = self._new_log_segment(number, max(self.segment_bytes, need + ENTRY_HEAD_SIZE))
            self._write_entry(new.buf, HEADER_SIZE, seq, payload, length)
            ENTRY_HEAD.pack_into(seg.buf, off, END, 0, 0)
            seg.close()  # full: never written again; readers map it themselves
            self.current, self.number = new, number
            self.offset = HEADER_SIZE + need
        else:
            self._write_entry(seg.buf, off, seq, payload, length)
            self.offset = off + need
        self.seq = seq
        if publish:
            U64.pack_into(self.cbuf, OFF_HEAD, seq)  # publication
        self.bytes_since_checkpoint += need
        return seq

    def publish(self) -> int:
        """Publish every entry appended so far (one 8-byte store of ``head``); returns it. O(1)."""
        seq = self.seq
        U64.pack_into(self.cbuf, OFF_HEAD, seq)
        return seq

    def checkpoint_if_due(self) -> bool:
        """Write a checkpoint when enough was logged since the last one.

        Call it after the appended effects are applied to the state, never from
        :meth:`append`: a checkpoint claims to cover every entry up to ``seq``.
        A checkpoint that cannot be written (``/dev/shm`` full) is logged and
        tried again once as much log again has been written (each try costs a
        snapshot of the whole state); the entries already published stand.
        """
        self.poll_checkpoint()
        if self._pending is not None:
            return False  # one checkpoint at a time
        due = max(self.checkpoint_bytes, self.last_checkpoint_size)
        if self.bytes_since_checkpoint < due:
            return False
        try:
            if self.background and self.last_checkpoint_size >= BACKGROUND_CHECKPOINT_BYTES:
                self._start_background_checkpoint()
                return True
            self.write_checkpoint()
        except StoreError as exc:
            self.bytes_since_checkpoint = 0
            log.warning("could not write a checkpoint (will retry after %d bytes): %s", due, exc)
            return False
        return True

    @staticmethod
    def _write_entry(buf: memoryview, off: int, seq: int, payload: bytes, length: int) -> None:
        start = off + ENTRY_HEAD_SIZE
        buf[start : start + length] = payload
        U64.pack_into(buf, start + _padded(length), seq)
        ENTRY_HEAD.pack_into(buf, off, seq, length, 0)

    # -- checkpoints -------------------------------------------------------------
    def write_checkpoint(self) -> None:
        """Publish a checkpoint of the state after ``self.seq``, then retire old segments."""
        self.poll_checkpoint(wait=True)  # checkpoints are published in order
        data = msgpack.packb(self._snapshot(), use_bin_type=True)
        number = self.checkpoint_count
        seg = Segment.create(
            self._ckpt_name(number),
            KIND_CHECKPOINT,
            CHECKPOINT_POS.size + len(data),
            generation=number,
            first_seq=self.seq,
        )
        CHECKPOINT_POS.pack_into(seg.buf, HEADER_SIZE, self.number, self.offset)
        start = HEADER_SIZE + CHECKPOINT_POS.size
        seg.buf[start : start + len(data)] = data
        seg.set_length(len(data))
        seg.close()  # written once; only its name is needed from here on
        self.checkpoint_count += 1
        self.bytes_since_checkpoint = 0
        self._publish_checkpoint(number, seg, self.number, self.seq, len(data))

    def _publish_checkpoint(
        self, number: int, seg: Segment, log_number: int, seq: int, size: int
    ) -> None:
        """Point readers at checkpoint ``number`` (under the seqlock), then retire."""
        self.checkpoints[number] = (seg, log_number)
        gen = U64.unpack_from(self.cbuf, OFF_GEN)[0]
        U64.pack_into(self.cbuf, OFF_GEN, gen + 1)
        U64.pack_into(self.cbuf, OFF_CKPT_NUMBER, number)
        U64.pack_into(self.cbuf, OFF_CKPT_SEQ, seq)
        U64.pack_into(self.cbuf, OFF_GEN, gen + 2)
        self.last_checkpoint_size = size
        self._retire(number)
        log.debug("checkpoint %d at seq %d: %d bytes", number, seq, size)

    # -- checkpoints in the background ---------------------------------------------
    def _start_background_checkpoint(self) -> None:
        """Fork a child that writes the checkpoint from a copy-on-write view of the state.

        The manager goes on serving; :meth:`poll_checkpoint` publishes the
        checkpoint once the child is done.  The child covers the state as of
        the fork (``self.seq``), and the log from the fork's position on.
        """
        number = self.checkpoint_count
        name = self._ckpt_name(number)
        seq, log_number, offset = self.seq, self.number, self.offset
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: see below
            pid = os.fork()
        if pid == 0:  # the child: only this thread exists; touch nothing but the snapshot
            code = 1
            try:
                os.close(read_fd)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                data = msgpack.packb(self._snapshot(), use_bin_type=True)
                seg = Segment.create(
                    name,
                    KIND_CHECKPOINT,
                    CHECKPOINT_POS.size + len(data),
                    generation=number,
                    first_seq=seq,
                )
                CHECKPOINT_POS.pack_into(seg.buf, HEADER_SIZE, log_number, offset)
                start = HEADER_SIZE + CHECKPOINT_POS.size
                seg.buf[start : start + len(data)] = data
                seg.set_length(len(data))
                seg.close()
                os.write(write_fd, U64.pack(len(data)))
                code = 0
            except BaseException as exc:  # report, never raise out of a forked child
                with contextlib.suppress(BaseException):
                    os.write(write_fd, str(exc).encode()[:4000])
            finally:
                os._exit(code)
        os.close(write_fd)
        self.checkpoint_count += 1
        self.bytes_since_checkpoint = 0
        self._pending = (pid, read_fd, number, name, log_number, seq)

    def poll_checkpoint(self, wait: bool = False) -> None:
        """Publish a background checkpoint whose child has finished. O(1) when none is."""
        if self._pending is None:
            return
        pid, read_fd, number, name, log_number, seq = self._pending
        done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
        if done == 0:
            return
        self._pending = None
        with os.fdopen(read_fd, "rb") as report:
            message = report.read()
        if os.waitstatus_to_exitcode(status) == 0 and len(message) == U64.size:
            size = U64.unpack(message)[0]
            seg = Segment.adopt(name, CHECKPOINT_POS.size + size, tracked=True)
            self.background_checkpoints += 1
            self._publish_checkpoint(number, seg, log_number, seq, size)
            return
        unlink_segment(name, tracked=True)
        log.warning(
            "could not write checkpoint %d in the background (will retry): %s",
            number,
            message.decode(errors="replace") or f"exit status {status}",
        )

    def _abandon_background_checkpoint(self) -> None:
        if self._pending is None:
            return
        pid = self._pending[0]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        os.close(self._pending[1])
        unlink_segment(self._pending[3], tracked=True)
        self._pending = None

    def _retire(self, newest: int) -> None:
        """Keep the newest two checkpoints and the log from the older one on."""
        older = [n for n in self.checkpoints if n < newest]
        if not older:
            return
        previous = max(older)
        keep_from = self.checkpoints[previous][1]
        for number in [n for n in older if n < previous]:
            seg, _ = self.checkpoints.pop(number)
            seg.unlink()
            seg.close()
        for number in [n for n in self.segments if n < keep_from]:
            seg = self.segments.pop(number)
            seg.unlink()
            seg.close()

    # -- figures and shutdown ----------------------------------------------------
    def stats(self) -> dict[str, int]:
        log_bytes = sum(HEADER_SIZE + s.capacity for s in self.segments.values())
        ckpt_bytes = sum(HEADER_SIZE + s.capacity for s, _ in self.checkpoints.values())
        return {
            "seq": self.seq,
            "log_segments": len(self.segments),
            "log_bytes": log_bytes,
            "checkpoints": len(self.checkpoints),
            "checkpoint_bytes": ckpt_bytes,
            "checkpoint_count": self.checkpoint_count,
            "background_checkpoints": self.background_checkpoints,
            "segment_switches": self.number,  # log segments filled so far
            "shm_bytes": log_bytes + ckpt_bytes + HEADER_SIZE + self.control.capacity,
        }

    def segment_names(self) -> list[str]:
        return (
            [self.control_name]
            + [s.name for s in self.segments.values()]
            + [s.name for s, _ in self.checkpoints.values()]
        )

    def close(self) -> None:
        """Mark the run stopped and unlink every segment."""
        self._abandon_background_checkpoint()
        U64.pack_into(self.cbuf, OFF_STATUS, STATUS_STOPPED)
        for seg in list(self.segments.values()) + [s for s, _ in self.checkpoints.values()]:
            seg.unlink()
            seg.close()
        self.segments.clear()
        self.checkpoints.clear()
        self.control.unlink()
        self.cbuf = None  # type: ignore[assignment]
        self.control.close()


class LogReader:
    """A reader's side: load the newest checkpoint, then follow the log.

    :meth:`follow` applies every entry up to ``head`` through ``apply`` and
    returns the new seq; it is O(entries behind) and costs one 8-byte read
    when nothing is new.
    """

    def __init__(self, control_name: str) -> None:
        if not control_name.endswith("_c"):
            raise StoreError(f"{control_name!r} is not a control block name")
        self.prefix = control_name[:-2]
        _, self._log_name, self._ckpt_name = segment_names(self.prefix)
        try:
            self.control = ControlBlock(Segment.attach(control_name, KIND_CONTROL))
        except FileNotFoundError:
            raise StoreUnavailable(
                f"the store's control block {control_name} is gone: the manager has stopped."
            ) from None
        self.segment: Segment | None = None
        self.offset = HEADER_SIZE
        self.number = -1
        self.reloads = 0

    def load_checkpoint(self) -> tuple[int, dict[str, Any]]:
        """Attach the newest checkpoint; returns ``(seq, snapshot)`` and positions the log."""
        for _ in range(200):
            number, seq = self.control.checkpoint_pointer()
            try:
                ckpt = Segment.attach(self._ckpt_name(number), KIND_CHECKPOINT)
            except FileNotFoundError:
                self._check_alive()
                continue
            try:
                if ckpt.generation != number:
                    continue
                log_number, offset = CHECKPOINT_POS.unpack_from(ckpt.buf, HEADER_SIZE)
                start = HEADER_SIZE + CHECKPOINT_POS.size
                snapshot = msgpack.unpackb(ckpt.buf[start : start + ckpt.length])
            finally:
                ckpt.close()
            try:
                self._switch(log_number)
            except FileNotFoundError:
                self._check_alive()
                continue
            self.offset = offset
            self.reloads += 1
            return seq, snapshot
        raise StoreUnavailable(
            "could not load a checkpoint: the manager retired it faster than it could be read."
        )

    def _check_alive(self) -> None:
        if self.control.status == STATUS_STOPPED:
            raise StoreUnavailable("the store has stopped: its segments are gone.")
        if not pid_alive(self.control.pid):
            raise StoreUnavailable(
                f"the papertiger manager (pid {self.control.pid}) died and its segments are "
                "gone; start a new one."
            )
        time.sleep(0.001)

    def _switch(self, number: int) -> None:
        seg = Segment.attach(self._log_name(number), KIND_LOG)
        if self.segment is not None:
            self.segment.close()
        self.segment, self.number, self.offset = seg, number, HEADER_SIZE

    def follow(self, seq: int, head: int, apply: Callable[[Any], None]) -> int:
        """Apply entries ``seq+1 .. head``; returns the last seq applied.

        Returns early with a smaller seq only by raising :class:`Behind`,
        when the next segment is gone and the caller must reload.
        """
        unpackb = msgpack.unpackb
        entry_head = ENTRY_HEAD.unpack_from
        u64 = U64.unpack_from
        seg = self.segment
        assert seg is not None
        buf = seg.buf
        off = self.offset
        try:
            while seq < head:
                entry_seq, length, _ = entry_head(buf, off)
                if entry_seq == END:
                    self.offset = off
                    try:
                        self._switch(self.number + 1)
                    except FileNotFoundError:
                        raise Behind() from None
                    seg = self.segment
                    buf = seg.buf  # type: ignore[union-attr]
                    off = HEADER_SIZE
                    continue
                start = off + ENTRY_HEAD_SIZE
                end = start + length
                padded_end = start + ((length + 7) & ~7)
                if entry_seq != seq + 1 or u64(buf, padded_end)[0] != entry_seq:
                    raise Behind()
                apply(unpackb(buf[start:end]))
                seq = entry_seq
                off = padded_end + 8
        finally:
            self.offset = off
        return seq

    def close(self) -> None:
        if self.segment is not None:
            self.segment.close()
            self.segment = None
        self.control.segment.close()


class Behind(Exception):
    """The reader's next log segment is gone (or inconsistent): reload a checkpoint."""
