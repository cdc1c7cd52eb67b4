"""Where the Redis backend keeps things: key names, sortable members, URL options. Pure.

Theory of operation
-------------------
A *partition* (one table in one namespace) is a handful of keys that share
one hash tag, so every atomic step on it (a Lua script) stays in one Redis
Cluster slot.  The tag is the partition's *registry name*::

    <ns part>/<ns part>/.../:<table>       each part and the table percent-quoted

Quoting (:func:`urllib.parse.quote` with nothing safe) leaves only
``A-Z a-z 0-9 _ . - ~ %`` in a part, so ``/`` ends a part, ``:`` starts the
table, and no brace can break the tag.  Nested namespaces share a prefix
(``a/`` is a prefix of ``a/acct_1/``, not of ``ab/``), which is what makes
"``ns`` and everything under it" one lexicographic range of the registry.

Keys of a partition, with ``B = <prefix>:{<registry name>}``:

================  ==============================================================
``B:r``           hash: id -> packed record (``HLEN`` is the count)
``B:e``           hash: id -> entry, msgpack ``[member, index key suffix, ...]``
``B:o``           sorted set, every score 0: the order members
``B:i:<suffix>``  sorted set: members of the records whose field has that value
``B:m``           hash: ``ord`` (insertion counter), ``gen``, ``reg`` (see below)
``B:stage:<tx>``  list: chunks of a large ``put_many`` before it commits
================  ==============================================================

An order *member* is ``created`` (plus 2**63, 17 hex digits), the insertion
counter (16 hex digits) and the id: members sort as ``(created, ord, id)``
do, so ``ZRANGEBYLEX`` pages in Stripe's order and a ``created`` range is a
lexicographic range.  An index suffix is ``<quoted field>=s<str>`` or
``=i<int>``, so ``"1"`` and ``1`` stay apart.

Outside the partitions: ``<prefix>:partitions``, the registry (a sorted set
of registry names, every score 0) through which ``clear``, nested
``clear_namespace`` and ``partitions`` find partitions on every node; and
the ``once`` keys, which share the tag ``{once}``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from ..errors import InvalidRequest
from ..namespace import Namespace
from .urls import redact

__all__ = [
    "CREATED_WIDTH",
    "DEFAULT_LEASE",
    "DEFAULT_PREFIX",
    "MEMBER_HEAD",
    "KeyLayout",
    "PartitionKeys",
    "RedisURL",
    "created_key",
    "parse_redis_url",
]

DEFAULT_PREFIX = "papertiger"
#: Seconds a ``once`` lease lasts without renewal (the caller renews it while it runs).
DEFAULT_LEASE = 5.0
_OFFSET = 2**63
CREATED_WIDTH = 17
#: Characters of a member before the id: created (17) and the insertion counter (16).
MEMBER_HEAD = CREATED_WIDTH + 16
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def created_key(created: int) -> str:
    """``created`` as a fixed-width, sortable hex string. O(1).

    >>> created_key(0), created_key(-1) < created_key(0) < created_key(1)
    ('08000000000000000', True)
    """
    return f"{created + _OFFSET:017x}"


def _quote(text: str) -> str:
    return quote(text, safe="")


def ns_path(ns: Namespace) -> str:
    """The namespace as a registry-name prefix: each part quoted, then ``/``.

    >>> ns_path(("pytest-1", "gw0", "tests/a.py::t"))
    'pytest-1/gw0/tests%2Fa.py%3A%3At/'
    """
    return "".join(_quote(part) + "/" for part in ns)


class PartitionKeys(NamedTuple):
    """The keys of one partition (see the module doc)."""

    name: str  # the registry name (and hash tag)
    base: str
    records: str
    entries: str
    order: str
    meta: str


class KeyLayout:
    """Key names for one key prefix. Methods are O(length of the names) and cached."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix):
            raise InvalidRequest(
                f"Invalid prefix: {prefix!r}; use 1 to 100 characters from A-Z a-z 0-9 _ . : -.",
                param="prefix",
            )
        self.prefix = prefix
        self.registry = f"{prefix}:partitions"
        once = f"{prefix}:{{once}}"
        self.once_values = f"{once}:values"
        self.once_keys = f"{once}:keys"
        self.once_lease_prefix = f"{once}:lease:"
        self._partitions: dict[tuple[str, Namespace], PartitionKeys] = {}
        self._fields: dict[str, str] = {}

    def partition(self, table: str, ns: Namespace) -> PartitionKeys:
        """The keys of ``table`` in ``ns``. O(1) once seen."""
        found = self._partitions.get((table, ns))
        if found is None:
            found = self.partition_named(ns_path(ns) + ":" + _quote(table))
            if len(self._partitions) >= 4096:
                self._partitions.clear()
            self._partitions[(table, ns)] = found
        return found

    def partition_named(self, name: str) -> PartitionKeys:
        """The keys of the partition whose registry name is ``name``."""
        base = f"{self.prefix}:{{{name}}}"
        return PartitionKeys(name, base, base + ":r", base + ":e", base + ":o", base + ":m")

    def once_lease(self, key: str) -> str:
        return self.once_lease_prefix + key

    # -- index suffixes -----------------------------------------------------------------
    def suffix(self, field: str, value: Any) -> str:
        """The index key suffix for ``field == value`` (a str or an int). O(1).

        >>> KeyLayout().suffix("customer_details.email", "a@b"), KeyLayout().suffix("n", 1)
        ('customer_details.email=sa@b', 'n=i1')
        """
        quoted = self._fields.get(field)
        if quoted is None:
            quoted = self._fields[field] = _quote(field)
        if value.__class__ is str:
            return f"{quoted}=s{value}"
        return f"{quoted}=i{int(value)}"

    def suffixes(self, index_values: dict[str, Any] | None) -> list[str]:
        if not index_values:
            return []
        suffix = self.suffix
        return [suffix(field, value) for field, value in index_values.items()]

    def index_key(self, part: PartitionKeys, field: str, value: Any) -> str:
        return f"{part.base}:i:{self.suffix(field, value)}"

    # -- the registry ---------------------------------------------------------------------
    @staticmethod
    def registry_range(under: Namespace | None) -> tuple[bytes, bytes]:
        """``ZRANGEBYLEX`` bounds of the registry names at or under ``under``."""
        if under is None:
            return b"-", b"+"
        path = ns_path(under).encode()
        return b"[" + path, b"(" + path + b"\xff"

    @staticmethod
    def parse_name(name: str) -> tuple[str, Namespace]:
        """``(table, namespace)`` of a registry name.

        >>> KeyLayout.parse_name("a%2Fb/acct_1/:checkout_sessions")
        ('checkout_sessions', ('a/b', 'acct_1'))
        """
        path, _, table = name.rpartition(":")
        parts = path.split("/")[:-1]
        return unquote(table, errors="strict"), tuple(unquote(p, errors="strict") for p in parts)


# -- URLs ---------------------------------------------------------------------------------


class RedisURL(NamedTuple):
    """A papertiger Redis URL taken apart: what redis-py gets, and papertiger's own options."""

    #: ``redis://...`` for redis-py (cluster: one per seed node), papertiger's options removed
    urls: tuple[str, ...]
    cluster: bool
    prefix: str
    once_lease: float


_OWN_OPTIONS = ("prefix", "once_lease", "cluster")
_TRUE = ("1", "true", "yes", "on")


def parse_redis_url(url: str) -> RedisURL:
    """Take a papertiger Redis URL apart; :class:`InvalidRequest` naming what is wrong.

    Forms: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...``
    (TLS), ``unix://[[user]:password@]/path/redis.sock[?db=N]``, and for a
    Redis Cluster ``redis+cluster://host:port[,host:port...]`` or
    ``rediss+cluster://...`` (or ``?cluster=1`` on a ``redis://`` URL).
    papertiger's own query options: ``prefix`` (the key prefix, default
    ``papertiger``: teams sharing one Redis each take their own) and
    ``once_lease`` (seconds, default 5).  Every other option goes to redis-py
    (``socket_timeout``, ``socket_connect_timeout``, ``db``, ...).

    >>> parse_redis_url("redis://localhost:6379/2?prefix=team-a")
    RedisURL(urls=('redis://localhost:6379/2',), cluster=False, prefix='team-a', once_lease=5.0)
    >>> parse_redis_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000").urls
    ('redis://:pw@10.0.0.1:7000', 'redis://:pw@10.0.0.2:7000')
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid url: {redact(url)} ({exc}).", param="url") from None
    scheme = parts.scheme.lower()
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_OPTIONS}
    rest = [(k, v) for k, v in query if k not in _OWN_OPTIONS]
    cluster = scheme.endswith("+cluster") or own.get("cluster", "").lower() in _TRUE
    base_scheme = scheme.removesuffix("+cluster")
    if cluster and base_scheme not in ("redis", "rediss"):
        raise InvalidRequest(
            f"Invalid url: {redact(url)}: a Redis Cluster is reached over TCP; use "
            "redis+cluster://host:port[,host:port...] or rediss+cluster://...",
            param="url",
        )
    prefix = own.get("prefix", DEFAULT_PREFIX)
    KeyLayout(prefix)  # checks it
    try:
        lease = float(own.get("once_lease", DEFAULT_LEASE))
    except ValueError:
        lease = -1.0
    if not 0.05 <= lease <= 3600:
        raise InvalidRequest(
            f"Invalid once_lease in {redact(url)}: expected seconds from 0.05 to 3600.",
            param="once_lease",
        )
    query_text = urlencode(rest)
    if not cluster:
        clean = _join(base_scheme, parts.netloc, parts.path, query_text)
        return RedisURL((clean,), False, prefix, lease)
    if parts.path not in ("", "/", "/0"):
        raise InvalidRequest(
            f"Invalid url: {redact(url)}: a Redis Cluster has only database 0; drop "
            f"{parts.path!r}.",
            param="url",
        )
    userinfo, at, hosts = parts.netloc.rpartition("@")
    seeds = [h for h in hosts.split(",") if h]
    if not seeds:
        raise InvalidRequest(
            f"Invalid url: {redact(url)} names no cluster node; use "
            "redis+cluster://host:port[,host:port...].",
            param="url",
        )
    urls = tuple(_join(base_scheme, f"{userinfo}{at}{seed}", "", query_text) for seed in seeds)
    return RedisURL(urls, True, prefix, lease)


def _join(scheme: str, netloc: str, path: str, query: str) -> str:
    """A URL from its parts, keeping ``//`` when the host is empty (``unix:///path``)."""
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
