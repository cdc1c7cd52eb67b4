"""Write throughput with 1, 2, 4 and 8 writer processes: papertiger, Redis SET, Manager set.

A pool of writer processes is spawned once; each connects to every system
and keeps a few hundred fresh checkout sessions to write (without ids:
papertiger gives each insert a new one; the peers get ``w<writer>_<n>`` keys).
A *round* tells ``k`` writers to insert into one system from the same instant
(a shared ``time.monotonic`` deadline) for the same time, each one record per
call and waiting for each answer, as a test process would; the round's figure
is the sum of the writers' inserts per second.  Between rounds the written
records are removed, untimed (papertiger's namespace cleared, Redis's
database 1 flushed, the Manager dict emptied), so every round starts from the
same store.  Rounds interleave systems and writer counts; each figure is the
median of its rounds.

papertiger's manager serves every writer from one thread and commits the
writes that wait together as a group (one head publication, then the
replies); Redis serves them from one thread too.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from .scaling import ProcessPool, summarize_rounds, timed_loop

__all__ = ["WriterPool", "run_writer_scaling", "writer_main"]

#: the namespace (papertiger) and database (Redis) the writers write to
NS = "bench-writers"
REDIS_DB = 1
#: records each writer cycles through
RECORDS = 256
CHUNK = 16


def writer_main(conn: Any, mdict: Any, redis_socket: str | None, index: int) -> None:
    """A writer process: set up, say ``ready``, then serve rounds until ``stop``."""
    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        import msgpack

        import papertiger
        from papertiger.store import CheckoutSessions

        from .records import checkout_sessions

        packb = msgpack.packb
        records = list(checkout_sessions(10**9 + index * RECORDS, RECORDS, customers=10**13))
        counter = itertools.count()
        fns: dict[str, Callable[[dict[str, Any]], object]] = {"papertiger": CheckoutSessions.insert}
        clear: dict[str, Callable[[], object]] = {
            "papertiger": lambda: CheckoutSessions.clear_namespace(NS)
        }
        if mdict is not None:

            def manager_set(record: dict[str, Any]) -> None:
                mdict[f"w{index}_{next(counter)}"] = record

            fns["manager"] = manager_set
            clear["manager"] = mdict.clear
        if redis_socket:
            import redis

            client = redis.Redis(unix_socket_path=redis_socket, db=REDIS_DB)
            rset = client.set

            def redis_set(record: dict[str, Any]) -> None:
                rset(f"{NS}:w{index}_{next(counter)}", packb(record))

            fns["redis"] = redis_set
            clear["redis"] = client.flushdb
        with papertiger.use_namespace(NS):
            for system, fn in fns.items():  # warm every path once
                fn(records[0])
                clear[system]()
        conn.send(("ready", sorted(fns)))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            if msg[0] == "clear":
                with papertiger.use_namespace(NS):
                    clear[msg[1]]()
                conn.send(("cleared",))
                continue
            _, system, start_at, end_at = msg
            with papertiger.use_namespace(NS):
                conn.send(timed_loop(fns[system], records, start_at, end_at, CHUNK))
        conn.close()


class WriterPool(ProcessPool):
    """``n`` writer processes (:func:`writer_main`), ready to run rounds."""

    role = "writer"

    def __init__(self, ctx: Any, n: int, mdict: Any, redis_socket: str | None) -> None:
        super().__init__(ctx, n, writer_main, mdict, redis_socket)

    def round(self, system: str, k: int, seconds: float) -> float:
        """Total inserts per second of ``k`` writers writing together; then clear, untimed."""
        total = super().round(system, k, seconds)
        self.conns[0].send(("clear", system))
        self.conns[0].recv()
        return total


def run_writer_scaling(
    ctx: Any,
    counts: Sequence[int],
    seconds: float,
    repeats: int,
    mdict: Any,
    redis_socket: str | None,
    progress: Callable[[str, int, int, str], None],
) -> dict[str, Any]:
    """Median total insert throughput per system and writer count (module doc)."""
    counts = sorted(set(counts))
    progress("writers", 0, 1, f"starting {max(counts)} writers")
    pool = WriterPool(ctx, max(counts), mdict, redis_socket)
    try:
        systems = ("papertiger", "redis", "manager")
        samples = pool.interleaved(systems, counts, seconds, repeats, progress, "writers")
    finally:
        pool.close()
    return {"writers": counts, **summarize_rounds(samples, "inserts_per_s", seconds, repeats)}
