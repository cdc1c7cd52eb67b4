"""Real Redis servers for the tests: a private redis-server, and a 3-master Redis Cluster.

:class:`RedisServer` listens on a Unix socket in a private 0700 directory (and,
when given a port, on loopback); it can be killed and restarted on the same
socket and data directory, with a password or append-only persistence.
:class:`RedisCluster` starts three ``--cluster-enabled`` servers on free
loopback ports and joins them with ``redis-cli --cluster create``.

Every process started here is ours to stop: :meth:`stop` ends it by its pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

import redis

START_TIMEOUT = 30.0


def free_port(avoid_bus: bool = False) -> int:
    """A loopback TCP port nobody listens on (and, with ``avoid_bus``, port + 10000 too:
    a Cluster node's bus)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not avoid_bus:
            return port
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port found")


class RedisServer:
    """A private ``redis-server`` (see the module doc)."""

    def __init__(
        self,
        binary: str,
        *,
        password: str | None = None,
        appendonly: bool = False,
        port: int = 0,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="ptg-redis-")  # 0700
        self.socket = os.path.join(self.dir, "redis.sock")
        self.password = password
        self.appendonly = appendonly
        self.port = port  # 0: no TCP, the socket only
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.stop()
            raise

    # -- addresses ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``unix://`` URL of the socket (with the password, when there is one)."""
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.socket}"

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket, password=self.password)

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            self.socket,
            "--unixsocketperm",
            "700",
            "--dir",
            self.dir,
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            *self.extra,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._await_ready()

    def _await_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited at start-up: {err.strip()}")
            if os.path.exists(self.socket):
                client = self.client()
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.ResponseError):
                    pass  # starting, or loading its data
                finally:
                    client.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT:.0f} s")
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL, as a crash would; the socket file may stay (the next start replaces it)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._close_pipes()

    def restart(self) -> None:
        self.kill()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        self.start()

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def flush(self) -> None:
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_pipes()
        shutil.rmtree(self.dir, ignore_errors=True)


def _with_free_port(binary: str, flags: tuple[str, ...]) -> RedisServer:
    """A server on a free port (and bus port); another process may take a port between
    the check and the bind, so a start that fails is tried again on another one."""
    for attempt in range(5):
        try:
            return RedisServer(binary, port=free_port(avoid_bus=True), extra=flags)
        except RuntimeError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


class RedisCluster:
    """Three masters on loopback ports, slots split by ``redis-cli --cluster create``."""

    def __init__(self, server_binary: str, cli_binary: str, masters: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        try:
            for _ in range(masters):
                node_flags = (
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",  # in the node's own --dir
                    "--cluster-node-timeout",
                    "5000",
                )
                self.nodes.append(_with_free_port(server_binary, node_flags))
            subprocess.run(
                [
                    cli_binary,
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{n.port}" for n in self.nodes],
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._await_ok()
        except BaseException:
            self.stop()
            raise

    def _await_ok(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            states = []
            for node in self.nodes:
                client = node.client()
                try:
                    info: Any = client.execute_command("CLUSTER", "INFO")
                finally:
                    client.close()
                text = info.decode() if isinstance(info, bytes) else str(info)
                states.append("cluster_state:ok" in text)
            if all(states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def keys_per_node(self) -> list[int]:
        counts = []
        for node in self.nodes:
            client = node.client()
            try:
                counts.append(int(client.dbsize()))
            finally:
                client.close()
        return counts

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
