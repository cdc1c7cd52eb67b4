"""Writes through the Store API on every backend: bad input changes nothing, batches are
all or nothing, generated fields are filled in.

Every bad input is an :class:`InvalidRequest` whose ``param`` is the path of the
field at fault and whose message says what was expected; after a rejected call
the store is exactly as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from bad_records import BAD_IDS, BAD_RECORDS, ID_RE, Expected, says
from papertiger.backends import redis as redis_backend
from papertiger.backends import shm as shm_backend
from papertiger.errors import AlreadyExists, InvalidRequest, NotFound
from papertiger.store import CheckoutSessions


def snapshot() -> tuple[list[dict[str, Any]], int]:
    return CheckoutSessions.list_namespace(), CheckoutSessions.count()


@pytest.fixture
def seeded(fresh_namespace: str) -> dict[str, Any]:
    first = CheckoutSessions.insert({"customer": "cus_1", "metadata": {"k": "v"}})
    CheckoutSessions.insert({"customer": "cus_2"})
    return first


CALLS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "insert": lambda rec, seeded: CheckoutSessions.insert(rec),
    "upsert": lambda rec, seeded: CheckoutSessions.upsert(rec),
    "update": lambda rec, seeded: CheckoutSessions.update(
        {"id": seeded["id"], **rec} if isinstance(rec, dict) and "id" not in rec else rec
    ),
    "insert_many": lambda rec, seeded: CheckoutSessions.insert_many(
        [{"amount_total": 1}, rec, {"amount_total": 2}]
    ),
}


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize(("record", "param", "expected"), BAD_RECORDS, ids=BAD_IDS)
def test_rejected_writes_change_nothing(
    seeded: dict[str, Any], call: str, record: Any, param: str, expected: Expected
) -> None:
    before = snapshot()
    with pytest.raises(InvalidRequest) as info:
        CALLS[call](record, seeded)
    assert info.value.param == param
    assert says(info.value.message, expected)
    if call == "insert_many":
        assert "records[1]" in info.value.message and "Nothing was inserted" in info.value.message
    assert snapshot() == before


def test_generated_fields_through_the_api(fresh_namespace: str) -> None:
    before = int(time.time())
    one = CheckoutSessions.insert({"customer": "cus_1"})
    many = CheckoutSessions.insert_many([{}, {"object": "custom"}])
    upserted = CheckoutSessions.upsert({})
    for record in [one, *many, upserted]:
        assert ID_RE.match(record["id"]), record["id"]
        assert type(record["created"]) is int and before <= record["created"] <= time.time()
        assert CheckoutSessions.get(record["id"]) == record
    assert one["object"] == many[0]["object"] == "checkout.session"
    assert many[1]["object"] == "custom"
    assert len({r["id"] for r in [one, *many, upserted]}) == 4


def test_insert_many_with_a_duplicate_inserts_nothing(seeded: dict[str, Any]) -> None:
    before = snapshot()
    with pytest.raises(AlreadyExists) as info:
        CheckoutSessions.insert_many([{"amount_total": 1}, {"id": seeded["id"]}])
    assert "records[1]" in info.value.message and info.value.param == "id"
    assert snapshot() == before
    with pytest.raises(AlreadyExists) as info:
        CheckoutSessions.insert_many([{"id": "cs_twice"}, {"amount_total": 1}, {"id": "cs_twice"}])
    assert "twice in this batch" in info.value.message
    assert snapshot() == before
    with pytest.raises(InvalidRequest) as ir:
        CheckoutSessions.insert_many(cast(Any, {"id": "cs_x"}))
    assert ir.value.param == "records"
    assert snapshot() == before
    made = CheckoutSessions.insert_many([{"amount_total": 1}, {"amount_total": 2}])
    assert CheckoutSessions.count() == before[1] + 2
    assert [CheckoutSessions.get(r["id"]) for r in made] == made


def test_large_insert_many_is_all_or_nothing_across_chunks(
    seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches larger than one chunk travel in pieces; they still land whole or not at all."""
    monkeypatch.setattr(shm_backend, "BATCH_CHUNK", 50)
    monkeypatch.setattr(redis_backend, "BATCH_CHUNK", 50)
    n = 50 * 4 + 7
    before = snapshot()

    def batch() -> list[dict[str, Any]]:
        return [{"n": i, "created": 1} for i in range(n)]

    bad = batch()
    bad[n - 5] = {"metadata": {"x": object()}}  # in the last chunk
    with pytest.raises(InvalidRequest) as info:
        CheckoutSessions.insert_many(bad)
    assert info.value.param == "metadata.x" and f"records[{n - 5}]" in info.value.message
    assert snapshot() == before

    existing = batch()
    existing[n - 3] = {"id": seeded["id"]}
    with pytest.raises(AlreadyExists):
        CheckoutSessions.insert_many(existing)
    assert snapshot() == before

    twice = batch()
    twice[3] = {"id": "cs_twice_far"}
    twice[n - 1] = {"id": "cs_twice_far"}
    with pytest.raises(AlreadyExists):
        CheckoutSessions.insert_many(twice)
    assert snapshot() == before

    made = CheckoutSessions.insert_many(batch())
    assert CheckoutSessions.count() == before[1] + n
    batch_part = [r for r in CheckoutSessions.list_namespace() if r["created"] == 1]
    assert batch_part == list(reversed(made))  # later insert first, as if inserted one by one


def test_rejected_patch_changes_nothing(seeded: dict[str, Any]) -> None:
    rid = seeded["id"]
    before = snapshot()
    cases: list[tuple[Any, str]] = [
        ({"metadata": {"x": object()}}, "changes.metadata.x"),
        ({"metadata": {1: "x"}}, "changes.metadata"),
        ({"created": "yesterday"}, "created"),
        ({"created": 1.5}, "created"),
        ({"id": "cs_other"}, "id"),
        (["not", "a", "dict"], "changes"),
    ]
    for changes, param in cases:
        with pytest.raises(InvalidRequest) as info:
            CheckoutSessions.patch(rid, changes)
        assert info.value.param == param, changes
        assert snapshot() == before
    with pytest.raises(NotFound):
        CheckoutSessions.patch("cs_missing", {"a": 1})
    assert snapshot() == before


@pytest.mark.parametrize("bad", [5, None, b"cs_1", ""])
def test_bad_ids_on_reads_and_deletes(seeded: dict[str, Any], bad: Any) -> None:
    before = snapshot()
    calls: list[Callable[[Any], Any]] = [
        CheckoutSessions.delete,
        lambda rid: CheckoutSessions.patch(rid, {"a": 1}),
    ]
    if bad != "":  # get("") is simply not found
        calls.append(CheckoutSessions.get)
    for call in calls:
        with pytest.raises(InvalidRequest) as info:
            call(bad)
        assert info.value.param == "id"
        assert "expected an object id" in info.value.message or "1 to 255" in info.value.message
    assert snapshot() == before
