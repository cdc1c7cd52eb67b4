"""The conformance suite: the store's semantics, once, on every backend.

Every test here that takes ``backend`` (or ``fresh_namespace``, which takes
it) runs three times: on the shared-memory engine (a manager per module), on
a real redis-server and on a real 3-master Redis Cluster (both per session,
emptied after each test; one client each).  The backend is current for the test, in a
namespace of its own; ``backend.environ`` points a child process at the same
store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

import papertiger
from papertiger import env
from papertiger.backends import SHM, use_backend
from papertiger.backends.redis import RedisBackend
from support import BackendUnderTest

BACKENDS = ["shm", "redis", "redis-cluster"]
#: once leases in these tests: short, so a killed holder is taken over quickly
TEST_LEASE = 2.0


def _namespace(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)
    return f"t-{os.getpid()}-{name}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[BackendUnderTest]:
    """The backend under test, current, in a fresh namespace (see the module doc)."""
    ns = _namespace(request)
    if request.param == "shm":
        server: papertiger.Server = request.getfixturevalue("store")
        under = BackendUnderTest("shm", SHM, ns, dict(server.environ()))
        with use_backend(SHM), papertiger.use_namespace(ns):
            yield under
        return
    servers = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "redis_cluster"
    )
    redis_backend = _redis_backends(request.session, servers.url + f"?once_lease={TEST_LEASE}")
    environ: dict[str, str | None] = {name: None for name in env.CONNECTION}
    environ[env.URL] = redis_backend.url
    under = BackendUnderTest(request.param, redis_backend, ns, environ)
    try:
        with use_backend(redis_backend), papertiger.use_namespace(ns):
            yield under
    finally:
        servers.flush()


_BACKENDS = pytest.StashKey[dict[str, RedisBackend]]()


def _redis_backends(session: pytest.Session, url: str) -> RedisBackend:
    """One backend per URL for the session (a Cluster client discovers its nodes once)."""
    made = session.stash.setdefault(_BACKENDS, {})
    backend = made.get(url)
    if backend is None:
        backend = made[url] = RedisBackend.from_url(url)
    return backend


def pytest_sessionfinish(session: pytest.Session) -> None:
    for backend in session.stash.get(_BACKENDS, {}).values():
        backend.close()


@pytest.fixture
def fresh_namespace(backend: BackendUnderTest) -> str:
    """The test's namespace (current), on the backend under test."""
    return backend.namespace
