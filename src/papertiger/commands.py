"""Requests into effects: validation and resolution, without I/O.

Theory of operation
-------------------
A write crosses three places, and this module holds the pure part of each:

1. **the client** turns a user's record into a :class:`PreparedRecord`
   (:func:`prepare_record`): it checks the record is a mapping with ``str``
   keys whose values msgpack can carry, fills in ``id`` (``<prefix>_`` + 24
   random alphanumerics) and ``created`` (int unix seconds) when absent,
   packs it once, and extracts the few fields the indexes need.  The
   manager and the readers never decode the record to store it.
2. **the manager** checks the request's frame (an authenticated client may
   still send garbage), checks it against the current :class:`State`
   (strict writes: insert of an existing id, update/delete/patch of a missing
   one), and resolves it into an *effect* (:func:`resolve`), which it logs.
3. **every replica** applies the effect (:meth:`State.apply`).

Every rejection is a :class:`StoreError` naming the field or id at fault; a
rejected request produces no effect, so the store is unchanged.  A batch is
resolved as a whole before anything is applied: all or nothing.

Request frames (client to manager) are msgpack lists whose first item is the
operation name; see :data:`WRITE_OPS` and the ``_resolve_*`` functions.
"""

from __future__ import annotations

import base64
import os
import string
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import msgpack

from .errors import AlreadyExists, InvalidRequest, NotFound, StoreError
from .namespace import Namespace, format_namespace, normalize_namespace
from .state import BATCH, CLEAR, CLEAR_NS, DELETE, PUT, State

__all__ = [
    "ID_ALPHABET",
    "BatchBuilder",
    "PreparedRecord",
    "generate_id",
    "index_values",
    "merge_changes",
    "pack_value",
    "prepare_record",
    "resolve",
]

ID_ALPHABET = string.ascii_letters + string.digits
ID_RANDOM_LENGTH = 24
MAX_ID_LENGTH = 255
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

_packb = msgpack.packb


def generate_id(prefix: str) -> str:
    """``<prefix>_`` followed by 24 random alphanumerics. O(1).

    Base64 of random bytes with ``+`` and ``/`` dropped: each kept character
    is uniform over the 62 alphanumerics.

    >>> len(generate_id("cs")), generate_id("cs")[:3]
    (27, 'cs_')
    """
    while True:
        text = base64.b64encode(os.urandom(30)).translate(None, b"+/")
        if len(text) >= ID_RANDOM_LENGTH:
            return prefix + "_" + text[:ID_RANDOM_LENGTH].decode()


# -- values -------------------------------------------------------------------


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def _keys_are_str(mapping: dict[Any, Any]) -> bool:
    """True when every key in ``mapping`` and the containers below it is a str.

    The fast path of validation: no paths are built; O(keys + items).  Any
    value that is not a plain scalar, dict, list or tuple returns False and
    leaves it to the slow path, which names the field at fault.
    """
    for key, value in mapping.items():
        if key.__class__ is not str:
            return False
        cls = value.__class__
        if cls in _SCALARS:
            continue
        if cls is dict:
            if not _keys_are_str(value):
                return False
        elif cls is list or cls is tuple:
            if not _items_keys_are_str(value):
                return False
        else:
            return False
    return True


def _items_keys_are_str(items: list[Any] | tuple[Any, ...]) -> bool:
    """:func:`_keys_are_str` for the items of a list or tuple."""
    for value in items:
        cls = value.__class__
        if cls in _SCALARS:
            continue
        if cls is dict:
            if not _keys_are_str(value):
                return False
        elif cls is list or cls is tuple:
            if not _items_keys_are_str(value):
                return False
        else:
            return False
    return True


def _find_unpackable(value: Any, path: str) -> tuple[str, str] | None:
    """The first field msgpack cannot carry, as ``(path, what)``; None when all can."""
    if value is None or isinstance(value, (bool, float, bytes)):
        return None
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path, "a str holding a lone surrogate (not valid UTF-8)"
        return None
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return path, f"an integer outside msgpack's range ({value})"
    if isinstance(value, Mapping):
        if not isinstance(value, dict):  # msgpack packs dicts only
            return path, f"a mapping of type {type(value).__name__} (not a dict)"
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"a mapping with the {type(key).__name__} key {key!r}"
            if _find_unpackable(key, path):
                return path, f"a mapping with the key {key!r}, a str that is not valid UTF-8"
            found = _find_unpackable(item, f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _find_unpackable(item, f"{path}[{i}]")
            if found:
                return found
        return None
    return path, f"a value of type {type(value).__name__}"


def pack_value(value: Any, param: str) -> bytes:
    """msgpack ``value``, or raise :class:`InvalidRequest` naming the field at fault.

    One pass over the containers (every key must be a str) plus ``packb``:
    O(size of the value).  Paths are only worked out when something is wrong.
    """
    try:
        if value.__class__ is dict and _keys_are_str(value):
            return _packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError):
        pass
    base = "" if param == "record" else param
    found = _find_unpackable(value, base)
    if found is None:
        try:
            return _packb(value, use_bin_type=True)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            found = (base, str(exc))
    where, what = found
    where = where or param
    raise InvalidRequest(
        f"Invalid {where}: {what} cannot be stored; use None, bool, int, float, "
        "str, bytes, list or a dict with str keys.",
        param=where,
    )


# -- records ------------------------------------------------------------------


class PreparedRecord(NamedTuple):
    """A record ready to travel: resolved id/created, packed bytes, index values."""

    id: str
    created: int
    packed: bytes
    index_values: dict[str, Any] | None
    record: dict[str, Any]

    def wire(self) -> list[Any]:
        """``[id, created, packed, index_values]``: the record as requests carry it."""
        return [self.id, self.created, self.packed, self.index_values]


def index_values(record: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any] | None:
    """The values of ``fields`` fit for an index (str or int; an expanded object's id).

    >>> index_values({"customer": {"id": "cus_1"}, "email": None}, ("customer", "email"))
    {'customer': 'cus_1'}
    """
    found: dict[str, Any] | None = None
    for name in fields:
        value = record.get(name)
        if isinstance(value, Mapping):
            value = value.get("id")
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            if found is None:
                found = {}
            found[name] = value
    return found


def check_id(value: object, param: str = "id") -> str:
    """Return ``value`` when it is a valid object id, else raise :class:`InvalidRequest`."""
    if type(value) is not str and not isinstance(value, str):
        raise InvalidRequest(
            f"Invalid {param}: expected an object id (a str), got {type(value).__name__} "
            f"{value!r}.",
            param=param,
        )
    if not value or len(value) > MAX_ID_LENGTH:
        raise InvalidRequest(
            f"Invalid {param}: an id must be 1 to {MAX_ID_LENGTH} characters, got {len(value)}.",
            param=param,
        )
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"Invalid {param}: {value!r} is not valid Unicode text (it holds a lone "
                "surrogate); use an id that can be encoded as UTF-8.",
                param=param,
            ) from None
    return str(value)


def check_created(value: object) -> int:
    if type(value) is not int or not _INT_MIN <= value <= _INT_MAX:
        raise InvalidRequest(
            f"Invalid created: expected an int (unix seconds), got "
            f"{type(value).__name__} {value!r}.",
            param="created",
        )
    return value


def prepare_record(
    record: object,
    *,
    prefix: str,
    object_name: str | None,
    index_fields: tuple[str, ...],
    require_id: bool = False,
    now: int | None = None,
) -> PreparedRecord:
    """Validate and pack ``record``; fill ``id``, ``created`` and ``object`` when absent.

    O(size of the record).  Raises :class:`InvalidRequest` naming the field at
    fault; never modifies ``record``.

    >>> p = prepare_record({"customer": "cus_1"}, prefix="cs",
    ...                    object_name="checkout.session", index_fields=("customer",), now=7)
    >>> p.id[:3], p.created, p.index_values, p.record["object"]
    ('cs_', 7, {'customer': 'cus_1'}, 'checkout.session')
    """
    if not isinstance(record, Mapping):
        raise InvalidRequest(
            f"Invalid record: expected a dict, got {type(record).__name__}.", param="record"
        )
    full = dict(record)
    if "id" in full:
        record_id = check_id(full["id"])
    elif require_id:
        raise InvalidRequest(
            "Missing id: this call needs the record's 'id' (insert generates one).",
            param="id",
        )
    else:
        record_id = full["id"] = generate_id(prefix)
    if "created" in full:
        created = check_created(full["created"])
    else:
        created = full["created"] = int(time.time()) if now is None else now
    if object_name is not None and "object" not in full:
        full["object"] = object_name
    packed = pack_value(full, "record")
    return PreparedRecord(record_id, created, packed, index_values(full, index_fields), full)


def merge_changes(current: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``current`` updated by ``changes``: nested dicts merge, every other value replaces.

    >>> merge_changes({"a": 1, "metadata": {"x": "1"}}, {"metadata": {"y": "2"}, "b": None})
    {'a': 1, 'metadata': {'x': '1', 'y': '2'}, 'b': None}
    """
    merged = dict(current)
    for key, value in changes.items():
        old = merged.get(key)
        if isinstance(value, Mapping) and isinstance(old, dict):
            merged[key] = merge_changes(old, value)
        else:
            merged[key] = value
    return merged


# -- the manager's side ------------------------------------------------------------


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


def _resolve_put(state: State, req: list[Any]) -> list[Any]:
    # ["put", table, resource, ns, mode, [id, created, packed, idx]]
    _, table, resource, ns, mode, item = req
    table = _table("put", table)
    key = _ns(ns)
    record_id, created, packed, idx = _wire_record("put", item)
    exists = state.get(table, key, record_id) is not None
    if mode == "insert":
        if exists:
            raise AlreadyExists(
                f"{resource} '{record_id}' already exists in namespace {format_namespace(key)}; "
                "use update() or upsert() to replace it.",
                param="id",
            )
    elif mode == "update":
        if not exists:
            raise _not_found(str(resource), record_id)
    elif mode != "upsert":
        raise _frame_error("put", f"unknown mode {mode!r}")
    return [PUT, table, list(key), record_id, created, packed, idx]


class BatchBuilder:
    """An ``insert_many`` batch being assembled, possibly over several frames.

    :meth:`add` checks each record's frame as it arrives (and ids repeated
    within the batch); :meth:`finish` checks the whole batch against the
    state and returns one ``BATCH`` effect, or raises without changing
    anything: all or nothing.  The first error is kept, so a batch sent in
    chunks fails as a whole at ``finish``.  O(k) to add k records, O(k) to
    finish.
    """

    __slots__ = ("effects", "error", "key", "ns_list", "resource", "seen", "table")

    def __init__(self, table: object, resource: object, ns: object) -> None:
        self.table = _table("put_many", table)
        self.resource = str(resource)
        self.key = _ns(ns)
        self.ns_list = list(self.key)
        self.effects: list[list[Any]] = []
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
            effects.append([PUT, table, ns_list, record_id, created, packed, idx])

    def _exists(self, i: int, record_id: str, why: str) -> AlreadyExists:
        return AlreadyExists(
            f"records[{i}]: {self.resource} '{record_id}' already exists in namespace "
            f"{format_namespace(self.key)}{why}; nothing was inserted.",
            param="id",
        )

    def finish(self, state: State) -> list[Any]:
        """The batch's effect, or raise its first error. Pure: reads ``state`` only."""
        if self.error is not None:
            raise self.error
        partition = state.partition(self.table, self.key)
        if partition is not None:
            records = partition.records
            for i, effect in enumerate(self.effects):
                if effect[3] in records:
                    raise self._exists(i, effect[3], "")
        return [BATCH, self.effects]


def _resolve_put_many(state: State, req: list[Any]) -> list[Any]:
    # ["put_many", table, resource, ns, [[id, created, packed, idx], ...]]
    _, table, resource, ns, items = req
    batch = BatchBuilder(table, resource, ns)
    batch.add(items)
    return batch.finish(state)


def _resolve_patch(state: State, req: list[Any]) -> list[Any]:
    # ["patch", table, resource, ns, id, packed_changes, index_fields]
    _, table, resource, ns, record_id, packed_changes, index_fields = req
    table = _table("patch", table)
    key = _ns(ns)
    check_id(record_id)
    if not isinstance(packed_changes, bytes):
        raise _frame_error("patch", "the changes must be msgpack bytes")
    if not isinstance(index_fields, list) or not all(isinstance(f, str) for f in index_fields):
        raise _frame_error("patch", "index_fields must be a list of str")
    current = state.get(table, key, record_id)
    if current is None:
        raise _not_found(str(resource), record_id)
    try:
        changes = msgpack.unpackb(packed_changes)
    except Exception:
        raise _frame_error("patch", "the changes are not valid msgpack") from None
    if not isinstance(changes, dict):
        raise InvalidRequest("Invalid changes: expected a dict.", param="changes")
    if "id" in changes and changes["id"] != record_id:
        raise InvalidRequest(
            f"Invalid id: patch cannot change a record's id ({record_id!r} to {changes['id']!r}).",
            param="id",
        )
    if "created" in changes:
        check_created(changes["created"])
    merged = merge_changes(msgpack.unpackb(current), changes)
    # Both halves came out of msgpack (str keys only, values msgpack can carry),
    # so the merge packs as it is: no second walk over the record.
    packed = _packb(merged, use_bin_type=True)
    created = merged.get("created")
    created = created if type(created) is int else 0
    return [
        PUT,
        table,
        list(key),
        record_id,
        created,
        packed,
        index_values(merged, tuple(index_fields)),
    ]


def _resolve_delete(state: State, req: list[Any]) -> list[Any]:
    # ["delete", table, resource, ns, id]
    _, table, resource, ns, record_id = req
    table = _table("delete", table)
    key = _ns(ns)
    check_id(record_id)
    if state.get(table, key, record_id) is None:
        raise _not_found(str(resource), record_id)
    return [DELETE, table, list(key), record_id]


def _resolve_clear_namespace(state: State, req: list[Any]) -> list[Any]:
    # ["clear_namespace", table | None, ns]
    _, table, ns = req
    return [CLEAR_NS, _optional_table("clear_namespace", table), list(_ns(ns))]


def _resolve_clear(state: State, req: list[Any]) -> list[Any]:
    # ["clear", table | None]
    _, table = req
    return [CLEAR, _optional_table("clear", table)]


_RESOLVERS = {
    "put": (_resolve_put, 6),
    "put_many": (_resolve_put_many, 5),
    "patch": (_resolve_patch, 7),
    "delete": (_resolve_delete, 5),
    "clear_namespace": (_resolve_clear_namespace, 3),
    "clear": (_resolve_clear, 2),
}

#: The operations that :func:`resolve` turns into effects.
WRITE_OPS = frozenset(_RESOLVERS)


def resolve(state: State, req: list[Any]) -> list[Any]:
    """Turn a write request into the effect to log, or raise a :class:`StoreError`.

    Pure: reads ``state``, never changes it.  O(log n) for single-record
    requests, O(k log n) for a batch of k.
    """
    op = req[0]
    entry = _RESOLVERS.get(op)
    if entry is None:
        raise InvalidRequest(f"Unknown operation {op!r}.", param="request")
    resolver, arity = entry
    if len(req) != arity:
        raise _frame_error(str(op), f"expected {arity} items, got {len(req)}")
    return resolver(state, req)
