"""papertiger on Redis against the raw redis-py commands it sends: the price of its layer.

Theory of operation
-------------------
The Redis backend sends Redis a few commands per store call; a hand-written
redis-py client could send exactly the same ones.  This measures both, on
the bench's private redis-server (a Unix socket, persistence off), from one
spawned process, interleaved (:func:`.timing.run_rounds`), on the bench's
4 KB checkout sessions:

============  ========================================  =========================================
operation     papertiger on Redis                       raw redis-py, the same commands
============  ========================================  =========================================
get           ``CheckoutSessions.get(id)``              ``HGET`` + ``msgpack.unpackb``
list(10)      ``CheckoutSessions.list(limit=10)``       ``EVALSHA`` of the page script with the
                                                        same keys and arguments + 10 unpacks
insert        ``CheckoutSessions.insert(record)``       ``msgpack.packb`` + ``EVALSHA`` of the
                                                        put script (id, key names and index
                                                        entries made untimed)
============  ========================================  =========================================

The ratio papertiger / raw is what papertiger adds on top of the network
round trip and the server's work: validation, ids and ``created``, the
namespace, key names, index values, error handling, decoding.  The target is
at most 1.3 times for each.

``papertiger bench`` runs it when redis-server is installed (results under
``on_redis`` in results.json, a table section, a chart panel);
``python -m papertiger.bench.on_redis`` runs only this, on a private
redis-server, and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import traceback
from collections.abc import Callable
from typing import Any

import msgpack

from .plan import PRESETS, Plan
from .records import checkout_sessions
from .timing import Case, calibrate, rounds_work, run_rounds, summarize

__all__ = ["OPS", "TARGET", "draw_panel", "measure", "rows", "targets"]

#: the operations compared, in the order shown
OPS = ("get", "list", "insert")
#: most papertiger on Redis may cost, in raw redis-py's time
TARGET = 1.3
#: records seeded (the costs compared do not depend on it: O(1) and O(log n))
MAX_RECORDS = 10_000
PREFIX = "ptg-bench"
NS = "bench-redis"
LABELS = {"get": "get", "list": "list(limit=10)", "insert": "insert"}

Progress = Callable[[str, int, int, str], None]
_unpackb = msgpack.unpackb
_packb = msgpack.packb


def _cases(
    stack: contextlib.ExitStack, socket: str, plan: Plan, progress: Progress
) -> list[list[Case]]:
    """Seed, then one group of two cases (papertiger, raw) per operation.

    Papertiger's backend stays current until ``stack`` closes.
    """
    import redis

    import papertiger
    from papertiger.backends import redis_scripts, use_backend
    from papertiger.backends.redis import RedisBackend
    from papertiger.backends.redis_layout import created_key
    from papertiger.core.records import index_values
    from papertiger.store import CheckoutSessions

    url = f"unix://{socket}?prefix={PREFIX}"
    backend = RedisBackend.from_url(url)
    stack.callback(backend.close)
    stack.enter_context(use_backend(backend))
    stack.enter_context(papertiger.use_namespace(NS))
    raw = redis.Redis(unix_socket_path=socket)
    stack.callback(raw.close)
    n = min(plan.records, MAX_RECORDS)
    ids: list[str] = []
    for start in range(0, n, 2000):
        count = min(2000, n - start)
        made = CheckoutSessions.insert_many(
            checkout_sessions(start, count, customers=max(1, n // 10))
        )
        ids += [r["id"] for r in made]
        progress("on Redis", start + count, n, "seeding")
    layout = backend.keys
    part = layout.partition(CheckoutSessions.table_name, (NS,))
    # the same EVALSHA calls papertiger makes (the scripts are loaded by the seeding above)
    evalsha = raw.evalsha
    page_sha = raw.script_load(redis_scripts.PAGE)
    put_sha = raw.script_load(redis_scripts.PUT)
    rng = random.Random(5)
    next_n = [10_000_000]

    def fresh(count: int) -> list[dict[str, Any]]:
        start = next_n[0]
        next_n[0] += count
        return list(checkout_sessions(start, count, customers=10**13))

    def pt_get(loops: int) -> Callable[[], object]:
        keys = [rng.choice(ids) for _ in range(loops)]
        get = CheckoutSessions.get

        def run() -> object:
            for k in keys:
                get(k)
            return None

        return run

    def raw_get(loops: int) -> Callable[[], object]:
        keys = [rng.choice(ids) for _ in range(loops)]
        hget, records = raw.hget, part.records

        def run() -> object:
            for k in keys:
                _unpackb(hget(records, k))
            return None

        return run

    # every case drops each result before the next call (a list of 4 KB records kept for
    # thousands of calls would time the allocator and the garbage collector instead)
    def pt_list(loops: int) -> Callable[[], object]:
        listing = CheckoutSessions.list

        def run() -> object:
            for _ in range(loops):
                listing(limit=10)
            return None

        return run

    def raw_list(loops: int) -> Callable[[], object]:
        keys = [part.records, part.entries, part.order]
        args: list[Any] = [10, "", "", "", ""]

        def run() -> object:
            for _ in range(loops):
                for p in evalsha(page_sha, 3, *keys, *args)[2:]:
                    _unpackb(p)
            return None

        return run

    # writes go to namespaces of their own, one per system, entered in the registry untimed
    pt_writes = (NS, "writes-papertiger")
    raw_writes = (NS, "writes-raw")
    raw_part = layout.partition(CheckoutSessions.table_name, raw_writes)
    for ns in (pt_writes, raw_writes):
        with papertiger.use_namespace(ns):
            CheckoutSessions.insert({"id": "cs_first"})

    def pt_insert(loops: int) -> Callable[[], object]:
        records = fresh(loops)
        insert = CheckoutSessions.insert

        def run() -> object:
            with papertiger.use_namespace(pt_writes):
                for record in records:
                    insert(record)
            return None

        return run

    def raw_insert(loops: int) -> Callable[[], object]:
        records = fresh(loops)
        for i, record in enumerate(records):
            record["id"] = f"cs_raw{next_n[0]}_{i}"
            record["created"] = 1_767_308_400
        keys = [raw_part.records, raw_part.entries, raw_part.order, raw_part.meta]
        head = [raw_part.base, "t", "", "insert"]
        c17 = created_key(1_767_308_400)
        fields = CheckoutSessions.spec.index_fields  # the same index entries papertiger makes
        suffixes = [layout.suffixes(index_values(r, fields)) for r in records]

        def run() -> object:
            for record, sfx in zip(records, suffixes, strict=True):
                evalsha(put_sha, 4, *keys, *head, record["id"], c17, _packb(record), *sfx)
            return None

        return run

    groups = [
        [Case("get", "papertiger", n, pt_get), Case("get", "raw", n, raw_get)],
        [Case("list", "papertiger", n, pt_list), Case("list", "raw", n, raw_list)],
        [
            Case("insert", "papertiger", n, pt_insert, max_loops=5_000),
            Case("insert", "raw", n, raw_insert, max_loops=5_000),
        ],
    ]
    return groups


def _main(conn: Any, socket: str, plan: Plan) -> None:
    """Entry point of the spawned measuring process; results (or the error) go over ``conn``."""

    def progress(phase: str, done: int, total: int, label: str) -> None:
        conn.send(("progress", phase, done, total, label))

    try:
        import redis

        stack = contextlib.ExitStack()
        groups = _cases(stack, socket, plan, progress)
        every = [case for group in groups for case in group]
        for i, case in enumerate(every):
            progress("on Redis", i, len(every), f"calibrating {case.op}/{case.system}")
            calibrate(case, plan.sample_seconds)
        total = rounds_work(groups, plan.repeats)
        done = [0]

        def tick(case: Case) -> None:
            done[0] += 1
            progress("on Redis", done[0], total, f"{case.op}/{case.system}")

        run_rounds(groups, plan.repeats, tick)
        from redis.utils import HIREDIS_AVAILABLE

        parser = "hiredis" if HIREDIS_AVAILABLE else "redis-py's own parser"
        stack.close()
        conn.send(
            (
                "result",
                {
                    "available": True,
                    "records": groups[0][0].size,
                    "client": f"redis-py {redis.__version__}, {parser}",
                    "cases": [summarize(case) for case in every],
                },
            )
        )
    except KeyboardInterrupt:
        pass
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def measure(ctx: Any, socket: str, plan: Plan, progress: Progress) -> dict[str, Any]:
    """Run the comparison in a spawned process; its results, with ``overhead`` per op."""
    ours, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_main, args=(theirs, socket, plan), name="papertiger-bench-redis")
    proc.start()
    theirs.close()
    try:
        while True:
            if not ours.poll(0.5):
                if not proc.is_alive() and not ours.poll(0):
                    return _unavailable(f"the measuring process exited (code {proc.exitcode})")
                continue
            try:
                msg = ours.recv()
            except EOFError:
                return _unavailable("the measuring process closed its pipe without results")
            if msg[0] == "progress":
                progress(*msg[1:])
            elif msg[0] == "result":
                return analyse(dict(msg[1]))
            else:
                return _unavailable(f"the measuring process failed:\n{msg[1]}")
    finally:
        ours.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _unavailable(why: str) -> dict[str, Any]:
    return {"available": False, "reason": why}


def analyse(result: dict[str, Any]) -> dict[str, Any]:
    """Add ``median_s`` and ``overhead`` (papertiger / raw) per operation."""
    medians: dict[str, dict[str, float]] = {}
    for case in result.get("cases", []):
        medians.setdefault(case["op"], {})[case["system"]] = case["median_s"]
    result["median_s"] = medians
    result["overhead"] = {
        op: m["papertiger"] / m["raw"]
        for op, m in medians.items()
        if m.get("raw") and m.get("papertiger")
    }
    result["target"] = TARGET
    return result


# -- report pieces (used by .report and .chart) --------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def rows(raw: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table: one row per operation."""
    found = raw.get("on_redis") or {}
    header = ["operation", "papertiger on Redis", "raw redis-py", "overhead", f"≤ {TARGET}×"]
    if not found.get("available"):
        return header, []
    out = []
    for op in OPS:
        m = found["median_s"].get(op, {})
        ratio = found["overhead"].get(op)
        if ratio is None:
            continue
        out.append(
            [
                LABELS[op],
                _us(m["papertiger"]),
                _us(m["raw"]),
                f"{ratio:.2f}×",
                "met" if ratio <= TARGET else "missed",
            ]
        )
    return header, out


def title(raw: dict[str, Any]) -> str:
    found = raw.get("on_redis") or {}
    return (
        f"papertiger on Redis against the raw redis-py commands it sends "
        f"({found.get('records', 0):,} records; {found.get('client', '')})"
    )


def targets(raw: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """``(name, value, why-not-measured)`` for the harness's target list."""
    found = raw.get("on_redis") or {}
    why = str(found.get("reason") or "Redis was not measured")
    overhead = found.get("overhead") or {}
    return [
        (f"papertiger on Redis: {LABELS[op]} ≤ {TARGET}× the raw commands", overhead.get(op), why)
        for op in OPS
    ]


def draw_panel(ax: Any, raw: dict[str, Any]) -> None:
    """Bars of papertiger on Redis and raw redis-py per operation, overhead on top."""
    from .chart import COLOURS

    found = raw["on_redis"]
    ops = [op for op in OPS if op in found["overhead"]]
    for i, op in enumerate(ops):
        m = found["median_s"][op]
        ax.bar(i - 0.2, m["papertiger"] * 1e6, 0.38, color=COLOURS["papertiger"], zorder=2)
        ax.bar(i + 0.2, m["raw"] * 1e6, 0.38, color=COLOURS["redis"], zorder=2)
        ax.annotate(
            f"{found['overhead'][op]:.2f}×",
            (i - 0.2, m["papertiger"] * 1e6),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    ax.set_xticks(range(len(ops)))
    ax.set_xticklabels([LABELS[op] for op in ops], fontsize=8)
    ax.set_ylabel("µs per operation")
    ax.set_title(f"On Redis: papertiger vs raw redis-py (target ≤ {TARGET}×)", fontsize=10)
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color=COLOURS["papertiger"], label="papertiger on Redis"),
            Patch(color=COLOURS["redis"], label="the same commands, raw"),
        ],
        fontsize=7,
        frameon=False,
    )
    ax.grid(axis="y", color="#eeeeee", zorder=0)


# -- one command: python -m papertiger.bench.on_redis --------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Measure only this, on a private redis-server (or ``--socket``); print the table."""
    import multiprocessing

    from .peers import RedisServer, redis_unavailable
    from .report import _text_table

    parser = argparse.ArgumentParser(prog="python -m papertiger.bench.on_redis")
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--socket", help="an existing redis-server's Unix socket")
    parser.add_argument(
        "--pin-cpu",
        type=int,
        metavar="N",
        help="run the measuring process and the private redis-server on CPU N",
    )
    args = parser.parse_args(argv)
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})  # inherited by what this starts
    plan = PRESETS["quick" if args.quick else "default"]
    server = None
    socket = args.socket
    if socket is None:
        why = redis_unavailable()
        if why:
            print(f"papertiger bench on Redis: {why}", file=sys.stderr)
            return 2
        server = RedisServer()
        socket = server.socket
    try:

        def progress(phase: str, done: int, total: int, label: str) -> None:
            if sys.stderr.isatty():
                sys.stderr.write(f"\r\x1b[K{phase}: {done}/{total} {label}"[:100])

        result = measure(multiprocessing.get_context("spawn"), socket, plan, progress)
    finally:
        if server is not None:
            server.stop()
        if sys.stderr.isatty():
            sys.stderr.write("\r\x1b[K")
    if not result.get("available"):
        print(f"papertiger bench on Redis: {result['reason']}", file=sys.stderr)
        return 1
    raw = {"on_redis": result}
    header, table = rows(raw)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{title(raw)}; load {load:.1f} on {os.cpu_count()} cores")
    print(_text_table(header, table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
