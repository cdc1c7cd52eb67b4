"""The peers papertiger is compared with, each used as its users would use it.

* **Manager**: :func:`multiprocessing.Manager` ``().dict()``, the standard
  library's way to share a dict between processes.  A read is a round trip
  to the manager process, which pickles the stored dict back.  It has no
  order and no atomic merge, so it takes part in get, count, insert, update
  and insert_many only.
* **Redis**: a private ``redis-server`` (persistence off, a Unix socket in a
  private directory, no TCP port) used through redis-py.  Records are stored
  as the same msgpack bytes papertiger stores; order and the customer index
  are sorted sets scored by insertion order.  ``list`` is ZREVRANGE + MGET +
  decode, ``find_by_customer`` the same on the customer's set, ``insert``
  is SET (without the sorted-set updates a full index would add, which
  favours Redis), ``update`` is ``SET ... XX``, ``insert_many`` is MSET.

:class:`RedisServer` and :func:`start_manager` run in the harness's main
process; :class:`RedisPeer` and :class:`ManagerPeer` in the processes that
measure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

import msgpack

__all__ = ["ManagerPeer", "RedisPeer", "RedisServer", "redis_unavailable", "start_manager"]

_unpackb = msgpack.unpackb
_packb = msgpack.packb


def redis_unavailable() -> str | None:
    """Why the Redis peer cannot run here, or None when it can."""
    if shutil.which("redis-server") is None:
        return (
            "redis-server is not installed (not on PATH); install it (apt-get install "
            "redis-server) to compare with Redis"
        )
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is not installed; pip install 'papertiger[bench]'"
    return None


class RedisServer:
    """A private redis-server: no persistence, a Unix socket in a 0700 temp dir, port 0.

    :meth:`stop` stops it and removes the directory.
    """

    def __init__(
        self, binary: str | None = None, workdir: str | None = None, start_timeout: float = 20.0
    ) -> None:
        self.binary = binary or shutil.which("redis-server") or "redis-server"
        self.dir = tempfile.mkdtemp(prefix="redis-" if workdir else "ptg-bench-redis-", dir=workdir)
        self.socket = os.path.join(self.dir, "redis.sock")
        self.version = _redis_version(self.binary)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                "0",
                "--unixsocket",
                self.socket,
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        try:
            self._await_ready(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _await_ready(self, timeout: float) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(
                    f"redis-server exited at start-up (code {self.proc.returncode}): "
                    f"{err.strip() or 'no message'}"
                )
            if os.path.exists(self.socket):
                try:
                    client = redis.Redis(unix_socket_path=self.socket)
                    try:
                        if client.ping():
                            return
                    finally:
                        client.close()
                except redis.ConnectionError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s.")
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _redis_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    found = re.search(r"v=(\S+)", out)
    return found.group(1) if found else out.strip() or "unknown"


def start_manager(ctx: Any) -> tuple[Any, int | None]:
    """A started :class:`multiprocessing.managers.SyncManager` and its server's pid."""
    manager = ctx.Manager()
    process = getattr(manager, "_process", None)  # the server process; no public accessor
    return manager, getattr(process, "pid", None)


class ManagerPeer:
    """Operations on a ``Manager().dict()`` proxy (keys are record ids)."""

    def __init__(self, records: Any, writes: Any) -> None:
        self.records = records  # the seeded namespace
        self.writes = writes  # where inserts go

    def seed(self, rows: Sequence[tuple[str, dict[str, Any]]], batch: int = 1000) -> None:
        for i in range(0, len(rows), batch):
            self.records.update(dict(rows[i : i + batch]))


class RedisPeer:
    """Operations on the private Redis server, through redis-py (see the module doc)."""

    def __init__(self, socket: str) -> None:
        import redis

        self.client = redis.Redis(unix_socket_path=socket)

    @staticmethod
    def key(ns: str, record_id: str) -> str:
        return f"{ns}:{record_id}"

    def seed(self, ns: str, rows: Iterable[tuple[str, int, bytes, str]], batch: int = 1000) -> None:
        """``rows``: ``(id, order, packed, customer)``."""
        pipe = self.client.pipeline(transaction=False)
        for n, (record_id, order, packed, customer) in enumerate(rows, 1):
            pipe.set(f"{ns}:{record_id}", packed)
            pipe.zadd(f"{ns}:order", {record_id: order})
            pipe.zadd(f"{ns}:customer:{customer}", {record_id: order})
            if n % batch == 0:
                pipe.execute()
        pipe.execute()

    def get(self, ns: str, record_id: str) -> dict[str, Any]:
        return _unpackb(self.client.get(f"{ns}:{record_id}"))  # type: ignore[no-any-return]

    def page(self, ns: str, limit: int = 10) -> list[dict[str, Any]]:
        ids: list[bytes] = self.client.zrevrange(f"{ns}:order", 0, limit - 1)  # type: ignore[assignment]
        return [_unpackb(p) for p in self.client.mget([f"{ns}:{i.decode()}" for i in ids])]

    def count(self, ns: str) -> int:
        return int(self.client.zcard(f"{ns}:order"))

    def find(self, ns: str, customer: str) -> list[dict[str, Any]]:
        ids: list[bytes] = self.client.zrevrange(f"{ns}:customer:{customer}", 0, -1)  # type: ignore[assignment]
        if not ids:
            return []
        return [_unpackb(p) for p in self.client.mget([f"{ns}:{i.decode()}" for i in ids])]

    def insert(self, ns: str, record: dict[str, Any]) -> None:
        self.client.set(f"{ns}:{record['id']}", _packb(record))

    def update(self, ns: str, record: dict[str, Any]) -> None:
        self.client.set(f"{ns}:{record['id']}", _packb(record), xx=True)

    def insert_many(self, ns: str, records: Sequence[dict[str, Any]]) -> None:
        self.client.mset({f"{ns}:{r['id']}": _packb(r) for r in records})

    def memory(self) -> dict[str, int]:
        info = self.client.info("memory")
        return {
            "used_memory": int(info.get("used_memory", 0)),
            "used_memory_rss": int(info.get("used_memory_rss", 0)),
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
