"""What only the Redis backend has: URLs, key prefixes, the key layout, Cluster slots,
values that are not what papertiger stored, ``in_use``.

The store's semantics on Redis are the conformance suite's (``tests/conformance``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

import papertiger
from papertiger import InvalidRequest, StoreError, StoreUnavailable
from papertiger.backends import backend_for_url, disconnect, use_backend
from papertiger.backends.redis import RedisBackend
from papertiger.backends.redis_layout import KeyLayout, parse_redis_url
from papertiger.store import CheckoutSessions, Customers
from redis_servers import RedisCluster, RedisServer


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's Redis, emptied after the test."""
    yield redis_server
    redis_server.flush()


@pytest.fixture
def cluster(redis_cluster: RedisCluster) -> Iterator[RedisCluster]:
    yield redis_cluster
    redis_cluster.flush()


@pytest.fixture
def on_redis(server: RedisServer) -> Iterator[RedisBackend]:
    backend = RedisBackend.from_url(server.url)
    with use_backend(backend), papertiger.use_namespace("t-redis"):
        yield backend
    backend.close()


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "urls", "cluster", "prefix"),
    [
        ("redis://localhost:6379/0", ("redis://localhost:6379/0",), False, "papertiger"),
        ("rediss://:pw@host:6380/3?prefix=team-a", ("rediss://:pw@host:6380/3",), False, "team-a"),
        ("unix:///run/redis.sock?db=2", ("unix:///run/redis.sock?db=2",), False, "papertiger"),
        (
            "unix://:pw@/run/redis.sock?db=2&prefix=ci.1&socket_timeout=3",
            ("unix://:pw@/run/redis.sock?db=2&socket_timeout=3",),
            False,
            "ci.1",
        ),
        ("redis+cluster://10.0.0.1:7000", ("redis://10.0.0.1:7000",), True, "papertiger"),
        (
            "rediss+cluster://u:pw@a:7000,b:7001/?prefix=x",
            ("rediss://u:pw@a:7000", "rediss://u:pw@b:7001"),
            True,
            "x",
        ),
        ("redis://a:7000?cluster=1", ("redis://a:7000",), True, "papertiger"),
    ],
)
def test_url_forms(url: str, urls: tuple[str, ...], cluster: bool, prefix: str) -> None:
    parsed = parse_redis_url(url)
    assert (parsed.urls, parsed.cluster, parsed.prefix) == (urls, cluster, prefix)


@pytest.mark.parametrize(
    ("url", "param", "says"),
    [
        ("redis://h/0?prefix=a{b}", "prefix", "A-Z a-z 0-9"),
        ("redis://h/0?prefix=", "prefix", "1 to 100"),
        ("redis://h/0?once_lease=never", "once_lease", "seconds"),
        ("redis://h/0?once_lease=0", "once_lease", "seconds"),
        ("redis+cluster://h:7000/3", "url", "only database 0"),
        ("redis+cluster://:secret@/0", "url", "names no cluster node"),
        ("unix:///tmp/r.sock?cluster=1", "url", "over TCP"),
        ("http://:secret@h/0", "url", "names no papertiger backend"),
        ("localhost:6379", "url", "names no papertiger backend"),
    ],
)
def test_bad_urls_are_refused_naming_what_is_wrong(url: str, param: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        backend_for_url(url)
    assert info.value.param == param and says in info.value.message
    assert "secret" not in info.value.message  # the password never shows


def test_connect_with_a_url_uses_that_redis(server: RedisServer) -> None:
    try:
        backend = papertiger.connect(server.url + "?prefix=connected")
        assert isinstance(backend, RedisBackend) and backend.in_use()  # it checked Redis
        with papertiger.use_namespace("t-connect"):
            made = Customers.insert({"email": "a@b.c"})
            assert Customers.find_by_email("a@b.c") == [made]
        keys = server.client().keys("connected:*")
        assert keys and all(k.startswith(b"connected:") for k in keys)
    finally:
        disconnect()


def test_papertiger_url_in_the_environment_selects_redis(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERTIGER_URL", server.url)
    disconnect()  # choose again, from the environment
    try:
        with papertiger.use_namespace("t-env"):
            CheckoutSessions.insert({"id": "cs_env"})
        assert server.client().hget(
            KeyLayout().partition("checkout_sessions", ("t-env",)).records, "cs_env"
        )
    finally:
        monkeypatch.delenv("PAPERTIGER_URL")
        disconnect()


def test_connect_to_nothing_is_store_unavailable(tmp_path: Any) -> None:
    url = f"unix://:secret@{tmp_path}/nobody.sock"
    with pytest.raises(StoreUnavailable) as info:
        papertiger.connect(url)
    message = info.value.message
    assert f"{tmp_path}/nobody.sock" in message and "secret" not in message
    assert "Start Redis" in message and "PAPERTIGER_URL" in message
    disconnect()


# -- prefixes: teams sharing one Redis ---------------------------------------------------------


def test_prefixes_keep_teams_apart(server: RedisServer) -> None:
    team_a = RedisBackend.from_url(server.url + "?prefix=team-a")
    team_b = RedisBackend.from_url(server.url + "?prefix=team-b")
    with papertiger.use_namespace("shared-name"):
        with use_backend(team_a):
            CheckoutSessions.insert({"id": "cs_1", "customer": "cus_a"})
            papertiger.once("seed", lambda: "a")
        with use_backend(team_b):
            assert CheckoutSessions.count() == 0
            CheckoutSessions.insert({"id": "cs_1", "customer": "cus_b"})
            assert papertiger.once("seed", lambda: "b") == "b"
            CheckoutSessions.clear()
            assert team_b.partitions() == []
        with use_backend(team_a):
            assert CheckoutSessions.get("cs_1")["customer"] == "cus_a"
            assert [p.namespace for p in team_a.partitions()] == [("shared-name",)]
            assert team_a.once_keys() == ["seed"]
    assert all(k.startswith((b"team-a:", b"team-b:")) for k in server.client().keys("*"))


# -- the layout ----------------------------------------------------------------------------------


def test_a_partition_is_a_few_keys_and_nothing_is_left_after_clearing(
    on_redis: RedisBackend, server: RedisServer
) -> None:
    CheckoutSessions.insert_many(
        [{"customer": f"cus_{i % 3}", "status": "open", "created": i} for i in range(30)]
    )
    with papertiger.use_namespace(("t-redis", "acct_1")):
        CheckoutSessions.insert({"customer": "cus_0"})
    part = on_redis.keys.partition("checkout_sessions", ("t-redis",))
    client = server.client()
    assert client.hlen(part.records) == client.zcard(part.order) == client.hlen(part.entries) == 30
    assert client.zcard(f"{part.base}:i:customer=scus_1") == 10
    CheckoutSessions.clear_namespace("t-redis")
    assert client.keys("papertiger:{*") == []  # every partition key, index sets included
    assert client.zcard(on_redis.keys.registry) == 0


def test_names_with_any_characters_stay_apart(on_redis: RedisBackend) -> None:
    places: list[Any] = [
        "a/b",
        ("a", "b"),
        "a:b",
        "a}b{",
        "ünï",
        ("a b", "%2F"),
        ("a", "b", "c"),
    ]
    for ns in places:
        with papertiger.use_namespace(ns):
            CheckoutSessions.insert({"id": "cs_same", "customer": "x/y:z{w}", "where": repr(ns)})
    for ns in places:
        with papertiger.use_namespace(ns):
            assert CheckoutSessions.get("cs_same")["where"] == repr(ns)
            assert CheckoutSessions.list(customer="x/y:z{w}").data[0]["where"] == repr(ns)
    found = {p.namespace for p in on_redis.partitions()}
    assert found == {papertiger.namespace.normalize_namespace(ns) for ns in places}
    CheckoutSessions.clear_namespace("a")
    assert {p.namespace for p in on_redis.partitions()} == {
        ("a/b",),
        ("a:b",),
        ("a}b{",),
        ("ünï",),
        ("a b", "%2F"),
    }


def test_cluster_spreads_partitions_and_keeps_each_in_one_slot(cluster: RedisCluster) -> None:
    backend = RedisBackend.from_url(cluster.url)
    with use_backend(backend):
        for i in range(40):
            with papertiger.use_namespace(("t-spread", f"ns-{i}")):
                CheckoutSessions.insert_many([{"customer": "cus_1", "status": "open"}] * 3)
        assert all(n > 0 for n in cluster.keys_per_node()), cluster.keys_per_node()
        client = backend.client
        for i in range(0, 40, 7):
            part = backend.keys.partition("checkout_sessions", ("t-spread", f"ns-{i}"))
            names = [part.records, part.entries, part.order, part.meta]
            names.append(backend.keys.index_key(part, "customer", "cus_1"))
            slots = {client.keyslot(name) for name in names}
            assert len(slots) == 1, names
        assert len(backend.partitions(("t-spread",))) == 40
        CheckoutSessions.clear_namespace("t-spread")  # across the three nodes
        assert backend.partitions() == []
        assert sum(cluster.keys_per_node()) == 0
    backend.close()


# -- in_use ----------------------------------------------------------------------------------------


def test_in_use_only_once_this_process_talked_to_redis(server: RedisServer) -> None:
    backend = RedisBackend.from_url(server.url)
    assert not backend.in_use()
    with use_backend(backend):
        assert not backend.in_use() and not papertiger.backends.in_use()
        CheckoutSessions.count()
        assert backend.in_use() and papertiger.backends.in_use()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a forked child has not talked to Redis yet
            before = backend.in_use()
            CheckoutSessions.count()
            os.write(write, bytes([before, backend.in_use()]))
            os._exit(0)
        os.close(write)
        answer = os.read(read, 2)
        os.close(read)
        os.waitpid(pid, 0)
        assert answer == bytes([False, True])
    backend.close()


# -- what papertiger did not write -----------------------------------------------------------------


def test_values_that_do_not_decode_are_store_errors(
    on_redis: RedisBackend, server: RedisServer
) -> None:
    good = CheckoutSessions.insert({"customer": "cus_1"})
    part = on_redis.keys.partition("checkout_sessions", ("t-redis",))
    client = server.client()
    client.hset(part.records, "cs_bad", b"\xc1 not msgpack")
    with pytest.raises(StoreError, match="cs_bad"):
        CheckoutSessions.get("cs_bad")
    with pytest.raises(StoreError, match="cs_bad"):
        CheckoutSessions.patch("cs_bad", {"a": 1})
    client.hset(part.entries, good["id"], b"\xc1 not an entry")
    for call in (
        lambda: CheckoutSessions.list(starting_after=good["id"]),
        lambda: CheckoutSessions.update({"id": good["id"]}),
        lambda: CheckoutSessions.delete(good["id"]),
    ):
        with pytest.raises(StoreError) as info:
            call()
        assert "Redis at" in info.value.message and "answered with an error" in info.value.message
    client.hdel(part.records, good["id"])  # listed in the order, gone from the records
    with pytest.raises(StoreError, match="missing or not what papertiger stores"):
        CheckoutSessions.list()
    client.delete(part.records)
    client.set(part.records, "a string where a hash belongs")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        CheckoutSessions.get("cs_any")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        CheckoutSessions.count()
    client.hset(on_redis.keys.once_values, "garbage", b"\xc1")
    with pytest.raises(StoreError, match="once\\('garbage'\\)"):
        papertiger.once("garbage", lambda: 1)
    on_redis.once_forget("garbage")
    assert papertiger.once("garbage", lambda: 1) == 1
    # nothing above broke the backend: a fresh namespace works
    with papertiger.use_namespace("t-redis-after"):
        assert CheckoutSessions.insert({"id": "cs_ok"})["id"] == "cs_ok"
        assert msgpack.unpackb(on_redis.records(CheckoutSessions.spec, ("t-redis-after",))[0])


def test_stats(on_redis: RedisBackend, cluster: RedisCluster) -> None:
    CheckoutSessions.insert({})
    stats = on_redis.stats()
    assert stats["backend"].startswith("Redis at unix://")
    assert stats["partitions"] == 1 and stats["prefix"] == "papertiger"
    assert stats["redis_version"]
    on_cluster = RedisBackend.from_url(cluster.url)
    stats = on_cluster.stats()
    assert stats["backend"].startswith("Redis Cluster at redis+cluster://")
    assert stats["nodes"] == 3 and stats["redis_version"] and stats["partitions"] == 0
    on_cluster.close()


def test_the_read_commands_read_redis(on_redis: RedisBackend, server: RedisServer) -> None:
    made = CheckoutSessions.insert({"customer": "cus_cli", "status": "open"})
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAPERTIGER_")}
    environ["PAPERTIGER_URL"] = server.url

    def run(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "papertiger", *args],
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "t-redis" in run("inspect") and server.socket in run("inspect")
    got = json.loads(run("get", "checkout_sessions", made["id"], "--namespace", "t-redis"))
    assert got == made
    listed = json.loads(run("list", "checkout_sessions", "--namespace", "t-redis"))
    assert [r["id"] for r in listed["data"]] == [made["id"]]
