"""Shared fixtures: a private manager per test module (and the /dev/shm check), real Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import papertiger
from papertiger.engine.shm import list_segments
from redis_servers import RedisCluster, RedisServer
from support import DaemonEnv, need_program


def our_segments() -> set[str]:
    """Names of papertiger segments in /dev/shm owned by live or dead managers."""
    return set(list_segments())


@pytest.fixture(scope="module")
def store() -> Iterator[papertiger.Server]:
    """A manager for the module; checks that its segments are gone afterwards."""
    with papertiger.serve() as server:
        yield server
    prefix = server.control[:-2]
    left = {name for name in our_segments() if name.startswith(prefix)}
    assert not left, f"segments left in /dev/shm: {left}"


@pytest.fixture
def fresh_namespace(request: pytest.FixtureRequest, store: papertiger.Server) -> Iterator[str]:
    """A namespace unique to the test, current for its duration."""
    ns = f"t-{os.getpid()}-{request.node.name}"
    with papertiger.use_namespace(ns):
        yield ns


@pytest.fixture
def env() -> Iterator[DaemonEnv]:
    """A private daemon state directory and environment, cleaned up afterwards."""
    e = DaemonEnv()
    try:
        yield e
    finally:
        e.cleanup()


# -- Redis (real servers, started here; see redis_servers.py) ---------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a Unix socket, for the whole session (of this worker)."""
    binary = need_program("redis-server", "apt-get install redis-server")
    server = RedisServer(binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on free loopback ports, for the whole session."""
    binary = need_program("redis-server", "apt-get install redis-server")
    cli = need_program("redis-cli", "apt-get install redis-tools")
    cluster = RedisCluster(binary, cli)
    try:
        yield cluster
    finally:
        cluster.stop()
