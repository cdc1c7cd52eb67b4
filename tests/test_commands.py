"""Validation of records and requests: the pure functions, and the manager's frame checks.

The same bad input through the Store API, on every backend:
``tests/conformance/test_writes.py``.

Every bad input is an :class:`InvalidRequest` whose ``param`` is the path of the
field at fault (``metadata.x``, ``line_items[2].price``) and whose message says
what was expected; after a rejected call the store is exactly as before.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import msgpack
import pytest

import papertiger
from bad_records import BAD_IDS, BAD_RECORDS, ID_RE, Expected, says
from papertiger.core.records import ID_ALPHABET, merge_changes, pack_value, prepare_record
from papertiger.engine.connection import current_client
from papertiger.errors import InvalidRequest
from papertiger.store import CheckoutSessions


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


def snapshot() -> tuple[list[dict[str, Any]], int]:
    return CheckoutSessions.list_namespace(), CheckoutSessions.count()


@pytest.fixture
def seeded(fresh_namespace: str) -> dict[str, Any]:
    first = CheckoutSessions.insert({"customer": "cus_1", "metadata": {"k": "v"}})
    CheckoutSessions.insert({"customer": "cus_2"})
    return first


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
        (["patch", "checkout_sessions", "s", ns, seeded["id"], b"\xc1", [], None], "request"),
        (["patch", "checkout_sessions", "s", ns, seeded["id"], good, "customer", None], "request"),
        (["patch", "checkout_sessions", "s", ns, seeded["id"], good, []], "request"),
        (["patch", "checkout_sessions", "s", ns, seeded["id"], good, [], b"\xc1"], "expect"),
        (["patch", "checkout_sessions", "s", ns, seeded["id"], good, [], "status"], "expect"),
        (
            ["patch", "checkout_sessions", "s", ns, seeded["id"], good, [], b"\x81\x01\x01"],
            "expect",
        ),
        (["delete", "checkout_sessions", "s", ns], "request"),
        (["drop_everything"], "request"),
    ]
    for frame, param in frames:
        with pytest.raises(InvalidRequest) as info:
            client.request(frame)
        assert info.value.param == param, frame
        assert snapshot() == before
    assert client.request(["ping"])[1] is None  # the manager is still serving
