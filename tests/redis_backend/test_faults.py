"""Redis faults: not running, hung, killed mid-run, killed mid-batch, restarted, a wrong
password.  Each test starts its own redis-server (it kills it).

"Bounded time" is checked against a generous bound (a hang fails the test; the
figures are not performance claims).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import papertiger
from papertiger import StoreError, StoreUnavailable
from papertiger.backends import use_backend
from papertiger.backends.redis import RedisBackend
from papertiger.store import CheckoutSessions
from redis_servers import RedisServer
from support import need_program

#: Far above the connect (2 s) and answer timeouts used below: only a hang gets near it.
BOUND = 30.0


@pytest.fixture
def redis_binary() -> str:
    return need_program("redis-server", "apt-get install redis-server")


@pytest.fixture
def servers() -> Iterator[list[RedisServer]]:
    """Servers a test starts; all stopped at the end."""
    started: list[RedisServer] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[RedisServer], binary: str, **options: Any) -> RedisServer:
    server = RedisServer(binary, **options)
    servers.append(server)
    return server


def timed(call: Any) -> tuple[BaseException | None, float]:
    begin = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return exc, time.monotonic() - begin
    return None, time.monotonic() - begin


def test_redis_not_running_is_unavailable_within_bounded_time(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url in (f"redis://:pw@127.0.0.1:{port}/0", f"unix://{tmp_path}/gone.sock"):
        backend = RedisBackend.from_url(url)
        with use_backend(backend):
            error, took = timed(lambda: CheckoutSessions.insert({"id": "cs_1"}))
        assert isinstance(error, StoreUnavailable) and isinstance(error, ConnectionError)
        assert took < BOUND
        assert backend.description in error.message and "pw" not in error.message
        assert "Start Redis" in error.message
        assert not backend.in_use()


def test_a_redis_that_accepts_but_never_answers_times_out(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX)
    path = str(tmp_path / "hung.sock")
    listener.bind(path)
    listener.listen(8)  # connections queue up; nothing ever answers
    try:
        backend = RedisBackend.from_url(f"unix://{path}?socket_timeout=1")
        with use_backend(backend):
            error, took = timed(lambda: CheckoutSessions.get("cs_1"))
        assert isinstance(error, StoreUnavailable) and took < BOUND
        assert "Timeout" in error.message and path in error.message
    finally:
        listener.close()


def test_wrong_or_missing_password_is_a_clear_error(
    servers: list[RedisServer], redis_binary: str
) -> None:
    server = start(servers, redis_binary, password="right-one")
    for url in (
        f"unix://:wrong-one@{server.socket}",
        f"unix://{server.socket}",
        f"unix://nobody:right-one@{server.socket}",
    ):
        backend = RedisBackend.from_url(url)
        with use_backend(backend), pytest.raises(StoreUnavailable) as info:
            CheckoutSessions.count()
        message = info.value.message
        assert "refused the credentials" in message and "password" in message
        assert "wrong-one" not in message and "right-one" not in message
    backend = RedisBackend.from_url(server.url)
    with use_backend(backend):
        assert CheckoutSessions.count() == 0


def test_killed_then_restarted_calls_fail_clearly_then_recover(
    servers: list[RedisServer], redis_binary: str
) -> None:
    server = start(servers, redis_binary, appendonly=True)
    backend = RedisBackend.from_url(server.url)
    with use_backend(backend), papertiger.use_namespace("t-restart"):
        made = CheckoutSessions.insert({"customer": "cus_1"})
        papertiger.once("made", lambda: "once")
        server.kill()
        for call in (
            lambda: CheckoutSessions.get(made["id"]),
            lambda: CheckoutSessions.insert({}),
            lambda: CheckoutSessions.list(),
            lambda: papertiger.once("other", lambda: 1),
        ):
            error, took = timed(call)
            assert isinstance(error, StoreUnavailable), error
            assert took < BOUND and server.socket in error.message
        server.restart()
        # the pool's connections died with the old server: the next calls work regardless
        assert CheckoutSessions.get(made["id"]) == made
        assert CheckoutSessions.find_by_customer("cus_1") == [made]
        CheckoutSessions.insert({"id": "cs_after"})
        assert CheckoutSessions.count() == 2
        assert papertiger.once("made", lambda: "again") == "once"


def test_restarted_empty_redis_starts_over(servers: list[RedisServer], redis_binary: str) -> None:
    server = start(servers, redis_binary)  # no persistence: a restart loses everything
    backend = RedisBackend.from_url(server.url)
    with use_backend(backend), papertiger.use_namespace("t-empty"):
        CheckoutSessions.insert({"id": "cs_before"})
        server.restart()
        assert CheckoutSessions.count() == 0  # scripts are loaded again as needed
        CheckoutSessions.insert({"id": "cs_before"})
        assert [p.namespace for p in backend.partitions()] == [("t-empty",)]


BATCH_WRITER = """
import sys
import papertiger
from papertiger.store import CheckoutSessions

n = int(sys.argv[1])
with papertiger.use_namespace("t-batch"):
    for round in range(10_000):
        try:
            CheckoutSessions.insert_many(
                [{"id": f"cs_{round}_{i}", "customer": f"cus_{i % 7}", "created": round}
                 for i in range(n)]
            )
        except papertiger.StoreUnavailable:
            break
        print(round, flush=True)
"""


def test_redis_killed_during_batches_leaves_no_partial_batch(
    servers: list[RedisServer], redis_binary: str
) -> None:
    """A writer streams large batches; Redis is SIGKILLed at random moments (fsync always)."""
    server = start(servers, redis_binary, appendonly=True)
    n = 2100  # larger than one chunk: staged, then committed by one script
    rng = random.Random(3)
    env = {**os.environ, "PAPERTIGER_URL": server.url}
    for key in ("PAPERTIGER_ADDRESS", "PAPERTIGER_AUTHKEY", "PAPERTIGER_NAMESPACE"):
        env.pop(key, None)
    backend = RedisBackend.from_url(server.url)
    for attempt in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", BATCH_WRITER, str(n)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        try:
            first = writer.stdout.readline()  # a batch landed: the writer is in its stride
            assert first, writer.stderr.read() if writer.stderr else ""
            time.sleep(rng.uniform(0.0, 0.3))
            server.kill()
            writer.communicate(timeout=60)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        server.start()  # same data directory: the append-only file is read back
        with use_backend(backend), papertiger.use_namespace("t-batch"):
            count = CheckoutSessions.count()
            assert count % n == 0 and count >= n, (attempt, count)
            rounds = {r["created"] for r in CheckoutSessions.list_namespace()}
            assert len(rounds) == count // n
            for c in range(7):
                assert len(CheckoutSessions.find_by_customer(f"cus_{c}")) == count // 7
        part = backend.keys.partition("checkout_sessions", ("t-batch",))
        client = server.client()
        assert client.hlen(part.entries) == client.zcard(part.order) == count
        client.close()
        with use_backend(backend):
            CheckoutSessions.clear()


def test_a_failing_batch_stream_leaves_nothing_staged(
    servers: list[RedisServer], redis_binary: str
) -> None:
    server = start(servers, redis_binary)
    backend = RedisBackend.from_url(server.url)

    def records() -> Iterator[dict[str, Any]]:
        for i in range(2500):
            yield {"id": f"cs_{i}"}
        raise RuntimeError("the source of the records failed")

    with use_backend(backend), papertiger.use_namespace("t-stream"):
        with pytest.raises(RuntimeError, match="source of the records"):
            CheckoutSessions.insert_many(records())
        assert CheckoutSessions.count() == 0
    assert server.client().keys("*stage*") == []


@pytest.mark.parametrize("where", ["redis", "cluster"])
def test_a_write_racing_a_clear_is_cleared_or_stays_listed(
    servers: list[RedisServer], redis_binary: str, request: pytest.FixtureRequest, where: str
) -> None:
    """Writers keep entering fresh partitions while another thread clears the tree:
    afterwards every record left is in a partition the registry lists."""
    if where == "redis":
        server: Any = start(servers, redis_binary)
        nodes = [server]
    else:
        server = request.getfixturevalue("redis_cluster")
        nodes = server.nodes
    backend = RedisBackend.from_url(server.url)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            i = 0
            while not stop.is_set():
                with papertiger.use_namespace(("race", f"w{k}", f"n{i % 5}")):
                    CheckoutSessions.insert({})
                i += 1
        except BaseException as exc:
            errors.append(exc)

    with use_backend(backend):
        threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for _ in range(30):
            backend.clear_namespace(None, ("race",))
        stop.set()
        for t in threads:
            t.join(60)
        assert not errors
        listed = {p.namespace: p.size for p in backend.partitions(("race",))}
        stored = {}
        for node in nodes:
            client = node.client()
            for key in client.keys("papertiger:{race/*}:r"):
                name = key.decode()[len("papertiger:{") : -len("}:r")]
                stored[backend.keys.parse_name(name)[1]] = client.hlen(key)
            client.close()
        assert stored == listed
        backend.clear_namespace(None, ("race",))
        for node in nodes:
            client = node.client()
            assert client.keys("papertiger:{race/*") == []
            client.close()
    backend.close()


def test_an_undecodable_lease_value_does_not_crash_once(
    servers: list[RedisServer], redis_binary: str
) -> None:
    server = start(servers, redis_binary)
    backend = RedisBackend.from_url(server.url)
    client = server.client()
    client.set(backend.keys.once_lease("k"), b"\xff someone else's", px=300)
    with use_backend(backend):  # a lease nobody renews: it expires, and we take over
        assert papertiger.once("k", lambda: {"made": True}) == {"made": True}
    client.hset(backend.keys.once_values, "k2", b"\xc1")
    with use_backend(backend), pytest.raises(StoreError, match="k2"):
        papertiger.once("k2", lambda: 1)


def test_short_names_for_the_temporary_directories() -> None:
    """Unix socket paths must stay short (about 100 bytes): the servers' directories do."""
    assert len(os.path.join(tempfile.gettempdir(), "ptg-redis-xxxxxxxx", "redis.sock")) < 100
