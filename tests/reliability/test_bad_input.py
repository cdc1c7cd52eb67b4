"""Bad input: fuzzed records, ids, namespaces, pagination and raw frames.

Whatever a caller passes, and whatever an authenticated client sends down
the socket, the answer is either a correct result or one of the documented
errors (:class:`InvalidRequest`, :class:`NotFound`, :class:`AlreadyExists`);
the manager goes on serving, and a rejected call changes nothing: the log's
sequence number and the namespace's contents are what they were.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multiprocess import connection as mpc

import papertiger
from papertiger.engine.connection import current_client
from papertiger.store import CheckoutSessions as CS

from .helpers import serve

DOCUMENTED = (papertiger.InvalidRequest, papertiger.NotFound, papertiger.AlreadyExists)
DOCUMENTED_KINDS = {"InvalidRequest", "NotFound", "AlreadyExists"}
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# every str, lone surrogates included (msgpack cannot encode those)
any_char = st.characters(exclude_categories=())
texts = st.one_of(
    st.text(any_char, max_size=12),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
    st.text(max_size=300).filter(lambda t: len(t) > 250),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    texts,
    st.binary(max_size=16),
    st.complex_numbers(),
    st.sets(st.integers(), max_size=2),
    st.datetimes(),
    st.just(object()),
)
keys = st.one_of(texts, st.integers(), st.none(), st.binary(max_size=3), st.floats(), st.just("id"))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(keys, inner, max_size=3),
    ),
    max_leaves=10,
)
ids = st.one_of(
    texts,
    st.integers(),
    st.none(),
    st.binary(max_size=8),
    st.lists(st.text(max_size=3), max_size=2),
    st.just(""),
    st.just("cs_known"),
    st.just("cus_k"),
)
createds = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65), st.floats(), st.booleans(), texts, st.none()
)


@pytest.fixture(scope="module")
def server() -> Iterator[papertiger.Server]:
    with serve(segment_bytes=16 * 1024, checkpoint_bytes=16 * 1024) as running:
        yield running


def _seq() -> int:
    return int(current_client().request(["ping"])[0])


def _contents(ns: Any) -> dict[str, Any]:
    """What every table holds in ``ns``, as stored (packed), read from this process's replica."""
    key = papertiger.namespace.normalize_namespace(ns)
    with current_client().replica.read() as state:
        return {
            table: dict(view.items())
            for table in state.table_names()
            for _, ns, view in state.partitions(table=table)
            if ns == key
        }


def _call(fn: Callable[[], Any], ns: Any = "fuzz") -> tuple[Any, BaseException | None]:
    """Run ``fn``: a documented error must leave the log and ``ns`` as they were."""
    seq, before = _seq(), _contents(ns)
    try:
        return fn(), None
    except DOCUMENTED as exc:
        assert _seq() == seq, f"a rejected call ({exc!r}) moved the log"
        assert _contents(ns) == before, f"a rejected call ({exc!r}) changed the store"
        return None, exc


def _same(a: Any, b: Any) -> bool:
    return bool(msgpack.packb(a) == msgpack.packb(b))  # NaN-safe, tuple == list


@FUZZ
@given(
    record=st.one_of(
        values,
        st.dictionaries(keys, values, max_size=5),
        st.builds(
            lambda base, extra: {**base, **extra},
            st.dictionaries(st.text(max_size=5), values, max_size=4),
            st.fixed_dictionaries({}, optional={"id": ids, "created": createds}),
        ),
    )
)
def test_fuzzed_records(server: papertiger.Server, record: Any) -> None:
    with papertiger.use_namespace("fuzz"):
        seq = _seq()
        stored, error = _call(lambda: CS.insert(record))
        if error is None:
            assert _seq() == seq + 1
            assert _same(CS.get(stored["id"]), stored)
            CS.delete(stored["id"])


@FUZZ
@given(rid=ids, op=st.sampled_from(["get", "delete", "update", "upsert", "patch", "list"]))
def test_fuzzed_ids(server: papertiger.Server, rid: Any, op: str) -> None:
    with papertiger.use_namespace("fuzz"):
        if CS.count() == 0:
            CS.insert({"id": "cs_known", "customer": "cus_k"})
        calls: dict[str, Callable[[], Any]] = {
            "get": lambda: CS.get(rid),
            "delete": lambda: CS.delete(rid),
            "update": lambda: CS.update({"id": rid, "customer": "cus_u"}),
            "upsert": lambda: CS.upsert({"id": rid, "customer": "cus_u"}),
            "patch": lambda: CS.patch(rid, {"customer": "cus_p"}),
            "list": lambda: CS.list(starting_after=rid),
        }
        _, error = _call(calls[op])
        if error is None and op in ("update", "upsert", "patch"):
            assert CS.get(rid)["customer"] in ("cus_u", "cus_p")
        if error is None and rid != "cs_known" and op in ("upsert",):
            CS.delete(rid)
        if isinstance(error, papertiger.NotFound):
            assert error.param in ("id", "starting_after")


@FUZZ
@given(value=st.one_of(values, ids, st.builds(lambda v: {"id": v}, ids)))
def test_fuzzed_index_lookups(server: papertiger.Server, value: Any) -> None:
    with papertiger.use_namespace("fuzz-index"):
        if CS.count() == 0:
            CS.insert({"id": "cs_known", "customer": "cus_k"})
        found, _ = _call(lambda: CS.find_by_customer(value), ns="fuzz-index")
        if found is not None:
            wanted = value.get("id") if isinstance(value, dict) else value
            assert all(r["customer"] == wanted for r in found)
            if wanted == "cus_k":
                assert [r["id"] for r in found] == ["cs_known"]


namespaces = st.one_of(
    texts,
    st.tuples(texts),
    st.tuples(texts, texts),
    st.lists(texts, max_size=3),
    st.tuples(),
    st.integers(),
    st.none(),
    st.binary(max_size=4),
    st.tuples(st.integers()),
)


@FUZZ
@given(ns=namespaces)
def test_fuzzed_namespaces(server: papertiger.Server, ns: Any) -> None:
    try:
        scope = papertiger.use_namespace(ns)
        scope.__enter__()
    except papertiger.InvalidRequest:
        return
    try:
        current = papertiger.current_namespace()
        record, error = _call(lambda: CS.insert({"customer": "cus_ns"}), ns=current)
        if error is not None:
            return
        assert CS.get(record["id"]) == record
        assert CS.find_by_customer("cus_ns")[0] == record
        assert [r["id"] for r in CS.list(limit=100)].count(record["id"]) == 1
        with papertiger.use_namespace("elsewhere"), pytest.raises(papertiger.NotFound):
            CS.get(record["id"])
        CS.clear_namespace()
        assert CS.count() == 0
    finally:
        scope.__exit__(None, None, None)


PAGE_NS = "fuzz-pages"
PAGE_SIZE = 23


@pytest.fixture(scope="module")
def page_ids(server: papertiger.Server) -> list[str]:
    """Newest first: ``created`` descending, later insert first among equal ``created``."""
    with papertiger.use_namespace(PAGE_NS):
        inserted = [CS.insert({"created": 1000 + i // 3})["id"] for i in range(PAGE_SIZE)]
    order = sorted(range(PAGE_SIZE), key=lambda i: (1000 + i // 3, i), reverse=True)
    return [inserted[i] for i in order]


class _Index(int):
    """A position in ``page_ids`` (drawn cursors are ids, or positions of known ids)."""


cursor = st.one_of(st.none(), st.builds(_Index, st.integers(0, PAGE_SIZE - 1)), ids)
limits = st.one_of(st.integers(-3, 110), st.none(), st.floats(), st.booleans(), st.text(max_size=3))


@FUZZ
@given(limit=limits, after=cursor, before=cursor)
def test_fuzzed_pagination(
    server: papertiger.Server, page_ids: list[str], limit: Any, after: Any, before: Any
) -> None:
    if isinstance(after, _Index):
        after = page_ids[after]
    if isinstance(before, _Index):
        before = page_ids[before]
    kwargs: dict[str, Any] = {"starting_after": after, "ending_before": before}
    if limit is not None:
        kwargs["limit"] = limit
    with papertiger.use_namespace(PAGE_NS):
        page, error = _call(lambda: CS.list(**kwargs), ns=PAGE_NS)
    n = len(page_ids)
    lim = 10 if limit is None else limit
    valid_limit = type(lim) is int and 1 <= lim <= 100
    if not valid_limit:
        assert isinstance(error, papertiger.InvalidRequest) and error.param == "limit", error
        return
    if after is not None and before is not None:
        assert isinstance(error, papertiger.InvalidRequest), error
        return
    cursor_value = after if after is not None else before
    if cursor_value is not None and cursor_value not in page_ids:
        assert isinstance(error, DOCUMENTED), error
        if isinstance(error, papertiger.NotFound):
            assert error.param == ("starting_after" if after is not None else "ending_before")
        return
    assert error is None, error
    if after is not None:
        p = page_ids.index(after)
        expected, more = page_ids[p + 1 : p + 1 + lim], p + 1 + lim < n
    elif before is not None:
        p = page_ids.index(before)
        expected, more = page_ids[max(0, p - lim) : p], p - lim > 0
    else:
        expected, more = page_ids[:lim], n > lim
    assert [r["id"] for r in page] == expected
    assert page.has_more == more


# -- raw frames from an authenticated client ---------------------------------------------------

RAW_NS = ("fuzz-raw",)
OPS = [
    "put",
    "put_many",
    "patch",
    "delete",
    "clear_namespace",
    "clear",
    "hello",
    "ping",
    "stats",
    "checkpoint",
    "once_done",
    "once_abandon",
]  # not "shutdown" (it would be obeyed) nor "once" (its reply may rightly wait)

msgpackable = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(),
        st.text(max_size=8),
        st.binary(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
wire_ids = st.one_of(
    st.just("cs_raw"),
    st.text(max_size=12),
    st.text(min_size=250, max_size=300),
    st.integers(-(2**63), 2**64 - 1),  # what msgpack can carry
    st.none(),
    st.binary(max_size=8),
)
wire_texts = st.one_of(st.text(max_size=12), st.text(min_size=250, max_size=300))
tables = st.one_of(st.sampled_from(["checkout_sessions", "customers", ""]), msgpackable)
wire_ns = st.one_of(st.just(RAW_NS), st.just("fuzz-raw"), msgpackable)
packed_records = st.one_of(
    st.builds(lambda d: msgpack.packb(d), st.dictionaries(st.text(max_size=4), msgpackable)),
    st.builds(lambda b, t: bytes([0x80 | (b % 16)]) + t, st.integers(0, 15), st.binary()),
    st.binary(max_size=12),
    msgpackable,
)
wire_records = st.one_of(
    st.tuples(
        wire_ids,
        st.one_of(st.integers(0, 2**31), st.integers(-(2**63), 2**64 - 1), msgpackable),
        packed_records,
        st.one_of(st.none(), st.just({}), st.just({"customer": "c"}), msgpackable),
    ).map(list),
    msgpackable,
)
modes = st.one_of(st.sampled_from(["insert", "update", "upsert"]), msgpackable)
ARGS: dict[str, list[Any]] = {
    "put": [tables, st.text(max_size=5), wire_ns, modes, wire_records],
    "put_many": [tables, st.text(max_size=5), wire_ns, st.lists(wire_records, max_size=3)],
    "patch": [
        tables,
        st.text(max_size=5),
        wire_ns,
        wire_ids,
        packed_records,
        st.one_of(st.just(["customer"]), msgpackable),
        st.one_of(st.none(), packed_records),  # expect
    ],
    "delete": [tables, st.text(max_size=5), wire_ns, wire_ids],
    "clear_namespace": [tables, wire_ns],
    "clear": [tables],
    "once_done": [wire_texts, st.binary(max_size=8)],
    "once_abandon": [wire_texts],
}


_keys = itertools.count()


def _frame_of(op: str, args: list[Any]) -> bytes:
    return msgpack.packb([op, *args])  # type: ignore[no-any-return]


@st.composite
def structured_frames(draw: st.DrawFn) -> bytes:
    """Frames shaped like requests: a real operation, arguments near the valid ones."""
    op = draw(st.sampled_from(OPS))
    args = [draw(s) for s in ARGS.get(op, [])]
    if draw(st.integers(0, 9)) == 0:  # now and then, the wrong number of arguments
        args = args[: draw(st.integers(0, len(args)))] + draw(st.lists(msgpackable, max_size=2))
    return _frame_of(op, args)


frames = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda v: msgpack.packb(v), msgpackable),
    st.builds(
        lambda op, rest: msgpack.packb([op, *rest]), st.text(max_size=6), st.lists(msgpackable)
    ),
    structured_frames(),
)


@pytest.fixture(scope="module")
def raw(server: papertiger.Server) -> Iterator[Any]:
    conn = mpc.Client(server.address, family="AF_UNIX", authkey=server.authkey)
    yield conn
    conn.close()


def _drain(conn: Any) -> None:
    """Drop any reply left over from an earlier (failed) example, so frames stay in step."""
    while conn.poll(0):
        conn.recv_bytes()


def _everything_readable() -> None:
    """Reading what the fuzz may have stored raises nothing but a :class:`StoreError`."""
    for ns in ("fuzz-raw", papertiger.GLOBAL):
        with papertiger.use_namespace(ns):
            for read in (
                CS.list_namespace,
                lambda: CS.list(limit=100),
                lambda: CS.get("cs_raw"),
                lambda: CS.find_by_customer("c"),
                papertiger.store.Customers.list_namespace,
            ):
                try:
                    read()
                except papertiger.StoreError:
                    pass


#: Operations the protocol never replies to (parts of a streamed insert_many).
NO_REPLY_OPS = frozenset({"stage", "abort"})


def _op_of(frame: bytes) -> Any:
    try:
        req = msgpack.unpackb(frame)
    except Exception:
        return None
    return req[0] if isinstance(req, list) and req and isinstance(req[0], str) else None


@FUZZ
@given(frame=frames)
def test_fuzzed_raw_frames(server: papertiger.Server, raw: Any, frame: bytes) -> None:
    _drain(raw)
    seq, before = _seq(), _contents(RAW_NS)
    raw.send_bytes(frame)
    if _op_of(frame) in NO_REPLY_OPS:  # documented as never replied to: ask for a reply
        raw.send_bytes(msgpack.packb(["abort", "?"]))
        raw.send_bytes(msgpack.packb(["ping"]))
    assert raw.poll(30), "the manager did not answer a malformed frame"
    reply = msgpack.unpackb(raw.recv_bytes())
    assert isinstance(reply, list) and reply[0] in (0, 1), reply
    if reply[0] == 1:  # ERR: a documented kind, and nothing changed
        assert reply[1] in DOCUMENTED_KINDS, reply
        assert isinstance(reply[2], str) and reply[2]
        assert _seq() == seq, f"a rejected frame moved the log: {reply}"
        assert _contents(RAW_NS) == before, f"a rejected frame changed the store: {reply}"
    else:
        assert _seq() >= seq
    _everything_readable()
    # and the manager goes on serving everyone
    assert current_client().request(["ping"])[0] >= seq


@FUZZ
@given(
    packed=st.one_of(
        st.builds(lambda b, t: bytes([0x80 | (b % 16)]) + t, st.integers(0, 15), st.binary()),
        st.builds(lambda t: b"\x81\xa1k\xa2" + t, st.binary(min_size=2, max_size=2)),
        st.builds(lambda t: b"\x81\x01" + t, st.binary(min_size=1, max_size=3)),
        st.builds(lambda d: msgpack.packb(d), st.dictionaries(st.text(max_size=3), msgpackable)),
    ),
    op=st.sampled_from(["put", "put_many", "once_done"]),
)
def test_record_bytes_that_do_not_decode(
    server: papertiger.Server, raw: Any, packed: bytes, op: str
) -> None:
    """A client that sends record bytes that are not a msgpack map poisons nothing."""
    _drain(raw)
    wire = ["cs_raw", 1, packed, None]
    key = f"fuzz-{next(_keys)}"
    frame = {
        "put": ["put", "checkout_sessions", "checkout.session", RAW_NS, "upsert", wire],
        "put_many": ["put_many", "checkout_sessions", "checkout.session", RAW_NS, [wire]],
        "once_done": ["once_done", key, packed],
    }[op]
    if op == "once_done":  # claim the key first, as once() does
        raw.send_bytes(msgpack.packb(["once", key]))
        assert raw.poll(30) and msgpack.unpackb(raw.recv_bytes())[2] == ["run"]
    raw.send_bytes(msgpack.packb(frame))
    assert raw.poll(30)
    reply = msgpack.unpackb(raw.recv_bytes())
    assert reply[0] == 0 or reply[1] in DOCUMENTED_KINDS, reply
    _everything_readable()
    if op == "once_done":
        if reply[0] == 1:
            raw.send_bytes(msgpack.packb(["once_abandon", key]))
            assert raw.poll(30) and msgpack.unpackb(raw.recv_bytes())[0] == 0
        # once() reads the stored result: it must decode (or not be stored at all)
        assert papertiger.once(key, lambda: "fresh") is not None
    with papertiger.use_namespace(RAW_NS):
        try:
            CS.delete("cs_raw")
        except papertiger.NotFound:
            pass


def test_manager_survived_the_fuzz(server: papertiger.Server) -> None:
    """After every fuzz above (same manager): alive, consistent, and a new reader agrees."""
    assert server.process.alive()
    stats = server.stats()
    for ns in ("fuzz", PAGE_NS):
        with papertiger.use_namespace(ns):
            count = CS.count()
        tables = stats["tables"].get("checkout_sessions", {"namespaces": {}})
        assert tables["namespaces"].get(ns, 0) == count
    assert not math.isnan(stats["uptime"])
