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

``<prefix>_k<n>`` **checkpoints**: ``[log segment u64][log offset u64]``,
where the log continues after ``ckpt_seq``, then the *image* of the whole
state after ``ckpt_seq`` (:mod:`.layout`): immutable and indexed, so that
readers use it in place and decode only the records they read.  A reader's
state is that image plus a private overlay of the effects logged since
(:class:`~papertiger.core.layered.LayeredState`); so is the manager's.

**Publication**: an entry (and any end marker) is written in full, *then*
``head`` is advanced, with one 8-byte store.  The manager may append a group of
entries first and advance ``head`` once (group commit): readers see all of the
group or none of it.  A reader reads ``head`` and
applies entries up to it, so it never reads a half-written entry; the
leading and trailing seq let it verify what it read anyway.

**Checkpoints and retirement**: once the log written since the last
checkpoint exceeds ``max(checkpoint_bytes, bytes of records in the last
checkpoint)`` (so checkpointing costs amortised O(1) per logged byte: an
image is its records plus indexes in proportion), the manager writes
a new checkpoint -- after it applied the entry to its state, so that the
checkpoint covers every entry up to its seq.  When the manager has been idle
for :data:`IDLE_CHECKPOINT_SECONDS` and at least ``max(IDLE_CHECKPOINT_BYTES,
size / IDLE_CHECKPOINT_FRACTION)`` was logged since, it writes one too, so
that readers (whose private overlay is the log since their checkpoint) and
new processes start from a current image once the writes stop.  A new image
is the previous one with the overlay merged in: unchanged partitions are
copied block by block (:mod:`.layout_writer`).  The manager checks the new
segment like a reader would, publishes it under the seqlock, moves its own
state onto it (replaying what it applied since, when the checkpoint was
written in the background), and then unlinks the previous checkpoint and the
log segments written before the new one's log position.  Unlinking never
disturbs a reader that has a segment mapped; a reader moves to the newest
checkpoint at its next read (attaching one is O(1)), and a reader that needs
a log segment that is gone does the same.

**Background checkpoints**: once a checkpoint is large (at least
:data:`BACKGROUND_CHECKPOINT_BYTES`; on Linux), the manager forks a child
that writes the image of the copy-on-write state as of the fork,
while the manager goes on serving; the child runs at a lower priority
(:data:`CHECKPOINT_NICENESS`), so it takes the CPU that the store's users
leave.  The checkpoint is published when the
child is done, with the seq and log position of the fork; until then
readers use the previous one.  One child at a time; a failed child is
logged and retried later; stopping the manager kills and cleans up a child
still at work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import struct
import sys
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from ..core.layered import LayeredState
from ..core.state import State
from ..errors import StoreError, StoreUnavailable
from .layout import Checkpoint
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

if TYPE_CHECKING:  # pragma: no cover - the writer's, imported when it writes
    from .layout_writer import ImagePlan

__all__ = [
    "ControlBlock",
    "LogPosition",
    "LogReader",
    "LogWriter",
    "attach_checkpoint",
    "segment_names",
]

log = logging.getLogger("papertiger.log")

END = 2**64 - 1
ENTRY_HEAD = struct.Struct("<QII")  # seq, length, reserved
ENTRY_HEAD_SIZE = ENTRY_HEAD.size  # 16
U64 = struct.Struct("<Q")
CONTROL_FIELDS = struct.Struct("<QQQQQQQ")  # head .. status
HEAD_GEN = struct.Struct("<QQ")  # head and ckpt_gen, adjacent: one read per catch-up
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
#: How much a checkpoint's forked writer yields the CPU to the manager and its clients.
CHECKPOINT_NICENESS = 10
#: After this long without a write, a checkpoint is written if enough was logged since:
IDLE_CHECKPOINT_SECONDS = 1.0
#: at least this many bytes (or checkpoint_bytes when smaller) ...
IDLE_CHECKPOINT_BYTES = 256 * 1024
#: ... and at least the last checkpoint's size divided by this.
IDLE_CHECKPOINT_FRACTION = 32


def new_prefix(pid: int | None = None) -> str:
    """``ptg_<pid>_<run>``: unique per manager run, short enough for macOS."""
    import secrets  # the manager's: readers do not need it

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
        state: LayeredState,
        background: bool = sys.platform == "linux",
    ) -> None:
        self.prefix = prefix
        self.segment_bytes = max(4096, segment_bytes)
        self.checkpoint_bytes = max(4096, checkpoint_bytes)
        #: the manager's state: the newest checkpoint in place, plus the log since
        self.state = state
        self._state_checkpoint: Checkpoint | None = None
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
        self._pending: tuple[int, int, int, str, int, int, int] | None = None
        self.background_checkpoints = 0
        self.idle_checkpoints = 0
        #: the seq seen by the last poll, and when it last moved (idle detection)
        self._polled_seq = 0
        self._moved_at = time.monotonic()
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
    def append(self, payload: bytes | memoryview, *, publish: bool = True) -> int:
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
        pass over the state); the entries already published stand.
        """
        due = max(self.checkpoint_bytes, self.last_checkpoint_size)
        if self._pending is None and self.bytes_since_checkpoint < due:
            return False  # the common case, in O(1): nothing to publish, nothing due
        self.poll_checkpoint()
        return self._checkpoint_if(due)

    def _checkpoint_if(self, due: int) -> bool:
        if self._pending is not None:
            return False  # one checkpoint at a time
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

    def _checkpoint_if_idle(self) -> None:
        """A checkpoint once writes stopped for a while (see the module doc). O(1) if not."""
        now = time.monotonic()
        if self.seq != self._polled_seq:
            self._polled_seq, self._moved_at = self.seq, now
            return
        if not self.bytes_since_checkpoint or now - self._moved_at < IDLE_CHECKPOINT_SECONDS:
            return
        if self._checkpoint_if(self._idle_due()):
            self.idle_checkpoints += 1

    def _idle_due(self) -> int:
        return max(
            min(self.checkpoint_bytes, IDLE_CHECKPOINT_BYTES),
            self.last_checkpoint_size // IDLE_CHECKPOINT_FRACTION,
        )

    @property
    def settled(self) -> bool:
        """True when no checkpoint is being written and none is due once writes stop."""
        return self._pending is None and self.bytes_since_checkpoint < self._idle_due()

    @staticmethod
    def _write_entry(
        buf: memoryview, off: int, seq: int, payload: bytes | memoryview, length: int
    ) -> None:
        start = off + ENTRY_HEAD_SIZE
        buf[start : start + length] = payload
        U64.pack_into(buf, start + _padded(length), seq)
        ENTRY_HEAD.pack_into(buf, off, seq, length, 0)

    # -- checkpoints -------------------------------------------------------------
    def _plan(self, source: State | None = None) -> ImagePlan:
        """The image of the state after ``seq`` (or of ``source``, a plain state)."""
        from .layout_writer import plan_image, state_parts

        if source is not None:
            return plan_image(state_parts(source), source.table_names(), source.next_ord, self.seq)
        state = self.state
        return plan_image(state.image_parts(), state.table_names(), state.next_ord, self.seq)

    def _write_image(
        self, name: str, number: int, plan: ImagePlan, log_number: int, offset: int, seq: int
    ) -> Segment:
        seg = Segment.create(
            name,
            KIND_CHECKPOINT,
            CHECKPOINT_POS.size + plan.size,
            generation=number,
            first_seq=seq,
        )
        try:
            CHECKPOINT_POS.pack_into(seg.buf, HEADER_SIZE, log_number, offset)
            start = HEADER_SIZE + CHECKPOINT_POS.size
            plan.write(seg.buf[start : start + plan.size])
            seg.set_length(plan.size)
        except BaseException:
            seg.unlink()
            seg.close()
            raise
        return seg

    def write_checkpoint(self, source: State | None = None) -> None:
        """Publish a checkpoint of the state after ``self.seq``, then retire old segments.

        With ``source`` (a plain state, such as a data file loaded before
        serving), the checkpoint is an image of ``source`` and the manager's
        state becomes that image.
        """
        self.poll_checkpoint(wait=True)  # checkpoints are published in order
        plan = self._plan(source)
        number = self.checkpoint_count
        seg = self._write_image(
            self._ckpt_name(number), number, plan, self.number, self.offset, self.seq
        )
        seg.close()  # written once; only its name is needed from here on
        self.checkpoint_count += 1
        self.bytes_since_checkpoint = 0
        self._publish_checkpoint(number, seg, self.number, self.offset, self.seq, plan.data_bytes)

    def _publish_checkpoint(
        self, number: int, seg: Segment, log_number: int, offset: int, seq: int, data: int
    ) -> None:
        """Check checkpoint ``number`` as a reader would, point readers at it (under the
        seqlock), move the manager's state onto it, then retire what is no longer needed.

        Raises :class:`StoreError` (and unlinks the segment) when it does not check out.
        """
        try:
            image, _, _ = attach_checkpoint(seg.name, number)
        except (StoreError, FileNotFoundError) as exc:
            seg.unlink()
            raise StoreError(f"checkpoint {seg.name} did not check out: {exc}") from None
        self.checkpoints[number] = (seg, log_number)
        gen = U64.unpack_from(self.cbuf, OFF_GEN)[0]
        U64.pack_into(self.cbuf, OFF_GEN, gen + 1)
        U64.pack_into(self.cbuf, OFF_CKPT_NUMBER, number)
        U64.pack_into(self.cbuf, OFF_CKPT_SEQ, seq)
        U64.pack_into(self.cbuf, OFF_GEN, gen + 2)
        self.last_checkpoint_size = data  # its records' bytes pace the next one
        self._rebase(image, seq)
        self._retire(number)
        log.debug("checkpoint %d at seq %d: %d bytes of records", number, seq, data)

    def _rebase(self, image: Checkpoint, seq: int) -> None:
        """The manager's state becomes ``image`` plus what was applied after ``seq``
        (the journal kept while a background checkpoint was written)."""
        journal, self.state.journal = self.state.journal, None
        missed = self.seq - seq
        if missed and (journal is None or len(journal) != missed):
            # never expected; the state the manager has is whole, so it keeps it
            log.warning(
                "not moving onto checkpoint %s: %s effects were applied since seq %d, the "
                "journal holds %s",
                image.name,
                missed,
                seq,
                None if journal is None else len(journal),
            )
            image.close()
            return
        old = self._state_checkpoint
        if old is not None:
            image.inherit(old)
        dropped = self.state.records_put
        self.state.rebase(image, journal if missed else None)
        self._state_checkpoint = image
        if old is not None:
            old.close()
        if dropped >= TRIM_AFTER_RECORDS:
            release_freed_memory()

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
        if pid == 0:  # the child: only this thread exists; touch nothing but the state
            code = 1
            try:
                os.close(read_fd)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                with contextlib.suppress(OSError):
                    os.nice(CHECKPOINT_NICENESS)  # background work: the store's users first
                plan = self._plan()
                seg = self._write_image(name, number, plan, log_number, offset, seq)
                seg.close()
                os.write(write_fd, CHECKPOINT_POS.pack(plan.size, plan.data_bytes))
                code = 0
            except BaseException as exc:  # report, never raise out of a forked child
                with contextlib.suppress(BaseException):
                    os.write(write_fd, str(exc).encode()[:4000])
            finally:
                os._exit(code)
        os.close(write_fd)
        self.checkpoint_count += 1
        self.bytes_since_checkpoint = 0
        self._pending = (pid, read_fd, number, name, log_number, offset, seq)
        self.state.journal = []  # what the new image will miss, replayed onto it

    def poll_checkpoint(self, wait: bool = False) -> None:
        """Publish a background checkpoint whose child has finished; when writes have
        stopped for a while, start an idle checkpoint. O(1) when there is nothing to do."""
        if self._pending is None:
            if not wait:
                self._checkpoint_if_idle()
            return
        pid, read_fd, number, name, log_number, offset, seq = self._pending
        done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
        if done == 0:
            return
        self._pending = None
        with os.fdopen(read_fd, "rb") as report:
            message = report.read()
        if os.waitstatus_to_exitcode(status) != 0 or len(message) != CHECKPOINT_POS.size:
            self.state.journal = None
        if os.waitstatus_to_exitcode(status) == 0 and len(message) == CHECKPOINT_POS.size:
            size, data = CHECKPOINT_POS.unpack(message)
            seg = Segment.adopt(name, CHECKPOINT_POS.size + size, tracked=True)
            try:
                self._publish_checkpoint(number, seg, log_number, offset, seq, data)
            except StoreError as exc:
                self.state.journal = None
                log.warning("checkpoint %d written in the background: %s", number, exc)
                return
            self.background_checkpoints += 1
            return
        unlink_segment(name, tracked=None)
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
        unlink_segment(self._pending[3], tracked=None)
        self._pending = None
        self.state.journal = None

    def _retire(self, newest: int) -> None:
        """Keep the newest checkpoint and the log from its position on.

        A reader still on an older checkpoint keeps its mapping (unlinking
        does not unmap); at its next read it moves to the newest one, which
        costs it O(1) to attach, so nothing older is worth keeping.
        """
        keep_from = self.checkpoints[newest][1]
        for number in [n for n in self.checkpoints if n < newest]:
            seg, _ = self.checkpoints.pop(number)
            seg.unlink()
            seg.close()
        for number in [n for n in self.segments if n < keep_from]:
            seg = self.segments.pop(number)
            seg.unlink()
            seg.close()

    # -- figures and shutdown ----------------------------------------------------
    def stats(self) -> dict[str, Any]:
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
            "idle_checkpoints": self.idle_checkpoints,
            "bytes_since_checkpoint": self.bytes_since_checkpoint,
            #: the pid of the child writing a checkpoint now, or None
            "checkpoint_writer": None if self._pending is None else self._pending[0],
            "settled": self.settled,
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
        if self._state_checkpoint is not None:
            self.state.detach()
            self._state_checkpoint.close()
            self._state_checkpoint = None
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

    def load_checkpoint(self) -> tuple[int, Checkpoint]:
        """Attach the newest checkpoint in place; returns ``(seq, image)`` and positions
        the log after it.  O(1) in the size of the store.

        Raises :class:`StoreError` when the checkpoint is damaged, and
        :class:`StoreUnavailable` when the manager is gone.
        """
        for _ in range(200):
            number, seq = self.control.checkpoint_pointer()
            try:
                image, log_number, offset = attach_checkpoint(self._ckpt_name(number), number)
            except FileNotFoundError:
                self._check_alive()
                continue
            except StoreError:
                if self.control.checkpoint_pointer()[0] != number:
                    continue  # replaced while we looked: try the newer one
                raise
            if image.seq != seq:
                image.close()
                raise StoreError(
                    f"checkpoint {image.name} covers seq {image.seq} but was published for "
                    f"seq {seq}: it is damaged. Restart the manager if this repeats."
                )
            try:
                self._switch(log_number)
            except FileNotFoundError:
                image.close()
                self._check_alive()
                continue
            self.offset = offset
            self.reloads += 1
            return seq, image
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


_malloc_trim: Any = None
#: a state that drops at least this many records gives the freed memory back
TRIM_AFTER_RECORDS = 1024


def release_freed_memory() -> None:
    """Give the heap's free memory back to the system (glibc's ``malloc_trim``).

    An overlay (the records written since the last checkpoint) is dropped
    when its state moves onto a new checkpoint; without this, glibc keeps the
    freed pages and the process's RSS stays at its high-water mark.  O(heap).
    """
    global _malloc_trim
    if _malloc_trim is None:
        _malloc_trim = False
        if sys.platform == "linux":
            try:
                import ctypes

                _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
            except (OSError, AttributeError):
                pass
    if _malloc_trim:
        _malloc_trim(0)


def attach_checkpoint(name: str, number: int) -> tuple[Checkpoint, int, int]:
    """Map checkpoint segment ``name`` read-only, untracked, and check it is checkpoint
    ``number``, sealed and whole; returns ``(image, log segment, log offset)``. O(1).

    Raises FileNotFoundError when it is gone, :class:`StoreError` when it is
    damaged or truncated.
    """
    seg = Segment.attach(name, KIND_CHECKPOINT, keep_fd=True)
    try:
        if seg.generation != number:
            raise StoreError(
                f"checkpoint {name} is damaged: its header says checkpoint {seg.generation}, "
                f"its name {number}."
            )
        length = seg.length
        if not length or CHECKPOINT_POS.size + length > seg.capacity:
            raise StoreError(
                f"checkpoint {name} is damaged or was never finished: it holds {length} "
                f"bytes of {seg.capacity - CHECKPOINT_POS.size}."
            )
        log_number, offset = CHECKPOINT_POS.unpack_from(seg.buf, HEADER_SIZE)
        start = HEADER_SIZE + CHECKPOINT_POS.size
        image = Checkpoint(
            seg.buf[start : start + length],
            name,
            number,
            raw=seg.mapping,
            raw_offset=start,
            fd=seg.fd,
        )
        if image.seq != seg.first_seq:
            raise StoreError(
                f"checkpoint {name} is damaged: its image covers seq {image.seq}, its "
                f"header says {seg.first_seq}."
            )
    except BaseException:
        seg.close()
        raise
    image.segment = seg
    return image, int(log_number), int(offset)


class Behind(Exception):
    """The reader's next log segment is gone (or inconsistent): reload a checkpoint."""
