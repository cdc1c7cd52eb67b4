"""A state in two layers: an immutable base image, and what was logged since. Pure.

Theory of operation
-------------------
A :class:`LayeredState` answers every query of a
:class:`~papertiger.core.state.State` (``get``, ``partition``, ``count``,
``partitions``...) and changes only through :meth:`LayeredState.apply`, with
the same effects and the same result as a ``State`` that replayed the whole
log.  It is two layers:

* the **base**: an image of the whole state after some seq (a checkpoint
  read in place, :mod:`papertiger.engine.layout`), immutable and shared by
  every process; any object with the :class:`BaseImage` methods will do;
* the **overlay**, private: per partition a
  :class:`~papertiger.core.state.Partition` of the records put since the
  base (new ones, and base records replaced: those keep their ``ord``), the
  base positions hidden since (deleted or replaced), and whether the base
  partition was cleared.  ``CLEAR_NS`` / ``CLEAR`` also leave a rule
  ``(table, namespace prefix)`` that hides base partitions not yet looked
  at, so a clear costs O(partitions looked at), not O(partitions).

A partition is looked up in the base on first use and kept
(:class:`LayeredPartition`); ``next_ord`` continues the base's counter, so
order keys ``(created, ord, id)`` are the same in every process and in
every later image: pages stay stable when a process moves to a newer base.

The merged order of a partition is ``(base - hidden) + overlay``, both
sorted.  :meth:`LayeredPartition.keys` hands :func:`~.pagination.select_page`
a view of it: the base's own sequence when the overlay did not touch that
sequence (positions map straight to the image), the overlay's ``SortedList``
when there is no base, and otherwise a :class:`MergedKeys`.  A merged
position ``p`` is a *frontier* ``(i, t)``: the first ``i`` elements of the
base sequence (hidden ones skipped) and the first ``t`` of the overlay.
``bisect_left`` returns a position and remembers its frontier; ``islice``
walks from a remembered frontier (or a neighbour's), so a page costs
O(log n + limit), whatever the overlay holds.  Any other position is found
by binary search (O(log k log r) for k overlay keys, r hidden positions).

Costs: ``get`` O(1); ``count`` O(1); ``find_by_*`` and a page O(log n + k);
applying an effect O(log n) (a replaced or deleted base record costs one
decode of its index values).  The overlay holds what was logged since the
base, so its memory is that of the log since the last checkpoint.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sortedcontainers import SortedList

from ..namespace import Namespace, is_nested
from .state import BATCH, CLEAR, CLEAR_NS, DELETE, NO_KEYS, PUT, Entry, Partition

__all__ = [
    "LayeredPartition",
    "LayeredState",
    "MergedKeys",
]

OrderKey = tuple[int, int, str]
_NO_REMOVED: SortedList = SortedList()
#: hidden positions stepped over one by one before a walk jumps by binary search
SKIP_STEPS = 8

if TYPE_CHECKING:  # the protocols cost a new process import time, and only checkers read them

    class BasePartition(Protocol):
        """A partition of a base image: positions ``0 .. n-1`` in ascending list order."""

        n: int
        table: str
        ns: Namespace

        def find(self, record_id: str) -> int: ...
        def get(self, record_id: str, hidden: Container[int] = ...) -> bytes | None: ...
        def packed(self, p: int) -> bytes: ...
        def packed_view(self, p: int) -> Any: ...
        def record_id(self, p: int) -> str: ...
        def index_values(self, p: int) -> dict[str, Any] | None: ...
        def order_key(self, p: int) -> tuple[int, int]: ...
        def key_at(self, p: int) -> OrderKey: ...
        def entry(self, p: int) -> Any: ...
        def bisect(self, key: tuple[Any, ...]) -> int: ...
        def posting(self, field: str, value: Any) -> Sequence[int] | None: ...
        def columns(self) -> tuple[Sequence[int], Sequence[int]]: ...
        def damage(self, what: str) -> Exception: ...

    class BaseImage(Protocol):
        """A whole base image (see :class:`papertiger.engine.layout.Checkpoint`)."""

        next_ord: int
        seq: int
        table_names: list[str]

        def partition(self, table: str, ns: Namespace) -> Any: ...
        def partitions(self) -> Iterator[Any]: ...


class _Records(Container[str]):
    """``id in partition.records``, as :mod:`.resolve` asks it of any partition."""

    __slots__ = ("_part",)

    def __init__(self, part: LayeredPartition) -> None:
        self._part = part

    def __contains__(self, record_id: object) -> bool:
        return isinstance(record_id, str) and self._part.has(record_id)


class LayeredPartition:
    """One partition: its base (or None) and its overlay. See the module doc."""

    __slots__ = (
        "_absent",
        "_jumps",
        "_recent",
        "base",
        "cleared",
        "ns",
        "over",
        "removed",
        "removed_order",
        "removed_posts",
        "table",
    )

    def __init__(self, table: str, ns: Namespace, base: BasePartition | None) -> None:
        self.table = table
        self.ns = ns
        #: the base partition, or None when there is none or it was cleared
        self.base = base
        #: records put since the base
        self.over = Partition()
        #: base positions hidden since the base (deleted, or replaced in ``over``)
        self.removed: set[int] = set()
        self.removed_order: SortedList = SortedList()
        #: the hidden positions of each posting ``(field, value)``
        self.removed_posts: dict[tuple[str, Any], SortedList] = {}
        self.cleared = False
        #: id -> base position of the keys the last page yielded (saves a hash lookup each)
        self._recent: dict[str, int] = {}
        #: (field, value, index, forward) -> where a run of hidden positions ends, as found
        #: by the last pages (a page from the newest end meets the same run every time)
        self._jumps: dict[tuple[Any, Any, int, bool], int] = {}
        #: the last id a ``get`` found nowhere in the base (or hidden there): a base never
        #: gains a record, nor shows a hidden one again, so the put that follows such a get
        #: (an insert, in the manager) skips looking again
        self._absent: str | None = None

    def __len__(self) -> int:
        base = self.base
        return (base.n - len(self.removed) if base is not None else 0) + len(self.over.records)

    def __repr__(self) -> str:
        return f"<LayeredPartition {self.table} {self.ns} n={len(self)}>"

    @property
    def changed(self) -> bool:
        """True when the overlay changed anything of the base partition."""
        return self.cleared or bool(self.removed) or bool(self.over.records)

    @property
    def records(self) -> Container[str]:
        """Membership of ids (what :class:`~.resolve.BatchBuilder` needs). O(1) per test."""
        return _Records(self)

    # -- changes ---------------------------------------------------------------------
    def _base_position(self, record_id: str) -> int:
        base = self.base
        if base is None or record_id is self._absent:
            return -1
        p = base.find(record_id)
        return -1 if p < 0 or p in self.removed else p

    def _hide(self, p: int) -> None:
        base = self.base
        assert base is not None
        self.removed.add(p)
        self.removed_order.add(p)
        for field, value in (base.index_values(p) or {}).items():
            found = self.removed_posts.get((field, value))
            if found is None:
                self.removed_posts[(field, value)] = SortedList((p,))
            else:
                found.add(p)

    def put(
        self, record_id: str, created: int, packed: bytes, index_values: Any, next_ord: int
    ) -> bool:
        """Insert or replace; True when it used ``next_ord`` (a new id). O(log n)."""
        self._recent.clear()
        self._jumps.clear()
        over = self.over
        if record_id in over.records:
            over.put(record_id, created, packed, index_values, 0)
            return False
        p = self._base_position(record_id)
        if p >= 0:
            _, ord_ = self.base.order_key(p)  # type: ignore[union-attr]
            self._hide(p)
            over.put(record_id, created, packed, index_values, ord_)
            return False
        over.put(record_id, created, packed, index_values, next_ord)
        return True

    def delete(self, record_id: str) -> bool:
        """Remove ``record_id``; False when absent. O(log n)."""
        self._recent.clear()
        self._jumps.clear()
        if self.over.delete(record_id):
            return True
        p = self._base_position(record_id)
        if p < 0:
            return False
        self._hide(p)
        return True

    def clear(self) -> None:
        """Hide the base partition and drop the overlay. O(1)."""
        self.base = None
        self.over = Partition()
        self.removed = set()
        self.removed_order = SortedList()
        self.removed_posts = {}
        self.cleared = True
        self._absent = None
        self._recent.clear()
        self._jumps.clear()

    # -- queries ---------------------------------------------------------------------
    def has(self, record_id: str) -> bool:
        """True when ``record_id`` is here. O(1)."""
        return record_id in self.over.records or self._base_position(record_id) >= 0

    def get(self, record_id: str) -> bytes | None:
        """The packed record, or None. O(1)."""
        found = self.over.records.get(record_id)
        if found is not None:
            return found.packed
        base = self.base
        return None if base is None else base.get(record_id, self.removed)

    def entry(self, record_id: str) -> Any:
        """The entry of ``record_id`` (created, ord, packed, index_values), or None. O(1)."""
        found = self.over.records.get(record_id)
        if found is not None:
            return found
        base = self.base
        if base is None:
            return None
        p = self._recent.get(record_id)
        if p is None:
            p = base.find(record_id)
            if p < 0 or p in self.removed:
                return None
        return base.entry(p)

    def keys(self, field: str | None = None, value: Any = None) -> Any:
        """Order keys ``(created, ord, id)``, ascending: all, or those with ``field == value``.

        The result has ``len``, ``bisect_left`` and ``islice`` (see the module
        doc). O(1) to make.
        """
        self._recent.clear()
        over = self.over.keys(field, value)
        base = self.base
        if base is None:
            return over
        seq: Sequence[int] | None
        if field is None:
            seq, hidden = None, self.removed_order
        else:
            seq = base.posting(field, value)
            if seq is None or not len(seq):
                return over
            try:
                hidden = self.removed_posts.get((field, value), _NO_REMOVED)
            except TypeError:
                return NO_KEYS
        if not over and not hidden:
            return BaseKeys(self, seq)
        return MergedKeys(self, seq, hidden, over, (field, value))

    def packed_in_order(
        self, keys: Any, start: int | None = None, stop: int | None = None, reverse: bool = False
    ) -> Iterator[bytes]:
        """The packed records of ``keys[start:stop]`` (reversed with ``reverse``)."""
        if isinstance(keys, (BaseKeys, MergedKeys)):
            return keys.packed(start, stop, reverse)
        records = self.over.records
        return (records[key[2]].packed for key in keys.islice(start, stop, reverse))

    def find(self, field: str, value: Any) -> list[bytes]:
        """Packed records whose ``field`` holds ``value``, newest first. O(log n + k)."""
        keys = self.keys(field, value)
        if type(keys) is BaseKeys:
            return keys.newest_first()
        return list(self.packed_in_order(keys, reverse=True))

    def newest_first(self) -> Iterator[bytes]:
        """Every packed record, newest first. O(n)."""
        return self.packed_in_order(self.keys(), reverse=True)

    def ids(self) -> list[str]:
        """Every id, in list order (oldest first). O(n)."""
        return [key[2] for key in self.keys().islice()]

    def items(self) -> Iterator[tuple[str, Entry]]:
        """``(id, Entry)`` in list order, every field decoded. O(n)."""
        records = self.over.records
        base = self.base
        for key in self.keys().islice():
            found = records.get(key[2])
            if found is not None:
                yield key[2], found
            else:
                assert base is not None
                p = self._recent.get(key[2], -1)
                yield key[2], Entry(key[0], key[1], base.packed(p), base.index_values(p))

    def export(self) -> Iterator[Any]:
        """The merged order for a new image: base positions (ints) or ``(id, Entry)``."""
        records = self.over.records
        if self.base is None:
            for key in self.over.order:
                yield key[2], records[key[2]]
            return
        keys = MergedKeys(self, None, self.removed_order, self.over.order, (None, None))
        for item in keys.walk(0, len(keys), False):
            if isinstance(item, int):
                yield item
            else:
                yield item[2], records[item[2]]


class BaseKeys:
    """A base sequence the overlay did not touch: positions map straight to the image."""

    __slots__ = ("base", "part", "seq")

    def __init__(self, part: LayeredPartition, seq: Sequence[int] | None) -> None:
        self.part = part
        self.base: BasePartition = part.base  # type: ignore[assignment]
        self.seq = seq  # None: every position

    def __len__(self) -> int:
        return self.base.n if self.seq is None else len(self.seq)

    def __bool__(self) -> bool:
        return len(self) > 0

    def bisect_left(self, key: tuple[Any, ...]) -> int:
        j = self.base.bisect(key)
        return j if self.seq is None else bisect_left(self.seq, j)

    def _positions(self, start: int | None, stop: int | None, reverse: bool) -> Iterator[int]:
        n = len(self)
        lo = 0 if start is None else max(0, min(start, n))
        hi = n if stop is None else max(0, min(stop, n))
        span = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)
        seq = self.seq
        if seq is None:
            return iter(span)
        return (seq[i] for i in span)

    def islice(
        self, start: int | None = None, stop: int | None = None, reverse: bool = False
    ) -> Iterator[OrderKey]:
        key_at, recent = self.base.key_at, self.part._recent
        for p in self._positions(start, stop, reverse):
            key = key_at(p)
            recent[key[2]] = p
            yield key

    def packed(
        self, start: int | None = None, stop: int | None = None, reverse: bool = False
    ) -> Iterator[bytes]:
        packed = self.base.packed
        for p in self._positions(start, stop, reverse):
            yield packed(p)

    def newest_first(self) -> list[bytes]:
        """Every packed record of the sequence, newest first. O(k)."""
        packed = self.base.packed
        seq = self.seq
        if seq is None:
            return [packed(p) for p in range(self.base.n - 1, -1, -1)]
        return [packed(p) for p in reversed(seq)]


class MergedKeys:
    """``(base sequence - hidden positions) + overlay keys``, in order (see the module doc).

    ``seq`` is the base sequence (None: every position, else ascending
    positions), ``hidden`` the hidden positions that belong to it, ``over``
    the overlay's ``SortedList`` of keys.
    """

    __slots__ = (
        "_frontiers",
        "base",
        "hidden",
        "na",
        "nb",
        "over",
        "part",
        "removed",
        "selector",
        "seq",
    )

    def __init__(
        self,
        part: LayeredPartition,
        seq: Sequence[int] | None,
        hidden: SortedList,
        over: SortedList,
        selector: tuple[Any, Any] = (None, None),
    ) -> None:
        self.part = part
        #: ``(field, value)`` of the sequence (None: the whole order), for the jumps memo
        self.selector = selector
        self.base: BasePartition = part.base  # type: ignore[assignment]
        self.seq = seq
        self.nb = self.base.n if seq is None else len(seq)
        self.hidden = hidden
        self.removed = part.removed
        self.over = over
        self.na = len(over)
        self._frontiers: dict[int, tuple[int, int]] = {0: (0, 0), len(self): (self.nb, self.na)}

    def __len__(self) -> int:
        return self.nb - len(self.hidden) + self.na

    def __bool__(self) -> bool:
        return len(self) > 0

    def _pos(self, i: int) -> int:
        """The base position of the ``i``-th element of the base sequence."""
        return i if self.seq is None else self.seq[i]

    def bisect_left(self, key: tuple[Any, ...]) -> int:
        """Merged position where ``key`` would go; O(log n). Its frontier is remembered."""
        j = self.base.bisect(key)
        i = j if self.seq is None else bisect_left(self.seq, j)
        t = self.over.bisect_left(key[:2])
        p: int = i - self.hidden.bisect_left(j) + t
        self._frontiers[p] = (i, t)
        return p

    # -- frontiers -------------------------------------------------------------------
    def _hidden_before(self, i: int) -> int:
        return self.hidden.bisect_left(self._pos(i)) if i < self.nb else len(self.hidden)

    def _visible_index(self, x: int) -> int:
        """The smallest base-sequence index with ``x`` visible elements before it."""
        lo, hi = x, min(self.nb, x + len(self.hidden))
        while lo < hi:
            mid = (lo + hi) // 2
            if mid - self._hidden_before(mid) < x:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _skip(self, i: int, forward: bool) -> int:
        """Past the run of hidden positions at base-sequence index ``i`` (forward: from
        ``i`` on; backward: before ``i``): a few steps, else a jump by binary search,
        remembered by the partition until it changes."""
        nb, removed, pos = self.nb, self.removed, self._pos
        j = i
        for _ in range(SKIP_STEPS):
            if forward:
                if j >= nb or pos(j) not in removed:
                    return j
                j += 1
            else:
                if j <= 0 or pos(j - 1) not in removed:
                    return j
                j -= 1
        memo = self.part._jumps
        key = (*self.selector, i, forward)
        found = memo.get(key)
        if found is None:
            if forward:
                found = self._next_visible(i)
            else:
                found = self._visible_index(i - self._hidden_before(i))
            memo[key] = found
        return found

    def _next_visible(self, i: int) -> int:
        """The index of the first visible element at or after base-sequence index ``i``."""
        before = i - self._hidden_before(i)  # visible elements before i
        if before >= self.nb - len(self.hidden):
            return self.nb
        return self._visible_index(before + 1) - 1

    def _select(self, p: int) -> tuple[int, int]:
        """The frontier of merged position ``p``, by binary search on the overlay count."""
        over, key_of = self.over, self.base.order_key
        lo, hi = max(0, p - (self.nb - len(self.hidden))), min(p, self.na)
        while lo < hi:
            t = (lo + hi) // 2
            last_base = self._visible_index(p - t) - 1  # the (p-t-1)-th visible element
            if tuple(over[t][:2]) < key_of(self._pos(last_base)):
                lo = t + 1
            else:
                hi = t
        return self._visible_index(p - lo), lo

    def _frontier(self, p: int) -> tuple[int, int]:
        found = self._frontiers.get(p)
        if found is None:
            before = self._frontiers.get(p - 1)
            found = self._step(before) if before is not None else self._select(p)
            self._frontiers[p] = found
        return found

    def _step(self, frontier: tuple[int, int]) -> tuple[int, int]:
        """The frontier one element further."""
        i, t = frontier
        nb = self.nb
        if i < nb and self._pos(i) in self.removed:
            i = self._skip(i, True)
        if i < nb and (t >= self.na or self.base.order_key(self._pos(i)) < self.over[t][:2]):
            return i + 1, t
        return i, t + 1

    # -- walking ---------------------------------------------------------------------
    def walk(self, start: int, stop: int, reverse: bool) -> Iterator[int | OrderKey]:
        """Merged elements ``start .. stop-1``: base positions (ints) or overlay keys.

        O(stop - start), plus O(log k log r) per run of hidden positions met and to
        find the frontier when it is not remembered.
        """
        n = len(self)
        start, stop = max(0, min(start, n)), max(0, min(stop, n))
        count = stop - start
        if count <= 0:
            return
        nb, removed = self.nb, self.removed
        base = self.base
        created, ords = base.columns()
        limit = base.n
        pos = (range(nb) if self.seq is None else self.seq).__getitem__
        if not reverse:
            i, t = self._frontier(start)
            rest = self.over.islice(t)
            a = next(rest, None)
            while count:
                p = pos(i) if i < nb else -1
                if p in removed:  # a run of hidden positions: step or jump over it
                    i = self._skip(i, True)
                    p = pos(i) if i < nb else -1
                if i < nb:
                    if p >= limit:
                        raise base.damage(f"a posting names position {p} of {limit}")
                    if a is None or (created[p], ords[p]) < (a[0], a[1]):
                        yield p
                        i += 1
                        count -= 1
                        continue
                if a is None:
                    return
                yield a
                a = next(rest, None)
                count -= 1
        else:
            i, t = self._frontier(stop)
            rest = self.over.islice(0, t, reverse=True)
            a = next(rest, None)
            while count:
                p = pos(i - 1) if i > 0 else -1
                if p in removed:  # a run of hidden positions: step or jump over it
                    i = self._skip(i, False)
                    p = pos(i - 1) if i > 0 else -1
                if i > 0:
                    if p >= limit:
                        raise base.damage(f"a posting names position {p} of {limit}")
                    if a is None or (created[p], ords[p]) > (a[0], a[1]):
                        yield p
                        i -= 1
                        count -= 1
                        continue
                if a is None:
                    return
                yield a
                a = next(rest, None)
                count -= 1

    def _span(self, start: int | None, stop: int | None) -> tuple[int, int]:
        return (0 if start is None else start), (len(self) if stop is None else stop)

    def islice(
        self, start: int | None = None, stop: int | None = None, reverse: bool = False
    ) -> Iterator[OrderKey]:
        key_at, recent = self.base.key_at, self.part._recent
        for item in self.walk(*self._span(start, stop), reverse):
            if type(item) is int:
                key = key_at(item)
                recent[key[2]] = item
                yield key
            else:
                yield item  # type: ignore[misc]

    def packed(
        self, start: int | None = None, stop: int | None = None, reverse: bool = False
    ) -> Iterator[bytes]:
        packed, records = self.base.packed, self.part.over.records
        for item in self.walk(*self._span(start, stop), reverse):
            if type(item) is int:
                yield packed(item)
            else:
                yield records[item[2]].packed  # type: ignore[index]


class LayeredState:
    """A base image plus the effects applied since. See the module doc.

    >>> s = LayeredState()
    >>> s.apply([PUT, "customers", ["t"], "cus_1", 10, b"\\x80", {"email": "a@b"}])
    >>> s.get("customers", ("t",), "cus_1"), s.count("customers", ("t",))
    (b'\\x80', 1)
    """

    __slots__ = (
        "_last",
        "_parts",
        "_rules",
        "_tables",
        "base",
        "effects",
        "journal",
        "next_ord",
        "records_put",
    )

    def __init__(self, base: BaseImage | None = None) -> None:
        self.base = base
        self.next_ord = base.next_ord if base is not None else 0
        self._parts: dict[tuple[str, Namespace], LayeredPartition] = {}
        #: (table, namespace prefix) cleared since the base
        self._rules: set[tuple[str, Namespace]] = set()
        self._tables: set[str] = set(base.table_names) if base is not None else set()
        #: effects applied since the base (BATCH counts once)
        self.effects = 0
        #: records put since the base (each record of a BATCH counts)
        self.records_put = 0
        #: when a list, every effect applied is appended to it (see :meth:`rebase`)
        self.journal: list[Any] | None = None
        #: (table, ns, partition) of the last ``get``, matched by identity: a loop of
        #: reads in one namespace skips hashing the key
        self._last: tuple[Any, Any, LayeredPartition | None] = (None, None, None)

    def rebase(self, base: BaseImage, replay: list[Any] | None = None) -> None:
        """Start again from ``base``, with an empty overlay, then apply ``replay``.

        O(tables + replayed effects).  The manager keeps a :attr:`journal` of
        the effects applied while a checkpoint is written in the background,
        and replays it onto the new image: in order, each as :meth:`apply`
        would, except that a run of puts of new ids into one partition (inserts,
        most of a journal) goes in at once (:meth:`_put_new`), into an overlay
        that starts empty.
        """
        self.base = base
        self.next_ord = base.next_ord
        self._parts = {}
        self._rules = set()
        self._tables = set(base.table_names)
        self.effects = 0
        self.records_put = 0
        self._last = (None, None, None)
        self.journal = None
        run: list[Any] = []
        for effect in replay or ():
            if effect[0] == PUT:
                if run and (effect[1] != run[0][1] or effect[2] != run[0][2]):
                    self._replay_run(run)
                    run = []
                run.append(effect)
                continue
            if run:
                self._replay_run(run)
                run = []
            self.apply(effect)
        if run:
            self._replay_run(run)

    def _replay_run(self, run: list[Any]) -> None:
        """Apply ``run``, puts into one partition, as :meth:`apply` of each would."""
        self.effects += len(run)
        if not self._put_new(run):
            for effect in run:
                self._apply(effect)

    def detach(self) -> None:
        """Forget the base and the overlay (before the base's mapping goes away)."""
        self.base = None
        self._parts = {}
        self._rules = set()
        self._last = (None, None, None)

    # -- partitions ------------------------------------------------------------------
    def _hidden(self, table: str, ns: Namespace) -> bool:
        rules = self._rules
        return bool(rules) and any((table, ns[:k]) in rules for k in range(len(ns) + 1))

    def _part(self, table: str, ns: Namespace) -> LayeredPartition | None:
        part = self._parts.get((table, ns))
        if part is not None:
            return part
        base = self.base.partition(table, ns) if self.base is not None else None
        if base is None:
            return None
        part = LayeredPartition(table, ns, base)
        if self._hidden(table, ns):
            part.clear()
        self._parts[(table, ns)] = part
        return part

    def _table_names(self, table: str | None) -> set[str]:
        if table is None:
            return {name for name in self._tables if not name.startswith("_")}
        return {table} if table in self._tables else set()

    # -- the one way to change -------------------------------------------------------
    def apply(self, effect: Any) -> None:
        """Apply one effect (as :meth:`State.apply`). O(log n) per record."""
        self.effects += 1
        if self.journal is not None:
            self.journal.append(effect)
        self._apply(effect)

    def _apply(self, effect: Any) -> None:
        kind = effect[0]
        if kind == PUT:
            _, table, ns, record_id, created, packed, index_values = effect
            key = tuple(ns)
            part = self._part(table, key)
            if part is None:
                part = self._parts[(table, key)] = LayeredPartition(table, key, None)
            if part.put(record_id, created, packed, index_values, self.next_ord):
                self.next_ord += 1
            self._tables.add(table)
            self.records_put += 1
        elif kind == DELETE:
            _, table, ns, record_id = effect
            part = self._part(table, tuple(ns))
            if part is not None:
                part.delete(record_id)
        elif kind == BATCH:
            if not self._put_new(effect[1]):
                for sub in effect[1]:
                    self._apply(sub)
        elif kind == CLEAR_NS:
            _, table, ns = effect
            self._clear(table, tuple(ns))
        elif kind == CLEAR:
            self._clear(effect[1], ())
        else:
            raise ValueError(f"unknown effect kind {kind!r}")

    def _put_new(self, effects: list[Any]) -> bool:
        """Apply a batch of puts of new ids into one partition at once (what ``insert_many``
        logs), and True; False, having changed nothing, for any other batch. O(k log n)."""
        if len(effects) < 2:
            return False
        first = effects[0]
        table, ns = first[1], first[2]
        seen = set()
        for effect in effects:
            if effect[0] != PUT or effect[1] != table or effect[2] != ns or effect[3] in seen:
                return False
            seen.add(effect[3])
        key = tuple(ns)
        part = self._part(table, key)
        if part is None:
            part = self._parts[(table, key)] = LayeredPartition(table, key, None)
        elif any(part.has(record_id) for record_id in seen):
            return False
        part._recent.clear()
        part._jumps.clear()
        part.over.put_new([effect[3:] for effect in effects], self.next_ord)
        self.next_ord += len(effects)
        self.records_put += len(effects)
        self._tables.add(table)
        return True

    def _clear(self, table: str | None, under: Namespace) -> None:
        names = self._table_names(table)
        for name in names:
            self._rules.add((name, under))
        for (name, ns), part in self._parts.items():
            if name in names and is_nested(ns, under):
                part.clear()

    # -- queries ---------------------------------------------------------------------
    def get(self, table: str, ns: Namespace, record_id: str) -> bytes | None:
        """The packed record, or None. O(1)."""
        last_table, last_ns, part = self._last
        if table is not last_table or ns is not last_ns:
            part = self._part(table, ns)
            if part is None:
                return None
            self._last = (table, ns, part)
        found = part.over.records.get(record_id)  # type: ignore[union-attr]
        if found is not None:
            return found.packed  # type: ignore[no-any-return]
        base = part.base  # type: ignore[union-attr]
        if base is None:
            return None
        packed = base.get(record_id, part.removed)  # type: ignore[union-attr]
        if packed is None:
            part._absent = record_id  # type: ignore[union-attr]
        return packed  # type: ignore[no-any-return]

    def partition(self, table: str, ns: Namespace) -> LayeredPartition | None:
        """The partition of ``table`` in ``ns``, or None when it holds nothing. O(1)."""
        part = self._part(table, ns)
        return part if part is not None and len(part) else None

    def count(self, table: str, ns: Namespace) -> int:
        """Records of ``table`` in exactly ``ns``. O(1)."""
        part = self._part(table, ns)
        return len(part) if part is not None else 0

    def _views(
        self, under: Namespace | None, table: str | None
    ) -> dict[tuple[str, Namespace], Any]:
        names = self._table_names(table)
        found: dict[tuple[str, Namespace], Any] = {}
        if self.base is not None:
            for base in self.base.partitions():
                key = (base.table, base.ns)
                if (
                    key[0] in names
                    and (under is None or is_nested(key[1], under))
                    and key not in self._parts
                    and not self._hidden(*key)
                ):
                    found[key] = base
        for key, part in self._parts.items():
            if key[0] in names and (under is None or is_nested(key[1], under)):
                found[key] = part
        return found

    def partitions(
        self, under: Namespace | None = None, table: str | None = None
    ) -> list[tuple[str, Namespace, Any]]:
        """``(table, namespace, partition)`` of every non-empty partition, sorted.

        As :meth:`State.partitions`: under ``under`` when given, of ``table``
        when given (else every table but the internal ``_*`` ones).  O(P log P).
        """
        found = self._views(under, table)
        return [(key[0], key[1], found[key]) for key in sorted(found) if len(found[key])]

    def namespaces(self, table: str | None = None) -> list[Namespace]:
        """Namespaces holding records (of ``table``, or of any table), sorted."""
        return sorted({ns for _, ns, _ in self.partitions(table=table)})

    def table_names(self) -> list[str]:
        """Tables that ever held a record, sorted."""
        return sorted(self._tables)

    def total_records(self) -> int:
        """Records across every table and namespace. O(P)."""
        return sum(len(view) for name in self._tables for _, _, view in self.partitions(table=name))

    # -- images ----------------------------------------------------------------------
    def image_parts(self) -> Iterator[tuple[str, Namespace, Any, Any]]:
        """What a new image is made of, sorted (see ``papertiger.engine.layout_writer``):
        per non-empty partition, ``(table, ns, base partition, None)`` when it is
        unchanged, else ``(table, ns, base partition or None, merged entries)``."""
        found: dict[tuple[str, Namespace], Any] = {}
        for table in self._tables:
            found.update(self._views(None, table))
        for key in sorted(found):
            view = found[key]
            if isinstance(view, LayeredPartition):
                if not len(view):
                    continue
                if view.changed:
                    yield key[0], key[1], view.base, view.export()
                else:
                    yield key[0], key[1], view.base, None
            elif len(view):
                yield key[0], key[1], view, None

    def snapshot(self) -> dict[str, Any]:
        """The msgpack-friendly form of :meth:`State.snapshot` (records of the base are
        memoryviews of it, not copies). O(total records)."""
        tables: dict[str, list[Any]] = {name: [] for name in self._tables}
        for table, ns, view, entries in self.image_parts():
            rows = []
            if entries is None:
                entries = range(len(view))
            for item in entries:
                if type(item) is int:
                    created, ord_ = view.order_key(item)
                    rows.append(
                        [
                            view.record_id(item),
                            created,
                            ord_,
                            view.packed_view(item),
                            view.index_values(item),
                        ]
                    )
                else:
                    record_id, e = item
                    rows.append([record_id, e.created, e.ord, e.packed, e.index_values])
            tables[table].append([list(ns), rows])
        return {"next_ord": self.next_ord, "tables": tables}
