"""``Store``: a resource's declaration and the store API every resource shares.

A resource store is a few declarative lines::

    class Invoices(Store):
        table_name = "invoices"
        resource = "invoice"
        object_name = "invoice"        # the record's Stripe "object" field
        prefix = "in"
        url = "/v1/invoices"
        indexes = ("customer", "subscription")   # find_by_customer, find_by_subscription
        filters = ("customer", "status")         # list(customer=..., status=...)

Every method is a classmethod scoped to the current namespace
(:func:`papertiger.use_namespace`).  The records live in the process's
backend (:func:`papertiger.backends.current_backend`: shared memory by
default, or Redis); a ``Store`` validates and packs records on the way in,
decodes them on the way out (so every read returns a fresh object), and
leaves locking and atomicity to the backend.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import msgpack

from ..backends import current_backend
from ..backends.base import TableSpec
from ..core.pagination import DEFAULT_LIMIT, StripeList, list_query
from ..core.records import (
    PreparedRecord,
    check_id,
    index_value,
    pack_expect,
    pack_value,
    prepare_record,
)
from ..errors import InvalidRequest, NotFound, StoreError
from ..namespace import NamespaceLike, current_namespace, normalize_namespace

__all__ = ["Store"]

_unpackb = msgpack.unpackb


def _undecodable(what: str, exc: Exception) -> StoreError:
    """The error for stored bytes that do not decode (only a faulty client can write them)."""
    return StoreError(
        f"{what} could not be decoded ({type(exc).__name__}: {exc}): a client stored bytes "
        "that are not a msgpack map. Overwrite or delete the record."
    )


class Store:
    """Base class of the resource stores; subclass it with the declarations below."""

    #: Name of the table (unique per resource).
    table_name: ClassVar[str]
    #: Identifier of the resource (``checkout_session``).
    resource: ClassVar[str]
    #: Stripe's ``object`` value, filled into records that lack one; also used in messages.
    object_name: ClassVar[str]
    #: Id prefix: generated ids are ``<prefix>_`` + 24 alphanumerics.
    prefix: ClassVar[str]
    #: The resource's list path, reported as a list's ``url``.
    url: ClassVar[str]
    #: Fields indexed for ``find_by_<field>``.
    indexes: ClassVar[tuple[str, ...]] = ()
    #: Fields :meth:`list` filters on by equality (Stripe's list filters); dotted names
    #: reach into nested dicts.  ``created`` is always filterable.
    filters: ClassVar[tuple[str, ...]] = ()
    #: What the backend knows of this resource (set for each subclass).
    spec: ClassVar[TableSpec]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [
            name for name in ("table_name", "resource", "prefix", "url") if not hasattr(cls, name)
        ]
        if missing:
            raise TypeError(f"{cls.__name__} must declare {', '.join(missing)} (see Store's doc).")
        if not getattr(cls, "object_name", None):
            cls.object_name = cls.resource
        if cls.table_name.startswith("_"):
            raise TypeError(f"{cls.__name__}.table_name may not start with '_' (reserved).")
        cls.indexes = tuple(cls.indexes)
        cls.filters = tuple(cls.filters)
        cls.spec = TableSpec(
            cls.table_name, cls.object_name, tuple(dict.fromkeys(cls.indexes + cls.filters))
        )
        for field in cls.indexes:
            name = f"find_by_{field}"
            if name not in cls.__dict__:
                setattr(cls, name, classmethod(_make_finder(field)))

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__name__} is used through its class methods, not instances.")

    # -- reads ----------------------------------------------------------------
    @classmethod
    def get(cls, id: str) -> dict[str, Any]:
        """The record ``id`` as a fresh dict; raises :class:`NotFound`. O(1) + decode."""
        if type(id) is not str or not id:
            check_id(id)
        packed = current_backend().get(cls.spec, current_namespace(), id)
        if packed is None:
            raise NotFound(f"No such {cls.object_name}: '{id}'", param="id")
        try:
            return _unpackb(packed)  # type: ignore[no-any-return]
        except Exception as exc:
            raise _undecodable(f"{cls.object_name} '{id}'", exc) from None

    @classmethod
    def list(
        cls,
        limit: int = DEFAULT_LIMIT,
        starting_after: str | None = None,
        ending_before: str | None = None,
        *,
        created: int | Mapping[str, int] | None = None,
        **filters: Any,
    ) -> StripeList:
        """One page, newest first, with Stripe's cursor rules and filters. O(log n + limit).

        ``created`` is an int (equal) or a dict with any of ``gt``, ``gte``,
        ``lt``, ``lte``; ``filters`` are equalities on the declared
        :attr:`filters` (``status="open"``, ``customer_details.email`` passed
        as ``**{"customer_details.email": "a@b"}``).  A cursor must match the
        filters, else :class:`NotFound` names it.  With two or more equality
        filters, each candidate of the first is checked: O(log n + scanned).
        """
        query = list_query(
            limit,
            starting_after,
            ending_before,
            created,
            filters,
            filterable=cls.filters,
            resource=cls.object_name,
        )
        packed, has_more = current_backend().page(cls.spec, current_namespace(), query)
        try:
            data = [_unpackb(p) for p in packed]
        except Exception as exc:
            raise _undecodable(f"A {cls.object_name} on this page", exc) from None
        return StripeList(data=data, has_more=has_more, url=cls.url)

    @classmethod
    def count(cls) -> int:
        """Records in the current namespace. O(1)."""
        return current_backend().count(cls.spec, current_namespace())

    @classmethod
    def find_by(cls, field: str, value: Any) -> builtins.list[dict[str, Any]]:
        """Records whose indexed ``field`` equals ``value``, newest first. O(log n + k)."""
        if field not in cls.indexes:
            raise InvalidRequest(
                f"Invalid field: {field!r} is not indexed on {cls.__name__}; "
                f"indexed fields: {', '.join(cls.indexes) or 'none'}.",
                param=field,
            )
        key = index_value(value)
        if key is None:
            return []
        packed = current_backend().find(cls.spec, current_namespace(), field, key)
        try:
            return [_unpackb(p) for p in packed]
        except Exception as exc:
            raise _undecodable(f"A {cls.object_name} with that {field}", exc) from None

    @classmethod
    def list_namespace(cls, ns: NamespaceLike | None = None) -> builtins.list[dict[str, Any]]:
        """Every record of namespace ``ns`` (default: the current one), newest first. O(n)."""
        key = current_namespace() if ns is None else normalize_namespace(ns)
        packed = current_backend().records(cls.spec, key)
        try:
            return [_unpackb(p) for p in packed]
        except Exception as exc:
            raise _undecodable(f"A {cls.object_name} of this namespace", exc) from None

    # -- writes ---------------------------------------------------------------
    @classmethod
    def _prepare(cls, record: object, require_id: bool = False) -> PreparedRecord:
        return prepare_record(
            record,
            prefix=cls.prefix,
            object_name=cls.object_name,
            index_fields=cls.spec.index_fields,
            require_id=require_id,
        )

    @classmethod
    def _put(cls, mode: str, record: object, require_id: bool) -> dict[str, Any]:
        prepared = cls._prepare(record, require_id)
        current_backend().put(cls.spec, current_namespace(), mode, prepared)
        return prepared.record

    @classmethod
    def insert(cls, record: Mapping[str, Any]) -> dict[str, Any]:
        """Insert a new record; ``id`` and ``created`` are filled in when absent.

        Returns the stored record.  Raises :class:`AlreadyExists` when the id
        is taken, :class:`InvalidRequest` for a malformed record.
        """
        return cls._put("insert", record, False)

    @classmethod
    def update(cls, record: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the stored record with the same ``id``; raises :class:`NotFound`."""
        return cls._put("update", record, True)

    @classmethod
    def upsert(cls, record: Mapping[str, Any]) -> dict[str, Any]:
        """Insert the record or replace the one with its ``id``."""
        return cls._put("upsert", record, False)

    @classmethod
    def insert_many(cls, records: Iterable[Mapping[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Insert every record, or none: one step, all or nothing. O(k log n).

        Records are prepared as the backend consumes them, so a large batch
        streams (packing here overlaps the backend's work); a bad record
        anywhere raises :class:`InvalidRequest` naming ``records[i]`` and
        nothing is inserted.  Returns the stored records.
        """
        if isinstance(records, (Mapping, str, bytes)) or not isinstance(records, Iterable):
            raise InvalidRequest("Invalid records: expected a list of dicts.", param="records")
        prepared: builtins.list[PreparedRecord] = []

        def each() -> Iterator[PreparedRecord]:
            for i, record in enumerate(records):
                try:
                    p = cls._prepare(record)
                except InvalidRequest as exc:
                    raise InvalidRequest(
                        f"records[{i}]: {exc.message} Nothing was inserted.", param=exc.param
                    ) from None
                prepared.append(p)
                yield p

        current_backend().put_many(cls.spec, current_namespace(), each())
        return [p.record for p in prepared]

    @classmethod
    def patch(
        cls,
        id: str,
        changes: Mapping[str, Any],
        *,
        expect: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Merge ``changes`` into record ``id`` atomically, in the backend.

        Nested dicts merge (like Stripe's ``metadata``); other values replace.
        Two processes patching the same record never lose each other's keys.
        Returns the merged record.  O(log n) + the record's size.

        ``expect`` makes the patch conditional: it applies only if, for every
        top-level field in ``expect``, the record's current value equals the
        expected one (a field the record lacks counts as None), checked
        atomically with the write.  Otherwise it raises :class:`Conflict`
        (``param``: the first field that differs) and changes nothing, so of
        two callers that both saw ``"open"``, exactly one moves the record on::

            Sessions.patch(sid, {"status": "complete"}, expect={"status": "open"})

        An ``expect`` that is not a dict of str to storable values raises
        :class:`InvalidRequest` with ``param="expect"``.
        """
        check_id(id)
        if not isinstance(changes, Mapping):
            raise InvalidRequest(
                f"Invalid changes: expected a dict, got {type(changes).__name__}.",
                param="changes",
            )
        packed = pack_value(dict(changes), "changes")
        expected = None if expect is None else pack_expect(expect)
        merged = current_backend().patch(cls.spec, current_namespace(), id, packed, expected)
        return _unpackb(merged)  # type: ignore[no-any-return]

    @classmethod
    def delete(cls, id: str) -> dict[str, Any]:
        """Delete record ``id``; returns Stripe's deleted stub. Raises :class:`NotFound`."""
        check_id(id)
        current_backend().delete(cls.spec, current_namespace(), id)
        return {"id": id, "object": cls.object_name, "deleted": True}

    @classmethod
    def clear(cls) -> None:
        """Remove every record of this table, in every namespace."""
        current_backend().clear(cls.spec)

    @classmethod
    def clear_namespace(cls, ns: NamespaceLike | None = None) -> None:
        """Remove this table's records in ``ns`` and every namespace nested under it."""
        key = current_namespace() if ns is None else normalize_namespace(ns)
        current_backend().clear_namespace(cls.spec, key)


def _make_finder(field: str) -> Any:
    def finder(cls: type[Store], value: Any) -> builtins.list[dict[str, Any]]:
        return cls.find_by(field, value)

    finder.__name__ = f"find_by_{field}"
    finder.__doc__ = (
        f"Records whose ``{field}`` equals ``value`` (an id, or an expanded object with "
        "one), newest first, in the current namespace. O(log n + k)."
    )
    return finder
