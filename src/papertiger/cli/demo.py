"""``papertiger demo``: the store on the embedded default, shared by worker processes.

The parent seeds a few sessions in the global namespace, then starts worker
processes (spawned: they find the store through ``PAPERTIGER_ADDRESS``).
Each worker works in its own namespace: it inserts checkout sessions, reads
them back, pages through them both ways, and reads the parent's records
from the global namespace.  It reports what it saw and the median cost of
each operation; the parent prints one line per worker and a cost table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["register", "run_demo"]


def _median_us(fn: Callable[[], Any], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def _worker(index: int, records: int) -> dict[str, Any]:
    import papertiger
    from papertiger.fixtures import vary_checkout_session
    from papertiger.store import CheckoutSessions

    with papertiger.use_namespace(f"demo-worker-{index}"):
        ids = [
            CheckoutSessions.insert(vary_checkout_session(index * 10_000 + n))["id"]
            for n in range(records)
        ]
        seen_forward: list[str] = []
        page = CheckoutSessions.list(limit=25)
        while True:
            seen_forward.extend(r["id"] for r in page)
            if not page.has_more:
                break
            page = CheckoutSessions.list(limit=25, starting_after=page.data[-1]["id"])
        seen_backward: list[str] = []
        page = CheckoutSessions.list(limit=25, ending_before=seen_forward[-1])
        while True:
            seen_backward[:0] = [r["id"] for r in page]
            if not page.has_more:
                break
            page = CheckoutSessions.list(limit=25, ending_before=page.data[0]["id"])
        customer = CheckoutSessions.get(ids[0])["customer"]
        to_insert = iter([vary_checkout_session(index * 10_000 + records + n) for n in range(500)])
        costs = {
            "get": _median_us(lambda: CheckoutSessions.get(ids[len(ids) // 2]), 2000),
            "list(limit=10)": _median_us(lambda: CheckoutSessions.list(limit=10), 1000),
            "count": _median_us(CheckoutSessions.count, 2000),
            "find_by_customer": _median_us(
                lambda: CheckoutSessions.find_by_customer(customer), 1000
            ),
            "insert": _median_us(lambda: CheckoutSessions.insert(next(to_insert)), 500),
            "patch": _median_us(
                lambda: CheckoutSessions.patch(ids[0], {"metadata": {"k": "v"}}), 500
            ),
        }
        mine = CheckoutSessions.count()
    shared = CheckoutSessions.count()  # the parent's records, in the global namespace
    return {
        "worker": index,
        "namespace": f"demo-worker-{index}",
        "inserted": records,
        "count_in_namespace": mine,
        "forward_walk": len(seen_forward),
        "backward_walk_matches": seen_backward == seen_forward[:-1],
        "global_records_seen": shared,
        "costs_us": costs,
    }


def run_demo(workers: int = 3, records: int = 300) -> int:
    import multiprocess

    import papertiger
    from papertiger.engine.connection import current_client
    from papertiger.fixtures import vary_checkout_session
    from papertiger.store import CheckoutSessions

    t0 = time.perf_counter()
    seeded = CheckoutSessions.insert_many(vary_checkout_session(n) for n in range(50))
    client = current_client()
    print(
        f"papertiger {papertiger.__version__}: embedded manager pid {client.manager_pid}, "
        f"started and seeded {len(seeded)} sessions in {time.perf_counter() - t0:.2f} s"
    )
    print(f"starting {workers} worker processes, {records} sessions each, own namespaces\n")
    ctx = multiprocess.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.starmap(_worker, [(i, records) for i in range(workers)])
    ok = True
    for r in results:
        walks_ok = r["forward_walk"] == r["inserted"] and r["backward_walk_matches"]
        ok = ok and walks_ok and r["count_in_namespace"] == r["inserted"] + 500
        print(
            f"worker {r['worker']} ({r['namespace']}): inserted {r['inserted']} (+500 timed), "
            f"sees {r['count_in_namespace']} in its namespace, paged {r['forward_walk']} "
            f"forward / backward walk {'matches' if r['backward_walk_matches'] else 'DIFFERS'}, "
            f"sees {r['global_records_seen']} parent records in the global namespace"
        )
    ops = list(results[0]["costs_us"])
    print("\nmedian cost per operation, from each worker process (µs):")
    print(f"  {'operation':<18}" + "".join(f"{'worker ' + str(r['worker']):>12}" for r in results))
    for op in ops:
        print(f"  {op:<18}" + "".join(f"{r['costs_us'][op]:>12.1f}" for r in results))
    print(f"\nparent still sees {CheckoutSessions.count()} records in the global namespace")
    print("demo OK" if ok else "demo FAILED: a worker saw something unexpected")
    return 0 if ok else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the store on the embedded default with a few worker processes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument(
        "--records", type=int, default=300, help="sessions per worker (default 300)"
    )
    parser.set_defaults(func=lambda args: run_demo(args.workers, args.records))
