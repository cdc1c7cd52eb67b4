"""The seam: what a :class:`~papertiger.Store` needs from the place its data lives.

Theory of operation
-------------------
A :class:`Backend` stores *prepared* records: the client has already
validated and packed each one (:func:`papertiger.core.records.prepare_record`)
and extracted its index values, so a backend keeps bytes and a few index
fields and never decodes a record to store it.  Reads return packed bytes
too; the :class:`~papertiger.Store` decodes them at the edge, so every
backend returns fresh objects for free.

Every method is scoped by ``(table, namespace)``; :class:`TableSpec` carries
what a backend needs of the resource (its table, its Stripe object name for
messages, the fields it indexes).  The semantics are the store's
(``DESIGN.md``) and are pinned by one conformance suite run against every
backend (``tests/conformance``):

* strict writes: ``put(mode="insert")`` of a taken id raises
  :class:`~papertiger.AlreadyExists`; ``update``, ``patch`` and ``delete``
  of a missing id raise :class:`~papertiger.NotFound` (``param="id"``);
* ``put_many`` is all or nothing; ``patch`` is atomic (two writers never lose
  each other's keys) and follows :func:`papertiger.core.resolve.apply_patch`;
  with ``expect`` it applies only if :func:`papertiger.core.resolve.check_expect`
  passes against the very record it replaces, else it raises
  :class:`~papertiger.Conflict` and writes nothing;
* pages follow :func:`papertiger.core.pagination.select_page`, in
  O(log n + limit); ``count`` is O(1);
* ``clear_namespace(ns)`` removes ``ns`` and every namespace nested under it;
  ``clear`` every namespace but the internal ones;
* a rejected call changes nothing; a backend that cannot be reached raises
  :class:`~papertiger.StoreUnavailable` within a bounded time.

Each backend keeps its own concurrency inside (the shared-memory engine's
replica lock, Redis's server-side atomicity): callers never lock.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ..core.pagination import ListQuery
from ..core.records import PreparedRecord
from ..namespace import Namespace

__all__ = ["Backend", "PartitionInfo", "TableSpec"]


class TableSpec(NamedTuple):
    """What a backend knows of a resource."""

    #: the table's name (``checkout_sessions``); names starting with ``_`` are internal
    name: str
    #: Stripe's ``object`` (``checkout.session``), for messages
    object_name: str
    #: fields whose values are indexed (``find_by_*`` and list filters), dotted for nested
    index_fields: tuple[str, ...] = ()


class PartitionInfo(NamedTuple):
    """One non-empty ``(table, namespace)`` and how many records it holds."""

    table: str
    namespace: Namespace
    size: int


class Backend(abc.ABC):
    """A place where stores keep their records. See the module doc for the contract."""

    #: What the backend is, for messages and reports (never holds a password).
    description: str = "backend"

    # -- reads --------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, table: TableSpec, ns: Namespace, record_id: str) -> bytes | None:
        """The packed record, or None. O(1)."""

    @abc.abstractmethod
    def page(self, table: TableSpec, ns: Namespace, query: ListQuery) -> tuple[list[bytes], bool]:
        """One page (packed, newest first) and ``has_more``. O(log n + limit)."""

    @abc.abstractmethod
    def count(self, table: TableSpec, ns: Namespace) -> int:
        """Records of ``table`` in exactly ``ns``. O(1)."""

    @abc.abstractmethod
    def find(self, table: TableSpec, ns: Namespace, field: str, value: Any) -> list[bytes]:
        """Packed records whose indexed ``field`` is ``value`` (index form), newest first.

        O(log n + k) for k matches.
        """

    @abc.abstractmethod
    def records(self, table: TableSpec, ns: Namespace) -> list[bytes]:
        """Every packed record of ``table`` in ``ns``, newest first. O(n)."""

    @abc.abstractmethod
    def partitions(
        self, under: Namespace | None = None, table: str | None = None
    ) -> list[PartitionInfo]:
        """Non-empty partitions at or under ``under`` (all when None), sorted.

        Only ``table`` when given, else every table but the internal ones.
        """

    # -- writes -------------------------------------------------------------------
    @abc.abstractmethod
    def put(self, table: TableSpec, ns: Namespace, mode: str, record: PreparedRecord) -> None:
        """``mode`` is ``insert`` (strict), ``update`` (strict) or ``upsert``."""

    @abc.abstractmethod
    def put_many(self, table: TableSpec, ns: Namespace, records: Iterable[PreparedRecord]) -> None:
        """Insert every record or none. ``records`` may be lazy: a backend may
        stream it, and must insert nothing when iterating it raises."""

    @abc.abstractmethod
    def patch(
        self,
        table: TableSpec,
        ns: Namespace,
        record_id: str,
        changes: bytes,
        expect: bytes | None = None,
    ) -> bytes:
        """Merge packed ``changes`` into the record atomically; return the merged, packed.

        ``expect`` (packed like ``changes``: a map of top-level field to value)
        makes the patch conditional: it is checked, with
        :func:`~papertiger.core.resolve.check_expect`, atomically with the write.
        O(log n).
        """

    @abc.abstractmethod
    def delete(self, table: TableSpec, ns: Namespace, record_id: str) -> None:
        """Remove one record; :class:`~papertiger.NotFound` when absent."""

    @abc.abstractmethod
    def clear_namespace(self, table: TableSpec | None, ns: Namespace) -> None:
        """Remove ``ns`` and every namespace nested under it (in one table, or in all)."""

    @abc.abstractmethod
    def clear(self, table: TableSpec | None) -> None:
        """Remove every namespace of ``table`` (None: of every table but the internal ones)."""

    # -- made once ------------------------------------------------------------------
    @abc.abstractmethod
    def once_get(self, key: str) -> bytes | None:
        """The stored result of ``once(key)``, or None. No waiting."""

    @abc.abstractmethod
    def once(self, key: str, make: Callable[[], bytes]) -> bytes:
        """The stored result of ``key``, calling ``make()`` here if nobody else is.

        Exactly one caller at a time runs ``make``; the others wait.  When that
        caller raises or dies, a waiter takes over; the first result stored is
        every caller's result.
        """

    @abc.abstractmethod
    def once_keys(self, prefix: str = "") -> list[str]:
        """Keys of stored ``once`` results that start with ``prefix``."""

    @abc.abstractmethod
    def once_forget(self, key: str) -> None:
        """Delete the stored result of ``key`` (absent: nothing happens)."""

    # -- the rest -------------------------------------------------------------------
    @abc.abstractmethod
    def in_use(self) -> bool:
        """True once this process has talked to the store through this backend. O(1).

        Never connects: the pytest plugin asks it to skip work for tests that
        never touched the store.
        """

    def ping(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~papertiger.StoreUnavailable` unless the store answers.

        ``papertiger.connect(url)`` calls it, so a wrong URL fails there.
        """

    def stats(self) -> dict[str, Any]:
        """Figures for ``status`` and reports; a backend adds what it knows."""
        return {"backend": self.description}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the backend is not used afterwards."""
