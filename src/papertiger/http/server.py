"""Running the API: in this process (:func:`serve_http`), or as a process of its own.

Theory of operation
-------------------
The server is uvicorn serving :func:`~.app.build_app`.  It binds its socket
before anything else (so ``port=0`` is resolved, and a taken port fails at
once) and hands it to uvicorn.

* :func:`serve_http` runs it on a thread of this process, for a ``with``
  block; handlers use the store this process uses.
* ``python -m papertiger.http`` (:func:`main`) runs it as a process of its
  own: it reads one JSON line of configuration on stdin (host, port, the
  ``PAPERTIGER_*`` variables that name the store, an owner pid to follow),
  prints one JSON line when it listens (``{"url", "port", "pid"}``, or
  ``{"error"}``), and stops on SIGTERM, SIGINT, or when its owner exits.
  ``papertiger serve --http``, the daemon's ``--http`` and the pytest plugin
  start it through :func:`start_server_process`.
* :func:`ensure_server` is the pytest plugin's "once per run, on demand":
  under an ``flock`` in the run's directory, the first caller starts the
  process and writes ``http.json`` there; everyone else reads it.
  :func:`stop_server` (the run's owner, at the end) stops it.

The process does not touch the store until its first request, so starting
it costs no store connection; its store is whatever its environment names,
exactly as for any other papertiger process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .. import env
from ..errors import StoreError, StoreUnavailable

__all__ = [
    "HttpServer",
    "ensure_server",
    "main",
    "parse_address",
    "serve_http",
    "start_server_process",
    "stop_process",
    "stop_server",
]

log = logging.getLogger("papertiger.http")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: The file in a run's directory that says where its HTTP server is.
STATE_FILE = "http.json"


@dataclass(frozen=True)
class HttpServer:
    """Where an HTTP server listens: ``url`` (``http://127.0.0.1:8123``) and ``port``."""

    url: str
    port: int
    host: str = "127.0.0.1"
    pid: int = 0

    def __repr__(self) -> str:
        return f"<papertiger.HttpServer {self.url}>"


HttpServer.__module__ = "papertiger.http"


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"8123"``, ``":8123"``, ``"0.0.0.0:8123"``, ``"[::1]:8123"`` -> ``(host, port)``.

    >>> parse_address("8123"), parse_address("0.0.0.0:0"), parse_address("[::1]:80")
    (('127.0.0.1', 8123), ('0.0.0.0', 0), ('::1', 80))
    """
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"invalid HTTP address {text!r}: expected [HOST:]PORT with PORT from 0 to 65535 "
            "(0 picks a free port)."
        )
    return host, int(port)


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host
    if shown == "::":
        shown = "::1"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it Nagle's algorithm and delayed ACKs add 40 ms to every response
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StoreError(
            f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}. Choose another port "
            "(0 picks a free one)."
        ) from None
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def _uvicorn_server(app: Any) -> Any:
    import importlib.util

    import uvicorn

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    config = uvicorn.Config(
        app,
        http=http,
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    return uvicorn.Server(config)


def _missing_extra() -> StoreError:
    return StoreError(
        "papertiger's HTTP API needs starlette and uvicorn: pip install 'papertiger[http]'."
    )


@contextlib.contextmanager
def serve_http(host: str = "127.0.0.1", port: int = 0) -> Iterator[HttpServer]:
    """Serve Stripe's API from this process for the ``with`` block.

    Requests use the store this process uses (the namespace comes from each
    request's API key: :func:`papertiger.api_key_for`).  ``port=0`` picks a
    free port.  Yields an :class:`HttpServer` with ``url`` and ``port``;
    raises :class:`~papertiger.StoreError` when the port cannot be bound.

    >>> import papertiger, urllib.request
    >>> with papertiger.serve(), papertiger.serve_http() as api:
    ...     urllib.request.urlopen(api.url + "/papertiger/health").status
    200
    """
    try:
        from .app import build_app
    except ImportError:
        raise _missing_extra() from None
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    server = _uvicorn_server(build_app())
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"papertiger-http-{bound}", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        if not server.started:
            server.should_exit = True
            thread.join(STOP_TIMEOUT)
            raise StoreError(
                f"the HTTP server did not start: {failure[0] if failure else 'timeout'}"
            )
        yield HttpServer(_url(host, bound), bound, host, os.getpid())
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()


# -- a process of its own --------------------------------------------------------------------


def start_server_process(
    host: str,
    port: int,
    store_env: Mapping[str, str | None],
    *,
    owner_pid: int | None = None,
    log_path: str | None = None,
    detached: bool = False,
    timeout: float = START_TIMEOUT,
) -> tuple[subprocess.Popen[bytes], HttpServer]:
    """Start ``python -m papertiger.http``; return the process and where it listens.

    ``store_env`` holds the ``PAPERTIGER_*`` variables naming the store (None
    unsets one).  With ``owner_pid`` the server exits when that process does.
    Raises :class:`~papertiger.StoreError` with the server's own message when
    it cannot start (a taken port).
    """
    from ..engine.spawn import start_process

    config = {
        "host": host,
        "port": port,
        "env": dict(store_env),
        "owner_pid": owner_pid,
    }
    proc, report = start_process(
        "papertiger.http",
        json.dumps(config),
        keep_stdin=False,
        log_path=log_path,
        detached=detached,
        timeout=timeout,
        what="papertiger's HTTP server",
    )
    if proc.stdout is not None and not proc.stdout.closed:
        proc.stdout.close()
    return proc, HttpServer(str(report["url"]), int(report["port"]), host, int(report["pid"]))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """Stop a server process this process started: SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _follow_owner(owner: int, server: Any) -> None:
    from ..engine.shm import pid_alive

    while not server.should_exit:
        if not pid_alive(owner):
            log.info("owner pid %d exited; stopping", owner)
            server.should_exit = True
            return
        time.sleep(0.5)


def main() -> None:
    """Entry point of ``python -m papertiger.http`` (see the module doc)."""
    line = sys.stdin.readline()
    if not line:
        sys.exit("papertiger.http: expected one JSON line of configuration on stdin")
    config = json.loads(line)
    logging.basicConfig(
        level=env.log_level(),
        format="%(asctime)s papertiger-http[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    for key, value in (config.get("env") or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        from .app import build_app

        sock = _bind(config.get("host") or "127.0.0.1", int(config.get("port") or 0))
    except ImportError:
        print(json.dumps({"error": str(_missing_extra())}), flush=True)
        sys.exit(1)
    except StoreError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(1)
    port = sock.getsockname()[1]
    server = _uvicorn_server(build_app())
    owner = config.get("owner_pid")
    if owner:
        threading.Thread(target=_follow_owner, args=(int(owner), server), daemon=True).start()

    def ready() -> None:
        report = {"url": _url(config.get("host") or "127.0.0.1", port), "port": port}
        report["pid"] = os.getpid()
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    threading.Thread(target=_announce, args=(server, ready), daemon=True).start()
    server.run(sockets=[sock])
    log.info("HTTP server pid %d stopped", os.getpid())


def _announce(server: Any, ready: Any) -> None:
    while not server.started and not server.should_exit:
        time.sleep(0.005)
    if server.started:
        ready()


# -- once per run, on demand -------------------------------------------------------------------


def _read_state(path: str) -> HttpServer | None:
    """The server a state file names, if that very process still runs (not a recycled pid)."""
    from ..daemon.statefile import process_start
    from ..engine.shm import pid_alive

    try:
        with open(path) as f:
            raw = json.load(f)
        server = HttpServer(str(raw["url"]), int(raw["port"]), str(raw["host"]), int(raw["pid"]))
        started = raw.get("pid_start")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pid_alive(server.pid) or process_start(server.pid) != started:
        return None
    return server


def _answers(server: HttpServer) -> bool:
    try:
        with socket.create_connection((server.host, server.port), timeout=2.0):
            return True
    except OSError:
        return False


def ensure_server(
    directory: str, store_env: Mapping[str, str | None], owner_pid: int, host: str = "127.0.0.1"
) -> HttpServer:
    """The run's HTTP server: started (detached) by the first caller, found by the others.

    ``directory`` is the run's private directory (0700); the server's state
    (``http.json``), lock and log live there.  The server follows
    ``owner_pid`` out.  O(1) when it already runs (a read and a connect).
    """
    state = os.path.join(directory, STATE_FILE)
    found = _read_state(state)
    if found is not None and _answers(found):
        return found
    from ..daemon.statefile import process_start
    from ..engine.shm import pid_alive

    if not pid_alive(owner_pid):
        raise StoreUnavailable(
            f"the process that owns this run (pid {owner_pid}) has exited; its HTTP server "
            "cannot be started."
        )
    lock_fd = os.open(os.path.join(directory, "http.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        found = _read_state(state)
        if found is not None and _answers(found):
            return found
        _, server = start_server_process(
            host,
            0,
            store_env,
            owner_pid=owner_pid,
            log_path=os.path.join(directory, "http.log"),
            detached=True,
        )
        tmp = state + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(
                {
                    "url": server.url,
                    "port": server.port,
                    "host": host,
                    "pid": server.pid,
                    "pid_start": process_start(server.pid),
                },
                f,
            )
        os.replace(tmp, state)
        return server
    finally:
        os.close(lock_fd)


def stop_server(directory: str, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop the run's HTTP server, if one was started in ``directory``. True when one was."""
    from ..engine.shm import pid_alive

    state = os.path.join(directory, STATE_FILE)
    found = _read_state(state)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(state)
    if found is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(found.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(found.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if pid_alive(found.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(found.pid, signal.SIGKILL)
    return True
