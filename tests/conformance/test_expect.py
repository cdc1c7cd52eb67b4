"""Conditional patches (``patch(id, changes, expect=...)``) on every backend.

A conditional patch applies only when every expected top-level field holds
its expected value (absent counts as None), checked atomically with the
write; otherwise it raises :class:`~papertiger.Conflict` naming the first
field that differs and the record stays byte for byte as it was.  The race
test runs real processes, as the processes of a test run are: of several
that all try to move the same records out of ``open``, exactly one wins each.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import papertiger
from papertiger.backends import current_backend
from papertiger.errors import Conflict, InvalidRequest, NotFound
from papertiger.store import CheckoutSessions
from support import BackendUnderTest

WAIT = 120.0


def stored_bytes(record_id: str) -> bytes | None:
    """The record exactly as the backend holds it."""
    return current_backend().get(CheckoutSessions.spec, papertiger.current_namespace(), record_id)


def snapshot() -> tuple[list[dict[str, Any]], int]:
    return CheckoutSessions.list_namespace(), CheckoutSessions.count()


@pytest.fixture
def session(fresh_namespace: str) -> dict[str, Any]:
    CheckoutSessions.insert({"customer": "cus_other", "status": "open"})  # a neighbour
    return CheckoutSessions.insert(
        {"customer": "cus_1", "status": "open", "mode": "payment", "metadata": {"k": "v"}}
    )


def test_a_patch_whose_expectation_holds_applies(session: dict[str, Any]) -> None:
    sid = session["id"]
    merged = CheckoutSessions.patch(
        sid,
        {"status": "complete", "metadata": {"paid": "yes"}},
        expect={"status": "open", "mode": "payment", "metadata": {"k": "v"}},
    )
    assert merged["status"] == "complete"
    assert merged["metadata"] == {"k": "v", "paid": "yes"}  # changes still merge
    assert CheckoutSessions.get(sid) == merged
    assert [r["id"] for r in CheckoutSessions.list(status="complete")] == [sid]
    # an empty expectation holds vacuously
    assert CheckoutSessions.patch(sid, {"note": 1}, expect={})["note"] == 1


def test_a_patch_whose_expectation_fails_raises_conflict_and_changes_nothing(
    session: dict[str, Any],
) -> None:
    sid = session["id"]
    CheckoutSessions.patch(sid, {"status": "expired"})
    before_bytes, before = stored_bytes(sid), snapshot()
    with pytest.raises(Conflict) as info:
        CheckoutSessions.patch(
            sid,
            {"status": "complete", "metadata": {"paid": "yes"}},
            expect={"mode": "payment", "status": "open", "customer": "cus_nobody"},
        )
    error = info.value
    assert isinstance(error, InvalidRequest) and isinstance(error, papertiger.StoreError)
    assert error.param == "status"  # the first field that differs, in expect's order
    for part in (sid, "'status'", "'expired'", "'open'", "re-read"):
        assert part in error.message, part
    assert stored_bytes(sid) == before_bytes
    assert snapshot() == before
    assert [r["id"] for r in CheckoutSessions.list(status="expired")] == [sid]


def test_an_absent_field_compares_as_none(session: dict[str, Any]) -> None:
    sid = session["id"]
    assert "paid_at" not in session
    merged = CheckoutSessions.patch(sid, {"paid_at": 5}, expect={"paid_at": None})
    assert merged["paid_at"] == 5
    # stored None and absent are the same to expect
    CheckoutSessions.patch(sid, {"refunded_at": None})
    assert CheckoutSessions.patch(sid, {"x": 1}, expect={"refunded_at": None})["x"] == 1

    before_bytes = stored_bytes(sid)
    with pytest.raises(Conflict) as info:
        CheckoutSessions.patch(sid, {"x": 2}, expect={"cancelled_at": 7})
    assert info.value.param == "cancelled_at"
    assert "absent" in info.value.message and "7" in info.value.message
    with pytest.raises(Conflict) as info:
        CheckoutSessions.patch(sid, {"x": 2}, expect={"paid_at": None})
    assert info.value.param == "paid_at" and "5" in info.value.message
    assert stored_bytes(sid) == before_bytes


@pytest.mark.parametrize(
    "expect",
    [
        ["status"],
        "status",
        {1: "open"},
        {"status": object()},
        {"metadata": {"k": {2: "v"}}},
        {"big": 2**70},
    ],
    ids=["list", "str", "int-key", "object-value", "nested-int-key", "big-int"],
)
def test_a_malformed_expect_is_refused(session: dict[str, Any], expect: Any) -> None:
    sid = session["id"]
    before_bytes, before = stored_bytes(sid), snapshot()
    with pytest.raises(InvalidRequest) as info:
        CheckoutSessions.patch(sid, {"status": "complete"}, expect=expect)
    assert not isinstance(info.value, Conflict)
    assert info.value.param == "expect"
    assert info.value.message.startswith("Invalid expect")
    assert stored_bytes(sid) == before_bytes
    assert snapshot() == before


def test_changes_are_checked_as_without_expect(session: dict[str, Any]) -> None:
    sid = session["id"]
    before = snapshot()
    with pytest.raises(InvalidRequest) as info:
        CheckoutSessions.patch(sid, {"id": "cs_other"}, expect={"status": "complete"})
    assert not isinstance(info.value, Conflict) and info.value.param == "id"
    with pytest.raises(InvalidRequest) as info:
        CheckoutSessions.patch(sid, {"created": "soon"}, expect={"status": "open"})
    assert info.value.param == "created"
    with pytest.raises(NotFound):
        CheckoutSessions.patch("cs_missing", {"a": 1}, expect={"status": "open"})
    assert snapshot() == before


# -- the race ------------------------------------------------------------------------------

CHILD = """
import json, os, sys, time
import papertiger
from papertiger.store import CheckoutSessions

ns, k, go, ids = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
with papertiger.use_namespace(ns):
    CheckoutSessions.count()  # connected before the start, so all start at once
open(go + f".ready-{k}", "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
won = []
with papertiger.use_namespace(ns):
    for rid in ids if k % 2 == 0 else reversed(ids):
        try:
            CheckoutSessions.patch(rid, {"status": f"w{k}"}, expect={"status": "open"})
        except papertiger.Conflict as exc:
            assert exc.param == "status", exc
        else:
            won.append(rid)
print(json.dumps(won))
"""


def run_racers(backend: BackendUnderTest, tmp_path: Path, ids: list[str], k: int) -> list[Any]:
    """Start ``k`` children that each try to move every record out of ``open``, at once.

    Returns what each printed: the ids it won.
    """
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, backend.namespace, str(i), str(go), ",".join(ids)],
            env=backend.child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(k)
    ]
    try:
        deadline = time.monotonic() + WAIT
        while len(list(tmp_path.glob("go.ready-*"))) < k:
            assert time.monotonic() < deadline, "the children did not start"
            assert all(c.poll() is None for c in children), children[0].communicate()
            time.sleep(0.01)
        go.touch()  # all at once
        results = []
        for child in children:
            out, err = child.communicate(timeout=WAIT)
            assert child.returncode == 0, err
            results.append(json.loads(out))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_racing_processes_each_record_has_exactly_one_winner(
    backend: BackendUnderTest, fresh_namespace: str, tmp_path: Path
) -> None:
    records = CheckoutSessions.insert_many([{"status": "open"} for _ in range(50)])
    ids = [r["id"] for r in records]
    racers = 4
    won = run_racers(backend, tmp_path, ids, racers)
    winner: dict[str, int] = {}
    for k, ids_won in enumerate(won):
        for rid in ids_won:
            assert rid not in winner, f"{rid} won by w{winner[rid]} and w{k}"
            winner[rid] = k
    assert sorted(winner) == sorted(ids)  # every record moved on exactly once
    for rid in ids:
        assert CheckoutSessions.get(rid)["status"] == f"w{winner[rid]}"
    assert CheckoutSessions.count() == 50
    assert CheckoutSessions.list(status="open").data == []
