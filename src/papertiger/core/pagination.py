"""Stripe list semantics: page parameters, filters, page selection, :class:`StripeList`.

Theory of operation
-------------------
Stripe lists newest first: ``created`` descending, then later insert first.
A partition keeps its order keys ``(created, ord, id)`` ascending, so the
list is a sequence read backwards.  Which sequence depends on the filters:
the partition's whole order, or, with an equality filter, the index of that
field's value (an index keeps the same order keys, so it is already sorted).

A ``created`` filter narrows the sequence to a window ``[a, b)`` found by
bisection (``created[gte]=X`` starts at the first key ``>= (X,)``, and so
on).  Within the window, with ``i`` the cursor's position:

* no cursor: the ``limit`` newest, ``[b-limit, b)`` reversed; ``has_more``
  when more than ``limit`` are in the window;
* ``starting_after=X``: the ``limit`` items just older than X,
  ``[max(a, i-limit), i)`` reversed; ``has_more`` when ``i - a > limit``;
* ``ending_before=X``: the ``limit`` items just newer than X,
  ``[i+1, i+1+limit)`` reversed (still newest first); ``has_more`` when
  anything newer than ``data[0]`` remains in the window.

A forward walk (``starting_after=data[-1]``) and a backward walk
(``ending_before=data[0]``) therefore each visit every item exactly once, as
stripe-python's ``auto_paging_iter`` expects.  A cursor must itself match
the filters (as in Stripe), else :class:`NotFound` names it.

A second equality filter is checked on each candidate of the first one's
index, so such a page costs O(log n + scanned); one filter, or none, costs
O(log n + limit).

Any view of a partition can be paged: :func:`select_page` needs only
``entry(id)`` (created, ord, packed, index_values), ``keys(field, value)``
(an ascending sequence with ``len``, ``bisect_left`` and ``islice``) and
``len()``; see :class:`PartitionView`.  A sequence of keys that also has
``packed(start, stop, reverse)`` (the packed records of that slice, as a
checkpoint read in place has) is paged through it, without building keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import InvalidRequest, NotFound
from .records import index_value

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "CreatedRange",
    "ListQuery",
    "PartitionView",
    "StripeList",
    "check_page_params",
    "list_query",
    "select_page",
]

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1
_CREATED_OPS = ("gt", "gte", "lt", "lte")


class OrderedKeys(Protocol):
    """An ascending sequence of order keys ``(created, ord, id)``."""

    def __len__(self) -> int: ...
    def bisect_left(self, key: Any) -> int: ...
    def islice(
        self, start: int | None = None, stop: int | None = None, reverse: bool = False
    ) -> Iterator[Any]: ...


class EntryLike(Protocol):
    """A stored record's order fields, packed bytes and index values."""

    @property
    def created(self) -> int: ...
    @property
    def ord(self) -> int: ...
    @property
    def packed(self) -> bytes: ...
    @property
    def index_values(self) -> dict[str, Any] | None: ...


class PartitionView(Protocol):
    """What :func:`select_page` reads of a partition (see :class:`~.state.Partition`)."""

    def __len__(self) -> int: ...
    def entry(self, record_id: str) -> EntryLike | None: ...
    def keys(self, field: str | None = None, value: Any = None) -> OrderedKeys: ...


def check_page_params(limit: object, starting_after: object, ending_before: object) -> None:
    """Raise :class:`InvalidRequest` for a bad ``limit`` or cursor combination. O(1).

    >>> check_page_params(10, None, None)
    >>> check_page_params(0, None, None)
    Traceback (most recent call last):
    ...
    papertiger.errors.InvalidRequest: Invalid limit: must be an integer from 1 to 100, got 0.
    """
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(
            f"Invalid limit: must be an integer from 1 to {MAX_LIMIT}, got {limit!r}.",
            param="limit",
        )
    if starting_after is not None and ending_before is not None:
        raise InvalidRequest(
            "Received both starting_after and ending_before parameters. Please pass in only one."
        )
    for name, cursor in (("starting_after", starting_after), ("ending_before", ending_before)):
        if cursor is not None and (not isinstance(cursor, str) or not cursor):
            raise InvalidRequest(
                f"Invalid {name}: expected an object id (a non-empty str), got {cursor!r}.",
                param=name,
            )


@dataclass(frozen=True)
class CreatedRange:
    """``created`` bounds as a half-open interval ``[lo, hi)``; None is unbounded.

    >>> CreatedRange.parse({"gt": 5, "lte": 9})
    CreatedRange(lo=6, hi=10)
    >>> CreatedRange.parse(7)
    CreatedRange(lo=7, hi=8)
    """

    lo: int | None = None
    hi: int | None = None

    @classmethod
    def parse(cls, created: object) -> CreatedRange:
        """From an int (equal) or a dict of ``gt``/``gte``/``lt``/``lte``; else InvalidRequest."""
        if isinstance(created, int) and _is_int(created):
            return cls(created, created + 1)
        if not isinstance(created, Mapping) or not created:
            raise InvalidRequest(
                "Invalid created: expected an integer (unix seconds) or a dict with any of "
                f"gt, gte, lt, lte; got {created!r}.",
                param="created",
            )
        lo: int | None = None
        hi: int | None = None
        for op, bound in created.items():
            if op not in _CREATED_OPS:
                raise InvalidRequest(
                    f"Invalid created: unknown bound {op!r}; use gt, gte, lt or lte.",
                    param=f"created[{op}]",
                )
            if not _is_int(bound):
                raise InvalidRequest(
                    f"Invalid created[{op}]: expected an integer (unix seconds), got {bound!r}.",
                    param=f"created[{op}]",
                )
            if op == "gt":
                lo = _max(lo, bound + 1)
            elif op == "gte":
                lo = _max(lo, bound)
            elif op == "lt":
                hi = _min(hi, bound)
            else:
                hi = _min(hi, bound + 1)
        return cls(lo, hi)

    def contains(self, created: int) -> bool:
        return (self.lo is None or created >= self.lo) and (self.hi is None or created < self.hi)

    def to_dict(self) -> dict[str, int]:
        """Stripe's form of the bounds: ``{"gte": lo, "lt": hi}`` (what is set)."""
        out = {}
        if self.lo is not None:
            out["gte"] = self.lo
        if self.hi is not None:
            out["lt"] = self.hi
        return out


def _is_int(value: object) -> bool:
    return type(value) is int and _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]


def _max(a: int | None, b: int) -> int:
    return b if a is None else max(a, b)


def _min(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


@dataclass(frozen=True)
class ListQuery:
    """One list call's parameters, checked: what every backend pages by.

    ``filters`` are ``(field, value)`` pairs in the order given, values in
    their index form (:func:`~.records.index_value`).
    """

    limit: int = DEFAULT_LIMIT
    starting_after: str | None = None
    ending_before: str | None = None
    created: CreatedRange | None = None
    filters: tuple[tuple[str, str | int], ...] = ()

    @property
    def cursor(self) -> tuple[str, str] | None:
        """``(parameter name, id)`` of the cursor, if any."""
        if self.starting_after is not None:
            return "starting_after", self.starting_after
        if self.ending_before is not None:
            return "ending_before", self.ending_before
        return None

    def matches(self, created: int, index_values: Mapping[str, Any] | None) -> bool:
        """True when a record with these order fields passes every filter. O(filters)."""
        if self.created is not None and not self.created.contains(created):
            return False
        for name, value in self.filters:
            if not index_values or index_values.get(name) != value:
                return False
        return True


def list_query(
    limit: object = DEFAULT_LIMIT,
    starting_after: object = None,
    ending_before: object = None,
    created: object = None,
    filters: Mapping[str, object] | None = None,
    *,
    filterable: tuple[str, ...] = (),
    resource: str = "object",
) -> ListQuery:
    """Check a list call's parameters; raise :class:`InvalidRequest` naming the one at fault.

    O(filters).  A filter not in ``filterable`` is refused with its name as
    ``param``; a filter value that can never be indexed (None, a float, a
    list) too.

    >>> list_query(5, created={"gte": 10}, filters={"status": "open"}, filterable=("status",))
    ListQuery(limit=5, starting_after=None, ending_before=None, created=CreatedRange(lo=10, \
hi=None), filters=(('status', 'open'),))
    """
    check_page_params(limit, starting_after, ending_before)
    pairs: list[tuple[str, str | int]] = []
    for name, value in (filters or {}).items():
        if name not in filterable:
            raise InvalidRequest(
                f"Received unknown parameter: {name}. A {resource} list can be filtered by "
                f"created{''.join(', ' + f for f in filterable)}.",
                param=name,
            )
        normal = index_value(value)
        if normal is None:
            raise InvalidRequest(
                f"Invalid {name}: expected a string (or an id), got {value!r}.", param=name
            )
        pairs.append((name, normal))
    return ListQuery(
        limit,  # type: ignore[arg-type]
        starting_after,  # type: ignore[arg-type]
        ending_before,  # type: ignore[arg-type]
        None if created is None else CreatedRange.parse(created),
        tuple(pairs),
    )


def select_page(
    partition: PartitionView | None, query: ListQuery, resource: str = "object"
) -> tuple[list[bytes], bool]:
    """The packed records of one page and ``has_more``. O(log n + limit), see the module doc.

    An unknown cursor, or one that does not match the filters, raises
    :class:`NotFound` with ``param`` set to its name.
    """
    cursor = query.cursor
    if partition is None or not len(partition):
        if cursor is not None:
            raise NotFound(f"No such {resource}: '{cursor[1]}'", param=cursor[0])
        return [], False
    filters = query.filters
    if filters:
        first, rest = filters[0], filters[1:]
        keys = partition.keys(*first)
    else:
        rest = ()
        keys = partition.keys()
    created = query.created
    a, b = 0, len(keys)
    if created is not None:
        if created.lo is not None:
            a = keys.bisect_left((created.lo,))
        if created.hi is not None:
            b = keys.bisect_left((created.hi,))
    limit = query.limit
    if cursor is None:
        start, stop, reverse = a, b, True
    else:
        name, cursor_id = cursor
        entry = partition.entry(cursor_id)
        if entry is None or not query.matches(entry.created, entry.index_values):
            raise NotFound(f"No such {resource}: '{cursor_id}'", param=name)
        i = keys.bisect_left((entry.created, entry.ord, cursor_id))
        if name == "starting_after":
            start, stop, reverse = a, i, True
        else:
            start, stop, reverse = i + 1, b, False
    if stop <= start:
        return [], False
    if not rest:
        if reverse:
            lo, hi = max(start, stop - limit), stop
            has_more = stop - start > limit
        else:
            lo, hi = start, min(stop, start + limit)
            has_more = stop - start > limit
        packed_of = getattr(keys, "packed", None)
        if packed_of is not None:  # a view that reads records by position: no keys built
            data = list(packed_of(lo, hi, reverse))
            if not reverse:
                data.reverse()
            return data, has_more
        found = list(keys.islice(lo, hi, reverse=reverse))
    else:
        entry_of = partition.entry
        found = []
        for key in keys.islice(start, stop, reverse=reverse):
            e = entry_of(key[2])
            if e is not None and all(
                e.index_values and e.index_values.get(f) == v for f, v in rest
            ):
                found.append(key)
                if len(found) > limit:
                    break
        has_more = len(found) > limit
        del found[limit:]
    if not reverse:
        found.reverse()
    entry_of = partition.entry
    return [entry_of(key[2]).packed for key in found], has_more  # type: ignore[union-attr]


@dataclass
class StripeList:
    """One page of a Stripe list: ``object``, ``data``, ``has_more``, ``url``.

    Iterating a ``StripeList`` iterates ``data``; ``len()`` is its length.

    >>> page = StripeList(data=[{"id": "cs_1"}], has_more=False, url="/v1/checkout/sessions")
    >>> page.to_dict()["object"], len(page), [r["id"] for r in page]
    ('list', 1, ['cs_1'])
    """

    data: list[dict[str, Any]]
    has_more: bool
    url: str
    object: str = field(default="list")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: str) -> Any:
        """Dict-style access (``page["data"]``), as Stripe's objects allow."""
        if key not in ("object", "data", "has_more", "url"):
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """Stripe's JSON shape, with ``object`` first."""
        return {
            "object": self.object,
            "data": self.data,
            "has_more": self.has_more,
            "url": self.url,
        }
