"""Shared-memory segments: permissions, read-only readers, owners, and sweeping the dead.

The CPython bug these tests guard against (gh-82300): on Python < 3.13, a
process that merely *attaches* to a segment with ``SharedMemory(name)``
registers it with its own resource tracker, which unlinks the segment when
that process exits, pulling it from under every other process.  Our readers
attach untracked.  The control test shows the hazard is real here, so the
tests that check our readers can tell the difference.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import papertiger
from papertiger.engine.shm import (
    HEADER_SIZE,
    KIND_CHECKPOINT,
    KIND_LOG,
    Segment,
    list_segments,
    owner_pid,
    pid_alive,
    sweep_dead,
)
from papertiger.errors import StoreError
from support import wait_dead

WAIT = 60.0


def shm_path(name: str) -> str:
    return f"/dev/shm/{name}"


def new_name(pid: int | None = None) -> str:
    """A segment name owned by ``pid`` (default: this process, which is alive)."""
    return f"ptg_{os.getpid() if pid is None else pid}_{secrets.token_hex(3)}_t0"


@pytest.fixture
def segment() -> Iterator[Segment]:
    """A log segment owned by this test process (untracked; unlinked afterwards)."""
    seg = Segment.create(new_name(), KIND_LOG, 4096, track=False)
    seg.buf[HEADER_SIZE : HEADER_SIZE + 5] = b"hello"
    try:
        yield seg
    finally:
        if seg.owned:
            seg.unlink()
        seg.close()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)
    return proc.pid


# -- creation --------------------------------------------------------------------------------


def test_segments_are_created_0600_whatever_the_umask() -> None:
    old = os.umask(0)
    try:
        seg = Segment.create(new_name(), KIND_LOG, 4096, track=False)
    finally:
        os.umask(old)
    try:
        assert os.stat(shm_path(seg.name)).st_mode & 0o777 == 0o600
        assert seg.owned and seg.capacity == 4096 and seg.length == 0
    finally:
        seg.unlink()
        seg.close()
    assert not os.path.exists(shm_path(seg.name))


def test_create_refuses_an_existing_name(segment: Segment) -> None:
    with pytest.raises(FileExistsError):
        Segment.create(segment.name, KIND_LOG, 4096, track=False)
    assert (
        bytes(Segment.attach(segment.name, KIND_LOG).buf[HEADER_SIZE : HEADER_SIZE + 5]) == b"hello"
    )


def test_a_managers_segments_and_socket_are_private(store: papertiger.Server) -> None:
    prefix = store.control[:-2] + "_"
    names = list(list_segments(prefix))
    assert store.control in names and len(names) >= 3
    for name in names:
        assert os.stat(shm_path(name)).st_mode & 0o777 == 0o600, name
        assert owner_pid(name) == store.pid
        assert len(name) <= 30  # macOS allows 31 bytes with the leading slash
    assert os.stat(store.address).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(store.address)).st_mode & 0o777 == 0o700


# -- attaching --------------------------------------------------------------------------------


def test_readers_attach_read_only(segment: Segment) -> None:
    reader = Segment.attach(segment.name, KIND_LOG)
    try:
        assert not reader.owned and not reader.tracked
        assert reader.buf.readonly
        with pytest.raises(TypeError):
            reader.buf[HEADER_SIZE] = 0
        assert bytes(reader.buf[HEADER_SIZE : HEADER_SIZE + 5]) == b"hello"
        # the kernel agrees: the reader's mapping is shared and read-only
        with open("/proc/self/maps") as maps:
            perms = [
                line.split()[1] for line in maps if line.rstrip().endswith(shm_path(segment.name))
            ]
        assert "r--s" in perms and "rw-s" in perms  # the reader's, and the owner's
        with pytest.raises(StoreError, match="not owned"):
            reader.unlink()
        # the owner's writes show through the reader's mapping
        segment.buf[HEADER_SIZE : HEADER_SIZE + 5] = b"world"
        assert bytes(reader.buf[HEADER_SIZE : HEADER_SIZE + 5]) == b"world"
    finally:
        reader.close()
        reader.close()  # twice is fine


def test_writing_through_a_read_only_mapping_faults(segment: Segment) -> None:
    """Below Python's checks: a raw store into the reader's mapping is a SIGSEGV."""
    code = f"""
import ctypes
from papertiger.engine.shm import Segment, KIND_LOG
seg = Segment.attach({segment.name!r}, KIND_LOG)
addr = next(int(l.split("-")[0], 16) for l in open("/proc/self/maps")
            if l.rstrip().endswith("/dev/shm/{segment.name}"))
print("writing", flush=True)
ctypes.memset(addr + {HEADER_SIZE}, 0x58, 5)
print("wrote", flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout.strip() == "writing"
    assert bytes(segment.buf[HEADER_SIZE : HEADER_SIZE + 5]) == b"hello"


def test_attach_checks_the_header(segment: Segment) -> None:
    with pytest.raises(StoreError, match="not a papertiger segment"):
        Segment.attach(segment.name, KIND_CHECKPOINT)
    with pytest.raises(FileNotFoundError):
        Segment.attach(new_name(), KIND_LOG)
    segment.buf[0:8] = b"NOTOURS!"
    with pytest.raises(StoreError, match="not a papertiger segment"):
        Segment.attach(segment.name, KIND_LOG)


# -- readers never unlink (CPython gh-82300) ------------------------------------------------------

ATTACH_OURS = """
import sys, time
from multiprocess import resource_tracker
from papertiger.engine.shm import Segment, KIND_LOG
seg = Segment.attach(sys.argv[1], KIND_LOG)
assert bytes(seg.buf[64:69]) == b"hello"
print(resource_tracker._resource_tracker._pid or 0, flush=True)
if sys.argv[2] == "sigkill":
    time.sleep(600)
"""

ATTACH_STDLIB_STYLE = """
import sys, time
from multiprocess import resource_tracker, shared_memory
shm = shared_memory.SharedMemory(name=sys.argv[1])  # registers: the gh-82300 hazard
print(resource_tracker._resource_tracker._pid or 0, flush=True)
if sys.argv[2] == "sigkill":
    time.sleep(600)
"""


def run_attacher(code: str, name: str, how: str) -> None:
    """Run a process that attaches ``name``, let it exit or SIGKILL it, wait for its tracker."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, name, how], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    tracker = int(proc.stdout.readline() or 0)
    if how == "sigkill":
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(WAIT) == -signal.SIGKILL
    else:
        assert proc.wait(WAIT) == 0
    proc.stdout.close()
    wait_dead(tracker)  # whatever its tracker would do, it has done


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_reader_that_goes_away_does_not_unlink(segment: Segment, how: str) -> None:
    run_attacher(ATTACH_OURS, segment.name, how)
    assert os.path.exists(shm_path(segment.name))
    again = Segment.attach(segment.name, KIND_LOG)
    assert bytes(again.buf[HEADER_SIZE : HEADER_SIZE + 5]) == b"hello"
    again.close()


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="3.13 can attach untracked")
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_control_a_tracked_attach_does_unlink(segment: Segment, how: str) -> None:
    """The hazard is real here: the tests above would catch a tracked attach."""
    run_attacher(ATTACH_STDLIB_STYLE, segment.name, how)
    assert not os.path.exists(shm_path(segment.name))
    segment.owned = False  # already gone


# -- sweeping the dead ---------------------------------------------------------------------------


#: names no manager sweeps: a manager starting in another test cannot take these segments
SWEEP_PREFIX = "ptgsweep_"


def test_sweep_dead_removes_only_dead_owners_segments() -> None:
    dead, excluded = dead_pid(), dead_pid()

    def new_name(pid: int | None = None) -> str:
        return f"{SWEEP_PREFIX}{os.getpid() if pid is None else pid}_{secrets.token_hex(3)}_t0"

    live_child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    segs = {
        "dead": Segment.create(new_name(dead), KIND_LOG, 4096, track=False),
        "excluded": Segment.create(new_name(excluded), KIND_LOG, 4096, track=False),
        "mine": Segment.create(new_name(), KIND_LOG, 4096, track=False),
        "live": Segment.create(new_name(live_child.pid), KIND_LOG, 4096, track=False),
        "init": Segment.create(new_name(1), KIND_LOG, 4096, track=False),  # alive, not ours
        "zombie": Segment.create(new_name(zombie.pid), KIND_LOG, 4096, track=False),
    }
    try:
        deadline = time.monotonic() + WAIT
        while pid_alive(zombie.pid):  # exited, not reaped: a zombie counts as dead
            assert time.monotonic() < deadline
            time.sleep(0.01)
        removed = sweep_dead(exclude_pid=excluded, prefix=SWEEP_PREFIX)
        for key in ("dead", "zombie"):
            assert segs[key].name in removed, key
            assert not os.path.exists(shm_path(segs[key].name)), key
        for key in ("excluded", "mine", "live", "init"):
            assert segs[key].name not in removed, key
            assert os.path.exists(shm_path(segs[key].name)), key
    finally:
        live_child.kill()
        live_child.wait()
        zombie.wait()
        for seg in segs.values():
            if os.path.exists(shm_path(seg.name)):
                seg.unlink()
            seg.close()


def test_pid_alive() -> None:
    assert pid_alive(os.getpid()) and pid_alive(1)
    assert not pid_alive(dead_pid())


def test_owner_pid_parses_our_names_only() -> None:
    assert owner_pid("ptg_123_abcdef_c") == 123
    assert owner_pid("ptg_x_abcdef_c") is None
    assert owner_pid("other_123_abc") is None
    assert owner_pid("ptg_") is None
