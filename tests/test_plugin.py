"""The pytest plugin and ``papertiger.once``, tested on real suites run by pytester.

Runs with xdist go through ``runpytest_subprocess``; each inner run gets its
own manager, started on first use (the outer run's variables are removed
first), and every check of an inner run ends by asserting that its manager
left nothing in /dev/shm or on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import papertiger
from papertiger.engine.client import Channel
from papertiger.engine.connection import current_client
from papertiger.engine.shm import list_segments, pid_alive
from papertiger.engine.spawn import ManagerProcess
from papertiger.env import ADDRESS as ENV_ADDRESS
from papertiger.env import AUTHKEY as ENV_AUTHKEY
from papertiger.namespace import ENV_NAMESPACE, normalize_namespace
from papertiger.once import ENV_ONCE_SCOPE
from papertiger.pytest_plugin import RunInfo, once_fixture

pytest_plugins = ["pytester"]

EXAMPLE_SUITE = Path(__file__).resolve().parents[1] / "examples" / "checkout_suite"
HEADER = re.compile(
    r"papertiger: (a manager started on first use|the manager) at (\S+)"
    r"( \(given by the address option\))?, run ([0-9a-f]+)"
)
RUN_TIMEOUT = 240.0

# An inner conftest: the controller writes the manager's figures to $PT_STATS
# at the end of the run (after the last worker, before the manager stops).
STATS_CONFTEST = """
import json, os
from papertiger.engine.connection import current_client

def pytest_unconfigure(config):
    out = os.environ.get("PT_STATS")
    if out and not hasattr(config, "workerinput"):
        with open(out, "w") as f:
            json.dump(current_client().request(["stats"])[1], f)
"""


@dataclass
class InnerRun:
    result: pytest.RunResult
    address: str
    run_id: str
    external: bool
    stats: dict[str, Any] | None = None

    @property
    def root(self) -> str:
        return f"pytest-{self.run_id}"

    @property
    def manager_pid(self) -> int:
        assert self.stats is not None, "the inner run wrote no stats (STATS_CONFTEST)"
        return int(self.stats["pid"])

    @property
    def prefix(self) -> str:
        assert self.stats is not None, "the inner run wrote no stats (STATS_CONFTEST)"
        return str(self.stats["control"])[:-2]


@pytest.fixture
def own_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Inner runs start their own manager; $PT_STATS names the stats file."""
    for name in (ENV_ADDRESS, ENV_AUTHKEY, ENV_NAMESPACE, ENV_ONCE_SCOPE):
        monkeypatch.delenv(name, raising=False)
    stats = tmp_path / "stats.json"
    monkeypatch.setenv("PT_STATS", str(stats))
    monkeypatch.setenv("PT_DIR", str(tmp_path))
    return tmp_path


def parse_header(result: pytest.RunResult) -> InnerRun:
    text = result.stdout.str()
    found = HEADER.search(text)
    assert found, f"no papertiger header line in:\n{text}\n{result.stderr.str()}"
    _, address, given, run_id = found.groups()
    stats_file = os.environ.get("PT_STATS")
    stats = None
    if stats_file and os.path.exists(stats_file):
        stats = json.loads(Path(stats_file).read_text())
    return InnerRun(result, address, run_id, bool(given), stats)


def assert_manager_gone(run: InnerRun) -> None:
    """The run's own manager (if any test started it) stopped and left nothing behind."""
    assert not run.external
    assert not os.path.exists(os.path.dirname(run.address)), "the run's directory is left"
    if run.stats is not None:
        left = sorted(list_segments(run.prefix + "_"))
        assert not left, f"the run's manager left segments in /dev/shm: {left}"
        assert not pid_alive(run.manager_pid)


def run_inner(pytester: pytest.Pytester, *args: str) -> InnerRun:
    """Run pytest in a subprocess; check its manager is gone afterwards (when it owned one)."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT)
    run = parse_header(result)
    if not run.external:
        assert_manager_gone(run)
    return run


def leftover_namespaces(stats: dict[str, Any], root: str) -> dict[str, dict[str, int]]:
    """Namespaces under the run's root that still hold records, per table."""
    return {
        table: {ns: n for ns, n in info["namespaces"].items() if ns.startswith(root)}
        for table, info in stats["tables"].items()
        if any(ns.startswith(root) for ns in info["namespaces"])
    }


def read_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# -- isolation, cleanup, reports ---------------------------------------------------------

ISOLATION_TESTS = """
import asyncio, json, os, subprocess, sys, threading
import pytest
import papertiger
from papertiger.engine.connection import current_client
from papertiger.store import CheckoutSessions, Customers

READ = "from papertiger.store import CheckoutSessions as C; print(C.get('cs_same')['amount_total'])"

@pytest.mark.parametrize("i", range(24))
def test_same_ids(papertiger_namespace, i):
    assert papertiger.current_namespace() == papertiger_namespace
    Customers.insert({"id": "cus_same", "email": f"{i}@example.com"})
    CheckoutSessions.insert({"id": "cs_same", "customer": "cus_same", "amount_total": i})
    with papertiger.use_namespace((*papertiger_namespace, "acct_1")):
        Customers.insert({"id": "cus_same"})
    seen = []
    reader = threading.Thread(target=lambda: seen.append(CheckoutSessions.get("cs_same")))
    reader.start()
    reader.join()
    async def read():
        return CheckoutSessions.get("cs_same")
    seen.append(asyncio.run(read()))
    assert [s["amount_total"] for s in seen] == [i, i]
    if i < 2:  # a child process inherits the manager and the namespace
        assert subprocess.check_output([sys.executable, "-c", READ]).split() == [str(i).encode()]
    assert Customers.count() == 1 and CheckoutSessions.count() == 1
    assert Customers.find_by_email(f"{i}@example.com")[0]["id"] == "cus_same"
    with open(os.path.join(os.environ["PT_DIR"], f"seen-{i}"), "w") as f:
        json.dump([os.getpid(), current_client().info["pid"], list(papertiger_namespace)], f)
"""


def check_isolation(run: InnerRun, out_dir: Path) -> None:
    """Same ids in parallel tests never collided; one manager served every worker."""
    seen = [json.loads((out_dir / f"seen-{i}").read_text()) for i in range(24)]
    assert {manager for _, manager, _ in seen} == {run.manager_pid}  # one manager for all
    assert len({worker for worker, _, _ in seen}) > 1  # ... shared by several workers
    namespaces = [tuple(ns) for _, _, ns in seen]
    assert len(set(namespaces)) == 24
    assert all(ns[0] == run.root and ns[1].startswith("gw") for ns in namespaces)


FAILING_TESTS = """
import pytest
import papertiger
from papertiger.store import Customers

def test_passes(papertiger_namespace):
    Customers.insert({"id": "cus_ok"})

def test_fails(papertiger_namespace):
    Customers.insert({"id": "cus_left", "email": "left@example.com"})
    assert Customers.count() == 2

def test_raises(papertiger_namespace):
    with papertiger.use_namespace((*papertiger_namespace, "acct_9")):
        Customers.insert({"id": "cus_nested"})
    raise RuntimeError("boom")

@pytest.fixture
def broken(papertiger_namespace):
    Customers.insert({"id": "cus_setup"})
    raise RuntimeError("broken fixture")

def test_setup_error(broken):
    pass
"""


def check_failure_reports(run: InnerRun) -> None:
    """Failed tests name their namespace; --papertiger-dump lists what they left."""
    out = run.result.stdout.str()
    assert out.count("- papertiger -") == 3, out
    assert re.search(rf"namespace: \('{run.root}', 'gw\d', 'test_failing.py::test_fails'\)", out)
    assert '"email": "left@example.com", "id": "cus_left"' in out
    assert re.search(rf"customers in {run.root}/gw\d/test_failing.py::test_raises/acct_9: 1", out)
    assert '"id": "cus_nested", "object": "customer"' in out
    assert '"id": "cus_setup", "object": "customer"' in out
    assert "cus_ok" not in out


def test_report_names_the_namespace_without_dumping_by_default(
    pytester: pytest.Pytester, own_env: Path
) -> None:
    pytester.makepyfile(test_failing=FAILING_TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    run = parse_header(result)
    assert_manager_gone(run)
    run.result.assert_outcomes(passed=1, failed=2, errors=1)
    out = run.result.stdout.str()
    assert f"namespace: ('{run.root}', 'main', 'test_failing.py::test_fails')" in out
    assert '"object": "customer"' not in out and "record(s)" not in out


def test_in_process_run_uses_and_restores_this_process_manager(
    pytester: pytest.Pytester, own_env: Path
) -> None:
    """pytester's in-process runs: an outer serve() is the run's manager, and stays usable."""
    pytester.makepyfile(test_failing=FAILING_TESTS)
    with papertiger.serve() as outer:
        papertiger.store.Customers.insert({"id": "cus_outer"})
        client = current_client()
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
        result.assert_outcomes(passed=1, failed=2, errors=1)
        run = parse_header(result)
        assert run.external and run.address == outer.address
        assert current_client() is client and os.environ[ENV_ADDRESS] == outer.address
        assert papertiger.current_namespace() == papertiger.GLOBAL
        assert ENV_NAMESPACE not in os.environ and ENV_ONCE_SCOPE not in os.environ
        assert papertiger.store.Customers.list_namespace() == [
            papertiger.store.Customers.get("cus_outer")
        ]
        assert outer.stats()["tables"]["customers"]["namespaces"] == {":global": 1}


def this_connection() -> object:
    from papertiger.engine import connection as server

    return server._client


def assert_process_untouched(connection: object) -> None:
    """After an in-process run that started its own manager: nothing of it is left here."""
    for name in (ENV_ADDRESS, ENV_AUTHKEY, ENV_NAMESPACE, ENV_ONCE_SCOPE):
        assert name not in os.environ
    assert papertiger.current_namespace() == papertiger.GLOBAL
    assert this_connection() is connection


def test_the_manager_follows_a_killed_run_out(pytester: pytest.Pytester, own_env: Path) -> None:
    """SIGKILL the process that owns the run's manager: the manager still cleans up."""
    pytester.makepyfile(
        test_killed="""
        import os, signal
        from papertiger.engine.connection import current_client
        from papertiger.store import Customers

        def test_dies(papertiger_namespace):
            Customers.insert({"id": "cus_1"})
            info = current_client().info
            with open(os.path.join(os.environ["PT_DIR"], "manager"), "w") as f:
                f.write(f"{info['pid']} {info['control']}")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=RUN_TIMEOUT)
    assert result.ret == -signal.SIGKILL
    pid, control = (own_env / "manager").read_text().split()
    deadline = time.monotonic() + 30
    while pid_alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(int(pid))
    assert not sorted(list_segments(control[:-2] + "_"))


# -- autouse, marker, disabling ----------------------------------------------------------

NAMESPACE_PROBE = """
import os
import pytest
import papertiger

def test_plain():
    assert papertiger.current_namespace()[0].startswith({expect_plain!r})

@pytest.mark.papertiger
def test_marked():
    ns = papertiger.current_namespace()
    assert ns[0].startswith("pytest-") and ns[2] == "test_probe.py::test_marked"
    assert os.environ["PAPERTIGER_NAMESPACE"]
"""


@pytest.mark.parametrize(("autouse", "expect_plain"), [(True, "pytest-"), (False, ":global")])
def test_autouse_ini_and_marker(
    pytester: pytest.Pytester, own_env: Path, autouse: bool, expect_plain: str
) -> None:
    if autouse:
        pytester.makeini("[pytest]\npapertiger_autouse = true\n")
    pytester.makepyfile(test_probe=NAMESPACE_PROBE.format(expect_plain=expect_plain))
    connection = this_connection()
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert_manager_gone(parse_header(result))
    assert_process_untouched(connection)


def test_p_no_papertiger_turns_it_off(pytester: pytest.Pytester, own_env: Path) -> None:
    pytester.makepyfile(
        test_off="""
        import os

        def test_no_manager_was_started():
            assert "PAPERTIGER_ADDRESS" not in os.environ

        def test_no_fixture(papertiger_namespace):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:papertiger")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*fixture 'papertiger_namespace' not found*"])
    assert "papertiger:" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--papertiger-address", "/nonexistent/store.sock", "--papertiger-authkey", "00"],
         "cannot use the manager at /nonexistent/store.sock"),
        (["--papertiger-address", "/nonexistent/store.sock"], "no authkey"),
        (["--papertiger-address", "/nonexistent/store.sock", "--papertiger-authkey", "zz"],
         "must be hex"),
    ],
)  # fmt: skip
def test_a_bad_address_is_a_usage_error(
    pytester: pytest.Pytester, own_env: Path, args: list[str], message: str
) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


# -- once, across workers ----------------------------------------------------------------

ONCE_TESTS = """
import json, os, time
import pytest
import papertiger
from papertiger.pytest_plugin import once_fixture
from papertiger.store import Customers

DIR = os.environ["PT_DIR"]

def note(name, text):
    with open(os.path.join(DIR, name), "a") as f:
        f.write(text + "\\n")

def make():
    note("calls", str(os.getpid()))
    Customers.insert({"id": "cus_seed"})  # made in the caller's namespace: cleaned with it
    time.sleep(0.3)  # long enough for the other workers to wait
    return {"made_by": os.getpid(), "items": [1, 2, 3]}

@once_fixture
def shared():
    note("fixture-calls", str(os.getpid()))
    Customers.upsert({"id": "cus_shared"})
    return {"namespace": list(papertiger.current_namespace())}

@pytest.mark.parametrize("i", range(16))
def test_once(papertiger_namespace, shared, i):
    value = papertiger.once("catalogue", make)
    note("seen", json.dumps(value, sort_keys=True))
    assert shared == {"namespace": [":global"]}
    with papertiger.use_namespace(papertiger.GLOBAL):
        assert Customers.get("cus_shared")
"""


def check_once(out_dir: Path) -> None:
    """once() and once_fixture ran their factories once for the whole run."""
    assert len(read_lines(out_dir / "calls")) == 1
    assert len(read_lines(out_dir / "fixture-calls")) == 1
    seen = (out_dir / "seen").read_text().splitlines()
    assert len(seen) == 16 and len(set(seen)) == 1


def test_a_run_with_4_workers(pytester: pytest.Pytester, own_env: Path) -> None:
    """One run, three suites: isolation, failures and their cleanup, once per run."""
    pytester.makeconftest(STATS_CONFTEST)
    pytester.makepyfile(
        test_isolation=ISOLATION_TESTS, test_failing=FAILING_TESTS, test_once=ONCE_TESTS
    )
    run = run_inner(pytester, "-n", "4", "--papertiger-dump")
    run.result.assert_outcomes(passed=24 + 1 + 16, failed=2, errors=1)
    check_isolation(run, own_env)
    check_failure_reports(run)
    check_once(own_env)
    stats = json.loads((own_env / "stats.json").read_text())
    # every test's namespace was cleared, nested ones and failed tests' included ...
    assert leftover_namespaces(stats, run.root) == {}
    # ... while once results and what once_fixture seeded (in GLOBAL) outlive them
    assert stats["tables"]["_once"]["records"] == 2
    assert stats["tables"]["customers"]["namespaces"] == {":global": 1}


TAKEOVER_TESTS = """
import json, os, signal, time
import pytest
import papertiger

DIR = os.environ["PT_DIR"]
WAITING = os.path.join(DIR, "waiting")

def make():
    calls = os.path.join(DIR, "calls")
    with open(calls, "a") as f:
        f.write(f"{os.getpid()}\\n")
    if len(open(calls).read().split()) == 1:
        # the first caller: let other workers start waiting, then die mid-factory
        deadline = time.monotonic() + 10
        while len(os.listdir(WAITING)) < 3 and time.monotonic() < deadline:  # 2 waiters
            time.sleep(0.02)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    return {"made_by": os.getpid()}

@pytest.mark.parametrize("i", range(8))
def test_catalogue(i):
    os.makedirs(WAITING, exist_ok=True)
    open(os.path.join(WAITING, f"{os.getpid()}-{i}"), "w").close()
    value = papertiger.once("catalogue", make)
    with open(os.path.join(DIR, "seen"), "a") as f:
        f.write(json.dumps(value) + "\\n")
"""


def test_once_hands_over_when_the_first_caller_is_killed(
    pytester: pytest.Pytester, own_env: Path
) -> None:
    pytester.makepyfile(test_takeover=TAKEOVER_TESTS)
    run = run_inner(pytester, "-n", "3")
    run.result.assert_outcomes(passed=7, failed=1)
    run.result.stdout.fnmatch_lines(["*crashed*"])
    killed, taker = read_lines(own_env / "calls")
    assert killed != taker
    seen = {json.loads(line)["made_by"] for line in (own_env / "seen").read_text().splitlines()}
    assert seen == {int(taker)}


# -- a manager that outlives the run (a daemon) ---------------------------------------------

DAEMON_TESTS = """
import os
import pytest
import papertiger
from papertiger.store import Customers

def make():
    with open(os.path.join(os.environ["PT_DIR"], "calls"), "a") as f:
        f.write(f"{os.getpid()}\\n")
    return "catalogue"

@pytest.mark.parametrize("i", range(6))
def test_uses_the_daemon(papertiger_namespace, i):
    assert papertiger.once("catalogue", make) == "catalogue"
    Customers.insert({"id": "cus_same"})
    with papertiger.use_namespace((*papertiger_namespace, "acct_1")):
        Customers.insert({"id": "cus_same"})
    assert int(os.environ["PAPERTIGER_DAEMON_PID"]) == (
        papertiger.engine.connection.current_client().info["pid"])
"""


@pytest.fixture
def daemon() -> Iterator[ManagerProcess]:
    """A manager that does not follow this process out, like ``papertiger daemon start``."""
    manager = ManagerProcess(watch_owner=False)
    try:
        yield manager
    finally:
        channel = Channel(manager.address, manager.authkey)
        try:
            channel.request(["shutdown"])
        finally:
            channel.close()
        manager.stop()
        assert not sorted(list_segments(manager.prefix + "_"))


def test_runs_use_a_daemon_given_by_address(
    pytester: pytest.Pytester,
    own_env: Path,
    daemon: ManagerProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_daemon=DAEMON_TESTS)
    monkeypatch.setenv("PAPERTIGER_DAEMON_PID", str(daemon.pid))
    first = run_inner(
        pytester,
        "-n",
        "2",
        "--papertiger-address",
        daemon.address,
        "--papertiger-authkey",
        daemon.authkey.hex(),
    )
    monkeypatch.setenv(ENV_ADDRESS, daemon.address)  # the same, through the environment,
    monkeypatch.setenv(ENV_AUTHKEY, daemon.authkey.hex())  # in this process (no xdist)
    connection = this_connection()
    second = parse_header(pytester.runpytest_inprocess("-p", "no:cacheprovider"))
    assert this_connection() is connection
    for run in (first, second):
        run.result.assert_outcomes(passed=6)  # (each test checks it used the daemon)
        assert run.external and run.address == daemon.address
    assert first.run_id != second.run_id
    assert len(read_lines(own_env / "calls")) == 2  # once per run, not once per daemon
    assert daemon.alive()
    channel = Channel(daemon.address, daemon.authkey)
    try:
        stats = channel.request(["stats"])[1]
    finally:
        channel.close()
    for table, info in stats["tables"].items():  # each run removed what it left
        assert info["records"] == 0, (table, info)


# -- the sample suite ------------------------------------------------------------------------


@pytest.fixture
def example_suite(pytester: pytest.Pytester) -> Path:
    for path in EXAMPLE_SUITE.iterdir():
        if path.suffix in (".py", ".ini"):
            shutil.copy(path, pytester.path / path.name)
    return pytester.path


def test_the_sample_suite_passes_with_4_workers(
    pytester: pytest.Pytester, own_env: Path, example_suite: Path
) -> None:
    run = run_inner(pytester, "-n", "4")
    outcomes = run.result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 200 and set(outcomes) == {"passed"}, outcomes


def test_the_sample_suite_passes_without_xdist(
    pytester: pytest.Pytester, own_env: Path, example_suite: Path
) -> None:
    connection = this_connection()
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 200 and set(outcomes) == {"passed"}, outcomes
    assert_manager_gone(parse_header(result))
    assert_process_untouched(connection)


# -- unit tests of the pieces --------------------------------------------------------------


def test_test_namespaces_are_unique_and_valid() -> None:
    run = RunInfo("abcd1234", worker="gw3")
    nodeid = "tests/test_x.py::test_y[a]"
    first, again = run.checkout(nodeid), run.checkout(nodeid)
    assert first == ("pytest-abcd1234", "gw3", nodeid)
    assert again == ("pytest-abcd1234", "gw3", nodeid + "#2")
    long_a, long_b = "t.py::test[" + "a" * 300 + "]", "t.py::test[" + "a" * 299 + "b]"
    ns_a, ns_b = run.checkout(long_a), run.checkout(long_b)
    assert ns_a != ns_b and max(len(ns_a[2]), len(ns_b[2])) <= 200
    assert normalize_namespace(ns_a) == ns_a


def test_once_fixture_refuses_generators() -> None:
    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="cannot be torn down"):
        once_fixture(gen)


# -- once on shared memory (the semantics on every backend: tests/conformance/test_once.py)


def test_once_reads_a_made_result_without_asking_the_manager(store: papertiger.Server) -> None:
    key = f"fast-{time.monotonic_ns()}"
    assert papertiger.once(key, lambda: {"made": 1}) == {"made": 1}
    before = store.stats()["requests"]
    for _ in range(20):
        assert papertiger.once(key, lambda: {"made": 2}) == {"made": 1}
    assert store.stats()["requests"] == before + 1  # only the second stats() call
