"""Readers use the newest checkpoint in place, with the log since as a private overlay.

Real managers, real reader processes, real shared memory: a reader that
attaches while a checkpoint is being written, one parked (SIGSTOP) across
several checkpoints, pages walked both ways while checkpoints switch under
them, a cleared namespace that only the reader's overlay knows about, and
checkpoint segments that are damaged or cut short.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

import papertiger
from papertiger.engine.connection import current_client
from papertiger.engine.layout import BLOCK, BLOCK_AREAS, BLOCK_FIELDS, IMAGE
from papertiger.engine.log import (
    BACKGROUND_CHECKPOINT_BYTES,
    CHECKPOINT_POS,
    ControlBlock,
    attach_checkpoint,
)
from papertiger.engine.shm import HEADER, HEADER_SIZE, KIND_CHECKPOINT, KIND_CONTROL, Segment
from papertiger.errors import StoreError
from papertiger.fixtures import vary_checkout_session
from papertiger.store import CheckoutSessions
from support import settle
from test_processes import Child, segments_of, spawn
from test_processes import children as children  # a fixture

WAIT = 60.0
TABLE = CheckoutSessions.table_name


def _stats(server: papertiger.Server) -> dict[str, Any]:
    return dict(server.stats()["log"])


def _pointer(server: papertiger.Server) -> tuple[int, int]:
    control = ControlBlock(Segment.attach(server.control, KIND_CONTROL))
    try:
        return control.checkpoint_pointer()
    finally:
        control.segment.close()


def _state(pid: int) -> str:
    """The process's state letter (R, S, T for stopped, Z...), or "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def _stop(pid: int) -> bool:
    """SIGSTOP ``pid``; True once it is stopped, False when it exited first."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + WAIT
    while (state := _state(pid)) not in ("T", "t"):
        if state in ("", "Z", "X"):
            return False
        assert time.monotonic() < deadline, f"pid {pid} did not stop"
        time.sleep(0.001)
    return True


# -- attaching while a checkpoint is being written ---------------------------------------------

ATTACHER = """
from papertiger.engine.connection import current_client
with papertiger.use_namespace(ns):
    while True:
        replica = current_client().replica
        conn.send({
            "count": CheckoutSessions.count(),
            "ids": [r["id"] for r in CheckoutSessions.list_namespace()],
            "checkpoint": replica.checkpoint.number,
        })
        if conn.recv() is None:
            break
"""


@pytest.mark.skipif(sys.platform != "linux", reason="background checkpoints fork")
def test_a_reader_attaches_while_the_manager_writes_a_checkpoint(children: list[Child]) -> None:
    records = [vary_checkout_session(n) for n in range(BACKGROUND_CHECKPOINT_BYTES // 4000 + 400)]
    with papertiger.serve(checkpoint_bytes=1 << 20, segment_bytes=1 << 20) as server:
        with papertiger.use_namespace("attach"):
            ids = [r["id"] for r in CheckoutSessions.insert_many(records)]
        # write until a checkpoint is written by a child; stop the child mid-way
        writer = None
        with papertiger.use_namespace("more"):
            for n in range(20_000):
                pid = _stats(server)["checkpoint_writer"]
                if pid and _stop(pid):
                    writer = pid
                    break
                CheckoutSessions.insert(vary_checkout_session(n))
        assert writer is not None, "no checkpoint was ever written in the background"
        try:
            assert _stats(server)["checkpoint_writer"] == writer  # stopped mid-way
            published, _ = _pointer(server)
            being_written = _stats(server)["checkpoint_count"] - 1
            assert being_written > published
            reader = spawn(children, "spawn", ATTACHER, ns="attach")
            seen = reader.recv()
            assert seen["checkpoint"] == published  # never the one still being written
            assert seen["count"] == len(ids) and sorted(seen["ids"]) == sorted(ids)
        finally:
            os.kill(writer, signal.SIGCONT)
        deadline = time.monotonic() + WAIT
        while _stats(server)["checkpoint_writer"] == writer:
            assert time.monotonic() < deadline, "the checkpoint was never published"
            time.sleep(0.01)
        with papertiger.use_namespace("attach"):
            CheckoutSessions.insert({"customer": "cus_after"})  # the reader moves on at a read
        reader.send("again")
        again = reader.recv()
        assert again["checkpoint"] >= being_written
        assert again["count"] == len(ids) + 1
        reader.send(None)
        assert reader.join() == 0


# -- a reader parked across several checkpoints ---------------------------------------------------

PARKED = """
from papertiger.engine.connection import current_client
with papertiger.use_namespace(ns):
    replica = current_client().replica
    conn.send({"count": CheckoutSessions.count(), "checkpoint": replica.checkpoint.number,
               "name": replica.checkpoint.name})
    assert conn.recv() == "read"
    conn.send({
        "records": CheckoutSessions.list_namespace(),
        "find": [r["id"] for r in CheckoutSessions.find_by_customer("cus_0")],
        "page": [r["id"] for r in CheckoutSessions.list(limit=4)],
        "nested": CheckoutSessions.list_namespace((ns, "acct")),
        "checkpoint": replica.checkpoint.number,
        "overlay": replica.state.effects,
    })
"""


def test_a_reader_parked_across_several_checkpoints_reads_the_newest(
    children: list[Child],
) -> None:
    ns = f"parked-{secrets.token_hex(3)}"
    with papertiger.serve(checkpoint_bytes=32 * 1024, segment_bytes=32 * 1024) as server:
        with papertiger.use_namespace(ns):
            live = [
                CheckoutSessions.insert({"customer": f"cus_{i % 3}", "created": i % 5, "i": i})
                for i in range(60)
            ]
            with papertiger.use_namespace((ns, "acct")):
                CheckoutSessions.insert({"nested": True})
        reader = spawn(children, "spawn", PARKED, ns=ns)
        warm = reader.recv()
        assert warm["count"] == 60
        os.kill(reader.pid, signal.SIGSTOP)
        try:
            before = _stats(server)["checkpoint_count"]
            with papertiger.use_namespace(ns):
                for round_ in range(40):
                    for j in range(4):
                        live.append(
                            CheckoutSessions.insert(
                                {
                                    "customer": f"cus_{j % 3}",
                                    "created": round_ % 5,
                                    "pad": "x" * 900,
                                }
                            )
                        )
                    gone = live.pop(round_ % len(live))
                    CheckoutSessions.delete(gone["id"])
                    changed = live[(round_ * 7) % len(live)]
                    live[live.index(changed)] = CheckoutSessions.patch(
                        changed["id"], {"metadata": {"round": str(round_)}}
                    )
                CheckoutSessions.clear_namespace((ns, "acct"))
                with papertiger.use_namespace((ns, "acct")):
                    nested = [CheckoutSessions.insert({"nested": 2})]
                expected = CheckoutSessions.list_namespace()
            assert _stats(server)["checkpoint_count"] - before >= 3
            assert warm["name"] not in segments_of(server)  # its checkpoint was retired
        finally:
            os.kill(reader.pid, signal.SIGCONT)
        reader.send("read")
        seen = reader.recv()
        assert seen["records"] == expected
        assert seen["find"] == [r["id"] for r in expected if r["customer"] == "cus_0"]
        assert seen["page"] == [r["id"] for r in expected[:4]]
        assert seen["nested"] == nested
        # it moved to the newest checkpoint: its overlay holds only what came after that
        newest, newest_seq = _pointer(server)
        assert seen["checkpoint"] == newest > warm["checkpoint"]
        assert seen["overlay"] <= _stats(server)["seq"] - newest_seq
        assert reader.join() == 0


# -- pages walked while checkpoints switch under them ---------------------------------------------

WALKER = """
from papertiger.engine.connection import current_client
with papertiger.use_namespace(ns):
    while (msg := conn.recv()) is not None:
        kwargs = msg
        page = CheckoutSessions.list(**kwargs)
        conn.send({
            "ids": [r["id"] for r in page],
            "has_more": page.has_more,
            "checkpoint": current_client().replica.checkpoint.number,
        })
"""


def _drive_checkpoint(server: papertiger.Server, step: int) -> None:
    """Make the manager publish a new checkpoint: every other time by logging enough
    elsewhere (then clearing it, so the store stays small), else by asking for one."""
    before = _stats(server)["checkpoint_count"]
    if step % 2:
        current_client().request(["checkpoint"])
    else:
        with papertiger.use_namespace("elsewhere"):
            while _stats(server)["checkpoint_count"] == before:
                CheckoutSessions.insert_many([{"pad": "p" * 2000} for _ in range(8)])
                CheckoutSessions.clear_namespace("elsewhere")
    assert _stats(server)["checkpoint_count"] > before


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_pages_walked_while_checkpoints_switch_see_each_record_once(
    children: list[Child], direction: str
) -> None:
    ns = f"walk-{secrets.token_hex(3)}"
    with papertiger.serve(checkpoint_bytes=48 * 1024, segment_bytes=64 * 1024) as server:
        with papertiger.use_namespace(ns):
            made = [
                CheckoutSessions.insert({"created": i % 9, "customer": f"cus_{i % 2}", "i": i})
                for i in range(120)
            ]
        order = [
            r["id"] for r in sorted(made, key=lambda r: (r["created"], made.index(r)), reverse=True)
        ]
        walker = spawn(children, "spawn", WALKER, ns=ns)
        seen: list[str] = []
        checkpoints = set()
        forward = direction == "forward"
        cursor: str | None = None if forward else order[-1]
        expected = order if forward else list(reversed(order[:-1]))
        for step in range(200):
            if forward:
                walker.send({"limit": 7, "starting_after": cursor})
            else:
                walker.send({"limit": 7, "ending_before": cursor})
            page = walker.recv()
            checkpoints.add(page["checkpoint"])
            ids = page["ids"] if forward else list(reversed(page["ids"]))
            seen += ids
            if not page["has_more"]:
                break
            cursor = ids[-1]
            # between pages: a record of the walk changes (same place in the order),
            # another is rewritten whole, and a new checkpoint is published
            with papertiger.use_namespace(ns):
                target = made[(step * 13) % len(made)]["id"]
                CheckoutSessions.patch(target, {"metadata": {"step": str(step)}})
                whole = made[(step * 29) % len(made)]
                CheckoutSessions.update({**whole, "v": step})
            _drive_checkpoint(server, step)
        walker.send(None)
        assert walker.join() == 0
    assert seen == expected, "a record was skipped, repeated or out of order"
    assert len(checkpoints) >= 10, f"checkpoints did not switch under the walk: {checkpoints}"


# -- a namespace cleared in the overlay, still in the checkpoint ----------------------------------

CLEARED = """
from papertiger.engine.connection import current_client
with papertiger.use_namespace(ns):
    while (msg := conn.recv()) is not None:
        replica = current_client().replica
        try:
            got = CheckoutSessions.get(msg)
        except papertiger.NotFound:
            got = None
        conn.send({
            "count": CheckoutSessions.count(),
            "list": [r["id"] for r in CheckoutSessions.list(limit=100)],
            "find": [r["id"] for r in CheckoutSessions.find_by_customer("cus_c")],
            "get": got,
            "nested": CheckoutSessions.list_namespace((ns, "acct")),
            "namespaces": [
                list(p.namespace) for p in papertiger.backends.current_backend().partitions(
                    under=(ns,))
            ],
            "checkpoint": replica.checkpoint.number,
            "in_checkpoint": replica.checkpoint.partition(table, (ns,)) is not None,
        })
"""


def test_a_reader_whose_overlay_cleared_a_namespace_the_checkpoint_still_has(
    children: list[Child],
) -> None:
    ns = f"cleared-{secrets.token_hex(3)}"
    with papertiger.serve() as server:
        with papertiger.use_namespace(ns):
            old = [CheckoutSessions.insert({"customer": "cus_c", "i": i}) for i in range(5)]
            with papertiger.use_namespace((ns, "acct")):
                CheckoutSessions.insert({"customer": "cus_c"})
        current_client().request(["checkpoint"])  # the checkpoint holds both namespaces
        reader = spawn(children, "spawn", CLEARED, ns=ns, table=TABLE)
        reader.send(old[0]["id"])
        before = reader.recv()
        assert before["count"] == 5 and before["in_checkpoint"]
        CheckoutSessions.clear_namespace(ns)
        reader.send(old[0]["id"])
        after = reader.recv()
        assert after == {
            "count": 0,
            "list": [],
            "find": [],
            "get": None,
            "nested": [],
            "namespaces": [],
            "checkpoint": before["checkpoint"],  # the same checkpoint: the overlay hid it
            "in_checkpoint": True,
        }
        with papertiger.use_namespace(ns):
            new = CheckoutSessions.insert({"customer": "cus_c", "id": old[1]["id"]})
        reader.send(new["id"])
        again = reader.recv()
        assert again["count"] == 1 and again["list"] == again["find"] == [new["id"]]
        assert again["get"] == new and again["nested"] == []
        assert again["checkpoint"] == before["checkpoint"]
        settle(server)
        reader.send(None)
        assert reader.join() == 0


# -- damaged and truncated checkpoint segments ---------------------------------------------------


class Copy:
    """A copy of a real checkpoint in a segment of this test's own, to damage at will."""

    def __init__(self, source: str, number: int) -> None:
        seg = Segment.attach(source, KIND_CHECKPOINT)
        try:
            self.data = bytes(seg.buf[: HEADER_SIZE + seg.capacity])
        finally:
            seg.close()
        self.number = number
        self.made: list[Segment] = []

    def make(self, data: bytes | None = None, number: int | None = None) -> str:
        data = self.data if data is None else data
        number = self.number if number is None else number
        name = f"ptg_{os.getpid()}_{secrets.token_hex(3)}_k{number}"
        seg = Segment.create(name, KIND_CHECKPOINT, len(data) - HEADER_SIZE, track=False)
        seg.buf[: len(data)] = data
        self.made.append(seg)
        return name

    def damaged(self, offset: int, value: bytes) -> str:
        data = bytearray(self.data)
        data[offset : offset + len(value)] = value
        return self.make(bytes(data))

    def close(self) -> None:
        for seg in self.made:
            seg.unlink()
            seg.close()


@pytest.fixture
def checkpoint_copy() -> Iterator[tuple[Copy, list[dict[str, Any]]]]:
    with papertiger.serve() as server:
        with papertiger.use_namespace("damage"):
            made = [
                CheckoutSessions.insert({"customer": f"cus_{i % 3}", "i": i}) for i in range(30)
            ]
        current_client().request(["checkpoint"])
        number, _ = _pointer(server)
        copy = Copy(f"{server.control[:-2]}_k{number}", number)
    try:
        yield copy, made
    finally:
        copy.close()


IMAGE_AT = HEADER_SIZE + CHECKPOINT_POS.size


def _first_block(copy: Copy) -> int:
    """The offset (in the segment) of the image's first partition block."""
    fields = IMAGE.unpack_from(copy.data, IMAGE_AT)
    dir_off = fields[7]
    return IMAGE_AT + int.from_bytes(
        copy.data[IMAGE_AT + dir_off : IMAGE_AT + dir_off + 8], "little"
    )


def test_an_intact_copy_reads_back(checkpoint_copy: tuple[Copy, list[dict[str, Any]]]) -> None:
    copy, made = checkpoint_copy
    image, _, _ = attach_checkpoint(copy.make(), copy.number)
    try:
        part = image.partition(TABLE, ("damage",))
        assert part is not None and part.n == len(made)
        for record in made:
            assert msgpack.unpackb(part.get(record["id"])) == record
    finally:
        image.close()


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "segment magic",
        "unfinished",
        "generation",
        "image magic",
        "image header",
        "table list",
        "image length",
    ],
)
def test_a_damaged_or_truncated_checkpoint_is_refused_on_attach(
    checkpoint_copy: tuple[Copy, list[dict[str, Any]]], damage: str
) -> None:
    copy, _ = checkpoint_copy
    data = copy.data
    number = copy.number
    _, _, _, capacity, length, generation, _ = HEADER.unpack_from(data, 0)
    tables_off = IMAGE.unpack_from(data, IMAGE_AT)[10]
    if damage == "truncated":  # the file is shorter than its header says
        name = copy.make()
        os.truncate(f"/dev/shm/{name}", HEADER_SIZE + capacity // 2)
    elif damage == "segment magic":
        name = copy.damaged(0, b"XXXXXXXX")
    elif damage == "unfinished":  # the writer never sealed it: length 0
        name = copy.damaged(24, (0).to_bytes(8, "little"))
    elif damage == "generation":  # a checkpoint published under another number
        name = copy.make(number=generation + 1)
        number = generation + 1
    elif damage == "image magic":
        name = copy.damaged(IMAGE_AT, b"NOTANIMG")
    elif damage == "image header":  # one byte of next_ord
        name = copy.damaged(IMAGE_AT + 32, bytes([data[IMAGE_AT + 32] ^ 0x40]))
    elif damage == "table list":
        at = IMAGE_AT + tables_off + 2
        name = copy.damaged(at, bytes([data[at] ^ 0x01]))
    else:  # the image claims more than the segment holds
        name = copy.damaged(IMAGE_AT + 16, (length * 2).to_bytes(8, "little"))
    with pytest.raises(StoreError) as caught:
        attach_checkpoint(name, number)
    message = str(caught.value)
    assert name in message, message
    assert any(w in message for w in ("damaged", "truncated", "not a papertiger segment")), message


def test_damage_inside_the_image_is_found_where_it_is_read(
    checkpoint_copy: tuple[Copy, list[dict[str, Any]]],
) -> None:
    """A damaged partition block fails when the partition is first used, a damaged record
    when it is read (never as another record's bytes); the rest keeps reading."""
    copy, made = checkpoint_copy
    block = _first_block(copy)
    key_off = BLOCK.unpack_from(copy.data, block)[BLOCK_FIELDS + BLOCK_AREAS.index("key")]
    # the partition's key: its block checksum no longer matches
    image, _, _ = attach_checkpoint(copy.damaged(block + key_off + 3, b"\xff"), copy.number)
    try:
        with pytest.raises(StoreError, match=r"checksum|unreadable"):
            image.partition(TABLE, ("damage",))
    finally:
        image.close()
    # one record's bytes: that record fails, every other one reads back
    image, _, _ = attach_checkpoint(copy.make(), copy.number)
    part = image.partition(TABLE, ("damage",))
    assert part is not None
    victim = made[7]["id"]
    p = part.find(victim)
    start, idx_len, rec_len = part._check(p)
    image.close()
    at = IMAGE_AT + start + idx_len + rec_len // 2
    image, _, _ = attach_checkpoint(copy.damaged(at, bytes([copy.data[at] ^ 0x20])), copy.number)
    try:
        part = image.partition(TABLE, ("damage",))
        assert part is not None
        with pytest.raises(StoreError, match="checksum"):
            part.get(victim)
        for record in made:
            if record["id"] != victim:
                assert msgpack.unpackb(part.get(record["id"])) == record
    finally:
        image.close()


def test_a_reader_refuses_a_published_checkpoint_that_is_damaged() -> None:
    """End to end: a new process cannot use a damaged checkpoint and says so; once the
    manager publishes the next one, new processes read again."""
    with papertiger.serve() as server:
        with papertiger.use_namespace("e2e"):
            made = CheckoutSessions.insert({"customer": "cus_1"})
        current_client().request(["checkpoint"])
        with papertiger.use_namespace("e2e"):
            CheckoutSessions.count()  # this process attaches the checkpoint while it is whole
        number, _ = _pointer(server)
        name = f"{server.control[:-2]}_k{number}"
        with open(f"/dev/shm/{name}", "r+b") as f:  # the image header's magic
            f.seek(IMAGE_AT)
            f.write(b"NOTANIMG")
        env = dict(os.environ, PAPERTIGER_NAMESPACE="e2e")
        code = (
            "import papertiger\nfrom papertiger.store import CheckoutSessions\n"
            f"try:\n    print(CheckoutSessions.get({made['id']!r})['id'])\n"
            "except papertiger.StoreError as exc:\n    print('StoreError:', exc)\n"
        )

        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WAIT
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("StoreError:"), out.stdout + out.stderr
        assert name in out.stdout and "damaged" in out.stdout
        # the manager and readers already attached are unaffected, and the next
        # checkpoint heals new readers
        with papertiger.use_namespace("e2e"):
            assert CheckoutSessions.get(made["id"]) == made
        current_client().request(["checkpoint"])
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=WAIT
        )
        assert out.stdout.strip() == made["id"], out.stdout + out.stderr
