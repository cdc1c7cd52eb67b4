"""The shared-memory backend: the engine of :mod:`papertiger.engine` behind the seam.

Reads go to this process's :class:`~papertiger.engine.replica.Replica`
(caught up from shared memory under its own lock, never asking the manager);
writes go to the manager as typed requests (:mod:`papertiger.core.resolve`)
and return once their effect is published, so read-after-write holds across
processes.  Which manager: :func:`papertiger.engine.connection.current_client`,
looked up on every call, so ``serve()`` blocks and forks are followed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..core.pagination import ListQuery
from ..core.records import PreparedRecord, generate_id
from ..core.resolve import Clear, ClearNamespace, Delete, Patch, Put
from ..engine import connection, protocol
from ..engine.claims import ONCE_NAMESPACE, ONCE_TABLE
from ..engine.connection import current_client
from ..errors import NotFound
from ..namespace import Namespace
from .base import Backend, PartitionInfo, TableSpec

__all__ = ["ShmBackend"]

#: Records per frame when ``put_many`` streams a large batch to the manager.  50 checkout
#: sessions (about 150 KB) fit in a Unix socket's default send buffer (about 208 KB), so the
#: client hands a chunk over without waiting for the manager to read it, and goes on packing.
BATCH_CHUNK = 50


class ShmBackend(Backend):
    """The store on a shared-memory manager (the default)."""

    description = "shared memory"

    # -- reads ----------------------------------------------------------------------
    def get(self, table: TableSpec, ns: Namespace, record_id: str) -> bytes | None:
        return current_client().replica.get(table.name, ns, record_id)

    def page(self, table: TableSpec, ns: Namespace, query: ListQuery) -> tuple[list[bytes], bool]:
        return current_client().replica.page(table.name, ns, query, table.object_name)

    def count(self, table: TableSpec, ns: Namespace) -> int:
        return current_client().replica.count(table.name, ns)

    def find(self, table: TableSpec, ns: Namespace, field: str, value: Any) -> list[bytes]:
        return current_client().replica.find(table.name, ns, field, value)

    def records(self, table: TableSpec, ns: Namespace) -> list[bytes]:
        return current_client().replica.records(table.name, ns)

    def partitions(
        self, under: Namespace | None = None, table: str | None = None
    ) -> list[PartitionInfo]:
        return [
            PartitionInfo(*found) for found in current_client().replica.partitions(under, table)
        ]

    # -- writes ---------------------------------------------------------------------
    def put(self, table: TableSpec, ns: Namespace, mode: str, record: PreparedRecord) -> None:
        current_client().request(
            protocol.write(Put(table.name, table.object_name, ns, mode, record.wire()))
        )

    def put_many(self, table: TableSpec, ns: Namespace, records: Iterable[PreparedRecord]) -> None:
        """Streams chunks of :data:`BATCH_CHUNK` records as they are prepared.

        The manager stages them and applies them together, as one effect, only
        once the last one arrived and the whole batch passed; if preparing a
        record raises, the batch is aborted and nothing is inserted.
        """
        txid = generate_id("tx")

        def chunks() -> Iterator[list[Any]]:
            chunk: list[Any] = []
            sent = 0
            for record in records:
                chunk.append(record.wire())
                if len(chunk) == BATCH_CHUNK:
                    yield protocol.stage(
                        protocol.Stage(txid, table.name, table.object_name, ns, chunk)
                    )
                    sent += len(chunk)
                    chunk = []
            if chunk or not sent:  # an empty batch is staged too: commit needs one
                yield protocol.stage(protocol.Stage(txid, table.name, table.object_name, ns, chunk))

        current_client().request_streamed(
            chunks(), protocol.request("commit", txid), protocol.request("abort", txid)
        )

    def patch(
        self,
        table: TableSpec,
        ns: Namespace,
        record_id: str,
        changes: bytes,
        expect: bytes | None = None,
    ) -> bytes:
        """The manager merges, checks ``expect`` and applies, in one step. O(log n)."""
        req = Patch(
            table.name, table.object_name, ns, record_id, changes, list(table.index_fields), expect
        )
        _, merged = current_client().request(protocol.write(req))
        return merged  # type: ignore[no-any-return]

    def delete(self, table: TableSpec, ns: Namespace, record_id: str) -> None:
        current_client().request(
            protocol.write(Delete(table.name, table.object_name, ns, record_id))
        )

    def clear_namespace(self, table: TableSpec | None, ns: Namespace) -> None:
        name = None if table is None else table.name
        current_client().request(protocol.write(ClearNamespace(name, list(ns))))

    def clear(self, table: TableSpec | None) -> None:
        current_client().request(protocol.write(Clear(None if table is None else table.name)))

    # -- made once --------------------------------------------------------------------
    def once_get(self, key: str) -> bytes | None:
        return current_client().replica.get(ONCE_TABLE, ONCE_NAMESPACE, key)

    def once(self, key: str, make: Callable[[], bytes]) -> bytes:
        """Claims live in the manager (:mod:`papertiger.engine.claims`).

        Waiting happens on a connection of its own, so this process's other
        threads keep using the main one.
        """
        channel = current_client().channel()
        try:
            _, result = channel.request(protocol.request("once", key))
            if result[0] == "done":
                return result[1]  # type: ignore[no-any-return]
            try:
                packed = make()
            except BaseException:
                channel.request(protocol.request("once_abandon", key))
                raise
            channel.request(protocol.request("once_done", key, packed))
            return packed
        finally:
            channel.close()

    def once_keys(self, prefix: str = "") -> list[str]:
        keys = current_client().replica.ids(ONCE_TABLE, ONCE_NAMESPACE)
        return [key for key in keys if key.startswith(prefix)]

    def once_forget(self, key: str) -> None:
        try:
            current_client().request(
                protocol.write(Delete(ONCE_TABLE, "once", list(ONCE_NAMESPACE), key))
            )
        except NotFound:
            pass

    # -- the rest ---------------------------------------------------------------------
    def in_use(self) -> bool:
        return connection.connected()

    def stats(self) -> dict[str, Any]:
        figures = dict(current_client().request(protocol.request("stats"))[1])
        figures["backend"] = self.description
        return figures
