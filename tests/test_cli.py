"""The ``papertiger`` command: serve in the foreground, inspect, get, list, gc.

Real processes against a private state directory (``PAPERTIGER_STATE_DIR``),
with ``PAPERTIGER_ADDRESS`` / ``PAPERTIGER_AUTHKEY`` removed from their
environment.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from papertiger.engine.shm import list_segments
from support import DaemonEnv


def test_help_lists_the_commands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "papertiger", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for command in ("serve", "daemon", "inspect", "get", "list", "gc"):
        assert command in proc.stdout


# -- serve ------------------------------------------------------------------------------


def _read_until_ready(proc: subprocess.Popen[str]) -> dict[str, str]:
    """The export lines ``serve`` prints once it is ready (killed if that takes 30 s)."""
    assert proc.stdout is not None
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    found: dict[str, str] = {}
    try:
        while "PAPERTIGER_AUTHKEY" not in found:
            line = proc.stdout.readline()
            assert line, f"serve exited before it was ready: {proc.wait()}"
            if line.startswith("export "):
                key, _, value = line[len("export ") :].strip().partition("=")
                found[key] = value
    finally:
        watchdog.cancel()
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_runs_in_the_foreground_until_a_signal(env: DaemonEnv, signum: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "papertiger", "serve"],
        env=env.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        exported = _read_until_ready(proc)
        assert exported["PAPERTIGER_ADDRESS"] == str(env.state_dir / "daemon.sock")
        assert len(bytes.fromhex(exported["PAPERTIGER_AUTHKEY"])) == 32
        env.pids.add(proc.pid)
        # clients with no variable set find the foreground manager
        out = env.python(
            """
            from papertiger.engine.connection import current_client
            from papertiger.store import Customers
            Customers.insert({"email": "fg@example.com"})
            print(current_client().manager_pid)
            """
        )
        assert int(out.stdout) == proc.pid
        status = env.run("daemon", "status")
        assert status.returncode == 0 and f"pid {proc.pid}" in status.stdout
        segments = set(list_segments(f"ptg_{proc.pid}_"))
        assert segments

        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"received {signal.Signals(signum).name}: stopping" in err
    assert "serving at" in err  # it logs to stderr
    assert env.state() is None
    assert not (env.state_dir / "daemon.sock").exists()
    assert not set(list_segments(f"ptg_{proc.pid}_")), "segments left after a clean stop"


def test_serve_refuses_while_a_daemon_runs(env: DaemonEnv) -> None:
    start = env.run("daemon", "start")
    assert start.returncode == 0, start.stderr
    info = env.state()
    assert info is not None
    env.pids.add(info["pid"])
    proc = env.run("serve")
    assert proc.returncode == 1
    assert "already running" in proc.stderr
    assert env.state() == info
    assert env.run("daemon", "stop").returncode == 0


# -- reading the store -----------------------------------------------------------------


SEED = """
import json
import papertiger
from papertiger.store import CheckoutSessions, Customers
customers = [
    Customers.insert({"id": f"cus_{i}", "email": f"c{i}@example.com", "created": 1700000000 + i})
    for i in range(5)
]
with papertiger.use_namespace("t-a"):
    CheckoutSessions.insert({"id": "cs_a", "customer": "cus_1", "amount_total": 100})
with papertiger.use_namespace(("t-a", "acct_1")):
    CheckoutSessions.insert({"id": "cs_b", "customer": "cus_1", "amount_total": 200})
with papertiger.use_namespace("t-b"):
    CheckoutSessions.insert({"id": "cs_c", "customer": "cus_2", "amount_total": 300})
print(json.dumps(customers))
"""


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[DaemonEnv, list[dict[str, Any]]]]:
    """One seeded daemon for the read-only tests below (they never write)."""
    env = DaemonEnv()
    try:
        start = env.run("daemon", "start")
        assert start.returncode == 0, start.stderr
        info = env.state()
        assert info is not None
        env.pids.add(info["pid"])
        customers = json.loads(env.python(SEED).stdout)
        yield env, customers
        assert env.run("daemon", "stop").returncode == 0
        assert not set(list_segments(f"ptg_{info['pid']}_"))
    finally:
        env.cleanup()


def test_inspect_shows_tables_namespaces_and_counts(
    seeded: tuple[DaemonEnv, list[dict[str, Any]]],
) -> None:
    env, _ = seeded
    proc = env.run("inspect")
    assert proc.returncode == 0, proc.stderr
    assert "customers: 5 record(s) in 1 namespace(s)" in proc.stdout
    assert "checkout_sessions: 3 record(s) in 3 namespace(s)" in proc.stdout
    assert "t-a/acct_1" in proc.stdout

    code, doc = env.json("inspect", "--json")
    assert code == 0
    assert doc["tables"]["customers"] == {"records": 5, "namespaces": {":global": 5}}
    assert doc["tables"]["checkout_sessions"]["namespaces"] == {
        "t-a": 1,
        "t-a/acct_1": 1,
        "t-b": 1,
    }
    assert doc["manager"]["pid"] == env.state()["pid"]  # type: ignore[index]

    code, doc = env.json("inspect", "checkout_sessions", "--namespace", "t-a", "--json")
    assert code == 0
    assert doc["records"] == 2  # t-a and the namespace nested under it
    assert [r["id"] for r in doc["namespaces"]["t-a/acct_1"]["data"]] == ["cs_b"]
    assert "t-b" not in doc["namespaces"]

    proc = env.run("inspect", "customer", "--limit", "2")  # a resource name works too
    assert "cus_4" in proc.stdout and "cus_3" in proc.stdout and "cus_2" not in proc.stdout
    assert "... and 3 more" in proc.stdout


def test_inspect_reads_shared_memory_not_the_manager(
    seeded: tuple[DaemonEnv, list[dict[str, Any]]],
) -> None:
    env, _ = seeded
    _, before = env.json("daemon", "status", "--json")
    assert env.run("inspect", "customers", "--limit", "0").returncode == 0
    assert env.run("get", "customers", "cus_1").returncode == 0
    _, after = env.json("daemon", "status", "--json")
    # one ``hello`` each (to learn the control block), plus the second status itself:
    # every record came from the replica
    assert after["requests"] - before["requests"] == 3


def test_get_prints_the_record(seeded: tuple[DaemonEnv, list[dict[str, Any]]]) -> None:
    env, customers = seeded
    code, record = env.json("get", "customers", "cus_3")
    assert code == 0 and record == customers[3]
    code, record = env.json("get", "checkout_session", "cs_b", "--namespace", '["t-a","acct_1"]')
    assert code == 0 and record["amount_total"] == 200
    code, record = env.json("get", "checkout.session", "cs_c", PAPERTIGER_NAMESPACE="t-b")
    assert code == 0 and record["id"] == "cs_c"


def test_get_errors_are_stripe_error_bodies(seeded: tuple[DaemonEnv, list[dict[str, Any]]]) -> None:
    env, _ = seeded
    code, body = env.json("get", "checkout_sessions", "cs_a")  # it lives in t-a, not global
    assert code == 1
    assert body == {
        "error": {
            "type": "invalid_request_error",
            "message": "No such checkout.session: 'cs_a'",
            "param": "id",
            "code": "resource_missing",
        }
    }
    code, body = env.json("get", "invoices", "in_1")
    assert code == 1 and body["error"]["param"] == "table"
    assert "checkout_sessions" in body["error"]["message"]


def test_list_prints_stripe_pages(seeded: tuple[DaemonEnv, list[dict[str, Any]]]) -> None:
    env, customers = seeded
    newest_first = [c["id"] for c in reversed(customers)]
    code, page = env.json("list", "customers", "--limit", "2")
    assert code == 0
    assert page["object"] == "list" and page["url"] == "/v1/customers"
    assert [r["id"] for r in page["data"]] == newest_first[:2] and page["has_more"] is True
    code, page = env.json("list", "customers", "--limit", "2", "--starting-after", "cus_3")
    assert [r["id"] for r in page["data"]] == newest_first[2:4] and page["has_more"] is True
    code, page = env.json("list", "customers", "--limit", "2", "--ending-before", "cus_1")
    assert [r["id"] for r in page["data"]] == ["cus_3", "cus_2"] and page["has_more"] is True
    code, page = env.json("list", "checkout_sessions", "--namespace", "t-a/acct_1")
    assert [r["id"] for r in page["data"]] == ["cs_b"] and page["has_more"] is False
    assert page["url"] == "/v1/checkout/sessions"


@pytest.mark.parametrize(
    ("args", "param", "code_"),
    [
        (["--limit", "0"], "limit", "parameter_invalid"),
        (["--limit", "101"], "limit", "parameter_invalid"),
        (["--starting-after", "cus_nope"], "starting_after", "resource_missing"),
        (["--ending-before", "cus_nope"], "ending_before", "resource_missing"),
    ],
)
def test_list_errors_are_stripe_error_bodies(
    seeded: tuple[DaemonEnv, list[dict[str, Any]]], args: list[str], param: str, code_: str
) -> None:
    env, _ = seeded
    code, body = env.json("list", "customers", *args)
    assert code == 1
    assert body["error"]["param"] == param and body["error"]["code"] == code_


def test_list_refuses_both_cursors(seeded: tuple[DaemonEnv, list[dict[str, Any]]]) -> None:
    env, _ = seeded
    code, body = env.json(
        "list", "customers", "--starting-after", "cus_1", "--ending-before", "cus_3"
    )
    assert code == 1 and "only one" in body["error"]["message"]


def test_reading_commands_never_start_a_manager(env: DaemonEnv) -> None:
    code, body = env.json("get", "customers", "cus_1")
    # (an embedded manager would have answered resource_missing)
    assert code == 1 and "no papertiger store" in body["error"]["message"]
    proc = env.run("inspect")
    assert proc.returncode == 1 and "papertiger daemon start" in proc.stderr
    status = env.run("daemon", "status", "--json")
    assert status.returncode == 3 and json.loads(status.stdout)["running"] is False
    stop = env.run("daemon", "stop")
    assert stop.returncode == 1 and "no papertiger daemon is running" in stop.stderr


def test_gc_command(env: DaemonEnv) -> None:
    proc = env.run("gc", "--dry-run")
    assert proc.returncode == 0
    assert all(
        line.startswith("would remove ") or line.startswith("nothing to remove")
        for line in proc.stdout.splitlines()
    )
