"""Stripe's HTTP API through stripe-python: papertiger against localstripe and the HTTP floor.

Theory of operation
-------------------
Three servers, each a process of its own on 127.0.0.1, answer the same
stripe-python calls (customer create, retrieve and ``list(limit=10)``):

* **papertiger**: ``python -m papertiger.http`` over the run's store, as the
  pytest plugin and ``serve --http`` run it;
* **floor**: the same server stack (uvicorn, httptools, Starlette) with
  handlers that answer a canned customer without reading or writing
  anything: what any server on this stack costs, the HTTP floor;
* **localstripe**: localstripe's own aiohttp application, run unchanged
  except that it binds 127.0.0.1 (its command binds every interface), logs no
  access lines, and pickles its store into the run's directory instead of
  ``/tmp/localstripe.pickle`` (the same work, another path).

Client processes (1, then 4) each hold a ``stripe.StripeClient`` per server,
with keep-alive connections, warmed up first.  A sample sends ``n``
requests from every client at once (they start together at a given instant);
throughput is all requests over the wall time from the first start to the
last end, and per-request time is the median client's time per request.
Samples are interleaved: every round measures every (clients, operation,
server) once, in a shuffled server order, so drift and load spread evenly.
papertiger and localstripe are seeded with the same number of customers
before any read is timed (retrieve picks a random seeded id).  Reported
figures are medians over rounds; the load average is recorded with each
round.

Targets (reported, never asserted): papertiger's throughput >= 2x localstripe's
for each operation and client count, and its per-request time <= 1.5x the
floor's.  The floor's own throughput over localstripe's is reported too: no
server on this stack can show more against localstripe, because the client's
share (stripe-python builds every request and parses every response, about
1 ms for a customer) is the same whatever answers.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "OPS",
    "SYSTEMS",
    "markdown_table",
    "measure",
    "run_standalone",
    "targets",
    "terminal_table",
]

OPS = ("create", "retrieve", "list")
LABELS = {"create": "customer create", "retrieve": "customer retrieve", "list": "list(limit=10)"}
SYSTEMS = ("papertiger", "floor", "localstripe")
START_TIMEOUT = 30.0
#: Clients start this long after the command is sent, all at the same instant.
START_DELAY = 0.05

_CUSTOMER: dict[str, Any] = {
    "id": "cus_TkQ3yq1xWvB2nE",
    "object": "customer",
    "address": None,
    "balance": 0,
    "created": 1767308400,
    "currency": None,
    "default_source": None,
    "delinquent": False,
    "description": None,
    "discount": None,
    "email": "jenny.rosen@example.com",
    "invoice_prefix": "8F3C1A2B",
    "invoice_settings": {
        "custom_fields": None,
        "default_payment_method": None,
        "footer": None,
        "rendering_options": None,
    },
    "livemode": False,
    "metadata": {},
    "name": "Jenny Rosen",
    "next_invoice_sequence": 1,
    "phone": None,
    "preferred_locales": [],
    "shipping": None,
    "tax_exempt": "none",
    "test_clock": None,
}


# -- the servers -------------------------------------------------------------------------


def _floor_app() -> Any:
    """The HTTP floor: papertiger's stack answering canned customers, touching nothing."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    one = json.dumps(_CUSTOMER, separators=(",", ":"))
    page = json.dumps(
        {"object": "list", "data": [_CUSTOMER] * 10, "has_more": True, "url": "/v1/customers"},
        separators=(",", ":"),
    )

    async def customers(request: Request) -> Response:
        if request.method == "POST":
            await request.body()
            return Response(one, media_type="application/json")
        return Response(page, media_type="application/json")

    async def customer(request: Request) -> Response:
        return Response(one, media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/customers", customers, methods=["GET", "POST"]),
            Route("/v1/customers/{id}", customer, methods=["GET"]),
        ]
    )


def _floor_main(conn: Any) -> None:
    """A floor server process: bind, report the port, serve until terminated."""
    from ..http.server import _bind, _uvicorn_server

    sock = _bind("127.0.0.1", 0)
    conn.send(sock.getsockname()[1])
    conn.close()
    _uvicorn_server(_floor_app()).run(sockets=[sock])


def _localstripe_main(conn: Any, workdir: str) -> None:
    """localstripe's own application on 127.0.0.1, its store pickled under ``workdir``."""
    import logging
    import pickle
    import socket

    from aiohttp import web
    from localstripe import resources, server

    path = os.path.join(workdir, "localstripe.pickle")

    def dump_to_disk(self: Any) -> None:  # localstripe's work on every write, another path
        with open(path, "wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.dump_to_disk = dump_to_disk
    logging.getLogger("aiohttp.access").disabled = True
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname()[1])
    conn.close()
    web.run_app(server.app, sock=sock, access_log=None, print=None)


def localstripe_unavailable() -> str | None:
    """Why localstripe cannot run here, or None."""
    try:
        import localstripe  # noqa: F401
    except ImportError:
        return "localstripe is not installed; pip install 'papertiger[bench]'"
    return None


def _start(ctx: Any, stack: contextlib.ExitStack, target: Any, *args: Any) -> str:
    ours, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(theirs, *args), daemon=True)
    proc.start()
    stack.callback(_stop, proc)
    theirs.close()
    if not ours.poll(START_TIMEOUT):
        raise RuntimeError(f"{target.__name__} did not start within {START_TIMEOUT:.0f} s")
    port = int(ours.recv())
    ours.close()
    _wait_listening(port)
    return f"http://127.0.0.1:{port}"


def _stop(proc: Any) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _wait_listening(port: int) -> None:
    import socket

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.02)


# -- the clients -------------------------------------------------------------------------


def _client_main(conn: Any) -> None:
    """A client process: runs the samples it is sent, answers (start, end) of each."""
    import stripe

    clients: dict[str, Any] = {}
    while True:
        msg = conn.recv()
        if msg is None:
            return
        url, key, op, n, budget, ids, start_at, tag = msg
        client = clients.get(url)
        if client is None:
            client = clients[url] = stripe.StripeClient(
                key, base_addresses={"api": url}, max_network_retries=0
            )
        call = _operation(client, op, ids, tag)
        while time.time() < start_at:
            time.sleep(min(0.001, max(0.0, start_at - time.time())))
        try:
            t0 = time.perf_counter()
            begun = time.time()
            stop = t0 + budget
            done = 0
            while done < n:
                call(done)
                done += 1
                if time.perf_counter() >= stop:
                    break
            elapsed = time.perf_counter() - t0
            conn.send(("ok", begun, begun + elapsed, elapsed, done))
        except Exception as exc:  # reported to the harness, which stops the run
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _operation(client: Any, op: str, ids: list[str], tag: str) -> Callable[[int], Any]:
    customers = client.v1.customers
    if op == "create":
        return lambda i: customers.create({"email": f"bench-{tag}-{i}@example.com", "name": "B"})
    if op == "retrieve":
        rng = random.Random(tag)
        return lambda i: customers.retrieve(ids[rng.randrange(len(ids))])
    if op == "list":
        return lambda i: customers.list({"limit": 10})
    raise ValueError(op)


class _Clients:
    """A pool of client processes, each with a pipe."""

    def __init__(self, ctx: Any, count: int, stack: contextlib.ExitStack) -> None:
        self.conns = []
        for _ in range(count):
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_client_main, args=(theirs,), daemon=True)
            proc.start()
            theirs.close()
            stack.callback(_stop, proc)
            stack.callback(_quietly_send_none, ours)
            self.conns.append(ours)

    def sample(
        self,
        count: int,
        url: str,
        key: str,
        op: str,
        n: int,
        ids: list[str],
        tag: str,
        budget: float = 3.0,
    ) -> dict[str, float]:
        """``n`` requests from each of ``count`` clients at once (or ``budget`` seconds)."""
        start_at = time.time() + START_DELAY
        for i, conn in enumerate(self.conns[:count]):
            conn.send((url, key, op, n, budget, ids, start_at, f"{tag}-{i}"))
        answers = [conn.recv() for conn in self.conns[:count]]
        for answer in answers:
            if answer[0] != "ok":
                raise RuntimeError(f"a benchmark client failed on {op} at {url}: {answer[1]}")
        first = min(a[1] for a in answers)
        last = max(a[2] for a in answers)
        per_request = statistics.median(a[3] / a[4] for a in answers)
        done = sum(a[4] for a in answers)
        return {"per_request_s": per_request, "per_s": done / (last - first), "requests": done}


def _quietly_send_none(conn: Any) -> None:
    with contextlib.suppress(OSError, BrokenPipeError):
        conn.send(None)


# -- the measurement ---------------------------------------------------------------------


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def measure(
    *,
    store_env: dict[str, str | None],
    workdir: str,
    requests: int,
    repeats: int,
    customers: int,
    clients: tuple[int, ...] = (1, 4),
    budget: float = 3.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the samples; return raw figures (see the module doc). Starts and stops everything.

    A sample is ``requests`` per client, cut short after ``budget`` seconds
    (localstripe's create slows down as its store grows).
    """
    import multiprocessing

    import stripe

    from ..http import api_key_for
    from ..http.server import start_server_process, stop_process

    say = progress or (lambda text: None)
    ctx = multiprocessing.get_context("spawn")
    result: dict[str, Any] = {
        "plan": {
            "requests": requests,
            "repeats": repeats,
            "customers": customers,
            "clients": list(clients),
            "budget_s": budget,
        },
        "systems": {},
        "samples": [],
        "loads": [],
        "notes": [],
    }
    key = api_key_for(("bench", "stripe-api"))
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        proc, api = start_server_process("127.0.0.1", 0, store_env, owner_pid=os.getpid())
        stack.callback(stop_process, proc)
        urls["papertiger"] = api.url
        result["systems"]["papertiger"] = {"available": True, "url": api.url, "pid": api.pid}
        urls["floor"] = _start(ctx, stack, _floor_main)
        result["systems"]["floor"] = {"available": True, "url": urls["floor"]}
        why = localstripe_unavailable()
        if why is None:
            try:
                urls["localstripe"] = _start(ctx, stack, _localstripe_main, workdir)
            except RuntimeError as exc:
                why = f"localstripe did not start: {exc}"
        if why is None:
            from importlib.metadata import version

            result["systems"]["localstripe"] = {
                "available": True,
                "url": urls["localstripe"],
                "version": version("localstripe"),
            }
        else:
            result["systems"]["localstripe"] = {"available": False, "reason": why}
            result["notes"].append(f"localstripe skipped: {why}.")
        result["client"] = f"stripe-python {stripe.VERSION}"

        say(f"Stripe API: seeding {customers} customers in papertiger and localstripe")
        ids: dict[str, list[str]] = {"floor": [_CUSTOMER["id"]]}
        for system in ("papertiger", "localstripe"):
            if system in urls:
                seeder = stripe.StripeClient(key, base_addresses={"api": urls[system]})
                ids[system] = [
                    seeder.v1.customers.create({"email": f"seed-{i}@example.com"}).id
                    for i in range(customers)
                ]
        pool = _Clients(ctx, max(clients), stack)
        for system, url in urls.items():
            for op in ("retrieve", "list"):
                pool.sample(max(clients), url, key, op, 5, ids[system], "warm")
        rng = random.Random(7)
        for round_no in range(repeats):
            result["loads"].append(_load())
            say(f"Stripe API round {round_no + 1}/{repeats} (load {result['loads'][-1]})")
            for count in clients:
                for op in ("retrieve", "list", "create"):
                    order = list(urls)
                    rng.shuffle(order)
                    for system in order:
                        figures = pool.sample(
                            count,
                            urls[system],
                            key,
                            op,
                            requests,
                            ids[system],
                            f"r{round_no}",
                            budget,
                        )
                        result["samples"].append(
                            {"system": system, "op": op, "clients": count, **figures}
                        )
        result["loads"].append(_load())
    return analyse(result)


def analyse(result: dict[str, Any]) -> dict[str, Any]:
    """Medians per (system, op, clients), the ratios and the targets (in place)."""
    figures: dict[str, Any] = {}
    for sample in result["samples"]:
        key = f"{sample['system']}/{sample['op']}/{sample['clients']}"
        entry = figures.setdefault(key, {"per_request_s": [], "per_s": []})
        entry["per_request_s"].append(sample["per_request_s"])
        entry["per_s"].append(sample["per_s"])
    medians = {
        key: {name: statistics.median(values) for name, values in entry.items()}
        for key, entry in figures.items()
    }
    result["medians"] = medians
    rows = []
    for count in result["plan"]["clients"]:
        for op in OPS:
            pt = medians.get(f"papertiger/{op}/{count}")
            floor = medians.get(f"floor/{op}/{count}")
            ls = medians.get(f"localstripe/{op}/{count}")
            if pt is None:
                continue
            rows.append(
                {
                    "op": op,
                    "clients": count,
                    "papertiger": pt,
                    "floor": floor,
                    "localstripe": ls,
                    "vs_floor": pt["per_request_s"] / floor["per_request_s"] if floor else None,
                    "vs_localstripe": pt["per_s"] / ls["per_s"] if ls else None,
                    # the most any server on this stack could show against localstripe
                    "floor_vs_localstripe": floor["per_s"] / ls["per_s"] if floor and ls else None,
                }
            )
    result["rows"] = rows
    result["targets"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: met, missed (with the value) or skipped (with why)."""
    out = []
    why_ls = result["systems"].get("localstripe", {}).get("reason", "not measured")
    for row in result["rows"]:
        where = f"{LABELS[row['op']]}, {row['clients']} client(s)"
        ceiling = row.get("floor_vs_localstripe")
        checks: list[tuple[str, float | None, str, float, str]] = [
            (f"{where}: throughput ≥ 2× localstripe's", row["vs_localstripe"], ">=", 2.0, why_ls),
            (
                f"{where}: per-request time ≤ 1.5× the HTTP floor's",
                row["vs_floor"],
                "<=",
                1.5,
                "not measured",
            ),
        ]
        for name, value, comparison, limit, why in checks:
            if value is None:
                out.append({"name": name, "status": "skipped", "why": why, "limit": limit})
                continue
            ok = value >= limit if comparison == ">=" else value <= limit
            shown = f"{value:.2f}×"
            if comparison == ">=" and ceiling is not None:
                shown += f"; the HTTP floor itself reaches {ceiling:.2f}×"
            out.append(
                {
                    "name": name,
                    "status": "met" if ok else "missed",
                    "value": value,
                    "comparison": comparison,
                    "limit": limit,
                    "shown": shown,
                }
            )
    return out


# -- the report --------------------------------------------------------------------------


def _us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:,.0f} µs"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def _table_rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in result["rows"]:
        pt, floor, ls = row["papertiger"], row["floor"] or {}, row["localstripe"] or {}
        rows.append(
            [
                LABELS[row["op"]],
                str(row["clients"]),
                _rate(pt["per_s"]),
                _us(pt["per_request_s"]),
                _us(floor.get("per_request_s")),
                _x(row["vs_floor"]),
                _rate(ls.get("per_s")),
                _x(row["vs_localstripe"]),
                _x(row.get("floor_vs_localstripe")),
            ]
        )
    return rows


HEADER = [
    "operation",
    "clients",
    "papertiger req/s",
    "papertiger per req",
    "floor per req",
    "÷ floor",
    "localstripe req/s",
    "× localstripe",
    "floor × localstripe",
]


def _loads(result: dict[str, Any]) -> str:
    loads = [x for x in result.get("loads", []) if x is not None]
    if not loads:
        return "load unknown"
    return f"load average {min(loads):.1f}-{max(loads):.1f} during the run"


def terminal_table(result: dict[str, Any]) -> str:
    """The figures and targets as plain text."""
    rows = [HEADER, *_table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [
        "",
        f"Stripe's HTTP API through {result.get('client', 'stripe-python')} "
        f"({result['plan']['requests']} requests per client per sample (at most "
        f"{result['plan'].get('budget_s', 0):g} s), "
        f"{result['plan']['repeats']} rounds, {result['plan']['customers']} customers seeded; "
        f"{_loads(result)})",
    ]
    for row in rows:
        lines.append(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines.append("targets:")
    for t in result["targets"]:
        detail = t.get("shown") if t["status"] != "skipped" else t.get("why")
        lines.append(f"  [{t['status']}] {t['name']} ({detail})")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def markdown_table(result: dict[str, Any]) -> str:
    """The figures and targets as Markdown (for the README)."""
    lines = [
        "",
        f"### Stripe's HTTP API ({result.get('client', 'stripe-python')}; {_loads(result)})",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _table_rows(result)]
    lines.append("")
    for t in result["targets"]:
        detail = t.get("shown") if t["status"] != "skipped" else t.get("why")
        lines.append(f"- {t['status']}: {t['name']} ({detail})")
    return "\n".join(lines) + "\n"


# -- one command -------------------------------------------------------------------------


@contextlib.contextmanager
def _workdir() -> Iterator[str]:
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="ptg-bench-http-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_standalone(
    out: Path,
    *,
    requests: int,
    repeats: int,
    customers: int,
    clients: tuple[int, ...] = (1, 4),
    budget: float = 3.0,
    progress: bool = True,
) -> int:
    """``papertiger bench --http-only``: a store of its own, these figures only."""
    import papertiger

    from .machine import describe

    def say(text: str) -> None:
        if progress:
            print(f"\r\033[K{text}", end="", file=sys.stderr, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with papertiger.serve() as store, _workdir() as workdir:
        result = measure(
            store_env=dict(store.environ()),
            workdir=workdir,
            requests=requests,
            repeats=repeats,
            customers=customers,
            clients=clients,
            budget=budget,
            progress=say,
        )
    if progress:
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    result["machine"] = describe()
    result["duration_s"] = time.time() - started
    (out / "http.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    text = terminal_table(result)
    (out / "http.txt").write_text(text, encoding="utf-8")
    (out / "http.md").write_text(markdown_table(result), encoding="utf-8")
    sys.stdout.write(text)
    sys.stdout.write(
        f"\nwritten in {result['duration_s']:.0f} s: {out / 'http.json'}, {out / 'http.txt'}, "
        f"{out / 'http.md'}\n"
    )
    return 0
