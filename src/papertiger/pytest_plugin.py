"""The pytest and pytest-xdist integration: one store per run, a namespace per test.

Active once papertiger is installed (entry point ``pytest11``, name
``papertiger``); ``-p no:papertiger`` turns it off.

Theory of operation
-------------------
**Nothing until used.**  Importing this plugin imports no engine, and a run
whose tests never touch the store starts nothing.  The process that runs the
session (the xdist controller, or the only process without xdist) decides
*where* the run's store will be, in ``pytest_configure``, before any worker
exists:

* ``--papertiger-url URL`` / ``PAPERTIGER_URL``: that Redis; no manager at all;
* ``--papertiger-address`` / ``PAPERTIGER_ADDRESS``: that manager (a daemon);
* otherwise a manager **on demand**: a private socket address and authkey in
  a fresh 0700 directory, and ``PAPERTIGER_START`` naming this process as the
  owner.  The first store call of the run, in whichever process,
  starts the manager there (:func:`papertiger.engine.spawn.ensure_manager`,
  under a lock: one manager per run, shared by every worker); it exits with
  its owner.

It hands that to every worker through ``pytest_configure_node`` →
``workerinput``; a worker only exports the variables, so its first store call
(and those of the processes its tests start) finds the run's store.  At the
end the controller stops the manager if one was started, and removes the
directory.

**A namespace per test.**  The ``papertiger_namespace`` fixture checks out
``("pytest-<run>", "<worker>", "<node id>")`` (a rerun of the same node id
in a process gets ``#2``, ``#3``...), makes it the process default (so threads
and asyncio tasks the test starts see it) and exports it through
``PAPERTIGER_NAMESPACE`` (so child processes do too).  At teardown, failed
test or not, it clears that namespace and every namespace nested under it,
in every table, if this process uses the store.  With a store that outlives
the run (a daemon, Redis), the controller also clears the run's whole
``("pytest-<run>",)`` subtree at the end, and the run's ``once`` results,
when any process of the run used the store (workers report it through
``workeroutput``); nothing else in that store is touched, so two runs can
share one.

**Once per run.**  :func:`papertiger.once` results are stored outside every
namespace, so per-test cleanup never touches them.  With a run-private
manager they die with it; with a daemon or Redis, keys are scoped by the
run's id (``PAPERTIGER_ONCE_SCOPE``) and the run's results are deleted at
its end, so a factory still runs once per run.  :func:`once_fixture` turns a
function into a session fixture made once across all workers.

**Stripe's HTTP API.**  The ``papertiger_stripe`` fixture needs a server
that speaks Stripe's API over the run's store.  The controller only names a
private directory for it (the on-demand manager's, or a fresh one); the
first test that asks starts one server process there, under a lock
(:func:`papertiger.http.server.ensure_server`), with the variables that name
the run's store; every worker then finds it through ``http.json``.  It
follows the controller out and is stopped at the end of the run.  Tests stay
apart because each one's API key names its own namespace.

**Reports.**  A failing test's report gets a ``papertiger`` section naming
its namespace; with ``--papertiger-dump`` it also lists the records the test
left there (read before teardown clears them).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import secrets
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import pytest

from . import env
from .errors import StoreError
from .namespace import (
    GLOBAL,
    Namespace,
    NamespaceLike,
    normalize_namespace,
    set_default_namespace,
    use_namespace,
)

__all__ = [
    "RunInfo",
    "clear_namespace",
    "dump_namespace",
    "once_fixture",
    "papertiger_namespace",
    "papertiger_stripe",
    "run_namespace",
]

#: Key of the run's details in an xdist worker's ``workerinput`` (and ``workeroutput``).
WORKERINPUT_KEY = "papertiger"
#: Most records shown per table and namespace by ``--papertiger-dump``.
DUMP_LIMIT = 50
_MAX_PART = 200  # a namespace part's longest length (see papertiger.namespace)
SOCKET_NAME = "store.sock"

#: Where the run's store is: a manager started on first use, one given by address, Redis.
ON_DEMAND, ADDRESS, URL = "on-demand", "address", "url"


@dataclass
class RunInfo:
    """The run's store as every process of the run sees it (plain data)."""

    run_id: str
    kind: str = ON_DEMAND
    address: str = ""
    authkey: str = ""  # hex
    url: str = ""
    owner_pid: int = 0
    #: the run's private directory for its HTTP server (papertiger_stripe), and its owner
    http_dir: str = ""
    http_owner: int = 0
    worker: str = "main"
    _reruns: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def external(self) -> bool:
        """True when the store outlives the run (a daemon, Redis)."""
        return self.kind != ON_DEMAND

    @property
    def root(self) -> Namespace:
        """The namespace every test namespace of this run is nested under."""
        return (f"pytest-{self.run_id}",)

    def workerinput(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "address": self.address,
            "authkey": self.authkey,
            "url": self.url,
            "owner_pid": self.owner_pid,
            "http_dir": self.http_dir,
            "http_owner": self.http_owner,
        }

    def environ(self) -> dict[str, str | None]:
        """The variables that point this process and its children at the run's store."""
        if self.kind == URL:
            found: dict[str, str | None] = {env.URL: self.url}
            found.update({env.ADDRESS: None, env.AUTHKEY: None, env.START: None})
        else:
            found = {env.URL: None, env.ADDRESS: self.address, env.AUTHKEY: self.authkey}
            found[env.START] = str(self.owner_pid) if self.kind == ON_DEMAND else None
        found[env.ONCE_SCOPE] = f"pytest-{self.run_id}" if self.external else None
        return found

    def describe(self) -> str:
        if self.kind == URL:
            from .backends.urls import redact

            return f"Redis at {redact(self.url)}"
        if self.kind == ADDRESS:
            return f"the manager at {self.address} (given by the address option)"
        return f"a manager started on first use at {self.address}"

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
_USED = pytest.StashKey[bool]()
_TEST_NS = pytest.StashKey[Namespace]()


def store_in_use() -> bool:
    """True when this process has connected to a store (never connects by itself). O(1)."""
    backends = sys.modules.get("papertiger.backends")
    return backends is not None and bool(backends.in_use())


# -- options ---------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("papertiger", "papertiger: a shared store of Stripe-shaped data")
    group.addoption(
        "--papertiger-url",
        dest="papertiger_url",
        default=None,
        metavar="URL",
        help="keep the run's data in the Redis at URL (redis://, rediss://, unix://, "
        f"redis+cluster://) instead of a shared-memory manager; default: ${env.URL}.",
    )
    group.addoption(
        "--papertiger-address",
        dest="papertiger_address",
        default=None,
        metavar="PATH",
        help="use the running papertiger manager (e.g. a daemon) at this socket address "
        f"instead of starting one for the run; default: ${env.ADDRESS}.",
    )
    group.addoption(
        "--papertiger-authkey",
        dest="papertiger_authkey",
        default=None,
        metavar="HEX",
        help=f"the authkey (hex) of --papertiger-address; default: ${env.AUTHKEY}.",
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


# -- the run's store -------------------------------------------------------------


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
        stack.enter_context(env.exported(run.environ()))
        stack.enter_context(_pointed_at(run))
    else:
        run = _choose_store(config, stack)
    config.stash[_RUN] = run
    _set_this_run(run, stack)


def _choose_store(config: pytest.Config, stack: contextlib.ExitStack) -> RunInfo:
    """Decide where the run's store is; start nothing (see the module doc)."""
    run_id = secrets.token_hex(4)
    url = config.option.papertiger_url or env.url()
    address = config.option.papertiger_address or env.get(env.ADDRESS)
    if url:
        run = RunInfo(run_id, URL, url=url)
    elif address:
        authkey = config.option.papertiger_authkey or env.get(env.AUTHKEY)
        if not authkey:
            raise pytest.UsageError(
                f"papertiger: a manager address was given ({address}) but no authkey; "
                f"pass --papertiger-authkey HEX or set {env.AUTHKEY}."
            )
        try:
            bytes.fromhex(authkey)
        except ValueError:
            raise pytest.UsageError(
                f"papertiger: the authkey of {address} must be hex, as papertiger prints it."
            ) from None
        from .engine.spawn import answers

        if not answers(address):
            raise pytest.UsageError(
                f"papertiger: cannot use the manager at {address}: nothing answers there.\n"
                f"Start one ('papertiger daemon start'), fix --papertiger-address / "
                f"{env.ADDRESS}, or unset it to get a manager for this run."
            )
        run = RunInfo(run_id, ADDRESS, address=address, authkey=authkey)
    else:
        directory = tempfile.mkdtemp(prefix="ptg-run-")  # 0700
        run = RunInfo(
            run_id,
            ON_DEMAND,
            address=os.path.join(directory, SOCKET_NAME),
            authkey=secrets.token_bytes(32).hex(),
            owner_pid=os.getpid(),
        )
        stack.callback(_end_on_demand, run)  # the very last: after every connection is gone
    _plan_http(run, stack)
    stack.enter_context(env.exported(run.environ()))
    stack.enter_context(_pointed_at(run))
    if run.external:
        stack.callback(_clear_run, config, run)  # first: while still pointed at the store
    return run


@contextlib.contextmanager
def _pointed_at(run: RunInfo) -> Iterator[None]:
    """Point this process's store calls at the run's store for the run; then put back what was.

    A process that has not loaded papertiger's backends yet needs only the
    variables (its first store call reads them); one that has (pytester's
    in-process runs) is switched over and switched back.
    """
    if "papertiger.backends" not in sys.modules:
        try:
            yield
        finally:
            backends = sys.modules.get("papertiger.backends")
            if backends is not None:  # loaded during the run: its connections were the run's
                with contextlib.suppress(Exception):
                    backends.disconnect()
        return
    from .backends import SHM, backend_for_url, use_backend
    from .engine import connection

    if run.kind == URL:
        with use_backend(backend_for_url(run.url)):
            yield
        return
    owner = run.owner_pid if run.kind == ON_DEMAND else None
    authkey = bytes.fromhex(run.authkey)
    with connection.use_manager(run.address, authkey, start_owner=owner), use_backend(SHM):
        yield


def _end_on_demand(run: RunInfo) -> None:
    """Stop the run's manager if anyone started it; remove its directory."""
    if os.path.exists(run.address):
        from .engine.spawn import stop_manager_at

        stop_manager_at(run.address, bytes.fromhex(run.authkey))
    shutil.rmtree(os.path.dirname(run.address), ignore_errors=True)


def _clear_run(config: pytest.Config, run: RunInfo) -> None:
    """Remove what the run left in a store that outlives it: its namespaces, its once results."""
    if not (config.stash.get(_USED, False) or store_in_use()):
        return  # nobody used it: nothing to clear, and no reason to connect
    try:
        from .backends import current_backend

        backend = current_backend()
        backend.clear_namespace(None, run.root)
        scope = f"pytest-{run.run_id}:"
        for key in backend.once_keys(scope):
            backend.once_forget(key)
    except StoreError as exc:  # the store went away: nothing left to clean
        warnings.warn(f"papertiger: could not clean up after the run: {exc}", stacklevel=1)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: hand the run's store to a worker before it starts."""
    run = node.config.stash.get(_RUN, None)
    if run is not None:
        node.workerinput[WORKERINPUT_KEY] = run.workerinput()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist: note whether a finished worker used the store (for the end-of-run cleanup)."""
    output = getattr(node, "workeroutput", None) or {}
    if output.get(WORKERINPUT_KEY, {}).get("used"):
        node.config.stash[_USED] = True


def pytest_sessionfinish(session: pytest.Session) -> None:
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[WORKERINPUT_KEY] = {"used": store_in_use()}


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
    return f"papertiger: {run.describe()}, run {run.run_id}"


# -- the per-test namespace ------------------------------------------------------------


#: The run this process takes part in (set in ``pytest_configure``), for :func:`run_namespace`.
_this_run: RunInfo | None = None


def _set_this_run(run: RunInfo, stack: contextlib.ExitStack) -> None:
    global _this_run
    previous, _this_run = _this_run, run

    def restore() -> None:  # an in-process run (pytester) hands the outer one back
        global _this_run
        _this_run = previous

    stack.callback(restore)


def run_namespace(*parts: str) -> Namespace:
    """A namespace of this test run, shared by all its workers and outside every test's.

    ``("pytest-<run>", "shared", *parts)``: what a :func:`once_fixture` should
    write into when the run's store outlives it (a daemon, Redis), because the
    run's whole ``pytest-<run>`` subtree is cleared at its end and two runs
    never see each other's.  Call it once the run is configured (in a
    conftest, a fixture or a test).

    For instance ``run_namespace("catalogue")`` in run ``1a2b3c4d`` is
    ``("pytest-1a2b3c4d", "shared", "catalogue")``.
    """
    if _this_run is None:
        raise RuntimeError(
            "run_namespace() needs a pytest run with the papertiger plugin: call it from a "
            "conftest, a fixture or a test, not at import time of a plugin."
        )
    return normalize_namespace((*_this_run.root, "shared", *parts))


def _run_of(config: pytest.Config) -> RunInfo:
    run = config.stash.get(_RUN, None)
    if run is None:
        # a worker whose controller runs without the plugin: a private, unique root
        run = RunInfo(secrets.token_hex(4))
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
    saved_env = os.environ.get(env.NAMESPACE)
    saved_default = set_default_namespace(ns, export=True)
    try:
        yield ns
    finally:
        try:
            if store_in_use():
                clear_namespace(ns)
        finally:
            set_default_namespace(saved_default)
            if saved_env is None:
                os.environ.pop(env.NAMESPACE, None)
            else:
                os.environ[env.NAMESPACE] = saved_env


# -- Stripe's HTTP API ---------------------------------------------------------------

_HTTP_URL = pytest.StashKey[str]()


def _plan_http(run: RunInfo, stack: contextlib.ExitStack) -> None:
    """Where the run's HTTP server will live if a test asks for one; starts nothing."""
    if run.kind == ON_DEMAND:
        run.http_dir = os.path.dirname(run.address)  # the run's private directory
    else:
        run.http_dir = tempfile.mkdtemp(prefix="ptg-run-")  # 0700
        stack.callback(shutil.rmtree, run.http_dir, True)
    run.http_owner = os.getpid()
    stack.callback(_stop_http, run)  # before the store it uses goes


def _stop_http(run: RunInfo) -> None:
    if run.http_dir and os.path.isdir(run.http_dir):
        from .http.server import stop_server

        stop_server(run.http_dir)


def _http_url(config: pytest.Config) -> str:
    """The run's HTTP server: started on first use in the run, then shared by every worker."""
    url = config.stash.get(_HTTP_URL, None)
    if url is not None:
        return url
    run = _run_of(config)
    if run.http_dir and run.http_owner:
        from .http.server import ensure_server

        environ = {**run.environ(), env.NAMESPACE: None}  # namespaces come from the keys
        url = ensure_server(run.http_dir, environ, run.http_owner).url
    else:  # a worker whose controller runs without this plugin: a server in this process
        from .http.server import serve_http

        stack = config.stash.get(_CLEANUP, None)
        if stack is None:
            stack = config.stash[_CLEANUP] = contextlib.ExitStack()
        url = stack.enter_context(serve_http()).url
    config.stash[_HTTP_URL] = url
    return url


@pytest.fixture
def papertiger_stripe(request: pytest.FixtureRequest, papertiger_namespace: Namespace) -> Any:
    """stripe-python pointed at papertiger, in this test's namespace.

    Yields an object with ``.url`` (the server), ``.api_key`` (a key that
    reads and writes this test's namespace), ``.client`` (a
    ``stripe.StripeClient`` using both), and ``.pay(session)`` /
    ``.cancel(session)`` (the hosted checkout page's buttons).  While the test
    runs, ``stripe.api_key`` and ``stripe.api_base`` point at papertiger too.
    Records the test writes through the store API are what the API serves,
    and the other way round.  The server is started once per run, on first
    use, and shared by every xdist worker; each test's key keeps its data apart.
    """
    from .http.testing import stripe_for

    with stripe_for(_http_url(request.config), papertiger_namespace) as api:
        yield api


@pytest.fixture(autouse=True)
def _papertiger_autouse(request: pytest.FixtureRequest) -> None:
    """Apply ``papertiger_namespace`` to marked tests, or to all with ``papertiger_autouse``."""
    if request.node.get_closest_marker("papertiger") is not None or request.config.getini(
        "papertiger_autouse"
    ):
        request.getfixturevalue("papertiger_namespace")


def clear_namespace(ns: NamespaceLike) -> None:
    """Remove ``ns`` and every namespace nested under it, in every table.

    Skips the write when the store shows nothing there (on shared memory a
    read of this process's replica): O(p) for p partitions, plus one write
    when there is something to clear.
    """
    from .backends import current_backend

    key = normalize_namespace(ns)
    backend = current_backend()
    if backend.partitions(key):
        backend.clear_namespace(None, key)


def dump_namespace(ns: NamespaceLike, limit: int = DUMP_LIMIT) -> str:
    """The records at or under ``ns``, every table, as text (one JSON record a line)."""
    import msgpack

    from .backends import current_backend
    from .backends.base import TableSpec

    key = normalize_namespace(ns)
    backend = current_backend()
    lines: list[str] = []
    for info in backend.partitions(key):
        lines.append(f"{info.table} in {'/'.join(info.namespace)}: {info.size} record(s)")
        packed = backend.records(TableSpec(info.table, info.table), info.namespace)
        for i, record in enumerate(packed):
            if i == limit:
                lines.append(f"  ... and {info.size - limit} more")
                break
            lines.append("  " + json.dumps(msgpack.unpackb(record), sort_keys=True, default=repr))
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
                    text += "\n" + (dump_namespace(ns) if store_in_use() else "no records left")
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
    namespace: NamespaceLike | Callable[[], NamespaceLike] = GLOBAL,
    scope: str = "session",
    name: str | None = None,
) -> Callable[[F], F]: ...


def once_fixture(
    func: Callable[..., Any] | None = None,
    *,
    key: str | None = None,
    namespace: NamespaceLike | Callable[[], NamespaceLike] = GLOBAL,
    scope: str = "session",
    name: str | None = None,
) -> Any:
    """Declare a fixture whose value is made once per run, across every xdist worker.

    The function runs in the first process that needs the fixture (other
    workers wait, then get the same value); it runs with ``namespace``
    current (:data:`papertiger.GLOBAL` by default), so records it writes are
    shared and no test's cleanup removes them.  ``namespace`` may be a
    function that returns one, called when the value is first needed: pass
    ``lambda: run_namespace("catalogue")`` for a namespace of the run, which
    is cleared with the run on a store that outlives it.  Its value must be
    msgpack-able.  It may take other fixtures as arguments; it may not be a
    generator.  ``key`` defaults to the function's module and qualified name.

    Usage::

        @once_fixture(namespace=lambda: run_namespace("catalogue"))
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
        fixed = None if callable(namespace) else normalize_namespace(namespace)

        @functools.wraps(fn)
        def made_once(*args: Any, **kwargs: Any) -> Any:
            ns = fixed if fixed is not None else normalize_namespace(namespace())  # type: ignore[operator]

            def factory() -> Any:
                with use_namespace(ns):
                    return fn(*args, **kwargs)

            from .once import once

            return once(once_key, factory)

        return pytest.fixture(scope=scope, name=name)(made_once)  # type: ignore[call-overload]

    return decorate if func is None else decorate(func)
