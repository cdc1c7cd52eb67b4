"""The pure state machine: tables of namespaced, ordered, indexed records.

Theory of operation
-------------------
A :class:`State` holds ``tables -> namespace -> Partition``.  A partition holds
its records as *packed* msgpack bytes (never decoded here), an order index,
and secondary indexes:

* ``records[id] = Entry(created, ord, packed, index_values)``;
* ``order``: a :class:`sortedcontainers.SortedList` of ``(created, ord, id)``,
  ascending, so Stripe's order (``created`` descending, later insert first) is
  the list read backwards.  ``ord`` is a per-state insertion counter, assigned
  when an id first appears in a partition and kept across updates, so ties in
  ``created`` are broken deterministically;
* ``indexes[field][value]``: a :class:`~sortedcontainers.SortedList` of the
  order keys of the records whose ``field`` holds ``value``, for the fields
  the writer chose to index (``customer``, ``email``, ``status``...).  The
  values travel *with* each put, so the state needs no schema and never
  decodes a record.  Because an index keeps the list order, a filtered page
  is a slice of it: O(log n + limit), like an unfiltered one.  A value held
  by one record only (an email, often a customer) keeps that record's order
  key alone, not in a list: making a ``SortedList`` was most of the cost of
  indexing a put.  :meth:`Partition.keys` hands out a list either way.

:meth:`State.apply` is the only way a state changes.  It takes an *effect*:
a fully resolved, msgpack-friendly list (see :mod:`.resolve`, which turns
requests into effects and rejects bad ones).  Because the
manager and every reader run this same code over the same sequence of
effects, they cannot disagree.  ``apply`` never raises on an effect that
:mod:`.resolve` produced; effects are not re-validated here.

A partition answers queries through three methods that
:mod:`.pagination` relies on (and that any other view of a partition, such
as a checkpoint read in place, provides too): :meth:`Partition.entry`,
:meth:`Partition.keys` and ``len()``.

The effect kinds::

    [PUT,      table, ns, id, created, packed, index_values]   insert or replace
    [DELETE,   table, ns, id]
    [CLEAR_NS, table | None, ns]        ns and every namespace nested under it
    [CLEAR,    table | None]            every namespace of a table (or of all)
    [BATCH,    [effect, ...]]           applied together: one log entry

Complexities below are for a partition of ``n`` records.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from typing import Any, NamedTuple, Protocol

from sortedcontainers import SortedList

from ..namespace import Namespace, is_nested

__all__ = [
    "BATCH",
    "CLEAR",
    "CLEAR_NS",
    "DELETE",
    "PUT",
    "DeleteEffect",
    "Entry",
    "Partition",
    "PutEffect",
    "State",
    "StateView",
]

PUT, DELETE, CLEAR_NS, CLEAR, BATCH = 0, 1, 2, 3, 4

OrderKey = tuple[int, int, str]

#: An empty, shared sequence of order keys (what :meth:`Partition.keys` gives for no match).
NO_KEYS: SortedList = SortedList()


class PutEffect(NamedTuple):
    """``[PUT, table, ns, id, created, packed, index_values]``, with names."""

    kind: int
    table: str
    ns: list[str]
    id: str
    created: int
    packed: bytes
    index_values: dict[str, Any] | None


class DeleteEffect(NamedTuple):
    """``[DELETE, table, ns, id]``, with names."""

    kind: int
    table: str
    ns: list[str]
    id: str


class Entry(NamedTuple):
    """One stored record: its order fields, its packed bytes and its index values."""

    created: int
    ord: int
    packed: bytes
    index_values: dict[str, Any] | None


def _changed(these: dict[str, Any] | None, others: dict[str, Any] | None) -> dict[str, Any]:
    """The items of ``these`` that ``others`` does not hold with the same value. O(len)."""
    if not these:
        return {}
    if not others:
        return these
    return {f: v for f, v in these.items() if others.get(f, _ABSENT) != v}


_ABSENT = object()


class Partition:
    """The records of one table in one namespace."""

    __slots__ = ("indexes", "order", "records")

    def __init__(self) -> None:
        self.records: dict[str, Entry] = {}
        self.order: SortedList = SortedList()
        #: field -> value -> the order keys holding it (one key alone: see the module doc)
        self.indexes: dict[str, dict[Any, SortedList | OrderKey]] = {}

    def __len__(self) -> int:
        return len(self.records)

    # -- changes ---------------------------------------------------------
    def put(
        self, record_id: str, created: int, packed: bytes, index_values: Any, ord_: int
    ) -> bool:
        """Insert or replace; returns True when the id is new. O(log n)."""
        old = self.records.get(record_id)
        if old is None:
            entry = Entry(created, ord_, packed, index_values or None)
            self.order.add((created, ord_, record_id))
            new = True
        else:
            entry = Entry(created, old.ord, packed, index_values or None)
            old_key = (old.created, old.ord, record_id)
            if old.created != created:
                self.order.remove(old_key)
                self.order.add((created, old.ord, record_id))
                if old.index_values:
                    self._unindex(old_key, old.index_values)
            else:  # the same order key: only the index entries whose value changed move
                gone = _changed(old.index_values, entry.index_values)
                if gone:
                    self._unindex(old_key, gone)
                self.records[record_id] = entry
                added = _changed(entry.index_values, old.index_values)
                if added:
                    self._index(old_key, added)
                return False
            new = False
        self.records[record_id] = entry
        if entry.index_values:
            self._index((entry.created, entry.ord, record_id), entry.index_values)
        return new

    def put_new(self, items: list[tuple[str, int, Any, Any]], ord_: int) -> None:
        """Insert ``(id, created, packed, index_values)`` records whose ids are all absent
        (and distinct), the first with order ``ord_``, the next ``ord_ + 1``...: what as many
        :meth:`put` calls would do, with one ``SortedList.update`` of the order.
        O(k log n)."""
        records, keys, index = self.records, [], self._index
        for record_id, created, packed, index_values in items:
            key = (created, ord_, record_id)
            records[record_id] = Entry(created, ord_, packed, index_values or None)
            keys.append(key)
            if index_values:
                index(key, index_values)
            ord_ += 1
        self.order.update(keys)

    def delete(self, record_id: str) -> bool:
        """Remove ``record_id``; False when absent. O(log n)."""
        old = self.records.pop(record_id, None)
        if old is None:
            return False
        self.order.remove((old.created, old.ord, record_id))
        if old.index_values:
            self._unindex((old.created, old.ord, record_id), old.index_values)
        return True

    def _index(self, key: OrderKey, index_values: dict[str, Any]) -> None:
        for field, value in index_values.items():
            by_value = self.indexes.get(field)
            if by_value is None:
                by_value = self.indexes[field] = {}
            keys = by_value.get(value)
            if keys is None:
                by_value[value] = key  # one key stands alone (see the module doc)
            elif isinstance(keys, tuple):
                both = by_value[value] = SortedList()  # then add: 4x cheaper than update
                both.add(keys)
                both.add(key)
            else:
                keys.add(key)

    def _unindex(self, key: OrderKey, index_values: dict[str, Any]) -> None:
        for field, value in index_values.items():
            by_value = self.indexes.get(field)
            if by_value is None:
                continue
            keys = by_value.get(value)
            if keys is None:
                continue
            if isinstance(keys, tuple):
                if keys == key:
                    del by_value[value]
                continue
            keys.discard(key)
            if len(keys) == 1:
                by_value[value] = keys[0]
            elif not keys:
                del by_value[value]

    # -- queries ---------------------------------------------------------
    def entry(self, record_id: str) -> Entry | None:
        """The stored entry of ``record_id``, or None. O(1)."""
        return self.records.get(record_id)

    def keys(self, field: str | None = None, value: Any = None) -> SortedList:
        """Order keys ``(created, ord, id)``, ascending: all, or those whose ``field`` is ``value``.

        O(1); the result supports ``len``, ``bisect_left`` and ``islice``.
        Treat it as read-only.
        """
        if field is None:
            return self.order
        by_value = self.indexes.get(field)
        if not by_value:
            return NO_KEYS
        try:
            keys = by_value.get(value, NO_KEYS)
        except TypeError:  # unhashable: only str and int values are ever indexed
            return NO_KEYS
        if isinstance(keys, tuple):
            keys = SortedList()
            keys.add(by_value[value])
        return keys

    def position(self, record_id: str) -> int | None:
        """Index of ``record_id`` in the ascending order, or None. O(log n)."""
        entry = self.records.get(record_id)
        if entry is None:
            return None
        return int(self.order.bisect_left((entry.created, entry.ord, record_id)))

    def newest_first(self) -> Iterator[bytes]:
        """Every packed record in Stripe order. O(n)."""
        records = self.records
        for _, _, record_id in reversed(self.order):
            yield records[record_id].packed

    def find(self, field: str, value: Any) -> list[bytes]:
        """Packed records whose indexed ``field`` equals ``value``, newest first. O(log n + k)."""
        records = self.records
        return [records[key[2]].packed for key in reversed(self.keys(field, value))]


class PartitionRecords(Protocol):
    """What a write needs of a partition: which ids it holds."""

    @property
    def records(self) -> Container[str]: ...


class StateView(Protocol):
    """What resolving a write needs of a state (:class:`State`, or
    :class:`~papertiger.core.layered.LayeredState`)."""

    def get(self, table: str, ns: Namespace, record_id: str) -> bytes | None: ...
    def partition(self, table: str, ns: Namespace) -> PartitionRecords | None: ...


class State:
    """Every table, namespace and record; changed only by :meth:`apply`.

    >>> s = State()
    >>> s.apply([PUT, "customers", ["t"], "cus_1", 10, b"\\x80", {"email": "a@b"}])
    >>> s.get("customers", ("t",), "cus_1"), s.count("customers", ("t",))
    (b'\\x80', 1)
    """

    __slots__ = ("next_ord", "tables")

    def __init__(self) -> None:
        self.tables: dict[str, dict[Namespace, Partition]] = {}
        self.next_ord = 0

    # -- the one way to change --------------------------------------------
    def apply(self, effect: Any) -> None:
        """Apply one effect (a list, or a tuple such as :class:`PutEffect`).

        O(log n) for a put or delete, O(k log n) for a batch of k.
        """
        kind = effect[0]
        if kind == PUT:
            _, table, ns, record_id, created, packed, index_values = effect
            partitions = self.tables.get(table)
            if partitions is None:
                partitions = self.tables[table] = {}
            key = tuple(ns)
            partition = partitions.get(key)
            if partition is None:
                partition = partitions[key] = Partition()
            if partition.put(record_id, created, packed, index_values, self.next_ord):
                self.next_ord += 1
        elif kind == DELETE:
            _, table, ns, record_id = effect
            partitions = self.tables.get(table)
            key = tuple(ns)
            partition = partitions.get(key) if partitions else None
            if partition is not None:
                partition.delete(record_id)
                if not partition.records:
                    del partitions[key]  # type: ignore[union-attr]
        elif kind == BATCH:
            for sub in effect[1]:
                self.apply(sub)
        elif kind == CLEAR_NS:
            _, table, ns = effect
            under = tuple(ns)
            for name in self._table_names(table):
                partitions = self.tables[name]
                for key in [k for k in partitions if is_nested(k, under)]:
                    del partitions[key]
        elif kind == CLEAR:
            for name in self._table_names(effect[1]):
                self.tables[name].clear()
        else:
            raise ValueError(f"unknown effect kind {kind!r}")

    def _table_names(self, table: str | None) -> list[str]:
        """``[table]`` if it exists; for None, every table but the internal ``_*`` ones."""
        if table is None:
            return [name for name in self.tables if not name.startswith("_")]
        return [table] if table in self.tables else []

    # -- queries (pure reads) ---------------------------------------------
    def partition(self, table: str, ns: Namespace) -> Partition | None:
        """The partition of ``table`` in ``ns``, or None when it holds nothing. O(1)."""
        partitions = self.tables.get(table)
        return partitions.get(ns) if partitions else None

    def get(self, table: str, ns: Namespace, record_id: str) -> bytes | None:
        """The packed record, or None. O(1)."""
        partitions = self.tables.get(table)
        if partitions:
            partition = partitions.get(ns)
            if partition is not None:
                entry = partition.records.get(record_id)
                if entry is not None:
                    return entry.packed
        return None

    def count(self, table: str, ns: Namespace) -> int:
        """Records of ``table`` in exactly ``ns``. O(1)."""
        partition = self.partition(table, ns)
        return len(partition.records) if partition else 0

    def namespaces(self, table: str | None = None) -> list[Namespace]:
        """Namespaces holding records (of ``table``, or of any table), sorted. O(p log p)."""
        found: set[Namespace] = set()
        for name in self._table_names(table):
            found.update(k for k, p in self.tables[name].items() if p.records)
        return sorted(found)

    def partitions(
        self, under: Namespace | None = None, table: str | None = None
    ) -> list[tuple[str, Namespace, Partition]]:
        """``(table, namespace, partition)`` of every non-empty partition, sorted.

        Only namespaces at or nested under ``under`` when given; only ``table``
        when given (else every table but the internal ``_*`` ones).
        O(p log p) for p partitions.
        """
        found = [
            (name, key, partition)
            for name in self._table_names(table)
            for key, partition in self.tables[name].items()
            if partition.records and (under is None or is_nested(key, under))
        ]
        found.sort(key=lambda item: (item[0], item[1]))
        return found

    def table_names(self) -> list[str]:
        """Tables that ever held a record, sorted."""
        return sorted(self.tables)

    def total_records(self) -> int:
        """Records across every table and namespace. O(tables x namespaces)."""
        return sum(len(p.records) for parts in self.tables.values() for p in parts.values())

    # -- checkpoints ------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A msgpack-friendly copy of the whole state. O(total records)."""
        tables: dict[str, list[Any]] = {}
        for name, partitions in self.tables.items():
            rows = []
            for ns, partition in partitions.items():
                records = partition.records
                rows.append(
                    [
                        list(ns),
                        [
                            [rid, e.created, e.ord, e.packed, e.index_values]
                            for rid, e in records.items()
                        ],
                    ]
                )
            tables[name] = rows
        return {"next_ord": self.next_ord, "tables": tables}

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> State:
        """Rebuild a state from :meth:`snapshot`. O(total records x log n)."""
        state = cls()
        state.next_ord = int(snap["next_ord"])
        for name, rows in snap["tables"].items():
            partitions = state.tables[name] = {}
            for ns, records in rows:
                partition = partitions[tuple(ns)] = Partition()
                _load_partition(partition, records)
        return state


def _load_partition(partition: Partition, records: Iterable[list[Any]]) -> None:
    keys = []
    grouped: dict[str, dict[Any, list[OrderKey]]] = {}
    for rid, created, ord_, packed, index_values in records:
        partition.records[rid] = Entry(created, ord_, packed, index_values)
        key = (created, ord_, rid)
        keys.append(key)
        if index_values:
            for field, value in index_values.items():
                grouped.setdefault(field, {}).setdefault(value, []).append(key)
    partition.order = SortedList(keys)
    partition.indexes = {
        field: {
            value: found[0] if len(found) == 1 else SortedList(found)
            for value, found in by_value.items()
        }
        for field, by_value in grouped.items()
    }
