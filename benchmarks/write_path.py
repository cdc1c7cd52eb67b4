"""What each change to the write path bought: versions of papertiger side by side, in one run.

    python benchmarks/write_path.py                          # main against HEAD
    python benchmarks/write_path.py --refs main,abc1234,HEAD --rounds 7
    python benchmarks/write_path.py --pin-cpu 0              # every process on CPU 0
    python benchmarks/write_path.py --json out.json

Each git ref's ``src/`` is exported (``git archive``) to a temporary
directory.  A *round* runs, for every ref in turn (the order rotates from round
to round), a fresh worker process with that ref's ``papertiger`` first on
``PYTHONPATH``: it starts its own manager and times

* ``insert``: µs per call, one writer, fresh 4 KB checkout sessions (the
  median of 7 blocks of about 285 calls);
* ``update``: µs per call, on records it seeded (likewise);
* ``insert_many``: records/s, batches of 1,000 (the median of 7 batches);
* ``writers k``: total inserts/s of ``k`` writer processes (1, 4, 8) inserting
  from the same instant, one record per call;
* ``cpu``: CPU time (user + system) per write, of the client and of the
  manager (``/proc/<pid>/stat``), for ``insert``, ``insert_many`` and the
  manager with 8 writers: figures the machine's load hardly changes, unlike
  the wall-clock ones.

In the same round, one more worker times the yardsticks on the same records:
the *floor* of insert (``msgpack.packb`` plus one AF_UNIX round trip of those
bytes to a process that only answers) and Redis through redis-py on a private
``redis-server`` (SET, SET XX, MSET of 1,000, SET from ``k`` writers).  Every
figure is the median of its rounds; ratios are of medians of the same run.
The load average before and after is printed with the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# ruff: noqa: RUF001  (the table speaks in ratios)

REPO = Path(__file__).resolve().parent.parent
WRITERS = (1, 4, 8)
BATCH = 1_000


# -- worker side (runs with one ref's papertiger on PYTHONPATH) -----------------------------------


def _records(start: int, count: int) -> list[dict[str, Any]]:
    from papertiger.bench.records import checkout_sessions

    return list(checkout_sessions(start, count, customers=10**13))


def _per_call(fn: Any, items: list[Any], samples: int = 7) -> float:
    """Median seconds per call over ``samples`` equal blocks of ``items``."""
    size = max(1, len(items) // samples)
    times = []
    for start in range(0, size * samples, size):
        block = items[start : start + size]
        t0 = time.perf_counter()
        for item in block:
            fn(item)
        times.append((time.perf_counter() - t0) / len(block))
    return statistics.median(times)


def _writer(kind: str, index: int, redis_socket: str, seconds: float, sync: Any, q: Any) -> None:
    records = _records(10**9 + index * 1000, 256)
    if kind == "papertiger":
        import papertiger
        from papertiger.store import CheckoutSessions

        scope = papertiger.use_namespace(f"writers-{index}")
        scope.__enter__()
        fn = CheckoutSessions.insert
        CheckoutSessions.count()
    else:
        import msgpack
        import redis

        client = redis.Redis(unix_socket_path=redis_socket, db=1)
        counter = iter(range(10**9))

        def fn(record: dict[str, Any]) -> None:
            client.set(f"w{index}_{next(counter)}", msgpack.packb(record))

    fn(records[0])
    sync.wait()  # every writer is ready: all start now (one clock for every process)
    t0 = time.monotonic()
    end = t0 + seconds
    n = 0
    while True:
        for record in records[n % 256 : n % 256 + 16]:
            fn(record)
        n += 16
        if time.monotonic() >= end:
            break
    q.put(n / (time.monotonic() - t0))


def _writers(kind: str, k: int, seconds: float, redis_socket: str = "") -> float:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    sync = ctx.Barrier(k)
    procs = [
        ctx.Process(target=_writer, args=(kind, i, redis_socket, seconds, sync, q))
        for i in range(k)
    ]
    for p in procs:
        p.start()
    total = sum(q.get(timeout=300) for _ in procs)
    for p in procs:
        p.join()
    return total


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def papertiger_worker(seconds: float) -> dict[str, Any]:
    import papertiger
    from papertiger.store import CheckoutSessions as CS

    out: dict[str, Any] = {"module": papertiger.__file__}
    with papertiger.serve() as server:
        with papertiger.use_namespace("single"):
            CS.insert_many(_records(0, 2_000))
            seeded = [r["id"] for r in CS.list_namespace()]
            for r in _records(10_000, 200):  # warm-up
                CS.insert(r)
            out["insert"] = _per_call(CS.insert, _records(20_000, 2_000))
            # CPU time per insert, which the machine's load hardly changes
            records = _records(40_000, 5_000)  # CPU time is counted in 10 ms ticks
            client, manager = time.process_time(), _cpu_seconds(server.pid)
            for r in records:
                CS.insert(r)
            out["insert cpu client"] = (time.process_time() - client) / len(records)
            out["insert cpu manager"] = (_cpu_seconds(server.pid) - manager) / len(records)
            updates = _records(30_000, 2_000)
            for rid, r in zip(seeded, updates, strict=True):
                r["id"] = rid
            out["update"] = _per_call(CS.update, updates)
        with papertiger.use_namespace("many"):
            batches = [_records(100_000 + i * BATCH, BATCH) for i in range(8)]
            CS.insert_many(batches[0])
            out["insert_many"] = 1 / _per_call(CS.insert_many, batches[1:]) * BATCH
            batches = [_records(200_000 + i * BATCH, BATCH) for i in range(10)]
            client, manager = time.process_time(), _cpu_seconds(server.pid)
            for batch in batches:
                CS.insert_many(batch)
            count = BATCH * len(batches)
            out["insert_many cpu client"] = (time.process_time() - client) / count
            out["insert_many cpu manager"] = (_cpu_seconds(server.pid) - manager) / count
        for k in WRITERS:
            before = _cpu_seconds(server.pid)
            rate = _writers("papertiger", k, seconds)
            out[f"writers {k}"] = rate
            if k == max(WRITERS):  # (its share of spawning the writers is counted too)
                spent = _cpu_seconds(server.pid) - before
                out[f"writers {k} cpu manager"] = spent / (rate * seconds)
    return out


def peers_worker(seconds: float, redis_socket: str) -> dict[str, Any]:
    import msgpack

    from papertiger.bench.floors import floor_writer

    out: dict[str, Any] = {}
    ctx = multiprocessing.get_context("spawn")
    records = _records(200_000, 2_000)
    with floor_writer(ctx, msgpack.packb(records[0])) as floor:
        _per_call(floor.put, records[:200])
        out["insert"] = _per_call(floor.put, records)
    if redis_socket:
        import redis

        client = redis.Redis(unix_socket_path=redis_socket)
        client.flushall()
        counter = iter(range(10**9))

        def redis_set(record: dict[str, Any]) -> None:
            client.set(f"r{next(counter)}", msgpack.packb(record))

        def redis_update(record: dict[str, Any]) -> None:
            client.set("r0", msgpack.packb(record), xx=True)

        def redis_mset(batch: list[dict[str, Any]]) -> None:
            client.mset({f"m{next(counter)}": msgpack.packb(r) for r in batch})

        out["redis insert"] = _per_call(redis_set, records)
        out["redis update"] = _per_call(redis_update, records)
        batches = [_records(300_000 + i * BATCH, BATCH) for i in range(7)]
        out["redis insert_many"] = 1 / _per_call(redis_mset, batches) * BATCH
        client.flushall()
        for k in WRITERS:
            out[f"redis writers {k}"] = _writers("redis", k, seconds, redis_socket)
            client.flushall()
    return out


# -- driver side ----------------------------------------------------------------------------------


def _export(ref: str, into: Path) -> Path:
    """``ref``'s src/ under ``into``; the working tree itself for ``WORKTREE``."""
    if ref == "WORKTREE":
        return REPO / "src"
    target = into / ref.replace("/", "_")
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


def _run(role: str, src: Path | None, args: list[str], pin: int | None) -> dict[str, Any]:
    env = dict(os.environ)
    for key in ("PAPERTIGER_ADDRESS", "PAPERTIGER_AUTHKEY", "PAPERTIGER_URL"):
        env.pop(key, None)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, __file__, "--role", role, *args]
    if pin is not None:
        cmd = ["taskset", "-c", str(pin), *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{role} worker failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _table(
    refs: list[str], results: dict[str, list[dict[str, Any]]], peers: list[dict[str, Any]]
) -> str:
    def med(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in rows if key in r]
        return _median(values) if values else None

    lines = []
    header = ["figure", *refs, "floor / Redis", f"{refs[-1]} vs {refs[0]}"]
    rows: list[list[str]] = []
    cpu = [
        ("insert cpu client", "µs"),
        ("insert cpu manager", "µs"),
        ("insert_many cpu client", "µs"),
        ("insert_many cpu manager", "µs"),
        (f"writers {max(WRITERS)} cpu manager", "µs"),
    ]
    for key, unit in [
        ("insert", "µs"),
        ("update", "µs"),
        ("insert_many", "rec/s"),
        *((f"writers {k}", "ins/s") for k in WRITERS),
        *cpu,
    ]:
        values = [med(results[ref], key) for ref in refs]
        cells = [f"{key} ({unit})"]
        for v in values:
            cells.append("—" if v is None else (f"{v * 1e6:.1f}" if unit == "µs" else f"{v:,.0f}"))
        redis = med(peers, f"redis {key}")
        floor = med(peers, key) if key == "insert" else None
        yard = []
        if floor is not None:
            yard.append(f"floor {floor * 1e6:.1f}")
        if redis is not None:
            yard.append(f"Redis {redis * 1e6:.1f}" if unit == "µs" else f"Redis {redis:,.0f}")
        cells.append(", ".join(yard) or "—")
        first, last = values[0], values[-1]
        if first and last:
            gain = first / last if unit == "µs" else last / first
            cells.append(f"{gain:.2f}× faster")
        else:
            cells.append("—")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    last = refs[-1]
    ratios = []
    ins, floor = med(results[last], "insert"), med(peers, "insert")
    if ins and floor:
        ratios.append(f"insert / its floor: {ins / floor:.2f}×")
    for key in ("insert", "update"):
        pt, redis = med(results[last], key), med(peers, f"redis {key}")
        if pt and redis:
            ratios.append(f"{key} vs Redis: {redis / pt:.2f}× (above 1: papertiger is faster)")
    pt, redis = med(results[last], "insert_many"), med(peers, "redis insert_many")
    if pt and redis:
        ratios.append(f"insert_many vs Redis MSET: {pt / redis:.2f}×")
    for k in WRITERS:
        pt, redis = med(results[last], f"writers {k}"), med(peers, f"redis writers {k}")
        if pt and redis:
            ratios.append(f"{k} writers vs Redis SET from {k}: {pt / redis:.2f}×")
    return "\n".join(lines) + f"\n\n{last}:\n  " + "\n  ".join(ratios) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--refs", default="main,HEAD", help="git refs, oldest first (WORKTREE: uncommitted)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per writer-scaling figure")
    parser.add_argument("--pin-cpu", type=int, default=None, help="run every process on this CPU")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--json", type=Path, help="write every sample here")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--redis-socket", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "papertiger":
        print(json.dumps(papertiger_worker(args.seconds)))
        return 0
    if args.role == "peers":
        print(json.dumps(peers_worker(args.seconds, args.redis_socket)))
        return 0

    refs = [r.strip() for r in args.refs.split(",") if r.strip()]
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {ref: [] for ref in refs}
    peers: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="ptg-write-path-"))
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        sources = {ref: _export(ref, tmp) for ref in refs}
        redis_socket = ""
        if not args.no_redis and shutil.which("redis-server"):
            from papertiger.bench.peers import RedisServer

            server = RedisServer(workdir=str(tmp))
            stack.callback(server.stop)
            if args.pin_cpu is not None:
                os.sched_setaffinity(server.pid, {args.pin_cpu})
            redis_socket = server.socket
        worker_args = ["--seconds", str(args.seconds)]
        for r in range(args.rounds):
            order = refs[r % len(refs) :] + refs[: r % len(refs)]
            for ref in order:
                print(f"round {r + 1}/{args.rounds}: {ref}", file=sys.stderr, flush=True)
                results[ref].append(_run("papertiger", sources[ref], worker_args, args.pin_cpu))
            print(f"round {r + 1}/{args.rounds}: floor and Redis", file=sys.stderr, flush=True)
            peers.append(
                _run("peers", None, [*worker_args, "--redis-socket", redis_socket], args.pin_cpu)
            )
    load_after = os.getloadavg()
    text = _table(refs, results, peers)
    cores = os.cpu_count()
    pin = f", every process on CPU {args.pin_cpu}" if args.pin_cpu is not None else ", unpinned"
    print(
        f"write path, medians of {args.rounds} rounds{pin}; {cores} cores, load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after\n\n{text}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "refs": refs,
                    "results": results,
                    "peers": peers,
                    "load": [load_before, load_after],
                    "pin_cpu": args.pin_cpu,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
