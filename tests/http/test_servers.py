"""Where the API runs: serve_http() in this process, its own process, serve --http, the daemon."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

import papertiger
from papertiger.http import server as http_server
from papertiger.store import Customers
from support import WAIT, DaemonEnv, wait_dead

HTTP_LINE = re.compile(r'stripe\.api_base = "(http://[^"]+)"')


def client_for(url: str, ns: papertiger.NamespaceLike = "t") -> Any:
    return stripe.StripeClient(papertiger.api_key_for(ns), base_addresses={"api": url})


@pytest.fixture
def env() -> Iterator[DaemonEnv]:
    e = DaemonEnv()
    try:
        yield e
    finally:
        e.cleanup()


def test_serve_http_uses_this_process_store() -> None:
    with papertiger.serve(), papertiger.serve_http() as api:
        assert api.url == f"http://127.0.0.1:{api.port}" and api.port > 0
        created = client_for(api.url, "ns-a").v1.customers.create({"email": "a@example.com"})
        with papertiger.use_namespace("ns-a"):
            assert Customers.get(created.id)["email"] == "a@example.com"
        with papertiger.use_namespace("ns-b"):
            seeded = Customers.insert({"email": "b@example.com"})
        got = client_for(api.url, "ns-b").v1.customers.retrieve(seeded["id"])
        assert got.email == "b@example.com"
        with papertiger.serve_http() as second:  # two servers, one store, they agree
            assert second.port != api.port
            assert client_for(second.url, "ns-b").v1.customers.retrieve(seeded["id"]).id == got.id
    with pytest.raises(OSError):  # stopped: the port no longer answers
        socket.create_connection(("127.0.0.1", api.port), timeout=2).close()


def test_serve_http_on_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        expected = f"cannot serve HTTP on 127.0.0.1:{port}"
        with pytest.raises(papertiger.StoreError, match=expected), papertiger.serve_http(port=port):
            pass


def test_the_listening_socket_is_tcp() -> None:
    # asyncio sets TCP_NODELAY only on sockets created as TCP: without it every
    # response waits on a delayed ACK (44 ms here instead of 0.4 ms)
    sock = http_server._bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_parse_address() -> None:
    assert http_server.parse_address("0") == ("127.0.0.1", 0)
    assert http_server.parse_address("localhost:8123") == ("localhost", 8123)
    for bad in ("", "x", "70000", "host:"):
        with pytest.raises(ValueError, match=r"\[HOST:\]PORT"):
            http_server.parse_address(bad)


def test_server_process_follows_its_owner() -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with papertiger.serve() as store:
            proc, api = http_server.start_server_process(
                "127.0.0.1", 0, store.environ(), owner_pid=owner.pid
            )
            try:
                made = client_for(api.url).v1.customers.create({"email": "p@example.com"})
                with papertiger.use_namespace("t"):
                    assert Customers.get(made.id)["email"] == "p@example.com"
                owner.kill()
                owner.wait()
                assert proc.wait(WAIT) == 0
            finally:
                http_server.stop_process(proc)
    finally:
        owner.kill()
        owner.wait()


def test_ensure_server_starts_one_per_directory() -> None:
    directory = tempfile.mkdtemp(prefix="ptg-test-http-")
    try:
        with papertiger.serve() as store:
            found: list[Any] = []

            def ensure() -> None:
                found.append(http_server.ensure_server(directory, store.environ(), os.getpid()))

            threads = [threading.Thread(target=ensure) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len({s.url for s in found}) == 1
            (api,) = {s.url: s for s in found}.values()
            assert client_for(api.url).v1.customers.list().data == []
            assert http_server.stop_server(directory)
            wait_dead(api.pid)
            assert not http_server.stop_server(directory)  # nothing left to stop
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def _read_lines_until(proc: subprocess.Popen[str], pattern: re.Pattern[str]) -> re.Match[str]:
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line, f"exited before it was ready: {proc.wait()}"
            found = pattern.search(line)
            if found:
                return found
    finally:
        watchdog.cancel()


def _http_children(parent: int) -> set[int]:
    """Pids of the ``python -m papertiger.http`` processes whose parent is ``parent``."""
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{pid}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b") ", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent and b"papertiger.http" in cmdline:
                found.add(int(pid))
    return found


def test_serve_with_http_in_the_foreground(env: DaemonEnv) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "papertiger", "serve", "--http", "127.0.0.1:0"],
        env=env.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    env.pids.add(proc.pid)
    try:
        url = _read_lines_until(proc, HTTP_LINE).group(1)
        client = stripe.StripeClient("sk_test_foreground", base_addresses={"api": url})
        made = client.v1.customers.create({"email": "fg@example.com"})
        listed = env.run("list", "customers")  # the same store, read by the CLI
        assert made.id in listed.stdout
        status = env.status()
        assert status["daemon"]["http"] == url
        children = _http_children(proc.pid)
        assert len(children) == 1
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    for pid in children:
        wait_dead(pid)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2).close()


def test_daemon_start_with_http(env: DaemonEnv) -> None:
    info, out = env.start("--http", "0")
    url = HTTP_LINE.search(out)
    assert url, out
    api = url.group(1)
    assert env.status()["daemon"]["http"] == api
    assert f"Stripe API     {api}" in env.run("daemon", "status").stdout
    key = papertiger.api_key_for("from-http")
    made = stripe.StripeClient(key, base_addresses={"api": api}).v1.customers.create({"name": "D"})
    got = env.run("get", "customers", made.id, "--namespace", "from-http")
    assert json.loads(got.stdout)["name"] == "D", got.stderr
    env.stop()
    wait_dead(info["pid"])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(api.rsplit(":", 1)[1])), timeout=2).close()


def test_daemon_start_with_a_taken_http_port(env: DaemonEnv) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = env.run("daemon", "start", "--http", str(port))
    assert proc.returncode == 1
    assert f"cannot serve HTTP on 127.0.0.1:{port}" in proc.stderr
    assert env.state() is None and env.run("daemon", "status").returncode == 3
