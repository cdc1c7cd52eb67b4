"""The store across real processes: read-after-write, isolation, concurrency, crashes.

Children are real processes started with ``multiprocess`` under both the
``fork`` and the ``spawn`` start method.  Each runs a snippet of code (given to
:func:`exec`, so a spawned child needs nothing importable from this file) and
talks to the test over a pipe: the test hands it work right after a write
returned, so "visible as soon as the write returned" is checked with no sleeps.
"""

from __future__ import annotations

import os
import signal
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import multiprocess
import pytest

import papertiger
from papertiger.engine.connection import current_client
from papertiger.engine.shm import list_segments, pid_alive
from papertiger.store import CheckoutSessions
from support import settle, wait_dead

METHODS = ["fork", "spawn"]
WAIT = 60.0  # generous bound for a child's answer on a loaded 2-core machine

PRELUDE = """
import os, signal, time
import papertiger
from papertiger.store import CheckoutSessions
from papertiger.engine.connection import current_client
"""


class Child:
    """A process running ``code`` with ``conn`` (its end of a pipe) and ``names`` in scope."""

    def __init__(self, method: str, code: str, **names: Any) -> None:
        ctx = multiprocess.get_context(method)
        self.conn, child_conn = ctx.Pipe()
        body = textwrap.indent(PRELUDE + textwrap.dedent(code), "    ")
        wrapped = (
            "import traceback\ntry:\n"
            f"{body}\n"
            "except BaseException:\n"
            "    conn.send({'child_error': traceback.format_exc()})\n"
            "    raise\n"
        )
        scope = {"__name__": "__ptg_child__", "conn": child_conn, **names}
        self.proc = ctx.Process(target=exec, args=(wrapped, scope), daemon=True)
        self.proc.start()
        child_conn.close()

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    def recv(self) -> Any:
        assert self.conn.poll(WAIT), "the child did not answer"
        msg = self.conn.recv()
        if isinstance(msg, dict) and "child_error" in msg:
            raise AssertionError("the child failed:\n" + msg["child_error"])
        return msg

    def send(self, msg: Any) -> None:
        self.conn.send(msg)

    def join(self) -> int | None:
        self.proc.join(WAIT)
        return self.proc.exitcode  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.proc.is_alive():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.join(WAIT)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Children a test starts; whatever is still running at the end is killed."""
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()
        child.conn.close()


def spawn(children: list[Child], method: str, code: str, **names: Any) -> Child:
    child = Child(method, code, **names)
    children.append(child)
    return child


def prefix_of(server: papertiger.Server) -> str:
    return server.control[:-2]


def segments_of(server: papertiger.Server) -> set[str]:
    return set(list_segments(prefix_of(server) + "_"))


# -- read-after-write --------------------------------------------------------------------------

READER = """
with papertiger.use_namespace(ns):
    conn.send(CheckoutSessions.count())  # warm: attached before the writes
    while (msg := conn.recv()) is not None:
        rid, customer = msg
        conn.send({
            "get": CheckoutSessions.get(rid),
            "top": [r["id"] for r in CheckoutSessions.list(limit=1)],
            "count": CheckoutSessions.count(),
            "find": [r["id"] for r in CheckoutSessions.find_by_customer(customer)],
        })
"""


@pytest.mark.parametrize("method", METHODS)
def test_reader_sees_a_write_as_soon_as_it_returned(
    fresh_namespace: str, children: list[Child], method: str
) -> None:
    reader = spawn(children, method, READER, ns=fresh_namespace)
    assert reader.recv() == 0
    by_customer: dict[str, list[str]] = {}
    for i in range(60):
        customer = f"cus_{i % 3}"
        s = CheckoutSessions.insert({"customer": customer, "created": 1_700_000_000, "n": i})
        by_customer.setdefault(customer, []).insert(0, s["id"])
        reader.send((s["id"], customer))  # right after insert returned
        seen = reader.recv()
        assert seen == {"get": s, "top": [s["id"]], "count": i + 1, "find": by_customer[customer]}
    reader.send(None)
    assert reader.join() == 0


WRITER = """
with papertiger.use_namespace(ns):
    for i in range(40):
        s = CheckoutSessions.insert({"customer": "cus_w", "created": 1_700_000_000, "n": i})
        conn.send(s)  # insert returned: the parent reads now
        assert conn.recv() == "next"
"""


@pytest.mark.parametrize("method", METHODS)
def test_a_write_in_a_child_is_visible_here_when_it_returns(
    fresh_namespace: str, children: list[Child], method: str
) -> None:
    assert CheckoutSessions.count() == 0  # this process's replica is warm
    writer = spawn(children, method, WRITER, ns=fresh_namespace)
    ids: list[str] = []
    for i in range(40):
        s = writer.recv()
        ids.insert(0, s["id"])
        assert CheckoutSessions.get(s["id"]) == s
        assert CheckoutSessions.count() == i + 1
        assert CheckoutSessions.list(limit=1).data == [s]
        assert [r["id"] for r in CheckoutSessions.find_by_customer("cus_w")] == ids
        writer.send("next")
    assert writer.join() == 0


# -- isolation across processes ----------------------------------------------------------------


def test_two_namespaces_holding_the_same_id_stay_apart(
    fresh_namespace: str, children: list[Child]
) -> None:
    a, b = f"{fresh_namespace}-a", f"{fresh_namespace}-b"
    child = spawn(
        children,
        "fork",
        """
        with papertiger.use_namespace(a):
            conn.send(CheckoutSessions.insert({"id": "cs_same", "amount_total": 1}))
        assert conn.recv() == "look"
        views = {}
        for ns in (a, b):
            with papertiger.use_namespace(ns):
                views[ns] = (CheckoutSessions.get("cs_same"), CheckoutSessions.count())
        conn.send(views)
        """,
        a=a,
        b=b,
    )
    in_a = child.recv()
    with papertiger.use_namespace(b):
        in_b = CheckoutSessions.insert({"id": "cs_same", "amount_total": 2})  # no AlreadyExists
    child.send("look")
    assert child.recv() == {a: (in_a, 1), b: (in_b, 1)}
    with papertiger.use_namespace(a):
        assert CheckoutSessions.get("cs_same")["amount_total"] == 1
        CheckoutSessions.delete("cs_same")
    with papertiger.use_namespace(b):
        assert CheckoutSessions.get("cs_same") == in_b
    assert child.join() == 0


def test_clear_namespace_removes_nested_namespaces_seen_from_another_process(
    fresh_namespace: str, children: list[Child]
) -> None:
    places = [(fresh_namespace, "a"), (fresh_namespace, "a", "acct_1"), (fresh_namespace, "ab")]
    for ns in places:
        with papertiger.use_namespace(ns):
            CheckoutSessions.insert({"customer": "cus_1"})
    child = spawn(
        children,
        "spawn",
        """
        def counts():
            out = []
            for ns in places:
                with papertiger.use_namespace(ns):
                    found = CheckoutSessions.find_by_customer("cus_1")
                    out.append((CheckoutSessions.count(), len(found)))
            return out
        conn.send(counts())
        assert conn.recv() == "cleared"
        conn.send(counts())
        """,
        places=places,
    )
    assert child.recv() == [(1, 1), (1, 1), (1, 1)]
    CheckoutSessions.clear_namespace((fresh_namespace, "a"))
    child.send("cleared")
    assert child.recv() == [(0, 0), (0, 0), (1, 1)]
    assert child.join() == 0


# -- concurrent writers --------------------------------------------------------------------------

BULK_WRITER = """
with papertiger.use_namespace(ns):
    conn.send("ready")
    go.wait()
    for i in range(n):
        CheckoutSessions.insert({"id": f"cs_w{k}_{i:05d}", "customer": f"cus_{k}"})
    conn.send(CheckoutSessions.count())
"""


def test_four_writers_lose_nothing(fresh_namespace: str, children: list[Child]) -> None:
    n = 2000
    go = multiprocess.get_context("spawn").Event()
    writers = [
        spawn(children, method, BULK_WRITER, ns=fresh_namespace, k=k, n=n, go=go)
        for k, method in enumerate(["fork", "spawn", "fork", "spawn"])
    ]
    for w in writers:
        assert w.recv() == "ready"
    go.set()  # all four write at once
    for w in writers:
        assert w.recv() >= n  # each sees at least its own records
        assert w.join() == 0
    assert CheckoutSessions.count() == 4 * n
    expected = {f"cs_w{k}_{i:05d}" for k in range(4) for i in range(n)}
    assert {r["id"] for r in CheckoutSessions.list_namespace()} == expected
    for k in range(4):
        assert len(CheckoutSessions.find_by_customer(f"cus_{k}")) == n


# -- readers that go away -----------------------------------------------------------------------

ATTACHED_READER = """
from multiprocess import resource_tracker
with papertiger.use_namespace(ns):
    got = CheckoutSessions.get(rid)
    conn.send({"got": got, "tracker": resource_tracker._resource_tracker._pid})
if how == "sigkill":
    time.sleep(600)  # until killed
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_a_reader_that_exits_or_is_killed_leaves_the_segments(
    store: papertiger.Server, fresh_namespace: str, children: list[Child], how: str
) -> None:
    s = CheckoutSessions.insert({"customer": "cus_1"})
    settle(store)  # the manager's idle checkpoint, if one is due, comes first
    before = segments_of(store)
    assert store.control in before and len(before) >= 3  # control, a log, a checkpoint
    reader = spawn(children, "spawn", ATTACHED_READER, ns=fresh_namespace, rid=s["id"], how=how)
    msg = reader.recv()
    assert msg["got"] == s
    if how == "sigkill":
        os.kill(reader.pid, signal.SIGKILL)
        reader.proc.join(WAIT)
        assert reader.proc.exitcode == -signal.SIGKILL
    else:
        assert reader.join() == 0
    wait_dead(msg["tracker"])  # had the reader a resource tracker, it is done now
    assert segments_of(store) == before
    # the store keeps working, for this process and for a new one
    t = CheckoutSessions.insert({"customer": "cus_1"})
    assert [r["id"] for r in CheckoutSessions.find_by_customer("cus_1")] == [t["id"], s["id"]]
    again = spawn(children, "spawn", ATTACHED_READER, ns=fresh_namespace, rid=t["id"], how="exit")
    assert again.recv()["got"] == t
    assert again.join() == 0


# -- a reader idle through several checkpoints ---------------------------------------------

IDLE_READER = """
with papertiger.use_namespace(ns):
    replica = current_client().replica
    conn.send({"count": CheckoutSessions.count(), "reloads": replica.reader.reloads,
               "segment": replica.reader.number})
    assert conn.recv() == "read"
    conn.send({
        "records": CheckoutSessions.list_namespace(),
        "count": CheckoutSessions.count(),
        "find": [r["id"] for r in CheckoutSessions.find_by_customer("cus_even")],
        "page": [r["id"] for r in CheckoutSessions.list(limit=5, starting_after=first)],
        "nested": CheckoutSessions.list_namespace((ns, "acct")),
        "reloads": replica.reader.reloads,
        "segment": replica.reader.number,
    })
"""


@pytest.mark.parametrize("method", METHODS)
def test_an_idle_reader_catches_up_through_checkpoints(children: list[Child], method: str) -> None:
    ns = f"idle-{os.getpid()}"
    with papertiger.serve(segment_bytes=64 * 1024, checkpoint_bytes=64 * 1024) as server:
        with papertiger.use_namespace(ns):
            records = [
                CheckoutSessions.insert(
                    {"created": i % 4, "customer": "cus_even" if i % 2 == 0 else "cus_odd"}
                )
                for i in range(40)
            ]
        first_seen = records[0]["id"]
        reader = spawn(children, method, IDLE_READER, ns=ns, first=first_seen)
        warm = reader.recv()
        assert warm["count"] == 40 and warm["segment"] == 0

        # The reader idles while ~400 KB of log and several checkpoints go by.  Most
        # writes are inserts and deletes of records never written again, so an
        # effect a checkpoint left out could not be healed by a later one.
        model = {r["id"]: (i, r) for i, r in enumerate(records)}
        n = len(records)
        with papertiger.use_namespace(ns):
            for round_ in range(30):
                fresh = []
                for j in range(10):
                    customer = "cus_even" if j % 2 == 0 else "cus_odd"
                    record = {"created": round_ % 4, "customer": customer, "blob": "x" * 1000}
                    made = CheckoutSessions.insert(record)
                    model[made["id"]] = (n, made)
                    n += 1
                    fresh.append(made["id"])
                for rid in fresh[:7]:
                    CheckoutSessions.delete(rid)
                    del model[rid]
                rid = list(model)[round_]
                model[rid] = (model[rid][0], CheckoutSessions.patch(rid, {f"r{round_}": 1}))
                with papertiger.use_namespace((ns, "acct")):
                    CheckoutSessions.insert({"round": round_})
                if round_ % 3 == 0:
                    CheckoutSessions.clear_namespace((ns, "acct"))
            with papertiger.use_namespace((ns, "acct")):
                nested = CheckoutSessions.list_namespace()
        stats = server.stats()["log"]
        assert stats["checkpoint_count"] >= 5, stats
        assert f"{prefix_of(server)}_l0" not in segments_of(server)  # retired
        assert f"{prefix_of(server)}_l1" not in segments_of(server)

        reader.send("read")
        seen = reader.recv()
        ordered = [r for _, r in sorted(model.values(), key=lambda p: (p[1]["created"], p[0]))]
        ordered.reverse()
        assert seen["records"] == ordered
        assert seen["count"] == len(ordered)
        assert seen["find"] == [r["id"] for r in ordered if r["customer"] == "cus_even"]
        at = [r["id"] for r in ordered].index(first_seen)
        assert seen["page"] == [r["id"] for r in ordered[at + 1 : at + 6]]
        assert seen["nested"] == nested and len(nested) == 2
        assert seen["reloads"] > warm["reloads"], "the reader never reloaded from a checkpoint"
        assert seen["segment"] > 1
        assert reader.join() == 0
        with papertiger.use_namespace(ns):  # and this process agrees
            assert CheckoutSessions.list_namespace() == ordered
    assert not segments_of(server)


# -- shutdown and crashes of the manager ---------------------------------------------------------


def test_nothing_of_the_manager_is_left_after_it_stops(children: list[Child]) -> None:
    with papertiger.serve(segment_bytes=4096, checkpoint_bytes=4096) as server:
        for i in range(200):
            CheckoutSessions.insert({"n": i, "pad": "x" * 200})
        names = segments_of(server)
        assert server.control in names and len(names) >= 3
        for name in names:
            assert os.stat(f"/dev/shm/{name}").st_mode & 0o777 == 0o600
        # a reader still attached when the store stops does not keep anything alive
        reader = spawn(
            children,
            "fork",
            """
            conn.send(CheckoutSessions.count())
            conn.recv()
            conn.send(CheckoutSessions.count())
            """,
        )
        assert reader.recv() == 200
        address = server.address
    assert not segments_of(server), segments_of(server)
    assert not os.path.exists(address) and not os.path.exists(os.path.dirname(address))
    assert not pid_alive(server.pid)
    reader.send("after stop")
    assert reader.recv() == 200  # its replica still answers for what was published
    assert reader.join() == 0


def test_a_forked_child_does_not_keep_the_manager_alive(children: list[Child]) -> None:
    """The manager follows its owner out on stdin EOF; a fork must not hold that pipe open."""
    with papertiger.serve() as server:
        child = spawn(children, "fork", "conn.send(CheckoutSessions.count()); conn.recv()")
        assert child.recv() == 0
        proc = server.process.proc
        assert proc.stdin is not None
        proc.stdin.close()  # what the owner's exit (even a SIGKILL) amounts to
        assert proc.wait(WAIT) == 0, "the manager did not stop cleanly on EOF"
        child.send("bye")
        assert child.join() == 0
    assert not segments_of(server)


def test_a_killed_manager_makes_writes_fail_and_reads_keep_working(
    children: list[Child],
) -> None:
    with papertiger.serve() as server, papertiger.use_namespace("doomed"):
        made = [CheckoutSessions.insert({"customer": "cus_1", "n": i}) for i in range(5)]
        assert CheckoutSessions.count() == 5
        # a child attached before the crash keeps reading, too
        reader = spawn(
            children,
            "fork",
            """
            with papertiger.use_namespace("doomed"):
                conn.send(CheckoutSessions.count())
                conn.recv()
                conn.send([r["id"] for r in CheckoutSessions.list_namespace()])
            """,
        )
        assert reader.recv() == 5
        os.kill(server.pid, signal.SIGKILL)
        server.process.proc.wait()

        outcome: list[BaseException | None] = []

        def write() -> None:
            try:
                CheckoutSessions.insert({"after": "death"})
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        thread.join(WAIT)
        assert not thread.is_alive(), "a write to a dead manager hung"
        assert isinstance(outcome[0], papertiger.StoreUnavailable), outcome
        assert isinstance(outcome[0], ConnectionError)
        for call in (
            lambda: CheckoutSessions.patch(made[0]["id"], {"x": 1}),
            lambda: CheckoutSessions.delete(made[0]["id"]),
            lambda: CheckoutSessions.clear_namespace(),
        ):
            with pytest.raises(papertiger.StoreUnavailable):
                call()
        # reads of what was published keep working from the replica
        assert CheckoutSessions.get(made[0]["id"]) == made[0]
        assert CheckoutSessions.count() == 5
        assert CheckoutSessions.list().data == list(reversed(made))
        assert len(CheckoutSessions.find_by_customer("cus_1")) == 5
        reader.send("read")
        assert sorted(reader.recv()) == sorted(r["id"] for r in made)
        assert reader.join() == 0
        assert current_client().replica.stopped() is False  # it died; it did not stop
    assert not segments_of(server)
