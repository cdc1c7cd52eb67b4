"""The pytest plugin on Redis: real ``pytest -n 3`` runs (pytester, in subprocesses).

Each run is pointed at the session's redis-server by ``--papertiger-url`` or
``PAPERTIGER_URL``; no manager is started.  Data that is not the run's own is
seeded first (another team's namespace, another run's tree, another run's
``once`` result) and must survive it; at the end nothing of the run is left:
not its namespaces, not its ``once`` results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import papertiger
from papertiger import env
from papertiger.backends import use_backend
from papertiger.backends.redis import RedisBackend
from papertiger.store import CheckoutSessions, Customers
from redis_servers import RedisServer

pytest_plugins = ["pytester"]

RUN_TIMEOUT = 240.0
HEADER = re.compile(r"papertiger: Redis at (\S+), run ([0-9a-f]+)")

SUITE = """
import json, os, time
import pytest
import papertiger
from papertiger.pytest_plugin import once_fixture
from papertiger.store import CheckoutSessions, Customers

DIR = os.environ["PT_DIR"]
PAUSE = float(os.environ.get("PT_PAUSE", "0"))

def note(name, text):
    with open(os.path.join(DIR, name), "a") as f:
        f.write(text + "\\n")

def make():
    note("calls", str(os.getpid()))
    time.sleep(0.3)  # the other workers wait meanwhile
    return {"made_by": os.getpid()}

@once_fixture
def shared():
    note("fixture-calls", str(os.getpid()))
    return {"namespace": list(papertiger.current_namespace())}

@pytest.mark.parametrize("i", range(18))
def test_isolated(papertiger_namespace, shared, i):
    assert papertiger_namespace[0].startswith("pytest-")
    CheckoutSessions.insert({"id": "cs_same", "customer": "cus_same", "amount_total": i})
    with papertiger.use_namespace((*papertiger_namespace, "acct_1")):
        Customers.insert({"id": "cus_same"})
    value = papertiger.once("catalogue", make)
    note("seen", json.dumps(value, sort_keys=True))
    assert shared == {"namespace": [":global"]}
    time.sleep(PAUSE)  # concurrent runs overlap here
    # only this test's own record, whatever other tests, runs or teams do meanwhile
    assert [r["amount_total"] for r in CheckoutSessions.list()] == [i]
    assert [r["amount_total"] for r in CheckoutSessions.find_by_customer("cus_same")] == [i]
    assert Customers.count() == 0
    note("namespaces", json.dumps(list(papertiger_namespace)))

def test_fails_and_leaves_data(papertiger_namespace):
    Customers.insert({"id": "cus_left"})
    with papertiger.use_namespace((*papertiger_namespace, "acct_9")):
        Customers.insert({"id": "cus_nested"})
    assert False, "this test fails on purpose"
"""


@pytest.fixture
def server(redis_server: RedisServer) -> Iterator[RedisServer]:
    yield redis_server
    redis_server.flush()


@pytest.fixture
def outside(server: RedisServer) -> Iterator[RedisBackend]:
    """A backend on the same Redis, as another team or run sees it."""
    backend = RedisBackend.from_url(server.url)
    yield backend
    backend.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs inherit no store, namespace or once scope from this one."""
    for name in (*env.CONNECTION, env.NAMESPACE, env.ONCE_SCOPE):
        monkeypatch.delenv(name, raising=False)


def seed_others(backend: RedisBackend) -> dict[str, Any]:
    """Data that is not the run's: it must be exactly the same after the run."""
    with use_backend(backend):
        with papertiger.use_namespace("other-team"):
            CheckoutSessions.insert({"id": "cs_same", "customer": "cus_same"})
        with papertiger.use_namespace(("pytest-0ther0ne", "gw0", "test_x.py::test_y")):
            Customers.insert({"id": "cus_same"})
        with papertiger.use_namespace(papertiger.GLOBAL):
            Customers.insert({"id": "cus_global"})
        papertiger.once("pytest-0ther0ne:catalogue", lambda: "another run's")
    return snapshot(backend)


def snapshot(backend: RedisBackend) -> dict[str, Any]:
    return {
        "partitions": backend.partitions(),
        "once": {k: backend.once_get(k) for k in backend.once_keys()},
    }


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def check_run(out: Path, run_id: str, passed: int) -> None:
    """once ran its factories once; every test had its own namespace under the run's root."""
    assert len(read_lines(out / "calls")) == 1
    assert len(read_lines(out / "fixture-calls")) == 1
    seen = read_lines(out / "seen")
    assert len(seen) == passed and len(set(seen)) == 1
    namespaces = [tuple(json.loads(line)) for line in read_lines(out / "namespaces")]
    assert len(set(namespaces)) == passed
    assert all(ns[0] == f"pytest-{run_id}" and ns[1].startswith("gw") for ns in namespaces)
    assert len({ns[1] for ns in namespaces}) > 1  # the workers shared the work


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_run_with_3_workers_on_redis(
    pytester: pytest.Pytester,
    server: RedisServer,
    outside: RedisBackend,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    how: str,
) -> None:
    before = seed_others(outside)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("PT_DIR", str(out))
    pytester.makepyfile(test_suite=SUITE)
    args = ["-p", "no:cacheprovider", "-n", "3"]
    if how == "option":
        args += ["--papertiger-url", server.url]
    else:
        monkeypatch.setenv(env.URL, server.url)
    result = pytester.runpytest_subprocess(*args, timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=18, failed=1)
    found = HEADER.search(result.stdout.str())
    assert found, result.stdout.str()
    assert found.group(1) == server.url
    run_id = found.group(2)
    check_run(out, run_id, 18)
    # nothing of the run is left; everything else is as it was
    assert outside.partitions((f"pytest-{run_id}",)) == []
    assert outside.once_keys(f"pytest-{run_id}:") == []
    assert snapshot(outside) == before
    client = server.client()
    assert not [k for k in client.keys("*") if run_id.encode() in k]
    client.close()


def test_two_runs_at_the_same_time_do_not_see_each_other(
    pytester: pytest.Pytester,
    server: RedisServer,
    outside: RedisBackend,
    clean_env: None,
    tmp_path: Path,
) -> None:
    before = seed_others(outside)
    runs = []
    for name in ("a", "b"):
        suite = pytester.mkdir(f"suite_{name}")
        (suite / "test_suite.py").write_text(SUITE)
        out = tmp_path / f"out_{name}"
        out.mkdir()
        environ = {**os.environ, env.URL: server.url, "PT_DIR": str(out), "PT_PAUSE": "0.1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", str(suite)],
            cwd=suite,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        runs.append((proc, out))
    run_ids = []
    for proc, out in runs:
        try:
            text, _ = proc.communicate(timeout=RUN_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "18 passed" in text and "1 failed" in text, text
        found = HEADER.search(text)
        assert found, text
        run_ids.append(found.group(2))
        check_run(out, found.group(2), 18)  # each run made its own once results
    assert run_ids[0] != run_ids[1]
    assert snapshot(outside) == before


EXAMPLE_SUITE = Path(__file__).resolve().parents[2] / "examples" / "checkout_suite"


def test_the_sample_suite_runs_twice_on_one_redis(
    server: RedisServer, outside: RedisBackend, clean_env: None
) -> None:
    """Its catalogue lives in a namespace of the run, so a second run seeds its own."""
    before = seed_others(outside)
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2"],
            cwd=EXAMPLE_SUITE,
            env={**os.environ, env.URL: server.url},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "206 passed" in proc.stdout
    assert snapshot(outside) == before  # nothing of either run is left
