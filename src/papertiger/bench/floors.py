"""The physical floors: the least work each papertiger operation could possibly do.

* **reads** (:class:`FloorIndex`): the records as msgpack bytes in a plain
  dict, the order in a :class:`sortedcontainers.SortedList`, each customer's
  ids in a list kept newest first.  ``get`` is a dict lookup plus
  ``msgpack.unpackb`` (a fresh dict, as papertiger returns); a page is a
  SortedList slice of 10 plus 10 unpacks; ``find`` is one lookup plus one
  unpack per match; ``count`` is ``len``.
* **writes** (:class:`FloorWriter`): ``msgpack.packb`` of the record and one
  round trip over an AF_UNIX :mod:`multiprocess.connection` Listener/Client
  pair with an authkey, to a process that only answers (:func:`echo_main`):
  the cheapest way to hand a record to another process and know it arrived.
  ``patch`` sends the packed changes and gets a packed record back, which it
  unpacks.
* **catch-up** (:class:`FloorReplica`): per effect, ``unpackb`` of a logged
  PUT and the dict, SortedList and index updates it implies.

The floors run in the measuring worker, on the same records and keys as
papertiger, so the ratio papertiger / floor is the price of everything
papertiger adds (namespaces, locks, the log, validation, the manager).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack
from multiprocess import connection as mpc
from sortedcontainers import SortedList

__all__ = [
    "EchoServer",
    "FloorIndex",
    "FloorReplica",
    "FloorWriter",
    "echo_main",
    "floor_writer",
]

_unpackb = msgpack.unpackb
_packb = msgpack.packb

#: what the echo process answers a write with (the shape of the manager's ``[OK, seq, None]``)
ACK = msgpack.packb([0, 1, None])


class FloorIndex:
    """Packed records in a dict, ordered by a SortedList, indexed by customer."""

    def __init__(self, rows: Iterable[tuple[str, int, int, bytes, str]]) -> None:
        """``rows``: ``(id, created, order, packed, customer)``. O(n log n)."""
        self.records: dict[str, bytes] = {}
        keys = []
        by_customer: dict[str, list[tuple[int, int, str]]] = {}
        for record_id, created, order, packed, customer in rows:
            self.records[record_id] = packed
            key = (created, order, record_id)
            keys.append(key)
            by_customer.setdefault(customer, []).append(key)
        self.order = SortedList(keys)
        self.by_customer = {
            c: [k[2] for k in sorted(ks, reverse=True)] for c, ks in by_customer.items()
        }

    def get(self, record_id: str) -> dict[str, Any]:
        return _unpackb(self.records[record_id])  # type: ignore[no-any-return]

    def page(self, limit: int = 10) -> list[dict[str, Any]]:
        n = len(self.order)
        records = self.records
        return [
            _unpackb(records[key[2]])
            for key in self.order.islice(max(0, n - limit), n, reverse=True)
        ]

    def count(self) -> int:
        return len(self.records)

    def find(self, customer: str) -> list[dict[str, Any]]:
        records = self.records
        return [_unpackb(records[i]) for i in self.by_customer.get(customer, ())]

    def nbytes(self) -> int:
        return sum(len(p) for p in self.records.values())


class FloorReplica:
    """Applies logged PUT effects to a dict, a SortedList and an index."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.order = SortedList()
        self.index: dict[Any, dict[str, tuple[int, int, str]]] = {}
        self.n = 0

    def apply_all(self, entries: list[bytes]) -> None:
        records, order, index = self.records, self.order, self.index
        for entry in entries:
            _, _table, _ns, record_id, created, packed, index_values = _unpackb(entry)
            records[record_id] = packed
            key = (created, self.n, record_id)
            self.n += 1
            order.add(key)
            for value in index_values.values():
                index.setdefault(value, {})[record_id] = key


def echo_main(address: str, authkey: bytes, record: bytes) -> None:
    """The far end of the write floor: answer every frame, nothing else.

    Each connection first says what it wants back: ``b"ack"`` (a 4-byte
    acknowledgement) or ``b"record"`` (``record``).  Serves until every
    connection has closed.
    """
    with contextlib.suppress(KeyboardInterrupt):
        listener = mpc.Listener(address, family="AF_UNIX", authkey=authkey)
        try:
            conns: dict[Any, bytes] = {}
            for _ in range(2):
                conn = listener.accept()
                conns[conn] = record if conn.recv_bytes() == b"record" else ACK
        finally:
            listener.close()
        while conns:
            for conn in mpc.wait(list(conns)):
                try:
                    conn.recv_bytes()
                    conn.send_bytes(conns[conn])
                except (EOFError, OSError):
                    conn.close()
                    del conns[conn]


class EchoServer:
    """Runs :func:`echo_main` in a spawned process on a socket in a private directory."""

    def __init__(self, ctx: Any, record: bytes, workdir: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="echo-" if workdir else "ptg-bench-echo-", dir=workdir)
        self.address = os.path.join(self.dir, "echo.sock")
        self.authkey = secrets.token_bytes(32)
        self.proc = ctx.Process(
            target=echo_main, args=(self.address, self.authkey, record), daemon=True
        )
        self.proc.start()
        deadline = time.monotonic() + 30
        while not os.path.exists(self.address):
            if not self.proc.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the floor's echo process did not start; see its error above.")
            time.sleep(0.005)

    def stop(self) -> None:
        self.proc.join(2)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        with contextlib.suppress(OSError):
            os.unlink(self.address)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)


def _connect(address: str, authkey: bytes, timeout: float = 30.0) -> Any:
    """A client of the echo process: its socket file appears at ``bind``, a moment before
    it listens, so a refused connection is tried again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return mpc.Client(address, family="AF_UNIX", authkey=authkey)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class FloorWriter:
    """The client end of the write floor (see the module doc)."""

    def __init__(self, address: str, authkey: bytes) -> None:
        self.ack = _connect(address, authkey)
        self.ack.send_bytes(b"ack")
        self.rec = _connect(address, authkey)
        self.rec.send_bytes(b"record")

    def put(self, record: Any) -> None:
        """packb + round trip; also the floor of ``insert_many`` with a list of records."""
        self.ack.send_bytes(_packb(record))
        self.ack.recv_bytes()

    def patch(self, changes: dict[str, Any]) -> dict[str, Any]:
        self.rec.send_bytes(_packb(changes))
        return _unpackb(self.rec.recv_bytes())  # type: ignore[no-any-return]

    def close(self) -> None:
        self.ack.close()
        self.rec.close()


@contextlib.contextmanager
def floor_writer(ctx: Any, record: bytes, workdir: str | None = None) -> Iterator[FloorWriter]:
    """An echo process and a connected :class:`FloorWriter`, both gone on exit."""
    server = EchoServer(ctx, record, workdir)
    try:
        writer = FloorWriter(server.address, server.authkey)
        try:
            yield writer
        finally:
            writer.close()
    finally:
        server.stop()
