"""Helpers of the reliability tests: worker processes, shared-memory checks, the checker.

Theory of operation
-------------------
Every scenario runs real processes against a real manager:

* the test process starts a manager with :func:`papertiger.serve` (small
  segments and checkpoints where the scenario wants many switches);
* each worker is a fresh interpreter running :mod:`worker` (``python
  worker.py ROLE CONFIG``) with ``PAPERTIGER_ADDRESS``/``PAPERTIGER_AUTHKEY``
  in its environment, so it finds the manager exactly as a user's process
  would.  A worker prints ``ready`` when it is connected, waits for ``go`` on
  stdin when asked to, and writes its result (msgpack) to a file;
* the test injects faults with real signals (SIGKILL, SIGSTOP/SIGCONT) by pid
  and waits for workers with a timeout: a hang is a failure, never a stall.

:func:`check_register_history` is the consistency checker: each record is a
register whose versions are totally ordered by the manager's log sequence
number, so a history is linearizable exactly when no read returns a value
that was never written, a value from the future, a value older than a write
that had completed before the read began, or a value older than what an
earlier (completed) read had already returned.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

import papertiger
from papertiger.engine.shm import list_segments

WORKER = Path(__file__).with_name("worker.py")
#: A hang detector, not a timing assertion: generous on a loaded 2-core machine.
JOIN_TIMEOUT = 120.0


# -- records that carry a checksum of their own content ------------------------------


#: Fields the store fills in (or the caller may generate): not covered by the checksum.
UNSEALED = frozenset({"crc", "id", "created", "object"})


def checksum(fields: dict[str, Any]) -> int:
    """CRC32 of a record's own content (all but :data:`UNSEALED`), deterministic msgpack."""
    body = {k: v for k, v in fields.items() if k not in UNSEALED}
    return zlib.crc32(msgpack.packb(sorted(body.items()), use_bin_type=True))


def sealed(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` plus ``crc``: the checksum readers verify."""
    return {**fields, "crc": checksum(fields)}


def is_intact(record: dict[str, Any]) -> bool:
    """True when ``record`` carries the checksum of its own content."""
    return record.get("crc") == checksum(record)


# -- shared memory -------------------------------------------------------------------


def segments_of(prefix: str) -> set[str]:
    """Names of the segments in /dev/shm that belong to the manager run ``prefix``."""
    return set(list_segments(prefix + "_"))


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``cond`` until true or ``timeout``; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def assert_nothing_left(server: papertiger.Server) -> None:
    """After the manager stopped: none of its segments, no socket, no socket directory."""
    prefix = server.control[:-2]
    left = segments_of(prefix)
    assert not left, f"segments of manager {server.pid} left in /dev/shm: {sorted(left)}"
    assert not os.path.exists(server.address), f"socket {server.address} left behind"
    sock_dir = os.path.dirname(server.address)
    if os.path.basename(sock_dir).startswith("ptg-"):  # the manager's own directory
        assert not os.path.exists(sock_dir), f"socket directory {sock_dir} left behind"


@contextlib.contextmanager
def serve(**kwargs: Any) -> Iterator[papertiger.Server]:
    """:func:`papertiger.serve`, then check that the run left nothing behind."""
    with papertiger.serve(**kwargs) as server:
        yield server
    assert_nothing_left(server)


def log_figures(server: papertiger.Server) -> dict[str, int]:
    """Log seq, checkpoints written and segment switches so far (the manager's ``stats``)."""
    stats = server.stats()["log"]
    return {
        "seq": int(stats["seq"]),
        "checkpoints": int(stats["checkpoint_count"]),
        "segment_switches": int(stats["segment_switches"]),
    }


# -- worker processes -------------------------------------------------------------------


class Worker:
    """One worker process (``worker.py ROLE``), with its result file."""

    def __init__(
        self,
        role: str,
        config: dict[str, Any],
        *,
        env: dict[str, str],
        out: Path,
        preexec: Callable[[], None] | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        self.role = role
        self.out = out
        config = {**config, "out": str(out)}
        self.proc = subprocess.Popen(
            [*(wrapper or []), sys.executable, str(WORKER), role, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            preexec_fn=preexec,
            close_fds=True,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []

    def readline(self, timeout: float = JOIN_TIMEOUT) -> str:
        """The worker's next stdout line ('' at EOF); fails the test after ``timeout``."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"{self.role} worker {self.pid} said nothing for {timeout:.0f} s"
        line = self.proc.stdout.readline().decode().strip()
        self.lines.append(line)
        return line

    def expect(self, word: str, timeout: float = JOIN_TIMEOUT) -> str:
        line = self.readline(timeout)
        assert line.startswith(word), (
            f"{self.role} worker {self.pid}: expected {word!r}, got {line!r}" + self._stderr_hint()
        )
        return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def join(self, timeout: float = JOIN_TIMEOUT) -> int:
        """Wait for exit; a worker still running after ``timeout`` is a hang: killed, failed."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"{self.role} worker {self.pid} hung for {timeout:.0f} s"
            ) from None

    def result(self, timeout: float = JOIN_TIMEOUT) -> Any:
        """Join, check the exit code, and load the result file."""
        code = self.join(timeout)
        assert code == 0, f"{self.role} worker {self.pid} exited with {code}" + self._stderr_hint()
        return msgpack.unpackb(self.out.read_bytes(), strict_map_key=False)

    def _stderr_hint(self) -> str:
        return " (its traceback is in the captured stderr)"

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@dataclass
class Pool:
    """Starts workers for one test and reaps every one of them at the end."""

    tmp: Path
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def start(self, role: str, config: dict[str, Any], **kwargs: Any) -> Worker:
        out = self.tmp / f"{role}-{len(self.workers)}.msgpack"
        worker = Worker(role, config, env=kwargs.pop("env", self.env), out=out, **kwargs)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def worker_env(server: papertiger.Server, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PAPERTIGER_NAMESPACE", None)
    env.update(server.environ())
    env.update(extra)
    return env


# -- the consistency checker ---------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One operation of a history.

    ``kind`` is ``"w"`` or ``"r"``; ``value`` is the version written or read
    (``None`` for a read that found nothing); ``seq`` is the log sequence
    number of a write (its place in the manager's total order) or, for a
    read, the replica's seq when it answered.  Times are ``CLOCK_MONOTONIC``
    nanoseconds, comparable across processes.
    """

    process: int
    kind: str
    key: str
    value: Any
    start: int
    end: int
    seq: int


def check_register_history(ops: Iterable[Op]) -> list[str]:
    """Every way the history departs from a linearizable register per key; [] when none.

    Checks, per key (O(n log n)):

    * writes: distinct versions, seq order agrees with real time (a write that
      ended before another began has the smaller seq);
    * a read returns ``None`` or a version that was written (no fabricated value);
    * no read from the future (the write it returns began before the read ended);
    * no stale read (no write of a newer version ended before the read began):
      read-your-writes and read-after-write across processes;
    * monotonic reads: a read that began after another read ended never returns
      an older version, in any process;
    * a read's replica seq is at least its version's seq, and no write of the
      key lies between them (the replica answered from a state that held that
      version as the newest).
    """
    problems: list[str] = []
    writes: dict[str, list[Op]] = defaultdict(list)
    reads: dict[str, list[Op]] = defaultdict(list)
    by_process: dict[int, list[Op]] = defaultdict(list)
    for op in ops:
        (writes if op.kind == "w" else reads)[op.key].append(op)
        by_process[op.process].append(op)

    version_seq: dict[tuple[str, Any], Op] = {}
    for key, ws in writes.items():
        for w in ws:
            if (key, _hashable(w.value)) in version_seq:
                problems.append(f"{key}: version {w.value!r} written twice")
            version_seq[(key, _hashable(w.value))] = w
    all_writes = sorted((w for ws in writes.values() for w in ws), key=lambda w: w.seq)
    seqs = [w.seq for w in all_writes]
    if len(set(seqs)) != len(seqs):
        problems.append("two writes share a log sequence number")
    # real time agrees with seq order: a write's seq exceeds every write that ended before it began
    by_end = sorted(all_writes, key=lambda w: w.end)
    best, j = -1, 0
    for w in sorted(all_writes, key=lambda w: w.start):
        while j < len(by_end) and by_end[j].end < w.start:
            best = max(best, by_end[j].seq)
            j += 1
        if w.seq <= best:
            problems.append(
                f"write {w.key}={w.value!r} (seq {w.seq}) ordered before an earlier write"
            )

    for key, rs in reads.items():
        ws = sorted(writes.get(key, []), key=lambda w: w.seq)
        ws_by_end = sorted(ws, key=lambda w: w.end)
        w_seqs = [w.seq for w in ws]
        # newest write (by seq) that ended before each read began
        rs_by_start = sorted(rs, key=lambda r: r.start)
        newest_done, j = -1, 0
        prior_reads = sorted(rs, key=lambda r: r.end)
        newest_read, k = -1, 0
        for r in rs_by_start:
            while j < len(ws_by_end) and ws_by_end[j].end < r.start:
                newest_done = max(newest_done, ws_by_end[j].seq)
                j += 1
            while k < len(prior_reads) and prior_reads[k].end < r.start:
                newest_read = max(newest_read, _read_seq(prior_reads[k], key, version_seq))
                k += 1
            if r.value is None:
                got = -1
            else:
                written = version_seq.get((key, _hashable(r.value)))
                if written is None:
                    problems.append(f"{key}: read returned {r.value!r}, which was never written")
                    continue
                got = written.seq
                if written.start > r.end:
                    problems.append(
                        f"{key}: read (process {r.process}) returned {r.value!r} before it was "
                        "written"
                    )
            if got < newest_done:
                problems.append(
                    f"{key}: stale read (process {r.process}): got seq {got}, but seq "
                    f"{newest_done} had been acknowledged before the read began"
                )
            if got < newest_read:
                problems.append(
                    f"{key}: non-monotonic read (process {r.process}): got seq {got} after "
                    f"another read had returned seq {newest_read}"
                )
            if r.seq >= 0:
                if got > r.seq:
                    problems.append(
                        f"{key}: read answered at replica seq {r.seq} returned seq {got}"
                    )
                else:
                    # the newest write of this key at or before r.seq must be the one returned
                    i = bisect.bisect_right(w_seqs, r.seq)
                    expected = w_seqs[i - 1] if i else -1
                    if expected != got:
                        problems.append(
                            f"{key}: read at replica seq {r.seq} returned seq {got}, but the "
                            f"newest write then was seq {expected}"
                        )
    for process, pops in by_process.items():
        last = -1
        for op in sorted(pops, key=lambda o: o.start):
            if op.kind == "r" and op.seq >= 0:
                if op.seq < last:
                    problems.append(
                        f"process {process}: read answered at replica seq {op.seq} after this "
                        f"process had already written or read seq {last}"
                    )
                last = max(last, op.seq)
            elif op.kind == "w":
                last = max(last, op.seq)
    return problems


def _read_seq(r: Op, key: str, version_seq: dict[tuple[str, Any], Op]) -> int:
    if r.value is None:
        return -1
    w = version_seq.get((key, _hashable(r.value)))
    return w.seq if w is not None else -1


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
