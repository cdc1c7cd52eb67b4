"""Validation of records and requests: the pure functions, then the real Store API.

Every bad input is an :class:`InvalidRequest` whose ``param`` is the path of the
field at fault (``metadata.x``, ``line_items[2].price``) and whose message says
what was expected; after a rejected call the store is exactly as before.
"""

from __future__ import annotations

import collections
import datetime
import re
import time
import types
from collections.abc import Callable
from typing import Any, cast

import msgpack
import pytest

import papertiger
from papertiger.backends.shm import BATCH_CHUNK
from papertiger.core.records import ID_ALPHABET, merge_changes, pack_value, prepare_record
from papertiger.engine.connection import current_client
from papertiger.errors import AlreadyExists, InvalidRequest, NotFound
from papertiger.store import CheckoutSessions

ID_RE = re.compile(r"^cs_[A-Za-z0-9]{24}$")
EXPECTED = "use None, bool, int, float, str, bytes, list or a dict with str keys"
#: what a message about a non-str key must say (the key, and that keys must be str)
STR_KEYS = re.compile(r"must be a str|with str keys")

# (record, param, what the message must say: a fragment or a pattern)
BAD_RECORDS: list[tuple[Any, str, str | re.Pattern[str]]] = [
    ([("id", "x")], "record", "expected a dict"),
    (None, "record", "expected a dict"),
    ("cs_1", "record", "expected a dict"),
    ({"id": 5}, "id", "expected an object id (a str)"),
    ({"id": None}, "id", "expected an object id (a str)"),
    ({"id": ""}, "id", "1 to 255 characters"),
    ({"id": "x" * 256}, "id", "1 to 255 characters"),
    ({"created": True}, "created", "expected an int"),
    ({"created": 1.0}, "created", "expected an int"),
    ({"created": "1700000000"}, "created", "expected an int"),
    ({"created": None}, "created", "expected an int"),
    ({"created": 2**64}, "created", "expected an int"),
    ({"metadata": {"x": object()}}, "metadata.x", EXPECTED),
    ({"line_items": [{}, {}, {"price": {1, 2}}]}, "line_items[2].price", EXPECTED),
    ({"metadata": {"x": datetime.datetime(2024, 1, 1)}}, "metadata.x", EXPECTED),
    ({"metadata": {"x": 2**64}}, "metadata.x", "outside msgpack's range"),
    ({"metadata": {"x": -(2**63) - 1}}, "metadata.x", "outside msgpack's range"),
    ({"metadata": {"x": 1 + 2j}}, "metadata.x", EXPECTED),
    ({"a": {"b": [1, [2, {"c": frozenset()}]]}}, "a.b[1][1].c", EXPECTED),
    ({"metadata": {1: "a"}}, "metadata", STR_KEYS),
    ({7: "x"}, "record", STR_KEYS),
    ({"a": {"b": [{"c": {(1, 2): "x"}}]}}, "a.b[0].c", STR_KEYS),
    # mappings other than dict, nested: their keys are checked too
    ({"metadata": collections.OrderedDict({1: "a"})}, "metadata", STR_KEYS),
    (
        {"line_items": [collections.OrderedDict({"x": {2: 3}})]},
        "line_items[0].x",
        STR_KEYS,
    ),
    ({"a": (collections.defaultdict(int, {3: 1}),)}, "a[0]", STR_KEYS),
    # values msgpack cannot carry, found where they are
    ({"metadata": types.MappingProxyType({"a": "b"})}, "metadata", EXPECTED),
    ({"metadata": {"x": "\ud800"}}, "metadata.x", "surrogate"),
]


Expected = str | re.Pattern[str]


def says(message: str, expected: Expected) -> bool:
    if isinstance(expected, str):
        return expected in message
    return expected.search(message) is not None


BAD_IDS = [f"{i}-{param}" for i, (_, param, _) in enumerate(BAD_RECORDS)]


@pytest.mark.parametrize(("record", "param", "expected"), BAD_RECORDS, ids=BAD_IDS)
def test_prepare_record_names_the_field(record: Any, param: str, expected: Expected) -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare_record(record, prefix="cs", object_name="checkout.session", index_fields=())
    assert info.value.param == param
    assert says(info.value.message, expected)
    assert f"Invalid {param}" in info.value.message


def test_pack_value_names_the_path_under_its_param() -> None:
    with pytest.raises(InvalidRequest) as info:
        pack_value({"metadata": {"x": object()}}, "changes")
    assert info.value.param == "changes.metadata.x"
    with pytest.raises(InvalidRequest) as info:
        pack_value([1, {2: 3}], "items")
    assert info.value.param == "items[1]"
    with pytest.raises(InvalidRequest) as info:
        pack_value(object(), "metadata")
    assert info.value.param == "metadata"
    assert msgpack.unpackb(pack_value({"a": (1, b"x", None, 1.5)}, "v")) == {
        "a": [1, b"x", None, 1.5]
    }


@pytest.mark.parametrize(
    "value",
    [
        2**64 - 1,
        -(2**63),
        b"\x00bytes",
        float("inf"),
        [1, [2, [3]]],
        {"deep": {"er": {"est": [None, True]}}},
        collections.OrderedDict({"a": collections.OrderedDict({"b": 1})}),
    ],
)
def test_values_msgpack_carries_are_accepted(value: Any) -> None:
    p = prepare_record({"v": value}, prefix="cs", object_name=None, index_fields=())
    assert msgpack.unpackb(p.packed)["v"] == msgpack.unpackb(msgpack.packb(value))


def test_generated_fields() -> None:
    original = {"customer": "cus_1"}
    before = int(time.time())
    made = {
        prepare_record(original, prefix="cs", object_name="checkout.session", index_fields=()).id
        for _ in range(200)
    }
    assert len(made) == 200 and all(ID_RE.match(i) for i in made)
    p = prepare_record(original, prefix="cs", object_name="checkout.session", index_fields=())
    assert original == {"customer": "cus_1"}, "the caller's record was modified"
    assert type(p.created) is int and before <= p.created <= int(time.time())
    assert p.record["object"] == "checkout.session" and p.record["id"] == p.id
    assert msgpack.unpackb(p.packed) == p.record
    kept = prepare_record(
        {"id": "cs_mine", "created": -5, "object": "other"},
        prefix="cs",
        object_name="checkout.session",
        index_fields=(),
    )
    assert (kept.id, kept.created, kept.record["object"]) == ("cs_mine", -5, "other")
    assert set(ID_ALPHABET) == set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def test_require_id() -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare_record({}, prefix="cs", object_name=None, index_fields=(), require_id=True)
    assert info.value.param == "id" and "needs the record's 'id'" in info.value.message


def test_merge_changes_is_deep_for_dicts_only() -> None:
    current = {"a": 1, "metadata": {"x": "1", "n": {"p": 1}}, "items": [1]}
    merged = merge_changes(current, {"metadata": {"n": {"q": 2}}, "items": [2], "a": None})
    assert merged == {"a": None, "metadata": {"x": "1", "n": {"p": 1, "q": 2}}, "items": [2]}
    assert current == {"a": 1, "metadata": {"x": "1", "n": {"p": 1}}, "items": [1]}


# -- through the real API --------------------------------------------------------------------


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


def test_large_insert_many_is_all_or_nothing_across_chunks(seeded: dict[str, Any]) -> None:
    """Batches larger than one chunk travel in pieces; they still land whole or not at all."""
    n = BATCH_CHUNK * 4 + 7
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


def test_manager_rejects_malformed_frames(seeded: dict[str, Any]) -> None:
    """An authenticated client may still send garbage; the manager refuses it."""
    ns = list(papertiger.current_namespace())
    client = current_client()
    good = msgpack.packb({"id": "cs_raw"})
    before = snapshot()
    frames: list[tuple[list[Any], str]] = [
        (["put", "checkout_sessions", "s", ns, "insert", ["cs_raw", "x", good, None]], "created"),
        (["put", "checkout_sessions", "s", ns, "insert", [5, 1, good, None]], "id"),
        (
            ["put", "checkout_sessions", "s", ns, "insert", ["cs_raw", 1, b"\x91\x01", None]],
            "request",
        ),
        (
            ["put", "checkout_sessions", "s", ns, "insert", ["cs_raw", 1, good, {"c": 1.5}]],
            "request",
        ),
        (["put", "checkout_sessions", "s", ns, "insert", ["cs_raw", 1, good]], "request"),
        (["put", "", "s", ns, "insert", ["cs_raw", 1, good, None]], "request"),
        (["put", "checkout_sessions", "s", [], "insert", ["cs_raw", 1, good, None]], "namespace"),
        (["put_many", "checkout_sessions", "s", ns, "nope"], "request"),
        (["patch", "checkout_sessions", "s", ns, seeded["id"], b"\xc1", []], "request"),
        (["patch", "checkout_sessions", "s", ns, seeded["id"], good, "customer"], "request"),
        (["delete", "checkout_sessions", "s", ns], "request"),
        (["drop_everything"], "request"),
    ]
    for frame, param in frames:
        with pytest.raises(InvalidRequest) as info:
            client.request(frame)
        assert info.value.param == param, frame
        assert snapshot() == before
    assert client.request(["ping"])[1] is None  # the manager is still serving
