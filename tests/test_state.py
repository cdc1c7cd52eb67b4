"""The pure core, with no processes: State, resolve and select_page against plain models.

Hypothesis drives requests through ``papertiger.core.resolve.resolve`` and
``State.apply`` (exactly the manager's path) and compares the result with a
reference model written in plain Python: the same records, in the same order
(``created`` descending, later insert first), the same errors, and a state left
unchanged by every rejected request.  A second property walks every page of a
partition with ``starting_after`` and with ``ending_before``, the way
stripe-python's ``auto_paging_iter`` does, and checks each walk visits every
record exactly once, in order.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from papertiger.core.pagination import ListQuery
from papertiger.core.pagination import select_page as select_query
from papertiger.core.records import prepare_record
from papertiger.core.resolve import resolve as resolve_typed
from papertiger.core.resolve import write_request
from papertiger.core.state import BATCH, CLEAR, CLEAR_NS, DELETE, PUT, State
from papertiger.errors import AlreadyExists, InvalidRequest, NotFound, StoreError

RESOURCE = "thing"


def resolve(state: State, req: list[Any]) -> Any:
    """Resolve a request frame ``[op, *fields]``, as the manager does."""
    return resolve_typed(state, write_request(req[0], req[1:]))


def select_page(
    part: Any, limit: int, starting_after: str | None, ending_before: str | None
) -> tuple[list[bytes], bool]:
    return select_query(part, ListQuery(limit, starting_after, ending_before))


INDEX_FIELDS = ("customer",)


def wire(record: dict[str, Any]) -> list[Any]:
    """A record as the client sends it (the Store API's path, minus the socket)."""
    return prepare_record(
        record, prefix="th", object_name=None, index_fields=INDEX_FIELDS, require_id=True
    ).wire()


def ids_of(packed: list[bytes]) -> list[str]:
    return [msgpack.unpackb(p)["id"] for p in packed]


# -- the reference model ------------------------------------------------------------------


def model_merge(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Stripe-style merge: nested dicts merge, every other value replaces."""
    out = dict(current)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = model_merge(out[key], value)
        else:
            out[key] = value
    return out


def customer_of(record: dict[str, Any]) -> Any:
    value = record.get("customer")
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return None


class Model:
    """tables -> namespace -> id -> [ord, record]; a global insertion counter."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, tuple[str, ...]], dict[str, list[Any]]] = {}
        self.next_ord = 0

    def get(self, table: str, ns: tuple[str, ...], rid: str) -> dict[str, Any] | None:
        row = self.parts.get((table, ns), {}).get(rid)
        return None if row is None else row[1]

    def put(self, table: str, ns: tuple[str, ...], record: dict[str, Any]) -> None:
        part = self.parts.setdefault((table, ns), {})
        rid = record["id"]
        if rid in part:
            part[rid][1] = record
        else:
            part[rid] = [self.next_ord, record]
            self.next_ord += 1

    def delete(self, table: str, ns: tuple[str, ...], rid: str) -> None:
        part = self.parts[(table, ns)]
        del part[rid]
        if not part:
            del self.parts[(table, ns)]

    def clear_ns(self, table: str | None, under: tuple[str, ...]) -> None:
        for t, ns in list(self.parts):
            if (table is None or t == table) and ns[: len(under)] == under:
                del self.parts[(t, ns)]

    def clear(self, table: str | None) -> None:
        for t, ns in list(self.parts):
            if table is None or t == table:
                del self.parts[(t, ns)]

    def ordered(self, table: str, ns: tuple[str, ...]) -> list[dict[str, Any]]:
        """Stripe order: created descending, then later insert first."""
        rows = self.parts.get((table, ns), {}).values()
        return [
            r for _, r in sorted(rows, key=lambda row: (row[1]["created"], row[0]), reverse=True)
        ]


# -- strategies ----------------------------------------------------------------------------

TABLES = ["t1", "t2"]
NAMESPACES: list[tuple[str, ...]] = [("a",), ("a", "x"), ("a", "x", "y"), ("ab",), ("b",)]
IDS = ["id_a", "id_b", "id_c", "id_d", "id_e"]
CUSTOMERS = ["cus_1", "cus_2"]

tables = st.sampled_from(TABLES)
namespaces = st.sampled_from(NAMESPACES)
ids = st.sampled_from(IDS)
createds = st.integers(min_value=0, max_value=3)  # few values: many collisions
customers = st.one_of(
    st.none(),
    st.sampled_from(CUSTOMERS),
    st.sampled_from(CUSTOMERS).map(lambda c: {"id": c, "object": "customer"}),
)
small = st.integers(min_value=0, max_value=9)
metadata = st.dictionaries(st.sampled_from(["k1", "k2", "k3"]), st.sampled_from(["x", "y"]))


@st.composite
def records(draw: st.DrawFn, rid: str | None = None) -> dict[str, Any]:
    return {
        "id": draw(ids) if rid is None else rid,
        "created": draw(createds),
        "customer": draw(customers),
        "v": draw(small),
        "metadata": draw(metadata),
    }


changes_strategy = st.one_of(
    st.fixed_dictionaries({"v": small}),
    st.fixed_dictionaries({"metadata": metadata}),
    st.fixed_dictionaries({"created": createds}),
    st.fixed_dictionaries({"customer": customers}),
    st.fixed_dictionaries({"metadata": st.none()}),
    st.fixed_dictionaries({"id": ids}),  # changing the id is refused
    st.fixed_dictionaries({"created": st.sampled_from(["1", 1.5, True])}),  # refused
)


# -- the state machine ---------------------------------------------------------------------


class StateMachine(RuleBasedStateMachine):
    """State driven through resolve + apply, against :class:`Model`."""

    @initialize()
    def setup(self) -> None:
        self.state = State()
        self.model = Model()
        self.effects: list[list[Any]] = []

    def request(self, req: list[Any]) -> StoreError | None:
        """Resolve and apply ``req``; on rejection check the state did not move."""
        before = self.state.snapshot()
        try:
            effect = resolve(self.state, req)
        except StoreError as exc:
            assert self.state.snapshot() == before, "a rejected request changed the state"
            return exc
        # the effect must survive the log's encoding unchanged
        effect = msgpack.unpackb(msgpack.packb(effect, use_bin_type=True))
        self.state.apply(effect)
        self.effects.append(effect)
        return None

    @rule(
        mode=st.sampled_from(["insert", "update", "upsert"]),
        table=tables,
        ns=namespaces,
        record=records(),
    )
    def put(self, mode: str, table: str, ns: tuple[str, ...], record: dict[str, Any]) -> None:
        exists = self.model.get(table, ns, record["id"]) is not None
        err = self.request(["put", table, RESOURCE, list(ns), mode, wire(record)])
        if mode == "insert" and exists:
            assert isinstance(err, AlreadyExists) and err.param == "id"
        elif mode == "update" and not exists:
            assert isinstance(err, NotFound) and err.param == "id"
        else:
            assert err is None
            self.model.put(table, ns, record)

    @rule(table=tables, ns=namespaces, batch=st.lists(records(), min_size=0, max_size=4))
    def put_many(self, table: str, ns: tuple[str, ...], batch: list[dict[str, Any]]) -> None:
        batch_ids = [r["id"] for r in batch]
        clash = len(set(batch_ids)) != len(batch_ids) or any(
            self.model.get(table, ns, rid) is not None for rid in batch_ids
        )
        err = self.request(["put_many", table, RESOURCE, list(ns), [wire(r) for r in batch]])
        if clash:
            assert isinstance(err, AlreadyExists)
        else:
            assert err is None
            for r in batch:
                self.model.put(table, ns, r)

    @rule(table=tables, ns=namespaces, rid=ids, changes=changes_strategy)
    def patch(self, table: str, ns: tuple[str, ...], rid: str, changes: dict[str, Any]) -> None:
        current = self.model.get(table, ns, rid)
        packed = msgpack.packb(changes, use_bin_type=True)
        err = self.request(
            ["patch", table, RESOURCE, list(ns), rid, packed, list(INDEX_FIELDS), None]
        )
        if current is None:
            assert isinstance(err, NotFound) and err.param == "id"
        elif "id" in changes and changes["id"] != rid:
            assert isinstance(err, InvalidRequest) and err.param == "id"
        elif "created" in changes and type(changes["created"]) is not int:
            assert isinstance(err, InvalidRequest) and err.param == "created"
        else:
            assert err is None
            self.model.put(table, ns, model_merge(current, changes))

    @rule(table=tables, ns=namespaces, rid=ids)
    def delete(self, table: str, ns: tuple[str, ...], rid: str) -> None:
        exists = self.model.get(table, ns, rid) is not None
        err = self.request(["delete", table, RESOURCE, list(ns), rid])
        if exists:
            assert err is None
            self.model.delete(table, ns, rid)
        else:
            assert isinstance(err, NotFound) and err.param == "id"

    @rule(table=st.one_of(st.none(), tables), ns=namespaces)
    def clear_namespace(self, table: str | None, ns: tuple[str, ...]) -> None:
        assert self.request(["clear_namespace", table, list(ns)]) is None
        self.model.clear_ns(table, ns)

    @rule(table=st.one_of(st.none(), tables), dice=st.integers(0, 4))
    def clear(self, table: str | None, dice: int) -> None:
        if dice:  # only one time in five: clearing everything leaves little to check
            return
        assert self.request(["clear", table]) is None
        self.model.clear(table)

    @rule(ns=st.sampled_from([[], [""], "", 5, ["a", 5]]))
    def bad_namespace(self, ns: Any) -> None:
        err = self.request(["delete", "t1", RESOURCE, ns, "id_a"])
        assert isinstance(err, InvalidRequest) and err.param == "namespace"

    @rule(table=tables, ns=namespaces, record=records())
    def bad_mode(self, table: str, ns: tuple[str, ...], record: dict[str, Any]) -> None:
        err = self.request(["put", table, RESOURCE, list(ns), "replace", wire(record)])
        assert isinstance(err, InvalidRequest) and err.param == "request"

    @invariant()
    def same_records_same_order(self) -> None:
        state, model = self.state, self.model
        for table in TABLES:
            for ns in NAMESPACES:
                expected = model.ordered(table, ns)
                part = state.partition(table, ns)
                got = [] if part is None else [msgpack.unpackb(p) for p in part.newest_first()]
                assert got == expected, (table, ns)
                assert state.count(table, ns) == len(expected)
                for record in expected:
                    assert msgpack.unpackb(state.get(table, ns, record["id"]) or b"\xc0") == record
                for customer in CUSTOMERS:
                    found = [] if part is None else part.find("customer", customer)
                    assert [msgpack.unpackb(p) for p in found] == [
                        r for r in expected if customer_of(r) == customer
                    ]
        assert state.namespaces() == sorted({ns for _, ns in model.parts})
        assert state.total_records() == sum(len(p) for p in model.parts.values())

    @invariant()
    def snapshot_round_trip(self) -> None:
        snap = self.state.snapshot()
        restored = State.from_snapshot(msgpack.unpackb(msgpack.packb(snap, use_bin_type=True)))
        assert restored.snapshot() == snap
        assert_states_equal(restored, self.state)


def assert_states_equal(a: State, b: State) -> None:
    assert a.next_ord == b.next_ord
    assert set(a.tables) == set(b.tables)
    for name, parts in a.tables.items():
        other = b.tables[name]
        assert set(parts) == set(other)
        for ns, part in parts.items():
            assert part.records == other[ns].records
            assert list(part.order) == list(other[ns].order)
            assert part.indexes == {f: v for f, v in other[ns].indexes.items() if v}


TestStateMachine = StateMachine.TestCase
TestStateMachine.settings = settings(
    max_examples=200,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- pagination walks ------------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), createds),
        st.tuples(st.just("update"), st.integers(0, 10_000), createds),
        st.tuples(st.just("delete"), st.integers(0, 10_000)),
    ),
    max_size=60,
)


def build(operations: list[tuple[Any, ...]]) -> tuple[State, list[str]]:
    """Apply ``operations`` to one partition; return the state and the expected order."""
    state = State()
    live: dict[str, tuple[int, int]] = {}  # id -> (created, insertion number)
    n = 0
    for op in operations:
        if op[0] == "insert":
            rid = f"id_{n:03d}"
            req = ["put", "t", RESOURCE, ["ns"], "insert", wire({"id": rid, "created": op[1]})]
            live[rid] = (op[1], n)
            n += 1
        elif not live:
            continue
        elif op[0] == "update":  # a new created, same insertion rank
            rid = sorted(live)[op[1] % len(live)]
            req = ["put", "t", RESOURCE, ["ns"], "update", wire({"id": rid, "created": op[2]})]
            live[rid] = (op[2], live[rid][1])
        else:
            rid = sorted(live)[op[1] % len(live)]
            req = ["delete", "t", RESOURCE, ["ns"], rid]
            del live[rid]
        state.apply(resolve(state, req))
    order = sorted(live, key=lambda rid: live[rid], reverse=True)
    return state, order


@settings(max_examples=300, deadline=None)
@given(operations=ops, limit=st.integers(1, 7))
def test_walks_visit_every_record_once_in_order(operations: list[Any], limit: int) -> None:
    state, expected = build(operations)
    part = state.partition("t", ("ns",))

    # forward, as auto_paging_iter: starting_after = data[-1] while has_more
    data, has_more = select_page(part, limit, None, None)
    seen = ids_of(data)
    assert seen == expected[:limit] and has_more == (len(expected) > limit)
    while has_more:
        data, has_more = select_page(part, limit, seen[-1], None)
        assert data, "has_more promised another page"
        seen += ids_of(data)
    assert seen == expected

    if not expected:
        return
    # backward from the oldest, as auto_paging_iter with ending_before:
    # each page reversed, then ending_before = data[0] while has_more
    seen_back: list[str] = []
    cursor = expected[-1]
    while True:
        data, has_more = select_page(part, limit, None, cursor)
        page = ids_of(data)
        seen_back += list(reversed(page))
        if not has_more:
            break
        assert page, "has_more promised another page"
        cursor = page[0]
    assert [expected[-1], *seen_back] == list(reversed(expected))


@settings(max_examples=200, deadline=None)
@given(operations=ops, limit=st.integers(1, 7), pick=st.integers(0, 10_000))
def test_pages_next_to_any_cursor(operations: list[Any], limit: int, pick: int) -> None:
    """Each cursor page is exactly the ``limit`` items next to the cursor."""
    state, expected = build(operations)
    if not expected:
        return
    part = state.partition("t", ("ns",))
    i = pick % len(expected)
    data, has_more = select_page(part, limit, expected[i], None)
    assert ids_of(data) == expected[i + 1 : i + 1 + limit]
    assert has_more == (i + 1 + limit < len(expected))
    data, has_more = select_page(part, limit, None, expected[i])
    assert ids_of(data) == expected[max(0, i - limit) : i]
    assert has_more == (i - limit > 0)


# -- direct effects and snapshots ---------------------------------------------------------------


def test_apply_handles_every_effect_kind() -> None:
    s = State()
    put = [PUT, "t", ["a"], "x", 5, msgpack.packb({"id": "x"}), {"customer": "cus_1"}]
    s.apply([BATCH, [put, [PUT, "t", ["a", "b"], "y", 5, b"\x80", None]]])
    assert s.count("t", ("a",)) == 1 and s.count("t", ("a", "b")) == 1
    assert s.partition("t", ("a",)).find("customer", "cus_1") == [put[5]]  # type: ignore[union-attr]
    s.apply([DELETE, "t", ["a"], "x"])
    assert s.partition("t", ("a",)) is None  # empty partitions do not linger
    s.apply([DELETE, "t", ["a"], "missing"])  # effects are idempotent where they can be
    s.apply([CLEAR_NS, None, ["a"]])
    assert s.count("t", ("a", "b")) == 0
    s.apply(put)
    s.apply([CLEAR, "t"])
    assert s.total_records() == 0
    with pytest.raises(ValueError, match="unknown effect kind"):
        s.apply([99])


def test_clear_leaves_internal_tables() -> None:
    s = State()
    s.apply([PUT, "_once", ["_once"], "k", 0, b"\x80", None])
    s.apply([PUT, "t", ["a"], "x", 0, b"\x80", None])
    s.apply([CLEAR, None])
    s.apply([CLEAR_NS, None, ["_once"]])
    assert s.count("_once", ("_once",)) == 1 and s.count("t", ("a",)) == 0


def test_snapshot_of_empty_and_used_state_round_trips() -> None:
    s = State()
    assert State.from_snapshot(s.snapshot()).snapshot() == s.snapshot()
    for i in range(5):
        s.apply([PUT, "t", ["a"], f"x{i}", i % 2, msgpack.packb({"i": i}), {"customer": "c"}])
    s.apply([DELETE, "t", ["a"], "x1"])
    r = State.from_snapshot(msgpack.unpackb(msgpack.packb(s.snapshot())))
    assert_states_equal(r, s)
    # the copy keeps behaving like the original: the next insert gets the same rank
    for state in (r, s):
        state.apply([PUT, "t", ["a"], "new", 0, b"\x80", None])
    assert_states_equal(r, s)


def test_an_update_moves_exactly_the_index_entries_that_changed() -> None:
    s = State()

    def put(rid: str, created: int, **idx: Any) -> None:
        s.apply([PUT, "t", ["a"], rid, created, msgpack.packb({"id": rid}), idx or None])

    def found(field: str, value: Any) -> list[str]:
        part = s.partition("t", ("a",))
        assert part is not None
        return ids_of(part.find(field, value))

    put("x", 5, customer="cus_1", status="open", email="a@b")
    put("y", 5, customer="cus_1", status="open")
    put("x", 5, customer="cus_1", status="complete", amount=3)  # same order key
    assert found("customer", "cus_1") == ["y", "x"]
    assert (found("status", "open"), found("status", "complete")) == (["y"], ["x"])
    assert (found("email", "a@b"), found("amount", 3)) == ([], ["x"])
    put("x", 9, customer="cus_2", amount=3)  # a new created: every entry moves
    assert (found("customer", "cus_1"), found("customer", "cus_2")) == (["y"], ["x"])
    assert (found("status", "complete"), found("amount", 3)) == ([], ["x"])
    put("x", 9)  # no index values left
    assert found("customer", "cus_2") == [] and found("amount", 3) == []
    part = s.partition("t", ("a",))
    assert part is not None
    assert {f: sorted(v) for f, v in part.indexes.items() if v} == {
        "customer": ["cus_1"],
        "status": ["open"],
    }


def test_a_value_held_by_one_record_keeps_its_key_alone_and_reads_as_a_list() -> None:
    s = State()

    def put(rid: str, created: int, customer: str) -> None:
        s.apply([PUT, "t", ["a"], rid, created, msgpack.packb({"id": rid}), {"customer": customer}])

    put("x", 1, "cus_1")
    part = s.partition("t", ("a",))
    assert part is not None
    assert part.indexes["customer"]["cus_1"] == (1, 0, "x")  # alone, not a list
    assert list(part.keys("customer", "cus_1")) == [(1, 0, "x")]
    put("y", 2, "cus_1")
    assert list(part.indexes["customer"]["cus_1"]) == [(1, 0, "x"), (2, 1, "y")]
    s.apply([DELETE, "t", ["a"], "x"])
    assert part.indexes["customer"]["cus_1"] == (2, 1, "y")  # alone again
    assert ids_of(part.find("customer", "cus_1")) == ["y"]
    put("y", 2, "cus_2")  # the same order key, another value
    assert part.indexes["customer"] == {"cus_2": (2, 1, "y")}
    assert ids_of(part.find("customer", "cus_1")) == [] and len(part.keys("customer", "cus_1")) == 0
