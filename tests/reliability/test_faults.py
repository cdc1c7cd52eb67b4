"""Faults: killed and stopped readers, a manager killed mid-batch, a full /dev/shm.

Every scenario injects a real fault by signal (or a real size limit) and then
checks what users rely on: nothing lost, nothing half-visible, no hang, the
manager still serving when it should be, and nothing of ours left in
/dev/shm once the run is over.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

import pytest

import papertiger
from papertiger.engine.client import Client
from papertiger.store import CheckoutSessions
from support import settle

from .helpers import (
    Pool,
    is_intact,
    log_figures,
    sealed,
    segments_of,
    serve,
    wait_until,
    worker_env,
)


def _run_in_thread(fn: Any, timeout: float = 30.0) -> tuple[str, float, str]:
    """Run ``fn`` in a thread, join with a timeout (a hang fails).

    Returns ``(outcome, seconds, message)``: ``"ok"``, ``"unavailable"`` (with the
    :class:`StoreUnavailable` message) or a description of any other error.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        t0 = time.monotonic()
        try:
            fn()
            box["outcome"] = "ok"
        except papertiger.StoreUnavailable as exc:
            box["outcome"] = "unavailable"
            box["message"] = str(exc)
        except Exception as exc:  # reported, then asserted on by the caller
            box["outcome"] = f"{type(exc).__name__}: {exc}"
        box["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"a store call hung for {timeout:.0f} s after the fault"
    return box["outcome"], box["seconds"], box.get("message", "")


# -- readers ---------------------------------------------------------------------------------


def test_killed_and_exiting_readers_unlink_nothing(pool: Pool) -> None:
    """SIGKILL readers mid-read, let one exit normally: the store is untouched."""
    rng = random.Random(3)
    with serve(segment_bytes=64 * 1024, checkpoint_bytes=64 * 1024) as server:
        pool.env = worker_env(server)
        prefix = server.control[:-2]
        with papertiger.use_namespace("kill"):
            CheckoutSessions.insert_many(
                [sealed({"customer": "cus_k", "i": i, "pad": "z" * 300}) for i in range(1500)]
            )
        readers = [pool.start("loop_reader", {"ns": "kill"}) for _ in range(4)]
        for r in readers:
            r.expect("ready")
        settle(server)  # the manager's idle checkpoint, if one is due, comes first
        before = segments_of(prefix)
        for victim in readers[:3]:  # each is in the middle of reading 1500 records
            time.sleep(rng.uniform(0.005, 0.05))
            victim.signal(signal.SIGKILL)
            assert victim.join() == -signal.SIGKILL
        readers[3].send("stop")  # a normal exit must not unlink either (CPython gh-82300)
        survivor = readers[3].result()
        assert survivor["bad"] == 0 and survivor["count"] == 1500
        assert segments_of(prefix) == before, "a reader's exit changed /dev/shm"
        # the manager goes on serving; new writes and new readers work
        with papertiger.use_namespace("kill"):
            CheckoutSessions.insert_many([sealed({"i": i}) for i in range(200)])
        late = pool.start("loop_reader", {"ns": "kill"})
        late.expect("ready")
        late.send("stop")
        assert late.result()["count"] == 1700
        print("\nreaders: 3 SIGKILLed mid-read, 1 exited; segments unchanged, 0 records lost")


def test_stopped_reader_catches_up(pool: Pool) -> None:
    """SIGSTOP a reader through several checkpoint cycles, SIGCONT: it catches up exactly."""
    cycles = 3
    markers = [f"cs_marker{k}" for k in range(cycles)]
    rng = random.Random(11)
    with serve(segment_bytes=4096, checkpoint_bytes=4096) as server:
        pool.env = worker_env(server)
        prefix = server.control[:-2]
        with papertiger.use_namespace("stop"):
            live = [CheckoutSessions.insert(sealed({"n": i}))["id"] for i in range(100)]
            reader = pool.start("marker_reader", {"ns": "stop", "markers": markers})
            reader.expect("ready")
            snapshots = []
            for k in range(cycles):
                time.sleep(rng.uniform(0.0, 0.02))
                reader.signal(signal.SIGSTOP)
                stopped_at = log_figures(server)
                held = segments_of(prefix)  # whatever the reader had mapped is among these
                for i in range(600):  # inserts, updates, patches, deletes
                    op = rng.random()
                    if op < 0.3 or len(live) < 20:
                        live.append(CheckoutSessions.insert(sealed({"n": i, "k": k}))["id"])
                    elif op < 0.55:
                        rid = rng.choice(live)
                        CheckoutSessions.update(sealed({"id": rid, "n": -i, "k": k}))
                    elif op < 0.7:
                        rid = rng.choice(live)
                        crc = sealed({"n": -i, "k": k, "p": i})["crc"]
                        CheckoutSessions.patch(rid, {"n": -i, "k": k, "p": i, "crc": crc})
                    else:
                        rid = live.pop(rng.randrange(len(live)))
                        CheckoutSessions.delete(rid)
                moved = log_figures(server)
                # longer than a checkpoint cycle: several checkpoints, every old segment retired
                assert moved["checkpoints"] - stopped_at["checkpoints"] >= 3
                assert not (held - {server.control}) & segments_of(prefix)
                reader.signal(signal.SIGCONT)
                CheckoutSessions.insert(sealed({"id": markers[k]}))
                records = CheckoutSessions.list_namespace()
                snapshots.append(
                    (sorted(r["id"] for r in records), sorted(r["crc"] for r in records))
                )
                reader.expect(f"saw {markers[k]}")
        seen = reader.result()["seen"]
    for k, (ids, crcs) in enumerate(snapshots):
        assert seen[k]["ids"] == ids, f"cycle {k}: the reader's records differ"
        assert seen[k]["crcs"] == crcs, f"cycle {k}: the reader's contents differ"
        assert seen[k]["intact"]
    assert seen[-1]["reloads"] > cycles, "the reader never had to reload: no fault happened"
    reloads = seen[-1]["reloads"]
    print(f"\nSIGSTOP x{cycles}, >=3 checkpoints each: caught up exactly; {reloads} reloads")


# -- the manager ---------------------------------------------------------------------------


BATCH = 20_000


@pytest.mark.slow
def test_manager_killed_mid_batch(pool: Pool) -> None:
    """SIGKILL the manager during a large insert_many: all or nothing, no hang, no leak.

    The first run measures how long the batch takes; later runs kill the
    manager at fractions of that, so some kills land before the batch is
    published and some after, or while it is being applied.
    """
    fractions = [None, 0.3, 0.6, 0.8, 0.9, 1.0, 0.7, 0.95]
    duration = 0.0
    seen: list[dict[str, Any]] = []
    for trial, fraction in enumerate(fractions):
        # even trials: the batch fits the current segment, which every reader has mapped;
        # odd ones: it needs a new segment, which the dead manager's tracker may unlink first
        segment = 8 * 1024 * 1024 if trial % 2 == 0 else 256 * 1024
        with serve(segment_bytes=segment, checkpoint_bytes=32 * 1024 * 1024) as server:
            pool.env = worker_env(server)
            prefix = server.control[:-2]
            reader = pool.start("watch_reader", {"ns": "batch"})
            inserter = pool.start("batch", {"ns": "batch", "n": BATCH})
            reader.expect("ready")
            inserter.expect("ready")
            inserter.send("go")
            killed_at = None
            if fraction is not None:
                time.sleep(duration * fraction)
                os.kill(server.pid, signal.SIGKILL)
                killed_at = time.monotonic_ns()
            batch = inserter.result(timeout=60)
            if fraction is None:
                duration = (batch["t1"] - batch["t0"]) / 1e9
                assert batch["outcome"] == "ok"
            else:
                assert batch["outcome"] in ("ok", "unavailable"), batch
            # this process still has its replica and its mapped segments
            mine: dict[str, Any] = {}

            def read_mine(mine: dict[str, Any] = mine) -> None:
                with papertiger.use_namespace("batch"):
                    mine["count"] = CheckoutSessions.count()
                    records = CheckoutSessions.list_namespace()
                    mine["ok"] = len(records) == mine["count"] and all(map(is_intact, records))

            mine_outcome, _, why = _run_in_thread(read_mine)
            if mine_outcome == "unavailable":
                # told why: the manager is dead, not some retirement race
                assert "died" in why, why
            reader.send("check")
            theirs = reader.result(timeout=60)
            if fraction is not None:
                # writes and new connections fail fast with StoreUnavailable, never hang
                write, write_s, _ = _run_in_thread(
                    lambda: CheckoutSessions.insert({"customer": "cus_after"})
                )
                assert write == "unavailable", write
                connect, _, _ = _run_in_thread(lambda: Client(server.address, server.authkey))
                assert connect == "unavailable", connect
                latency = (batch["t1"] - killed_at) / 1e9 if batch["outcome"] != "ok" else 0.0
                # the dead manager's resource tracker unlinks its segments by itself
                gone = wait_until(lambda p=prefix: not segments_of(p), timeout=30)  # type: ignore[misc]
                assert gone, segments_of(prefix)
        counts = set()
        for outcome, view in ((mine_outcome, mine), (theirs["outcome"], theirs)):
            if outcome in ("ok", "read"):
                assert view["count"] in (0, BATCH), f"a partial batch is visible: {view}"
                counts.add(view["count"])
                assert view.get("ok", True) and view.get("intact", True)
                if "listed" in view:
                    assert view["listed"] == view["distinct"] == view["count"]
            else:
                assert outcome == "unavailable", outcome  # its segments were gone: told so
        assert len(counts) <= 1, f"two readers disagree: {counts}"
        if batch["outcome"] == "ok":
            assert counts <= {BATCH}, "an acknowledged batch is not visible"
        if fraction is not None:
            seen.append(
                {
                    "fraction": fraction,
                    "client": batch["outcome"],
                    "visible": sorted(counts),
                    "readers": [mine_outcome, theirs["outcome"]],
                    "client_error_after_s": round(latency, 3),
                    "write_error_after_s": round(write_s, 3),
                }
            )
    print(f"\nbatch of {BATCH} ({duration:.3f} s); manager SIGKILLed {len(seen)} times:")
    for row in seen:
        print("   ", row)


# -- /dev/shm close to full ----------------------------------------------------------------


def _check_full(result: dict[str, Any]) -> None:
    assert result["problems"] == []
    assert "rejected" in result, "the store never ran out of room: the scenario did not happen"
    assert result["rejected"]["kind"] == "StoreError"
    assert "/dev/shm" in result["rejected"]["message"]
    assert result["accepted"] > 0
    assert result["manager_alive"], "the manager died (SIGBUS?)"
    assert result["returncode"] == 0, f"the manager exited with {result['returncode']}"
    assert result["left"] == []


def test_shm_cap_refuses_cleanly(pool: Pool) -> None:
    """Under PAPERTIGER_SHM_MAX_BYTES: a clear StoreError, the store unchanged and serving."""
    env = dict(os.environ, PAPERTIGER_SHM_MAX_BYTES=str(3 * 1024 * 1024))
    for name in ("PAPERTIGER_ADDRESS", "PAPERTIGER_AUTHKEY"):
        env.pop(name, None)
    for segment, checkpoint in ((256 * 1024, 4096), (64 * 1024, 1024 * 1024)):
        worker = pool.start(
            "shm_full",
            {
                "segment_bytes": segment,
                "checkpoint_bytes": checkpoint,
                "size": 2000,
                "max_records": 5000,
            },
            env=env,
        )
        result = worker.result()
        print(f"\nshm cap 3 MiB, segments {segment}: {result}")
        _check_full(result)


#: a shell command line run in a private mount namespace (its mounts are its own)
_IN_PRIVATE_MOUNTS = ["unshare", "-m", "--propagation", "private", "sh", "-c"]


def _can_mount_private_tmpfs() -> str | None:
    if os.geteuid() != 0:
        return "needs root to mount a private tmpfs over /dev/shm"
    if shutil.which("unshare") is None:
        return "needs unshare(1)"
    probe = subprocess.run(
        [*_IN_PRIVATE_MOUNTS, "mount -t tmpfs -o size=1m tmpfs /dev/shm"], capture_output=True
    )
    if probe.returncode != 0:
        return f"cannot mount a private tmpfs here: {probe.stderr.decode().strip()}"
    return None


@pytest.mark.slow
def test_real_full_shm_refuses_cleanly(pool: Pool) -> None:
    """A real, size-capped tmpfs as /dev/shm (private mount namespace): no SIGBUS, ever."""
    reason = _can_mount_private_tmpfs()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ)
    for name in ("PAPERTIGER_ADDRESS", "PAPERTIGER_AUTHKEY", "PAPERTIGER_SHM_MAX_BYTES"):
        env.pop(name, None)
    wrapper = [*_IN_PRIVATE_MOUNTS, 'mount -t tmpfs -o size=12m tmpfs /dev/shm && exec "$@"', "sh"]
    worker = pool.start(
        "shm_full",
        {
            "segment_bytes": 512 * 1024,
            "checkpoint_bytes": 4096,
            "size": 3000,
            "max_records": 20000,
        },
        env=env,
        wrapper=wrapper,
    )
    result = worker.result()
    print(f"\nreal 12 MiB tmpfs: {result}")
    _check_full(result)
