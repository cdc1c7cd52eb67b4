"""A checkpoint image plus an overlay answers exactly what a State answers.

Hypothesis drives the same effects into a plain :class:`State` (the
reference: it is the state machine the manager ran before images existed)
and into a :class:`LayeredState`, which now and then is written to a new
image (:mod:`papertiger.engine.layout_writer`), read back in place
(:class:`~papertiger.engine.layout.Checkpoint` over the bytes) and rebased
on, as the manager and the readers do.  After every step both must give
the same records, order, pages, filters, counts and listings -- including
every slice of every merged order (the positions a page can ask for).
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from papertiger.core.layered import LayeredState, MergedKeys
from papertiger.core.pagination import CreatedRange, ListQuery, select_page
from papertiger.core.resolve import resolve, write_request
from papertiger.core.state import BATCH, CLEAR, CLEAR_NS, DELETE, PUT, State
from papertiger.engine.layout import Checkpoint
from papertiger.engine.layout_writer import plan_image, state_parts
from papertiger.errors import NotFound, StoreError
from test_state import (
    CUSTOMERS,
    NAMESPACES,
    TABLES,
    assert_states_equal,
    changes_strategy,
    records,
    wire,
)

RESOURCE = "thing"


def image_of(state: LayeredState, seq: int = 0) -> Checkpoint:
    """Write ``state`` to a new image in memory and read it back in place."""
    plan = plan_image(state.image_parts(), state.table_names(), state.next_ord, seq)
    buf = memoryview(bytearray(plan.size))
    plan.write(buf)
    return Checkpoint(buf, "test")


def ids(packed: list[bytes]) -> list[str]:
    return [msgpack.unpackb(p)["id"] for p in packed]


def page(part: Any, **query: Any) -> tuple[list[str], bool] | str:
    try:
        data, more = select_page(part, ListQuery(**query))
    except NotFound as exc:
        return f"NotFound {exc.param}"
    return ids(data), more


def assert_same(ref: State, got: LayeredState) -> None:
    """Every query of ``got`` answers as ``ref`` does."""
    assert got.next_ord == ref.next_ord
    assert got.table_names() == ref.table_names()
    assert [(t, ns, len(p)) for t, ns, p in got.partitions()] == [
        (t, ns, len(p)) for t, ns, p in ref.partitions()
    ]
    assert got.namespaces() == ref.namespaces()
    assert got.total_records() == ref.total_records()
    for table in TABLES:
        for ns in NAMESPACES:
            expected = ref.partition(table, ns)
            part = got.partition(table, ns)
            assert (part is None) == (expected is None), (table, ns)
            assert got.count(table, ns) == ref.count(table, ns)
            if expected is None:
                continue
            assert part is not None
            keys = list(expected.order)
            assert list(part.keys().islice()) == keys
            assert list(part.newest_first()) == list(expected.newest_first())
            for rid in expected.records:
                assert got.get(table, ns, rid) == ref.get(table, ns, rid)
                e, f = expected.entry(rid), part.entry(rid)
                assert (f.created, f.ord, f.packed, f.index_values) == tuple(e)  # type: ignore[union-attr]
            assert got.get(table, ns, "id_missing") is None
            assert dict(part.items()) == expected.records
            for customer in CUSTOMERS:
                assert part.find("customer", customer) == expected.find("customer", customer)
                assert list(part.keys("customer", customer).islice()) == list(
                    expected.keys("customer", customer)
                )
            # every slice of the merged order: the positions select_page may ask for
            merged = part.keys()
            n = len(keys)
            assert len(merged) == n
            for start in range(n + 1):
                for stop in range(start, n + 1):
                    fresh = part.keys()  # no remembered frontiers: the binary search
                    assert list(fresh.islice(start, stop)) == keys[start:stop]
                    assert list(fresh.islice(start, stop, reverse=True)) == keys[start:stop][::-1]
            for key in keys:
                for probe in (key, key[:1], (key[0] + 1,)):
                    assert merged.bisect_left(probe) == expected.keys().bisect_left(probe)
            # pages: every cursor, both directions, with and without filters
            for limit in (1, 2, 3):
                for extra in ({}, {"filters": (("customer", "cus_1"),)}):
                    for created in (None, CreatedRange(1, 3)):
                        q = dict(limit=limit, created=created, **extra)
                        assert page(part, **q) == page(expected, **q)
                        for rid in [*expected.records, "id_missing"]:
                            for cursor in ("starting_after", "ending_before"):
                                qc = dict(q, **{cursor: rid})
                                assert page(part, **qc) == page(expected, **qc), qc


class LayeredMachine(RuleBasedStateMachine):
    """The same requests into a State and a LayeredState that is re-imaged now and then."""

    @initialize()
    def setup(self) -> None:
        self.ref = State()
        self.got = LayeredState()
        self.images = 0
        #: an image being "written in the background" (see checkpoint_in_background)
        self.pending: Checkpoint | None = None

    def request(self, req: list[Any]) -> None:
        try:
            effect = resolve(self.ref, write_request(req[0], req[1:]))
        except StoreError:
            # the layered state must refuse it just the same
            with pytest.raises(StoreError):
                resolve(self.got, write_request(req[0], req[1:]))
            return
        resolved = resolve(self.got, write_request(req[0], req[1:]))
        assert resolved == effect
        # the reference applies the effect as a reader decodes it from the log; the layered
        # state applies what it resolved, as the manager does (the same id objects its
        # lookups just saw)
        self.ref.apply(msgpack.unpackb(msgpack.packb(effect, use_bin_type=True)))
        self.got.apply(resolved)

    @rule(
        mode=st.sampled_from(["insert", "update", "upsert"]),
        table=st.sampled_from(TABLES),
        ns=st.sampled_from(NAMESPACES),
        record=records(),
    )
    def put(self, mode: str, table: str, ns: tuple[str, ...], record: dict[str, Any]) -> None:
        self.request(["put", table, RESOURCE, list(ns), mode, wire(record)])

    @rule(
        table=st.sampled_from(TABLES),
        ns=st.sampled_from(NAMESPACES),
        batch=st.lists(records(), max_size=4),
    )
    def put_many(self, table: str, ns: tuple[str, ...], batch: list[dict[str, Any]]) -> None:
        self.request(["put_many", table, RESOURCE, list(ns), [wire(r) for r in batch]])

    @rule(
        table=st.sampled_from(TABLES),
        ns=st.sampled_from(NAMESPACES),
        rid=st.sampled_from(["id_a", "id_b", "id_c", "id_d", "id_e"]),
        changes=changes_strategy,
    )
    def patch(self, table: str, ns: tuple[str, ...], rid: str, changes: dict[str, Any]) -> None:
        packed = msgpack.packb(changes, use_bin_type=True)
        self.request(["patch", table, RESOURCE, list(ns), rid, packed, ["customer"], None])

    @rule(
        table=st.sampled_from(TABLES),
        ns=st.sampled_from(NAMESPACES),
        rid=st.sampled_from(["id_a", "id_b", "id_c", "id_d", "id_e"]),
    )
    def delete(self, table: str, ns: tuple[str, ...], rid: str) -> None:
        self.request(["delete", table, RESOURCE, list(ns), rid])

    @rule(table=st.one_of(st.none(), st.sampled_from(TABLES)), ns=st.sampled_from(NAMESPACES))
    def clear_namespace(self, table: str | None, ns: tuple[str, ...]) -> None:
        self.request(["clear_namespace", table, list(ns)])

    @rule(table=st.one_of(st.none(), st.sampled_from(TABLES)), dice=st.integers(0, 4))
    def clear(self, table: str | None, dice: int) -> None:
        if not dice:
            self.request(["clear", table])

    @rule()
    def checkpoint(self) -> None:
        """A new image of the layered state; the layered state moves onto it."""
        self.pending = None
        self.got.rebase(image_of(self.got))
        self.images += 1

    @rule()
    def checkpoint_in_background(self) -> None:
        """An image of the state as it is now; what is applied meanwhile is journaled and,
        once the image is done, replayed onto it (the manager's forked checkpoints)."""
        if self.pending is None:
            self.pending = image_of(self.got)
            self.got.journal = []
        else:
            image, self.pending = self.pending, None
            self.got.rebase(image, self.got.journal)
            self.images += 1

    @rule()
    def image_of_a_plain_state(self) -> None:
        """An image written from the reference State (a data file loaded at start)."""
        ref = self.ref
        plan = plan_image(state_parts(ref), ref.table_names(), ref.next_ord, 0)
        buf = memoryview(bytearray(plan.size))
        plan.write(buf)
        self.pending = None
        self.got.rebase(Checkpoint(buf, "from-state"))

    @invariant()
    def same_answers(self) -> None:
        assert_same(self.ref, self.got)

    @invariant()
    def snapshot_matches(self) -> None:
        snap = msgpack.unpackb(msgpack.packb(self.got.snapshot(), use_bin_type=True))
        assert_states_equal(State.from_snapshot(snap), self.ref)


TestLayeredMachine = LayeredMachine.TestCase
TestLayeredMachine.settings = settings(
    max_examples=120,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- a large base and a busy overlay ------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    base_size=st.integers(0, 60),
    ops=st.lists(
        st.tuples(st.sampled_from(["insert", "update", "delete"]), st.integers(0, 10**6)),
        max_size=40,
    ),
    created=st.integers(0, 5),
)
def test_merged_order_matches_after_any_changes(
    base_size: int, ops: list[Any], created: int
) -> None:
    """Inserts, updates (moving records) and deletes over a base: same order as State."""
    ref, got = State(), LayeredState()
    live: list[str] = []

    def put(rid: str, c: int) -> None:
        effect = [PUT, "t", ["n"], rid, c, msgpack.packb({"id": rid, "c": c}), {"customer": "k"}]
        ref.apply(effect)
        got.apply(effect)

    for i in range(base_size):
        put(f"b{i:03d}", i % 7)
        live.append(f"b{i:03d}")
    got.rebase(image_of(got))
    for n, (op, pick) in enumerate(ops):
        if op == "insert" or not live:
            rid = f"o{n:03d}"
            put(rid, (pick + created) % 7)
            live.append(rid)
        elif op == "update":
            put(live[pick % len(live)], (pick + created) % 7)
        else:
            rid = live.pop(pick % len(live))
            for state in (ref, got):
                state.apply([DELETE, "t", ["n"], rid])
    assert_same(ref, got)
    part = got.partition("t", ("n",))
    if part is not None and (ops or base_size):
        keys = part.keys()
        assert isinstance(keys, MergedKeys) or not ops or not base_size or len(keys) == len(live)


def test_clearing_a_namespace_the_image_still_has() -> None:
    """The overlay's clear hides the image's partitions, nested ones too, and later puts
    into the cleared namespace start afresh (new ranks), as in a State."""
    ref, got = State(), LayeredState()
    effects: list[Any] = [
        [PUT, "t", ["a"], "x", 1, msgpack.packb({"id": "x"}), {"customer": "k"}],
        [PUT, "t", ["a", "acct"], "y", 1, msgpack.packb({"id": "y"}), None],
        [PUT, "u", ["a"], "z", 1, msgpack.packb({"id": "z"}), None],
        [PUT, "_once", ["a"], "o", 0, msgpack.packb({"id": "o"}), None],
        [PUT, "t", ["b"], "w", 1, msgpack.packb({"id": "w"}), None],
    ]
    for effect in effects:
        ref.apply(effect)
        got.apply(effect)
    got.rebase(image_of(got))
    # looked at before the clear (kept in the overlay) and not (hidden by the rule)
    assert got.count("t", ("a",)) == 1
    for effect in (
        [CLEAR_NS, None, ["a"]],
        [PUT, "t", ["a"], "x", 1, msgpack.packb({"id": "x", "v": 2}), None],
    ):
        ref.apply(effect)
        got.apply(effect)
    assert_same(ref, got)
    assert got.count("t", ("a", "acct")) == 0 and got.count("u", ("a",)) == 0
    assert got.count("_once", ("a",)) == 1  # internal tables are not cleared by table None
    assert got.partition("t", ("a",)).entry("x").ord == ref.partition("t", ("a",)).entry("x").ord  # type: ignore[union-attr]
    # and the next image carries the clear
    got.rebase(image_of(got))
    assert_same(ref, got)
    ref.apply([CLEAR, "t"])
    got.apply([CLEAR, "t"])
    assert_same(ref, got)
    got.apply([BATCH, [effects[0]]])
    ref.apply([BATCH, [effects[0]]])
    assert_same(ref, got)


def test_a_new_image_inherits_what_was_verified_of_the_old_one() -> None:
    """Entries copied unchanged into a new image keep their verified flag; replaced and
    new ones are checked again when first read (and still read back right)."""
    state = LayeredState()
    for i in range(40):
        packed = msgpack.packb({"id": f"r{i:02d}", "i": i})
        state.apply([PUT, "t", ["n"], f"r{i:02d}", i % 7, packed, {"customer": "k"}])
    old = image_of(state)
    state.rebase(old)
    old_part = old.partition("t", ("n",))
    assert old_part is not None
    for i in range(40):
        assert old_part.get(f"r{i:02d}") is not None  # verified on this first read
    state.apply([PUT, "t", ["n"], "r05", 5, msgpack.packb({"id": "r05", "v": 2}), None])
    state.apply([DELETE, "t", ["n"], "r10"])
    state.apply([PUT, "t", ["n"], "new", 99, msgpack.packb({"id": "new"}), None])
    state.apply([PUT, "u", ["m"], "other", 1, msgpack.packb({"id": "other"}), None])
    new = image_of(state)
    new.inherit(old)
    part = new.partition("t", ("n",))
    assert part is not None and part.source_id == old_part.build_id
    flags = {part.record_id(p): part._verified[p] for p in range(part.n)}
    assert flags["r05"] == 0 and flags["new"] == 0 and "r10" not in flags
    assert all(flags[f"r{i:02d}"] == 1 for i in range(40) if i not in (5, 10))
    assert msgpack.unpackb(part.get("r05")) == {"id": "r05", "v": 2}
    assert msgpack.unpackb(part.get("r07")) == {"id": "r07", "i": 7}
    # a block copied whole keeps its build id, so its bitmap is shared
    again = image_of(LayeredState(new))
    again.inherit(new)
    same = again.partition("t", ("n",))
    assert same is not None and same.build_id == part.build_id
    assert same._verified is part._verified


def test_walks_that_jump_over_hidden_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no single steps allowed, every run of hidden positions is jumped over by
    binary search (and remembered): pages and slices still match a State's."""
    import random

    import papertiger.core.layered as layered

    monkeypatch.setattr(layered, "SKIP_STEPS", 0)
    rng = random.Random(4)
    for _ in range(25):
        ref, got = State(), LayeredState()
        live: list[str] = []
        for i in range(rng.randrange(0, 50)):
            effect = [
                PUT,
                "t",
                ["n"],
                f"b{i:02d}",
                rng.randrange(4),
                msgpack.packb({"id": f"b{i:02d}"}),
                {"customer": f"k{i % 2}"},
            ]
            ref.apply(effect)
            got.apply(effect)
            live.append(f"b{i:02d}")
        got.rebase(image_of(got))
        for n in range(rng.randrange(0, 30)):
            if live and rng.random() < 0.6:
                rid = live.pop(rng.randrange(len(live)))
                for state in (ref, got):
                    state.apply([DELETE, "t", ["n"], rid])
            else:
                effect = [
                    PUT,
                    "t",
                    ["n"],
                    f"o{n:02d}",
                    rng.randrange(4),
                    msgpack.packb({"id": f"o{n:02d}"}),
                    {"customer": "k1"},
                ]
                ref.apply(effect)
                got.apply(effect)
                live.append(f"o{n:02d}")
        assert_same(ref, got)


def test_a_journal_replayed_onto_a_new_image_gives_the_same_state() -> None:
    """Runs of inserts into one partition are replayed at once; the rest one by one."""
    ref, got = State(), LayeredState()

    def apply(effect: list[Any]) -> None:
        ref.apply(effect)
        got.apply(effect)

    def put(rid: str, ns: str = "a", created: int = 5, **idx: Any) -> list[Any]:
        return [PUT, "t1", [ns], rid, created, msgpack.packb({"id": rid}), idx or None]

    for i in range(5):
        apply(put(f"old{i}", customer=f"cus_{1 + i % 2}"))
    got.rebase(image_of(got))
    image = image_of(got)  # what a forked writer would write now
    got.journal = []
    for effect in [
        put("n1", customer="cus_1"),
        put("n2", customer="cus_3"),
        put("n3", created=1),  # a run of three new ids: at once
        put("b1", ns="b"),
        put("b2", ns="b"),  # another partition, another run
        put("old1", customer="cus_2"),  # an update: its run goes one by one
        put("n4"),
        [DELETE, "t1", ["a"], "old2"],
        put("n5"),
        put("n5", created=9),  # twice in a run: one by one
    ]:
        apply(effect)
    got.rebase(image, got.journal)
    assert got.effects == 10
    assert_same(ref, got)
