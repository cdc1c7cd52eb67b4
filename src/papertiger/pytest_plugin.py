"""The pytest and pytest-xdist integration: one store per run, a namespace per test.

Active once papertiger is installed (entry point ``pytest11``, name
``papertiger``); ``-p no:papertiger`` turns it off.

Theory of operation
-------------------
**One manager per run.**  The process that runs the session — the xdist
controller, or the only process without xdist — starts a manager in
``pytest_configure``, before any worker exists (or uses the one named by
``--papertiger-address`` / ``PAPERTIGER_ADDRESS``, e.g. a daemon).  It hands
the address, the authkey and the run's id to every worker through
``pytest_configure_node`` → ``workerinput``.  A worker never starts a manager:
it exports ``PAPERTIGER_ADDRESS`` / ``PAPERTIGER_AUTHKEY``, so its first store
call connects to the run's manager and processes that tests start inherit
it.  The controller stops the manager in ``pytest_unconfigure``, after the
last worker has finished; the manager also follows the controller out if it
dies (it watches its stdin), and its shared memory goes with it.

**A namespace per test.**  The ``papertiger_namespace`` fixture checks out
``("pytest-<run>", "<worker>", "<node id>")`` (a rerun of the same node id
in a process gets ``#2``, ``#3``...), makes it the process default (so threads
and asyncio tasks the test starts see it) and exports it through
``PAPERTIGER_NAMESPACE`` (so child processes do too).  At teardown, failed
test or not, it clears that namespace and every namespace nested under it,
in every table, and restores the previous default.  With a manager that
outlives the run (a daemon), the controller also clears the run's whole
``("pytest-<run>",)`` subtree at the end, whatever a crashed worker left.

**Once per run.**  :func:`papertiger.once` results are stored outside every
namespace, so per-test cleanup never touches them.  With a run-private
manager they die with it; with a daemon, keys are scoped by the run's id
(``PAPERTIGER_ONCE_SCOPE``) and the run's results are deleted at its end, so
a factory still runs once per run.  :func:`once_fixture` turns a function
into a session fixture made once across all workers.

**Reports.**  A failing test's report gets a ``papertiger`` section naming
its namespace; with ``--papertiger-dump`` it also lists the records the test
left there (read from this process's replica, before teardown clears them).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import secrets
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import msgpack
import pytest

from . import namespace as _namespace
from .engine.client import Channel
from .engine.protocol import ONCE_NAMESPACE, ONCE_TABLE
from .engine.server import (
    ENV_ADDRESS,
    ENV_AUTHKEY,
    Server,
    current_client,
    serve,
    use_manager,
)
from .errors import NotFound, StoreError
from .namespace import (
    ENV_NAMESPACE,
    GLOBAL,
    Namespace,
    NamespaceLike,
    is_nested,
    normalize_namespace,
    set_default_namespace,
    use_namespace,
)
from .once import ENV_ONCE_SCOPE, once
from .state import State

__all__ = ["RunInfo", "clear_namespace", "dump_namespace", "once_fixture", "papertiger_namespace"]

#: Key of the run's details in an xdist worker's ``workerinput``.
WORKERINPUT_KEY = "papertiger"
#: Most records shown per table and namespace by ``--papertiger-dump``.
DUMP_LIMIT = 50
_MAX_PART = 200  # a namespace part's longest length (see papertiger.namespace)


@dataclass
class RunInfo:
    """The run's manager as every process of the run sees it (plain data)."""

    address: str
    authkey: str  # hex
    run_id: str
    external: bool  # a manager that outlives the run (a daemon)
    manager_pid: int = 0
    worker: str = "main"
    control: str = ""
    _reruns: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def root(self) -> Namespace:
        """The namespace every test namespace of this run is nested under."""
        return (f"pytest-{self.run_id}",)

    def workerinput(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "authkey": self.authkey,
            "run_id": self.run_id,
            "external": self.external,
            "manager_pid": self.manager_pid,
        }

    def environ(self) -> dict[str, str]:
        """The variables that point this process and its children at the run's manager."""
        env = {ENV_ADDRESS: self.address, ENV_AUTHKEY: self.authkey}
        if self.external:
            env[ENV_ONCE_SCOPE] = f"pytest-{self.run_id}"
        return env

    def checkout(self, nodeid: str) -> Namespace:
        """A namespace for one run of test ``nodeid`` in this process, never handed out twice."""
        n = self._reruns.get(nodeid, 0) + 1
        self._reruns[nodeid] = n
        part = nodeid if n == 1 else f"{nodeid}#{n}"
        if len(part) > _MAX_PART:
            digest = hashlib.sha1(part.encode()).hexdigest()[:16]
            part = f"{part[: _MAX_PART - 18]}~{digest}"
        return (*self.root, self.worker, part)


_RUN = pytest.StashKey[RunInfo]()
_CLEANUP = pytest.StashKey[contextlib.ExitStack]()
_TEST_NS = pytest.StashKey[Namespace]()


# -- options ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("papertiger", "papertiger: a shared store of Stripe-shaped data")
    group.addoption(
        "--papertiger-address",
        dest="papertiger_address",
        default=None,
        metavar="PATH",
        help="use the running papertiger manager (e.g. a daemon) at this socket address "
        f"instead of starting one for the run; default: ${ENV_ADDRESS}.",
    )
    group.addoption(
        "--papertiger-authkey",
        dest="papertiger_authkey",
        default=None,
        metavar="HEX",
        help=f"the authkey (hex) of --papertiger-address; default: ${ENV_AUTHKEY}.",
    )
    group.addoption(
        "--papertiger-dump",
        dest="papertiger_dump",
        action="store_true",
        default=False,
        help="on a failing test, also show the records it left in its namespace.",
    )
    parser.addini(
        "papertiger_autouse",
        type="bool",
        default=False,
        help="give every test its own papertiger namespace without naming the "
        "papertiger_namespace fixture.",
    )


# -- the run's manager ---------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "papertiger: run the test in its own papertiger namespace (the papertiger_namespace "
        "fixture), cleared after it.",
    )
    if getattr(config.option, "help", False):
        return
    stack = contextlib.ExitStack()
    config.stash[_CLEANUP] = stack
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        given = workerinput.get(WORKERINPUT_KEY)
        if given is None:  # the controller runs without this plugin: leave discovery alone
            return
        run = RunInfo(**given, worker=str(workerinput.get("workerid", "worker")))
        stack.enter_context(_exported(run.environ()))
        stack.enter_context(use_manager(run.address, bytes.fromhex(run.authkey)))
    else:
        run = _start_run(config, stack)
    config.stash[_RUN] = run


def _start_run(config: pytest.Config, stack: contextlib.ExitStack) -> RunInfo:
    """Start (or find) the run's manager and point this process at it."""
    run_id = secrets.token_hex(4)
    address = config.option.papertiger_address or os.environ.get(ENV_ADDRESS)
    if address:
        authkey = config.option.papertiger_authkey or os.environ.get(ENV_AUTHKEY)
        if not authkey:
            raise pytest.UsageError(
                f"papertiger: a manager address was given ({address}) but no authkey; "
                f"pass --papertiger-authkey HEX or set {ENV_AUTHKEY}."
            )
        try:
            bytes.fromhex(authkey)
            probe = Channel(address, bytes.fromhex(authkey))
            try:
                _, info = probe.request(["hello"])
            finally:
                probe.close()
        except (StoreError, ValueError) as exc:
            raise pytest.UsageError(
                f"papertiger: cannot use the manager at {address}: {exc}\n"
                f"Start one ('papertiger daemon start'), fix --papertiger-address / "
                f"{ENV_ADDRESS}, or unset it to get a manager for this run."
            ) from None
        run = RunInfo(
            address=address,
            authkey=authkey,
            run_id=run_id,
            external=True,
            manager_pid=int(info["pid"]),
            control=str(info["control"]),
        )
        stack.enter_context(_exported(run.environ()))
        stack.enter_context(use_manager(run.address, bytes.fromhex(run.authkey)))
        stack.callback(_clear_run, run)  # runs first: while still connected
        return run
    try:
        server: Server = stack.enter_context(serve())
    except StoreError as exc:
        raise pytest.UsageError(
            f"papertiger: could not start the manager for this run: {exc}\n"
            "Run with -p no:papertiger to run without it."
        ) from None
    run = RunInfo(
        address=server.address,
        authkey=server.authkey.hex(),
        run_id=run_id,
        external=False,
        manager_pid=server.pid,
        control=server.control,
    )
    stack.enter_context(_exported(run.environ()))
    return run


@contextlib.contextmanager
def _exported(env: dict[str, str]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for the block, then restore what was there."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _clear_run(run: RunInfo) -> None:
    """Remove what the run left in a manager that outlives it: its namespaces, its once results."""
    try:
        client = current_client()
        client.request(["clear_namespace", None, list(run.root)])
        scope = run.environ()[ENV_ONCE_SCOPE] + ":"
        with client.replica.lock:
            partition = client.replica.catch_up().partition(ONCE_TABLE, ONCE_NAMESPACE)
            keys = [k for k in (partition.records if partition else ()) if k.startswith(scope)]
        for key in keys:
            with contextlib.suppress(NotFound):
                client.request(["delete", ONCE_TABLE, "once", list(ONCE_NAMESPACE), key])
    except StoreError as exc:  # the manager went away: nothing left to clean
        warnings.warn(f"papertiger: could not clean up after the run: {exc}", stacklevel=1)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: hand the run's manager to a worker before it starts."""
    run = node.config.stash.get(_RUN, None)
    if run is not None:
        node.workerinput[WORKERINPUT_KEY] = run.workerinput()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    stack = config.stash.get(_CLEANUP, None)
    if stack is not None:
        del config.stash[_CLEANUP]
        stack.close()


def pytest_report_header(config: pytest.Config) -> str | None:
    run = config.stash.get(_RUN, None)
    if run is None:
        return None
    where = "given by the address option" if run.external else "started for this run"
    return (
        f"papertiger: manager pid {run.manager_pid} at {run.address} ({where}), "
        f"control {run.control}, run {run.run_id}"
    )


# -- the per-test namespace ------------------------------------------------------------


def _run_of(config: pytest.Config) -> RunInfo:
    run = config.stash.get(_RUN, None)
    if run is None:
        # a worker whose controller runs without the plugin: a private, unique root
        run = RunInfo(address="", authkey="", run_id=secrets.token_hex(4), external=False)
        run.worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        config.stash[_RUN] = run
    return run


@pytest.fixture
def papertiger_namespace(request: pytest.FixtureRequest) -> Iterator[Namespace]:
    """A namespace unique to this test, current for it, cleared after it.

    The namespace is the process default while the test runs, so threads and
    asyncio tasks it starts use it too, and it is exported through
    ``PAPERTIGER_NAMESPACE`` to the processes it starts.  At teardown (even
    after a failure) it and every namespace nested under it are cleared, in
    every table.  Yields the namespace (a tuple of str).
    """
    run = _run_of(request.config)
    ns = run.checkout(request.node.nodeid)
    request.node.stash[_TEST_NS] = ns
    saved_default = _namespace._default
    saved_env = os.environ.get(ENV_NAMESPACE)
    set_default_namespace(ns, export=True)
    try:
        yield ns
    finally:
        try:
            clear_namespace(ns)
        finally:
            set_default_namespace(saved_default)
            if saved_env is None:
                os.environ.pop(ENV_NAMESPACE, None)
            else:
                os.environ[ENV_NAMESPACE] = saved_env


@pytest.fixture(autouse=True)
def _papertiger_autouse(request: pytest.FixtureRequest) -> None:
    """Apply ``papertiger_namespace`` to marked tests, or to all with ``papertiger_autouse``."""
    if request.node.get_closest_marker("papertiger") is not None or request.config.getini(
        "papertiger_autouse"
    ):
        request.getfixturevalue("papertiger_namespace")


def _nested_partitions(state: State, ns: Namespace) -> list[tuple[str, Namespace]]:
    """``(table, namespace)`` of every non-empty partition at or under ``ns``, sorted."""
    return sorted(
        (table, key)
        for table, partitions in state.tables.items()
        for key, partition in partitions.items()
        if partition.records and is_nested(key, ns)
    )


def clear_namespace(ns: NamespaceLike) -> None:
    """Remove ``ns`` and every namespace nested under it, in every table.

    Skips the write when this process's replica shows nothing there: O(p) for
    p partitions, plus one write when there is something to clear.
    """
    key = normalize_namespace(ns)
    client = current_client()
    with client.replica.lock:
        found = _nested_partitions(client.replica.catch_up(), key)
    if found:
        client.request(["clear_namespace", None, list(key)])


def dump_namespace(ns: NamespaceLike, limit: int = DUMP_LIMIT) -> str:
    """The records at or under ``ns``, every table, as text (one JSON record a line)."""
    key = normalize_namespace(ns)
    client = current_client()
    lines: list[str] = []
    with client.replica.lock:
        state = client.replica.catch_up()
        for table, where in _nested_partitions(state, key):
            partition = state.tables[table][where]
            total = len(partition.records)
            lines.append(f"{table} in {'/'.join(where)}: {total} record(s)")
            for i, packed in enumerate(partition.newest_first()):
                if i == limit:
                    lines.append(f"  ... and {total - limit} more")
                    break
                record = msgpack.unpackb(packed)
                lines.append("  " + json.dumps(record, sort_keys=True, default=repr))
    return "\n".join(lines) if lines else "no records left"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        ns = item.stash.get(_TEST_NS, None)
        if ns is not None:
            text = f"namespace: {ns!r}"
            if item.config.option.papertiger_dump:
                try:
                    text += "\n" + dump_namespace(ns)
                except StoreError as exc:
                    text += f"\ncould not read its records: {exc}"
            report.sections.append(("papertiger", text))
    return report


# -- made once per run -----------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


@overload
def once_fixture(func: F) -> F: ...


@overload
def once_fixture(
    func: None = None,
    *,
    key: str | None = None,
    namespace: NamespaceLike = GLOBAL,
    scope: str = "session",
    name: str | None = None,
) -> Callable[[F], F]: ...


def once_fixture(
    func: Callable[..., Any] | None = None,
    *,
    key: str | None = None,
    namespace: NamespaceLike = GLOBAL,
    scope: str = "session",
    name: str | None = None,
) -> Any:
    """Declare a fixture whose value is made once per run, across every xdist worker.

    The function runs in the first process that needs the fixture (other
    workers wait, then get the same value); it runs with ``namespace``
    current (:data:`papertiger.GLOBAL` by default), so records it writes are
    shared and no test's cleanup removes them.  Its value must be msgpack-able.
    It may take other fixtures as arguments; it may not be a generator.
    ``key`` defaults to the function's module and qualified name.

    Usage::

        @once_fixture
        def catalogue():
            return [Products.insert({"name": n}) for n in ("basic", "pro")]
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"once_fixture: {fn.__qualname__} must return its value; a value made once "
                "for all workers cannot be torn down per worker (no yield, no async def)."
            )
        once_key = key or f"fixture:{fn.__module__}.{fn.__qualname__}"
        ns = normalize_namespace(namespace)

        @functools.wraps(fn)
        def made_once(*args: Any, **kwargs: Any) -> Any:
            def factory() -> Any:
                with use_namespace(ns):
                    return fn(*args, **kwargs)

            return once(once_key, factory)

        return pytest.fixture(scope=scope, name=name)(made_once)  # type: ignore[call-overload]

    return decorate if func is None else decorate(func)
