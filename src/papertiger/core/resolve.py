"""Requests into effects, in the manager: frame checks, strict writes, batches. Pure.

Theory of operation
-------------------
A write crosses three places; this module is the second (:mod:`.records`
prepared the record in the client, :meth:`.state.State.apply` applies the
effect everywhere).  The manager checks the request's frame (an
authenticated client may still send garbage), checks it against the
current :class:`~.state.State` (strict writes: insert of an existing id,
update/delete/patch of a missing one), and resolves it into an *effect*
(:func:`resolve`): everything decided (generated id, ``created``, the merged
record of a ``patch``), so replaying the log is deterministic.

A ``patch`` may be conditional: with ``expect`` it applies only if every
expected field still holds its expected value (:func:`check_expect`).  The
check runs here, against the state the patch merges into, in the one process
that applies writes, so nothing can change the record between the check and
the write; a patch that does not hold raises
:class:`~papertiger.errors.Conflict` and produces no effect.

Every rejection is a :class:`~papertiger.errors.StoreError` naming the field
or id at fault; a rejected request produces no effect, so the store is
unchanged.  A batch is resolved as a whole before anything is applied: all
or nothing (:class:`BatchBuilder`).

The write requests are typed (:class:`Put`, :class:`PutMany`,
:class:`Patch`, :class:`Delete`, :class:`ClearNamespace`, :class:`Clear`):
on the wire a request is ``[op, *fields]`` (see
:mod:`papertiger.engine.protocol`), and :data:`WRITE_REQUESTS` maps each op
name to its type.  Every field is still checked here, because an
authenticated client may send anything.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack
import ormsgpack

from ..errors import AlreadyExists, Conflict, InvalidRequest, NotFound, StoreError
from ..namespace import Namespace, format_namespace, normalize_namespace
from .records import (
    _INT_MAX,
    _INT_MIN,
    MAX_ID_LENGTH,
    check_created,
    check_id,
    index_values,
    merge_changes,
)
from .state import BATCH, CLEAR, CLEAR_NS, DELETE, PUT, DeleteEffect, PutEffect, StateView

__all__ = [
    "WRITE_REQUESTS",
    "BatchBuilder",
    "Clear",
    "ClearNamespace",
    "Delete",
    "Patch",
    "Put",
    "PutMany",
    "WriteRequest",
    "apply_patch",
    "check_expect",
    "read_expect",
    "resolve",
    "write_request",
]


class Put(NamedTuple):
    """``insert`` / ``update`` / ``upsert`` of one record (``mode``)."""

    table: str
    object_name: str
    ns: Any
    mode: str
    record: Any  # [id, created, packed, index_values]


class PutMany(NamedTuple):
    """``insert_many`` in one frame: all or nothing."""

    table: str
    object_name: str
    ns: Any
    records: Any  # [[id, created, packed, index_values], ...]


class Patch(NamedTuple):
    """Merge packed ``changes`` into record ``id``, atomically, in the manager.

    ``expect`` (packed like ``changes``, or None) makes it conditional: see
    :func:`check_expect`.
    """

    table: str
    object_name: str
    ns: Any
    id: str
    changes: bytes
    index_fields: Any  # [field, ...]
    expect: bytes | None


class Delete(NamedTuple):
    table: str
    object_name: str
    ns: Any
    id: str


class ClearNamespace(NamedTuple):
    """``ns`` and every namespace nested under it, in ``table`` (None: every table)."""

    table: str | None
    ns: Any


class Clear(NamedTuple):
    """Every namespace of ``table`` (None: every table but the internal ones)."""

    table: str | None


WriteRequest = Put | PutMany | Patch | Delete | ClearNamespace | Clear

#: Op name on the wire -> request type.
WRITE_REQUESTS: dict[str, type[Any]] = {
    "put": Put,
    "put_many": PutMany,
    "patch": Patch,
    "delete": Delete,
    "clear_namespace": ClearNamespace,
    "clear": Clear,
}

_packb = msgpack.packb
_fast_packb = ormsgpack.packb


def _frame_error(op: str, what: str) -> InvalidRequest:
    return InvalidRequest(f"Malformed {op} request: {what}.", param="request")


def _table(op: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _frame_error(op, "the table must be a non-empty str")
    return value


def _optional_table(op: str, value: object) -> str | None:
    return None if value is None else _table(op, value)


def _ns(value: object) -> Namespace:
    return normalize_namespace(value)


def _wire_record(op: str, item: object) -> tuple[str, int, bytes, dict[str, Any] | None]:
    """``item`` checked as ``[id, created, packed, index_values]``. O(index values).

    The common case (what :func:`~.records.prepare_record` sends) is checked in
    a few comparisons; anything else takes the checks that name the fault.
    """
    if item.__class__ is list and len(item) == 4:  # type: ignore[arg-type]
        record_id, created, packed, idx = item  # type: ignore[misc]
        if (
            record_id.__class__ is str
            and 0 < len(record_id) <= MAX_ID_LENGTH
            and record_id.isascii()
            and created.__class__ is int
            and _INT_MIN <= created <= _INT_MAX
            and packed.__class__ is bytes
            and packed
            and (0x80 <= packed[0] <= 0x8F or packed[0] == 0xDE or packed[0] == 0xDF)
        ):
            if idx is None:
                return record_id, created, packed, None
            if idx.__class__ is dict and idx:
                for k, v in idx.items():
                    kind = v.__class__
                    if k.__class__ is not str or (kind is not str and kind is not int):
                        break
                else:
                    return record_id, created, packed, idx
    return _wire_record_checked(op, item)


def _wire_record_checked(op: str, item: object) -> tuple[str, int, bytes, dict[str, Any] | None]:
    if not isinstance(item, (list, tuple)) or len(item) != 4:
        raise _frame_error(op, "a record must be [id, created, packed, index_values]")
    record_id, created, packed, idx = item
    check_id(record_id)
    check_created(created)
    if (
        not isinstance(packed, bytes)
        or not packed
        or not (0x80 <= packed[0] <= 0x8F or packed[0] in (0xDE, 0xDF))
    ):
        raise _frame_error(op, "the packed record must be msgpack bytes of a map")
    if idx is not None:
        if not isinstance(idx, dict) or not all(
            isinstance(k, str)
            and (isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)))
            for k, v in idx.items()
        ):
            raise _frame_error(op, "index values must map str to str or int")
        idx = idx or None
    return record_id, created, packed, idx


def _not_found(resource: str, record_id: str) -> NotFound:
    return NotFound(f"No such {resource}: '{record_id}'", param="id")


def _resolve_put(state: StateView, req: Put) -> PutEffect:
    table = _table("put", req.table)
    key = _ns(req.ns)
    record_id, created, packed, idx = _wire_record("put", req.record)
    exists = state.get(table, key, record_id) is not None
    mode = req.mode
    if mode == "insert":
        if exists:
            raise AlreadyExists(
                f"{req.object_name} '{record_id}' already exists in namespace "
                f"{format_namespace(key)}; use update() or upsert() to replace it.",
                param="id",
            )
    elif mode == "update":
        if not exists:
            raise _not_found(str(req.object_name), record_id)
    elif mode != "upsert":
        raise _frame_error("put", f"unknown mode {mode!r}")
    return PutEffect(PUT, table, list(key), record_id, created, packed, idx)


class BatchBuilder:
    """An ``insert_many`` batch being assembled, possibly over several frames.

    :meth:`add` checks each record's frame as it arrives (and ids repeated
    within the batch); :meth:`finish` checks the whole batch against the
    state and returns one ``BATCH`` effect, or raises without changing
    anything: all or nothing.  The first error is kept, so a batch sent in
    chunks fails as a whole at ``finish``.  O(k) to add k records, O(k) to
    finish.
    """

    __slots__ = ("effects", "error", "key", "ns_list", "object_name", "seen", "table")

    def __init__(self, table: object, object_name: object, ns: object) -> None:
        self.table = _table("put_many", table)
        self.object_name = str(object_name)
        self.key = _ns(ns)
        self.ns_list = list(self.key)
        self.effects: list[PutEffect] = []
        self.seen: set[str] = set()
        self.error: StoreError | None = None

    def matches(self, table: object, ns: object) -> bool:
        return table == self.table and isinstance(ns, (list, tuple)) and tuple(ns) == self.key

    def add(self, items: object) -> None:
        """Check and keep a chunk of ``[id, created, packed, index_values]`` records."""
        if self.error is not None:
            return
        if not isinstance(items, list):
            self.error = _frame_error("put_many", "the records must be a list")
            return
        table, ns_list, seen, effects = self.table, self.ns_list, self.seen, self.effects
        for item in items:
            i = len(effects)
            try:
                record_id, created, packed, idx = _wire_record("put_many", item)
            except InvalidRequest as exc:
                self.error = InvalidRequest(
                    f"records[{i}]: {exc.message} Nothing was inserted.", param=exc.param
                )
                return
            if record_id in seen:
                self.error = self._exists(i, record_id, " (twice in this batch)")
                return
            seen.add(record_id)
            effects.append(PutEffect(PUT, table, ns_list, record_id, created, packed, idx))

    def _exists(self, i: int, record_id: str, why: str) -> AlreadyExists:
        return AlreadyExists(
            f"records[{i}]: {self.object_name} '{record_id}' already exists in namespace "
            f"{format_namespace(self.key)}{why}; nothing was inserted.",
            param="id",
        )

    def finish(self, state: StateView) -> list[Any]:
        """The batch's effect, or raise its first error. Pure: reads ``state`` only."""
        if self.error is not None:
            raise self.error
        partition = state.partition(self.table, self.key)
        if partition is not None:
            records = partition.records
            for i, effect in enumerate(self.effects):
                if effect.id in records:
                    raise self._exists(i, effect.id, "")
        return [BATCH, self.effects]


def _resolve_put_many(state: StateView, req: PutMany) -> list[Any]:
    batch = BatchBuilder(req.table, req.object_name, req.ns)
    batch.add(req.records)
    return batch.finish(state)


def _resolve_patch(state: StateView, req: Patch) -> PutEffect:
    table = _table("patch", req.table)
    key = _ns(req.ns)
    record_id = check_id(req.id)
    packed_changes, index_fields = req.changes, req.index_fields
    if not isinstance(packed_changes, bytes):
        raise _frame_error("patch", "the changes must be msgpack bytes")
    if not isinstance(index_fields, list) or not all(isinstance(f, str) for f in index_fields):
        raise _frame_error("patch", "index_fields must be a list of str")
    expect = read_expect(req.expect)
    current = state.get(table, key, record_id)
    if current is None:
        raise _not_found(str(req.object_name), record_id)
    try:
        changes = msgpack.unpackb(packed_changes)
    except Exception:
        raise _frame_error("patch", "the changes are not valid msgpack") from None
    record = msgpack.unpackb(current)
    merged = apply_patch(record_id, record, changes)
    if expect is not None:
        check_expect(str(req.object_name), record_id, record, expect)
    # Both halves came out of msgpack (str keys only, values msgpack can carry),
    # so the merge packs as it is: no second walk over the record.
    try:
        packed = _fast_packb(merged)  # the same bytes as msgpack's, about 3x faster
    except TypeError:  # an ext value decodes as msgpack.ExtType, which ormsgpack refuses
        packed = _packb(merged, use_bin_type=True)
    created = merged.get("created")
    created = created if type(created) is int else 0
    return PutEffect(
        PUT, table, list(key), record_id, created, packed, index_values(merged, tuple(index_fields))
    )


def apply_patch(record_id: str, current: dict[str, Any], changes: object) -> dict[str, Any]:
    """``current`` with ``changes`` merged in, after checking them; the rules of ``patch``.

    ``changes`` must be a dict; it may not change the id; a ``created`` in it
    must be an int.  Nested dicts merge, other values replace
    (:func:`~.records.merge_changes`).  Every backend's ``patch`` uses this.
    """
    if not isinstance(changes, dict):
        raise InvalidRequest("Invalid changes: expected a dict.", param="changes")
    if "id" in changes and changes["id"] != record_id:
        raise InvalidRequest(
            f"Invalid id: patch cannot change a record's id ({record_id!r} to {changes['id']!r}).",
            param="id",
        )
    if "created" in changes:
        check_created(changes["created"])
    return merge_changes(current, changes)


def read_expect(packed: object) -> dict[str, Any] | None:
    """The ``expect`` of a patch request: None, or msgpack bytes of a map with str keys. O(size).

    What :meth:`~papertiger.Store.patch` sends always passes; anything else is
    :class:`InvalidRequest` with ``param="expect"`` (an authenticated client
    may send anything).
    """
    if packed is None:
        return None
    if isinstance(packed, bytes):
        try:
            expect = msgpack.unpackb(packed)
        except Exception:
            expect = None
        if isinstance(expect, dict) and all(isinstance(k, str) for k in expect):
            return expect
    raise InvalidRequest(
        "Malformed patch request: expect must be msgpack bytes of a map with str keys, or nil.",
        param="expect",
    )


def check_expect(
    object_name: str, record_id: str, current: dict[str, Any], expect: dict[str, Any]
) -> None:
    """Raise :class:`Conflict` unless each field of ``expect`` holds its expected value.

    The rule of a conditional ``patch``, for every backend: for every
    top-level field of ``expect``, in order, the record's current value must
    equal (``==`` on the decoded values) the expected one; a field absent from
    the record counts as None.  ``param`` of the :class:`Conflict` is the first
    field that differs.  Pure; O(size of the expected values).

    >>> check_expect("checkout.session", "cs_1", {"status": "open"}, {"status": "open"})
    >>> check_expect("checkout.session", "cs_1", {}, {"paid_at": None})
    >>> try:
    ...     check_expect("checkout.session", "cs_1", {"status": "expired"}, {"status": "open"})
    ... except Conflict as exc:
    ...     print(exc.param, "|", exc.message)  # doctest: +NORMALIZE_WHITESPACE
    status | checkout.session 'cs_1' was not patched: its 'status' is 'expired', expected
    'open'. Nothing was changed; re-read the record and decide again (retry the patch with
    what it holds now, or give up).
    """
    for field, expected in expect.items():
        value = current.get(field)
        if value != expected:
            now = _shown(value) if field in current else "absent"
            raise Conflict(
                f"{object_name} '{record_id}' was not patched: its {field!r} is {now}, "
                f"expected {_shown(expected)}. Nothing was changed; re-read the record and "
                "decide again (retry the patch with what it holds now, or give up).",
                param=field,
            )


#: A value's repr in a message is cut to this many characters.
_SHOWN_LENGTH = 120


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 3] + "..."


def _resolve_delete(state: StateView, req: Delete) -> DeleteEffect:
    table = _table("delete", req.table)
    key = _ns(req.ns)
    record_id = check_id(req.id)
    if state.get(table, key, record_id) is None:
        raise _not_found(str(req.object_name), record_id)
    return DeleteEffect(DELETE, table, list(key), record_id)


def _resolve_clear_namespace(state: StateView, req: ClearNamespace) -> list[Any]:
    return [CLEAR_NS, _optional_table("clear_namespace", req.table), list(_ns(req.ns))]


def _resolve_clear(state: StateView, req: Clear) -> list[Any]:
    return [CLEAR, _optional_table("clear", req.table)]


_RESOLVERS: dict[type[Any], Any] = {
    Put: _resolve_put,
    PutMany: _resolve_put_many,
    Patch: _resolve_patch,
    Delete: _resolve_delete,
    ClearNamespace: _resolve_clear_namespace,
    Clear: _resolve_clear,
}


def write_request(op: str, fields: list[Any]) -> WriteRequest:
    """The typed request for ``[op, *fields]``; :class:`InvalidRequest` when malformed. O(1)."""
    kind = WRITE_REQUESTS.get(op)
    if kind is None:
        raise InvalidRequest(f"Unknown operation {op!r}.", param="request")
    arity = len(kind._fields)
    if len(fields) != arity:
        raise _frame_error(op, f"expected {arity + 1} items, got {len(fields) + 1}")
    return kind(*fields)  # type: ignore[no-any-return]


def resolve(state: StateView, req: WriteRequest) -> Any:
    """Turn a write request into the effect to log, or raise a :class:`StoreError`.

    Pure: reads ``state``, never changes it.  O(log n) for single-record
    requests, O(k log n) for a batch of k.
    """
    return _RESOLVERS[type(req)](state, req)
