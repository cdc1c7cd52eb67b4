"""The Redis backend: the same store on a Redis server or a Redis Cluster.

Theory of operation
-------------------
Records stay packed (msgpack bytes from :func:`~papertiger.core.records.prepare_record`);
Redis keeps them in one hash per partition, next to an order sorted set whose
members encode ``(created, insertion counter, id)`` so that a lexicographic
range is a page in Stripe's order, and one sorted set per indexed
``(field, value)``.  :mod:`.redis_layout` names the keys; every key of a
partition shares one hash tag, so each write is one Lua script
(:mod:`.redis_scripts`) on one node: atomic, on a plain Redis as on a Cluster.

* **Reads**: ``get`` is ``HGET``, ``count`` is ``HLEN`` (O(1)); a page is one
  script (``ZREVRANGEBYLEX ... LIMIT`` plus ``HMGET``: O(log n + limit));
  ``find`` and ``records`` are one script each.
* **Writes**: ``put``, ``put_many`` (one script for the whole batch; a batch
  larger than :data:`BATCH_CHUNK` is staged in chunks in a list of the same
  slot, then committed by one script), ``delete``.  ``patch`` reads the
  record, merges with :func:`~papertiger.core.resolve.apply_patch` here, and
  stores the result with a compare-and-set script, retrying when another
  writer got there first: no writer loses another's keys.  A conditional
  patch (``expect``) checks :func:`~papertiger.core.resolve.check_expect`
  against the record it read; the compare-and-set stores the merge only if
  the record is still byte for byte that one, so the check holds at the
  write (a retry checks again against what the other writer stored).
* **The registry** (``<prefix>:partitions``) lists every partition that may
  hold records, so ``clear``, nested ``clear_namespace`` and ``partitions``
  find them on every node.  A write enters a partition into it before the
  partition's first record is stored (see :mod:`.redis_scripts`); a clear
  empties the partition, removes it from the registry, and empties it again,
  so a writer racing with the clear either lands before it (and is cleared)
  or registers anew.  A namespace tree is one lexicographic range.
* **once** claims a lease (``SET NX PX``) that its holder renews from a
  thread while its factory runs; a holder that raises gives it back, one that
  dies lets it expire, and a waiter (polling, with backoff) takes over.
* **Faults**: every Redis error becomes a :class:`~papertiger.StoreError`;
  one that means Redis cannot be reached becomes
  :class:`~papertiger.StoreUnavailable`, naming the URL without its password.
  Connections time out (2 s to connect, 10 s to answer, unless the URL says
  otherwise) and writes are never retried blindly (a retried insert could
  report its own success as ``AlreadyExists``); a connection broken by a
  restart is replaced when next taken from the pool.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import msgpack
import redis as redis_py
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.retry import Retry

from ..core.pagination import ListQuery
from ..core.records import PreparedRecord, index_values
from ..core.resolve import apply_patch, check_expect, read_expect
from ..errors import AlreadyExists, NotFound, StoreError, StoreUnavailable
from ..namespace import Namespace, format_namespace
from . import redis_scripts as lua
from .base import Backend, PartitionInfo, TableSpec
from .redis_layout import KeyLayout, PartitionKeys, created_key, parse_redis_url
from .urls import redact

__all__ = ["BATCH_CHUNK", "RedisBackend"]

#: Records per chunk of a ``put_many``; a batch of more is staged, then committed at once.
BATCH_CHUNK = 1000
#: Seconds to wait for a connection, and for an answer, unless the URL sets them.
CONNECT_TIMEOUT = 2.0
ANSWER_TIMEOUT = 10.0
#: How often ``patch`` retries when other writers keep changing the record first.
PATCH_ATTEMPTS = 1000
#: A staged batch that never commits (its writer died) expires after this many seconds.
STAGE_TTL = 3600

_packb = msgpack.packb
_unpackb = msgpack.unpackb
_OK = b"OK"
_REG = b"REG"
_NOTFOUND = b"NOTFOUND"


class RedisBackend(Backend):
    """The store on Redis (see the module doc). Make one with :meth:`from_url`.

    Thread-safe and fork-safe (redis-py's pools reconnect in a child); never
    connects before its first store call.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        url: str,
        prefix: str = "papertiger",
        once_lease: float = 5.0,
        cluster: bool = False,
    ) -> None:
        self._connect = connect
        self._client: Any = None
        self._lock = threading.Lock()
        self.url = url
        self.cluster = cluster
        self.keys = KeyLayout(prefix)
        self.once_lease = once_lease
        kind = "Redis Cluster" if cluster else "Redis"
        self.description = f"{kind} at {redact(url)}"
        self._used_by = 0  # pid of the process that last talked to Redis
        self._tokens = itertools.count()
        self._token_head = os.urandom(6).hex()

    @classmethod
    def from_url(cls, url: str) -> RedisBackend:
        """A backend for ``url`` (see :func:`.redis_layout.parse_redis_url` for the forms).

        Raises :class:`~papertiger.InvalidRequest` for a malformed URL; connects
        on first use, not here.
        """
        parsed = parse_redis_url(url)
        if parsed.cluster:
            return cls(
                lambda: _cluster_client(parsed.urls),
                url=url,
                prefix=parsed.prefix,
                once_lease=parsed.once_lease,
                cluster=True,
            )
        return cls(
            lambda: _plain_client(parsed.urls[0]),
            url=url,
            prefix=parsed.prefix,
            once_lease=parsed.once_lease,
        )

    # -- plumbing -----------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The redis-py client (made on first use)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    try:
                        self._client = self._connect()
                    except (RedisError, RedisClusterException, OSError) as exc:
                        self._fail(exc)
                client = self._client
        return client

    def _token(self) -> str:
        return f"{self._token_head}{next(self._tokens)}"

    def _fail(self, exc: BaseException) -> NoReturn:
        """Raise the store's error for a Redis error (always raises)."""
        raise self._error(exc) from None

    def _error(self, exc: BaseException) -> StoreError:
        where = self.description
        text = str(exc) or type(exc).__name__
        upper = text.upper()
        if (
            isinstance(exc, redis_py.AuthenticationError)
            or "WRONGPASS" in upper
            or ("NOAUTH" in upper)
        ):
            return StoreUnavailable(
                f"{where} refused the credentials ({text}). Put the right password in the URL "
                "(redis://:PASSWORD@host:port/db, or redis://USER:PASSWORD@... with an ACL user)."
            )
        if isinstance(exc, redis_py.BusyLoadingError) or "LOADING" in upper[:10]:
            return StoreUnavailable(
                f"{where} is still loading its data after a restart; try again in a moment."
            )
        if isinstance(exc, (redis_py.ConnectionError, redis_py.TimeoutError, OSError)) or (
            isinstance(exc, RedisClusterException) and not isinstance(exc, RedisError)
        ):
            return StoreUnavailable(
                f"{where} cannot be reached ({type(exc).__name__}: {text}). Start Redis (or "
                "check the URL given to papertiger.connect, --papertiger-url or PAPERTIGER_URL), "
                "then try again."
            )
        if isinstance(exc, redis_py.exceptions.ClusterDownError):
            return StoreUnavailable(f"{where} is down ({text}); wait for it to recover.")
        return StoreError(
            f"{where} answered with an error ({type(exc).__name__}: {text}). If a key under "
            f"the prefix '{self.keys.prefix}' was written by something other than papertiger, "
            "clear it (or use another prefix)."
        )

    def _done(self) -> None:
        """This process talked to Redis (see :meth:`in_use`)."""
        self._used_by = os.getpid()

    def _eval(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA`` of a script of :mod:`.redis_scripts`; loaded when the server lacks it
        (a restarted Redis, a new Cluster node)."""
        client = self.client
        sha = _sha(source)
        try:
            try:
                reply = client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:
                client.script_load(source)
                reply = client.evalsha(sha, len(keys), *keys, *args)
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        self._used_by = os.getpid()
        return reply

    def _write(self, source: str, part: PartitionKeys, keys: list[str], args: list[Any]) -> Any:
        """Run a write script, entering the partition into the registry when it asks.

        ``args[1:3]`` are the token and registration slots of :mod:`.redis_scripts`.
        """
        for _ in range(100):
            args[1] = self._token()
            reply = self._eval(source, keys, args)
            if reply[0] != _REG:
                return reply
            args[2] = reply[1]
            try:
                self.client.zadd(self.keys.registry, {part.name: 0})
            except (RedisError, RedisClusterException, OSError) as exc:
                self._fail(exc)
        raise StoreError(  # pragma: no cover - needs 100 clears racing one write
            f"{self.description}: the partition {part.name!r} was cleared 100 times while a "
            "write waited to enter it; try again."
        )

    def _undecodable(self, what: str) -> StoreError:
        return StoreError(
            f"{self.description}: {what} is missing or not what papertiger stores there; "
            f"something else wrote under the prefix '{self.keys.prefix}'. Clear that namespace."
        )

    # -- reads ----------------------------------------------------------------------
    def get(self, table: TableSpec, ns: Namespace, record_id: str) -> bytes | None:
        """``HGET``. O(1)."""
        part = self.keys.partition(table.name, ns)
        try:
            packed = self.client.hget(part.records, record_id)
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        self._used_by = os.getpid()
        return packed  # type: ignore[no-any-return]

    def page(self, table: TableSpec, ns: Namespace, query: ListQuery) -> tuple[list[bytes], bool]:
        """One script: O(log n + limit) (O(log n + scanned) with two or more filters)."""
        part = self.keys.partition(table.name, ns)
        keys = [part.records, part.entries, part.order]
        for field, value in query.filters:
            keys.append(self.keys.index_key(part, field, value))
        cursor = query.cursor
        created = query.created
        lo = hi = ""
        if created is not None:
            lo = "" if created.lo is None else created_key(created.lo)
            hi = "" if created.hi is None else created_key(created.hi)
        args = [
            query.limit,
            "" if cursor is None else ("sa" if cursor[0] == "starting_after" else "eb"),
            "" if cursor is None else cursor[1],
            lo,
            hi,
        ]
        reply = self._eval(lua.PAGE, keys, args)
        if reply[0] == _NOTFOUND:
            assert cursor is not None
            raise NotFound(f"No such {table.object_name}: '{cursor[1]}'", param=cursor[0])
        packed = reply[2:]
        if None in packed:
            raise self._undecodable(f"a record listed in the order of {part.name!r}")
        return packed, bool(reply[1])

    def count(self, table: TableSpec, ns: Namespace) -> int:
        """``HLEN``. O(1)."""
        part = self.keys.partition(table.name, ns)
        try:
            n = self.client.hlen(part.records)
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        self._used_by = os.getpid()
        return int(n)

    def find(self, table: TableSpec, ns: Namespace, field: str, value: Any) -> list[bytes]:
        """One script over the value's sorted set. O(log n + k)."""
        part = self.keys.partition(table.name, ns)
        return self._fetch(part, self.keys.index_key(part, field, value))

    def records(self, table: TableSpec, ns: Namespace) -> list[bytes]:
        """One script over the order. O(n)."""
        part = self.keys.partition(table.name, ns)
        return self._fetch(part, part.order)

    def _fetch(self, part: PartitionKeys, sorted_set: str) -> list[bytes]:
        packed: list[bytes] = self._eval(lua.FIND, [part.records, sorted_set], [])
        if None in packed:
            raise self._undecodable(f"a record listed in {sorted_set!r}")
        return packed

    def _registered(self, under: Namespace | None) -> list[str]:
        lo, hi = self.keys.registry_range(under)
        try:
            names = self.client.zrangebylex(self.keys.registry, lo, hi)
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        self._done()
        return [n.decode() for n in names]

    def partitions(
        self, under: Namespace | None = None, table: str | None = None
    ) -> list[PartitionInfo]:
        """The registry's range for ``under``, then ``HLEN`` of each (one pipeline).

        O(log P + p) for p partitions at or under ``under``.
        """
        found = []
        for name in self._registered(under):
            try:
                name_table, ns = self.keys.parse_name(name)
            except UnicodeDecodeError:
                continue  # not a name papertiger wrote
            if (table is None and not name_table.startswith("_")) or name_table == table:
                found.append((name_table, ns, self.keys.partition_named(name)))
        if not found:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            for _, _, part in found:
                pipe.hlen(part.records)
            sizes = pipe.execute()
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        infos = [
            PartitionInfo(t, ns, int(size)) for (t, ns, _), size in zip(found, sizes, strict=True)
        ]
        return sorted((i for i in infos if i.size), key=lambda i: (i.table, i.namespace))

    # -- writes -----------------------------------------------------------------------
    def put(self, table: TableSpec, ns: Namespace, mode: str, record: PreparedRecord) -> None:
        """One script. O(log n)."""
        part = self.keys.partition(table.name, ns)
        args: list[Any] = [
            part.base,
            "",
            "",
            mode,
            record.id,
            created_key(record.created),
            record.packed,
            *self.keys.suffixes(record.index_values),
        ]
        keys = [part.records, part.entries, part.order, part.meta]
        status = self._write(lua.PUT, part, keys, args)[0]
        if status == _OK:
            return
        if status == b"EXISTS":
            raise AlreadyExists(
                f"{table.object_name} '{record.id}' already exists in namespace "
                f"{format_namespace(ns)}; use update() or upsert() to replace it.",
                param="id",
            )
        raise NotFound(f"No such {table.object_name}: '{record.id}'", param="id")

    def put_many(self, table: TableSpec, ns: Namespace, records: Iterable[PreparedRecord]) -> None:
        """One script for the whole batch: all or nothing. O(k log n).

        A batch of at most :data:`BATCH_CHUNK` records travels in the script's
        call; a larger one is staged chunk by chunk (pipelined, as ``records``
        is consumed) in a list of the partition's slot, then one script checks
        and applies it all.  If iterating ``records`` raises, the stage is
        deleted and nothing was inserted.
        """
        part = self.keys.partition(table.name, ns)
        suffixes = self.keys.suffixes
        chunks: list[bytes] = []
        chunk: list[Any] = []
        stage: str | None = None
        pipe: Any = None
        committed = False  # the commit script deletes the stage itself
        try:
            for record in records:
                chunk.append(
                    [
                        record.id,
                        created_key(record.created),
                        record.packed,
                        suffixes(record.index_values),
                    ]
                )
                if len(chunk) == BATCH_CHUNK:
                    blob = _packb(chunk, use_bin_type=False)
                    chunk = []
                    if stage is None and not chunks:
                        chunks.append(blob)  # maybe the only chunk: no stage yet
                        continue
                    if stage is None:
                        stage = f"{part.base}:stage:{self._token()}"
                        pipe = self.client.pipeline(transaction=False)
                        pipe.rpush(stage, *chunks)
                        chunks = []
                    pipe.rpush(stage, blob)
                    pipe.expire(stage, STAGE_TTL)
                    pipe.execute()
            if chunk or not (chunks or stage):
                chunks.append(_packb(chunk, use_bin_type=False))
            keys = [part.records, part.entries, part.order, part.meta]
            if stage is not None:
                if chunks:
                    self.client.rpush(stage, *chunks)
                reply = self._write(lua.PUT_MANY, part, [*keys, stage], [part.base, "", ""])
            else:
                reply = self._write(lua.PUT_MANY, part, keys, [part.base, "", "", chunks[0]])
            committed = reply[0] == _OK
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        finally:
            if stage is not None and not committed:
                try:
                    self.client.delete(stage)
                except (RedisError, RedisClusterException, OSError):
                    pass  # it expires
        status = reply[0]
        if status == _OK:
            return
        i, record_id = int(reply[1]), reply[2].decode()
        why = " (twice in this batch)" if status == b"TWICE" else ""
        raise AlreadyExists(
            f"records[{i}]: {table.object_name} '{record_id}' already exists in namespace "
            f"{format_namespace(ns)}{why}; nothing was inserted.",
            param="id",
        )

    def patch(
        self,
        table: TableSpec,
        ns: Namespace,
        record_id: str,
        changes: bytes,
        expect: bytes | None = None,
    ) -> bytes:
        """Read, merge here (:func:`~papertiger.core.resolve.apply_patch`), check ``expect``
        (:func:`~papertiger.core.resolve.check_expect`), compare-and-set.

        O(log n) per attempt; another writer's change in between makes it
        merge (and check) again from what that writer stored.
        """
        part = self.keys.partition(table.name, ns)
        changed = _unpackb(changes)
        expected = read_expect(expect)
        keys = [part.records, part.entries, part.order, part.meta]
        for _ in range(PATCH_ATTEMPTS):
            current = self.get(table, ns, record_id)
            if current is None:
                raise NotFound(f"No such {table.object_name}: '{record_id}'", param="id")
            try:
                record = _unpackb(current)
            except Exception as exc:
                raise StoreError(
                    f"{table.object_name} '{record_id}' could not be decoded "
                    f"({type(exc).__name__}: {exc}): something stored bytes that are not a "
                    "msgpack map. Overwrite or delete the record."
                ) from None
            if not isinstance(record, dict):
                raise StoreError(
                    f"{table.object_name} '{record_id}' is not a msgpack map; overwrite or "
                    "delete the record."
                )
            merged = apply_patch(record_id, record, changed)
            if expected is not None:
                check_expect(table.object_name, record_id, record, expected)
            # both halves came out of msgpack (str keys, storable values): it packs as it is
            packed = _packb(merged, use_bin_type=True)
            created = merged.get("created")
            created = created if type(created) is int else 0
            args = [
                part.base,
                record_id,
                current,
                created_key(created),
                packed,
                *self.keys.suffixes(index_values(merged, table.index_fields)),
            ]
            reply = self._eval(lua.PATCH, keys, args)
            if reply[0] == _OK:
                return packed  # type: ignore[no-any-return]
            if reply[0] == _NOTFOUND:
                raise NotFound(f"No such {table.object_name}: '{record_id}'", param="id")
        raise StoreError(
            f"{table.object_name} '{record_id}' changed {PATCH_ATTEMPTS} times while this patch "
            "was merging; try again."
        )

    def delete(self, table: TableSpec, ns: Namespace, record_id: str) -> None:
        """One script. O(log n)."""
        part = self.keys.partition(table.name, ns)
        reply = self._eval(
            lua.DELETE, [part.records, part.entries, part.order], [part.base, record_id]
        )
        if reply[0] != _OK:
            raise NotFound(f"No such {table.object_name}: '{record_id}'", param="id")

    def clear_namespace(self, table: TableSpec | None, ns: Namespace) -> None:
        """Every registered partition at or under ``ns``: O(log P + records removed)."""
        self._clear(self._registered(ns), None if table is None else table.name)

    def clear(self, table: TableSpec | None) -> None:
        """Every registered partition of ``table`` (None: of every table but ``_*``)."""
        self._clear(self._registered(None), None if table is None else table.name)

    def _clear(self, names: list[str], table: str | None) -> None:
        parts = []
        for name in names:
            try:
                name_table = self.keys.parse_name(name)[0]
            except UnicodeDecodeError:
                continue
            if (table is None and not name_table.startswith("_")) or name_table == table:
                parts.append(self.keys.partition_named(name))
        if not parts:
            return
        # empty, unregister, empty again: a write racing the clear is cleared or registers anew
        self._clear_parts(parts)
        try:
            self.client.zrem(self.keys.registry, *[p.name for p in parts])
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        self._clear_parts(parts)

    def _clear_parts(self, parts: list[PartitionKeys]) -> None:
        for part in parts:
            self._eval(
                lua.CLEAR_PARTITION,
                [part.records, part.entries, part.order, part.meta],
                [part.base],
            )

    # -- made once ------------------------------------------------------------------------
    def _once_keys(self, key: str) -> list[str]:
        k = self.keys
        return [k.once_values, k.once_keys, k.once_lease(key)]

    def once_get(self, key: str) -> bytes | None:
        """``HGET``. O(1)."""
        try:
            value = self.client.hget(self.keys.once_values, key)
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        self._done()
        return value  # type: ignore[no-any-return]

    def once(self, key: str, make: Callable[[], bytes]) -> bytes:
        """Claim a lease; run ``make`` while a thread renews it; else wait and poll.

        A holder that raises gives the lease back at once; one that dies lets
        it expire after :attr:`once_lease` seconds; the next caller to claim
        it runs ``make``.  If a holder is paused for longer than the lease, a
        second one may run ``make`` too: the first result stored wins, for
        every caller.
        """
        keys = self._once_keys(key)
        lease_ms = max(1, int(self.once_lease * 1000))
        token = self._token()
        pause = 0.005
        while True:
            reply = self._eval(lua.ONCE_CLAIM, keys, [key, token, lease_ms])
            if reply[0] == b"done":
                return reply[1]  # type: ignore[no-any-return]
            if reply[0] == b"run":
                break
            left = int(reply[1]) / 1000 if len(reply) > 1 and int(reply[1]) > 0 else pause
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew,
            args=(keys, token, lease_ms, stop),
            name=f"papertiger-once-lease-{key[:40]}",
            daemon=True,
        )
        renewer.start()
        try:
            packed = make()
        except BaseException:
            stop.set()
            renewer.join()
            try:
                self._eval(lua.ONCE_ABANDON, keys, [token])
            except StoreError:
                pass  # the lease expires by itself
            raise
        stop.set()
        renewer.join()
        return self._eval(lua.ONCE_DONE, keys, [key, token, packed])  # type: ignore[no-any-return]

    def _renew(self, keys: list[str], token: str, lease_ms: int, stop: threading.Event) -> None:
        while not stop.wait(lease_ms / 3000):
            try:
                if not self._eval(lua.ONCE_RENEW, keys, [token, lease_ms]):
                    return  # lost (paused too long): the result is still stored, first wins
            except StoreError:
                continue  # Redis is away for a moment; try again before the lease ends

    def once_keys(self, prefix: str = "") -> list[str]:
        """``ZRANGEBYLEX`` over the stored keys. O(log n + k)."""
        lo = ("[" + prefix).encode() if prefix else b"-"
        hi = ("(" + prefix).encode() + b"\xff" if prefix else b"+"
        try:
            keys = self.client.zrangebylex(self.keys.once_keys, lo, hi)
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        self._done()
        return [k.decode() for k in keys]

    def once_forget(self, key: str) -> None:
        self._eval(lua.ONCE_FORGET, self._once_keys(key), [key])

    # -- the rest -----------------------------------------------------------------------
    def in_use(self) -> bool:
        return self._used_by == os.getpid()

    def ping(self) -> None:
        """Raise :class:`~papertiger.StoreUnavailable` unless Redis answers."""
        try:
            self.client.ping()
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        self._done()

    def stats(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "backend": self.description,
            "prefix": self.keys.prefix,
        }
        try:
            figures["partitions"] = int(self.client.zcard(self.keys.registry))
            if self.cluster:  # one answer per primary
                client = self.client
                info = client.info("server", target_nodes=client.PRIMARIES)
                versions = {v.get("redis_version") for v in info.values() if isinstance(v, dict)}
                figures["redis_version"] = ", ".join(sorted(str(v) for v in versions))
                figures["nodes"] = len(info)
            else:
                figures["redis_version"] = self.client.info("server").get("redis_version")
        except (RedisError, RedisClusterException, OSError) as exc:
            self._fail(exc)
        self._done()
        return figures

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except (RedisError, RedisClusterException, OSError):
                pass

    def __repr__(self) -> str:
        return f"<RedisBackend {self.description}, prefix {self.keys.prefix!r}>"


@functools.cache
def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


def _options(url: str) -> dict[str, Any]:
    """Timeouts unless the URL sets them; no blind retries (see the module doc)."""
    options: dict[str, Any] = {"retry": Retry(NoBackoff(), 0)}
    if "socket_connect_timeout=" not in url:
        options["socket_connect_timeout"] = CONNECT_TIMEOUT
    if "socket_timeout=" not in url:
        options["socket_timeout"] = ANSWER_TIMEOUT
    return options


def _plain_client(url: str) -> Any:
    return redis_py.Redis.from_url(url, **_options(url))


def _cluster_client(urls: tuple[str, ...]) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    first = urls[0]
    options = _options(first)
    options["retry"] = Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)
    if len(urls) == 1:
        return RedisCluster.from_url(first, **options)
    from redis.connection import parse_url

    nodes = []
    for url in urls:
        parsed = parse_url(url)  # type: ignore[no-untyped-call]
        host, port = parsed.get("host", "localhost"), parsed.get("port", 6379)
        nodes.append(ClusterNode(host, port))  # type: ignore[no-untyped-call]
    given = parse_url(first)  # type: ignore[no-untyped-call]
    extra = {k: v for k, v in given.items() if k not in ("host", "port", "db")}
    return RedisCluster(startup_nodes=nodes, **{**extra, **options})
