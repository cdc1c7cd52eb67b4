"""Validation on the write path: generated records, the depth limit, and the fast packer.

The fast path packs a record with ormsgpack's compiled packer, which refuses
what the store refuses; the slow path, which names the field at fault, runs
only when it refuses.  These tests check the two agree: a bad key at any depth
is named by its path and changes nothing; the depth limit is one number,
whichever path meets it; and what the fast path packs is byte for byte what
``msgpack.packb`` packs.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import papertiger
from papertiger.core.records import MAX_DEPTH, pack_value, prepare_record
from papertiger.engine.connection import current_client
from papertiger.errors import InvalidRequest
from papertiger.store import CheckoutSessions

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

clean_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
clean_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    clean_text,
    st.binary(max_size=8),
)
clean_values = st.recursive(
    clean_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(clean_text, inner, max_size=3),
    ),
    max_leaves=12,
)
bad_keys = st.one_of(
    st.integers(),
    st.none(),
    st.binary(max_size=3),
    st.floats(allow_nan=False),
    st.booleans(),
    st.tuples(st.integers()),
    st.frozensets(st.integers(), max_size=2),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),  # not valid UTF-8
)
#: a path from the record down to the dict that holds the bad key: field names and list indexes
steps = st.lists(
    st.one_of(
        st.tuples(st.just("key"), st.text(st.characters(categories=["L", "N"]), min_size=1)),
        st.tuples(st.just("index"), st.integers(0, 3)),
    ),
    max_size=12,
)


@st.composite
def records_with_a_bad_key(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A record with one non-str key at a random depth, and the path of the dict holding it."""
    field = st.text(st.characters(categories=["L"]), min_size=1)
    path = [("key", draw(field.filter(lambda k: k not in ("id", "created", "object"))))]
    path += draw(steps)
    holder: Any = {draw(bad_keys): draw(clean_values)}
    for name, value in draw(st.dictionaries(clean_text, clean_values, max_size=2)).items():
        holder[name] = value  # clean siblings, before or after the bad key
    node = holder
    for kind, step in reversed(path[1:]):
        if kind == "key":
            siblings = draw(st.dictionaries(clean_text, clean_values, max_size=2))
            siblings.pop(step, None)
            node = {**siblings, step: node}
        else:
            items = draw(st.lists(clean_values, min_size=step, max_size=step + 2))
            items.insert(step, node)
            node = items
    record = {path[0][1]: node}
    where = ""
    for kind, step in path:
        where = (f"{where}.{step}" if where else str(step)) if kind == "key" else f"{where}[{step}]"
    return record, where


def _seq() -> int:
    return int(current_client().request(["ping"])[0])


@SETTINGS
@given(case=records_with_a_bad_key())
def test_a_bad_key_at_any_depth_is_named_and_changes_nothing(
    fresh_namespace: str, case: tuple[dict[str, Any], str]
) -> None:
    record, where = case
    with pytest.raises(InvalidRequest) as info:
        prepare_record(record, prefix="cs", object_name=None, index_fields=())
    assert info.value.param == where
    assert info.value.message.startswith(f"Invalid {where}: a mapping with the ")
    seq, before = _seq(), CheckoutSessions.list_namespace()
    for call in (CheckoutSessions.insert, CheckoutSessions.upsert):
        with pytest.raises(InvalidRequest) as info:
            call(record)
        assert info.value.param == where
    with pytest.raises(InvalidRequest) as info:
        CheckoutSessions.insert_many([{"amount_total": 1}, record])
    assert info.value.param == where and "records[1]" in info.value.message
    if CheckoutSessions.count():
        first = CheckoutSessions.list_namespace()[0]["id"]
        with pytest.raises(InvalidRequest) as info:
            CheckoutSessions.patch(first, record)
        assert info.value.param == f"changes.{where}"
    assert _seq() == seq, "a rejected write moved the log"
    assert CheckoutSessions.list_namespace() == before, "a rejected write changed the store"
    if not before:
        CheckoutSessions.insert({"amount_total": 1})  # so that later examples try patch too


def nested(levels: int, container: str = "dict") -> Any:
    """``levels`` dicts (or lists) inside one another around an int."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value} if container == "dict" else [value]
    return value


@pytest.mark.parametrize("container", ["dict", "list"])
def test_the_depth_limit_is_one_number(fresh_namespace: str, container: str) -> None:
    deepest = {"v": nested(MAX_DEPTH - 1, container)}  # the record itself is level 1
    stored = CheckoutSessions.insert(deepest)
    assert CheckoutSessions.get(stored["id"])["v"] == nested(MAX_DEPTH - 1, container)
    before = CheckoutSessions.list_namespace()
    step = ".a" if container == "dict" else "[0]"
    for levels in (MAX_DEPTH, MAX_DEPTH + 1, 2_000, 100_000):
        with pytest.raises(InvalidRequest) as info:
            CheckoutSessions.insert({"v": nested(levels, container)})
        assert f"nested more than {MAX_DEPTH} levels deep" in info.value.message
        assert info.value.param == "v" + step * (MAX_DEPTH - 1)
        with pytest.raises(InvalidRequest) as info:
            CheckoutSessions.patch(stored["id"], {"v": nested(levels, container)})
        assert info.value.param == "changes.v" + step * (MAX_DEPTH - 1)
    assert CheckoutSessions.list_namespace() == before


def test_the_depth_limit_holds_on_the_slow_path_too() -> None:
    """A str-subclass key sends a record to the slow path: the same limit applies there."""

    class Name(str):
        pass

    ok = {Name("k"): 1, "v": nested(MAX_DEPTH - 1)}
    assert msgpack.unpackb(pack_value(ok, "record")) == {"k": 1, "v": nested(MAX_DEPTH - 1)}
    with pytest.raises(InvalidRequest) as info:
        pack_value({Name("k"): 1, "v": nested(MAX_DEPTH)}, "record")
    assert f"nested more than {MAX_DEPTH} levels deep" in info.value.message


class Colour(enum.IntEnum):
    RED = 1


class Size(enum.StrEnum):
    S = "s"


Pair = collections.namedtuple("Pair", "a b")


@pytest.mark.parametrize(
    "value",
    [
        Colour.RED,
        Size.S,
        Pair(1, "x"),
        {Size.S: [Colour.RED]},
        collections.OrderedDict(a=collections.defaultdict(int, b=2)),
        bytearray(b"ab"),
        memoryview(b"cd"),
    ],
    ids=["intenum", "strenum", "namedtuple", "enum-key", "dict-subclasses", "bytearray", "view"],
)
def test_what_only_the_slow_path_packs_is_accepted_as_msgpack_packs_it(value: Any) -> None:
    assert pack_value({"v": value}, "record") == msgpack.packb({"v": value}, use_bin_type=True)


@settings(max_examples=2_000, deadline=None, database=None)
@given(value=clean_values)
def test_the_fast_packer_writes_what_msgpack_writes(value: Any) -> None:
    packed = pack_value({"v": value}, "record")
    assert packed == msgpack.packb({"v": value}, use_bin_type=True)
    assert msgpack.packb(msgpack.unpackb(packed), use_bin_type=True) == packed  # reads back whole


@pytest.mark.parametrize("size", [0, 15, 16, 31, 32, 255, 256, 65_535, 65_536])
def test_the_fast_packer_writes_every_length_form_as_msgpack_does(size: int) -> None:
    for value in ("a" * size, b"a" * size, [1] * size, {str(i): 1 for i in range(size)}):
        assert pack_value(value, "v") == msgpack.packb(value, use_bin_type=True)
    for n in (127, 128, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32, 2**63, 2**64 - 1):
        for i in (n, -n):
            if i >= -(2**63):
                assert pack_value(i, "v") == msgpack.packb(i)


@pytest.fixture
def fresh_namespace(store: papertiger.Server) -> Iterator[str]:
    """A namespace of its own per example (hypothesis runs many in one test)."""
    ns = f"validation-{id(object())}"
    with papertiger.use_namespace(ns):
        yield ns
    CheckoutSessions.clear_namespace(ns)
