"""``Store``: a resource's declaration and the store API every resource shares.

A resource store is a few declarative lines::

    class Invoices(Store):
        table_name = "invoices"
        resource = "invoice"
        object_name = "invoice"        # the record's Stripe "object" field
        prefix = "in"
        url = "/v1/invoices"
        indexes = ("customer", "subscription")   # find_by_customer, find_by_subscription

Every method is a classmethod scoped to the current namespace
(:func:`papertiger.use_namespace`).  Reads are answered from this process's
replica of the shared memory log, never by the manager; writes go to the
manager and return once every process can see them.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, ClassVar

import msgpack

from ..commands import PreparedRecord, check_id, generate_id, pack_value, prepare_record
from ..engine.server import current_client
from ..errors import InvalidRequest, NotFound, StoreError
from ..namespace import NamespaceLike, current_namespace, normalize_namespace
from ..pagination import DEFAULT_LIMIT, StripeList, check_page_params, select_page

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
    #: Records per frame when ``insert_many`` streams a large batch to the manager.
    BATCH_CHUNK: ClassVar[int] = 200

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
        replica = current_client().replica
        with replica.lock:
            packed = replica.catch_up().get(cls.table_name, current_namespace(), id)
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
    ) -> StripeList:
        """One page, newest first, with Stripe's cursor rules. O(log n + limit)."""
        check_page_params(limit, starting_after, ending_before)
        replica = current_client().replica
        with replica.lock:
            partition = replica.catch_up().partition(cls.table_name, current_namespace())
            packed, has_more = select_page(
                partition, limit, starting_after, ending_before, cls.object_name
            )
        try:
            data = [_unpackb(p) for p in packed]
        except Exception as exc:
            raise _undecodable(f"A {cls.object_name} on this page", exc) from None
        return StripeList(data=data, has_more=has_more, url=cls.url)

    @classmethod
    def count(cls) -> int:
        """Records in the current namespace. O(1)."""
        replica = current_client().replica
        with replica.lock:
            return replica.catch_up().count(cls.table_name, current_namespace())

    @classmethod
    def find_by(cls, field: str, value: Any) -> builtins.list[dict[str, Any]]:
        """Records whose indexed ``field`` equals ``value``, newest first. O(k log k)."""
        if field not in cls.indexes:
            raise InvalidRequest(
                f"Invalid field: {field!r} is not indexed on {cls.__name__}; "
                f"indexed fields: {', '.join(cls.indexes) or 'none'}.",
                param=field,
            )
        if isinstance(value, Mapping):
            value = value.get("id")
        replica = current_client().replica
        with replica.lock:
            partition = replica.catch_up().partition(cls.table_name, current_namespace())
            packed = partition.find(field, value) if partition is not None else []
        try:
            return [_unpackb(p) for p in packed]
        except Exception as exc:
            raise _undecodable(f"A {cls.object_name} with that {field}", exc) from None

    @classmethod
    def list_namespace(cls, ns: NamespaceLike | None = None) -> builtins.list[dict[str, Any]]:
        """Every record of namespace ``ns`` (default: the current one), newest first. O(n)."""
        key = current_namespace() if ns is None else normalize_namespace(ns)
        replica = current_client().replica
        with replica.lock:
            partition = replica.catch_up().partition(cls.table_name, key)
            packed = builtins.list(partition.newest_first()) if partition is not None else []
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
            index_fields=cls.indexes,
            require_id=require_id,
        )

    @classmethod
    def _put(cls, mode: str, record: object, require_id: bool) -> dict[str, Any]:
        prepared = cls._prepare(record, require_id)
        current_client().request(
            ["put", cls.table_name, cls.object_name, current_namespace(), mode, prepared.wire()]
        )
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
        """Insert every record, or none: one effect, all or nothing. O(k log n).

        Large batches travel in chunks of :attr:`BATCH_CHUNK` records, packed
        here while the manager checks the previous chunk; the manager applies
        them together, as one effect, only once the last one arrived and the
        whole batch passed.  Returns the stored records.
        """
        if isinstance(records, (Mapping, str, bytes)) or not isinstance(records, Iterable):
            raise InvalidRequest("Invalid records: expected a list of dicts.", param="records")
        prepared: builtins.list[PreparedRecord] = []
        ns = current_namespace()

        def chunks(txid: str) -> Iterator[builtins.list[Any]]:
            chunk: builtins.list[Any] = []
            for i, record in enumerate(records):
                try:
                    p = cls._prepare(record)
                except InvalidRequest as exc:
                    raise InvalidRequest(
                        f"records[{i}]: {exc.message} Nothing was inserted.", param=exc.param
                    ) from None
                prepared.append(p)
                chunk.append(p.wire())
                if len(chunk) == cls.BATCH_CHUNK:
                    yield ["stage", txid, cls.table_name, cls.object_name, ns, chunk]
                    chunk = []
            if chunk or not prepared:  # an empty batch is staged too: commit needs one
                yield ["stage", txid, cls.table_name, cls.object_name, ns, chunk]

        txid = generate_id("tx")
        current_client().request_streamed(chunks(txid), ["commit", txid], ["abort", txid])
        return [p.record for p in prepared]

    @classmethod
    def patch(cls, id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into record ``id`` atomically, inside the manager.

        Nested dicts merge (like Stripe's ``metadata``); other values replace.
        Two processes patching the same record never lose each other's keys.
        Returns the merged record.
        """
        check_id(id)
        if not isinstance(changes, Mapping):
            raise InvalidRequest(
                f"Invalid changes: expected a dict, got {type(changes).__name__}.",
                param="changes",
            )
        packed = pack_value(dict(changes), "changes")
        _, merged = current_client().request(
            [
                "patch",
                cls.table_name,
                cls.object_name,
                current_namespace(),
                id,
                packed,
                builtins.list(cls.indexes),
            ]
        )
        return _unpackb(merged)  # type: ignore[no-any-return]

    @classmethod
    def delete(cls, id: str) -> dict[str, Any]:
        """Delete record ``id``; returns Stripe's deleted stub. Raises :class:`NotFound`."""
        check_id(id)
        current_client().request(
            ["delete", cls.table_name, cls.object_name, current_namespace(), id]
        )
        return {"id": id, "object": cls.object_name, "deleted": True}

    @classmethod
    def clear(cls) -> None:
        """Remove every record of this table, in every namespace."""
        current_client().request(["clear", cls.table_name])

    @classmethod
    def clear_namespace(cls, ns: NamespaceLike | None = None) -> None:
        """Remove this table's records in ``ns`` and every namespace nested under it."""
        key = current_namespace() if ns is None else normalize_namespace(ns)
        current_client().request(["clear_namespace", cls.table_name, key])


def _make_finder(field: str) -> Any:
    def finder(cls: type[Store], value: Any) -> builtins.list[dict[str, Any]]:
        return cls.find_by(field, value)

    finder.__name__ = f"find_by_{field}"
    finder.__doc__ = (
        f"Records whose ``{field}`` equals ``value`` (an id, or an expanded object with "
        "one), newest first, in the current namespace. O(k log k)."
    )
    return finder
