"""Group commit: writes that wait together are applied alone and published together.

To make groups on purpose, the test stops the manager (SIGSTOP), lets every
writer's request reach its socket, and continues it (SIGCONT): its next
wake-up finds them all ready.  One write of each group is rejected, in the
middle of it.  Reader processes read the same records all the while; the
consistency checker judges the whole history, and no read may be answered at
a log position inside a group.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import msgpack

import papertiger
from papertiger.engine import protocol
from papertiger.engine.client import Channel
from papertiger.store import CheckoutSessions as CS

from .helpers import Op, Pool, check_register_history, sealed, serve, wait_until, worker_env

WRITERS = 8
#: the writer whose write is rejected (in the middle of each group)
REJECTED = 3
KEYS = [f"cs_group{i}" for i in range(WRITERS)]
NS = "group"


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def _put(key: str, version: list[Any], mode: str = "upsert") -> list[Any]:
    record = sealed({"id": key, "v": version})
    wire = CS._prepare(record).wire()
    return ["put", CS.table_name, CS.object_name, [NS], mode, wire]


def _rejected(group: int) -> tuple[list[Any], type[papertiger.StoreError]]:
    """A write the manager refuses, of a different kind in turn."""
    kind = group % 3
    if kind == 0:  # insert of an id that exists
        return _put(KEYS[0], ["never", group], "insert"), papertiger.AlreadyExists
    if kind == 1:  # update of an id that does not
        return _put("cs_missing", ["never", group], "update"), papertiger.NotFound
    return ["put", CS.table_name, CS.object_name, [NS], "upsert", ["x"]], papertiger.InvalidRequest


def test_groups_apply_each_write_alone_and_publish_at_once(pool: Pool) -> None:
    groups = 60
    with serve(segment_bytes=16 * 1024, checkpoint_bytes=32 * 1024) as server:
        pool.env = worker_env(server)
        # one connection per writer, made in order: poll reports them in this order
        channels = [Channel(server.address, server.authkey, server.pid) for _ in range(WRITERS)]
        history: list[Op] = []
        for key in KEYS:
            t0 = time.monotonic_ns()
            seq, _ = channels[0].request(_put(key, ["seed", 0], "insert"))
            history.append(Op(-1, "w", key, ("seed", 0), t0, time.monotonic_ns(), seq))
        readers = [
            pool.start(
                "linear",
                {
                    "ns": NS,
                    "keys": KEYS,
                    "ops": 10**9,
                    "until_stop": True,
                    "seed": i,
                    "tag": i,
                    "write_ratio": 0,
                },
            )
            for i in range(2)
        ]
        for r in readers:
            r.expect("ready")
        before = server.stats()
        for r in readers:
            r.send("go")
        spans: list[tuple[int, int]] = []
        try:
            for g in range(groups):
                os.kill(server.pid, signal.SIGSTOP)
                assert wait_until(lambda: _stopped(server.pid), timeout=30)
                sent = []
                for i, channel in enumerate(channels):
                    if i == REJECTED:
                        frame, error = _rejected(g)
                    else:
                        frame, error = _put(KEYS[i], [g, i]), None
                    sent.append((time.monotonic_ns(), error))
                    channel.conn.send_bytes(protocol.encode_request(frame))
                os.kill(server.pid, signal.SIGCONT)
                seqs = []
                for i, (channel, (t0, error)) in enumerate(zip(channels, sent, strict=True)):
                    reply = channel._await_reply()
                    t1 = time.monotonic_ns()
                    if error is not None:
                        try:
                            protocol.decode_reply(reply)
                        except error:
                            continue
                        raise AssertionError(f"group {g}: the bad write was not refused")
                    seq, _ = protocol.decode_reply(reply)
                    seqs.append(seq)
                    history.append(Op(-1, "w", KEYS[i], (g, i), t0, t1, seq))
                # the others landed, in the group's order, with no gap where the refused one was
                assert seqs == list(range(seqs[0], seqs[0] + WRITERS - 1)), (g, seqs)
                spans.append((seqs[0], seqs[-1]))
        finally:
            for r in readers:
                r.send("stop")
            for channel in channels:
                channel.close()
        after = server.stats()
        results = [r.result() for r in readers]
        with papertiger.use_namespace(NS):
            stored = {key: CS.get(key)["v"] for key in KEYS}
    # every write of the last group is the newest version of its record
    assert stored == {
        key: [groups - 1, i] if i != REJECTED else ["seed", 0] for i, key in enumerate(KEYS)
    }
    assert after["group_writes"] - before["group_writes"] == groups * (WRITERS - 1)
    assert after["largest_group"] == WRITERS - 1
    for i, r in enumerate(results):
        for kind, key, value, t0, t1, seq in r["history"]:
            value = tuple(value) if value is not None else None
            history.append(Op(i, kind, key, value, t0, t1, seq))
    reads = [op for op in history if op.kind == "r"]
    assert len(reads) > groups, "the readers hardly read while the groups were written"
    assert sum(r["torn"] for r in results) == 0
    half = [op for op in reads for first, last in spans if first <= op.seq < last]
    assert half == [], f"reads answered inside a group: {half[:3]}"
    assert check_register_history(history) == []


def test_entries_appended_unpublished_are_invisible_until_published() -> None:
    """LogWriter.append(publish=False) writes; publish() makes the group visible at once,
    across a segment switch too."""
    from papertiger.core.layered import LayeredState
    from papertiger.engine.log import LogReader, LogWriter, new_prefix

    writer = LogWriter(new_prefix(), segment_bytes=4096, state=LayeredState())
    try:
        reader = LogReader(writer.control_name)
        try:
            seq, _ = reader.load_checkpoint()
            payloads = [msgpack.packb(b"x" * (700 + i)) for i in range(12)]  # > one segment
            appended = [writer.append(p, publish=False) for p in payloads]
            assert appended == list(range(1, 13)) and writer.number >= 1
            assert reader.control.head == 0
            seen: list[Any] = []
            assert reader.follow(seq, reader.control.head, seen.append) == 0 and seen == []
            assert writer.publish() == 12 and reader.control.head == 12
            assert reader.follow(seq, reader.control.head, seen.append) == 12
            assert seen == [b"x" * (700 + i) for i in range(12)]
        finally:
            reader.close()
    finally:
        writer.close()
