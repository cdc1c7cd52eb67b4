"""Read throughput with 1, 2 and N reader processes, for papertiger, its floor and peers.

A pool of reader processes is spawned once; each connects to every system,
loads its replica and builds its own floor dict (the same packed records in
a plain dict, read with ``msgpack.unpackb``).  A *round* tells ``k`` readers
to run ``get`` on random ids of the main namespace, against one system, from
the same instant (a shared ``time.monotonic`` deadline) for the same time;
the round's figure is the sum of the readers' operations per second.  Rounds
interleave systems and reader counts, and each figure is the median of its
rounds.  The floor shows what the machine itself allows: on 2 cores, a
third reader only takes turns.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ReaderPool", "reader_main", "run_scaling"]

#: random ids each reader cycles through
KEYS = 4096
CHUNK = 32


def _read_loop(
    fn: Callable[[str], object], keys: list[str], start_at: float, end_at: float
) -> tuple[int, float]:
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    start = time.monotonic()
    n = j = 0
    size = len(keys)
    while True:
        for k in keys[j : j + CHUNK]:
            fn(k)
        n += CHUNK
        j = (j + CHUNK) % size
        if time.monotonic() >= end_at:
            break
    return n, time.monotonic() - start


def reader_main(
    conn: Any, ns: str, ids: list[str], mdict: Any, redis_socket: str | None, seed: int
) -> None:
    """A reader process: set up, say ``ready``, then serve rounds until ``stop``."""
    with contextlib.suppress(KeyboardInterrupt, EOFError, BrokenPipeError):
        import msgpack

        import papertiger
        from papertiger.engine.connection import current_client
        from papertiger.namespace import normalize_namespace
        from papertiger.store import CheckoutSessions

        with papertiger.use_namespace(ns):
            CheckoutSessions.count()
        with current_client().replica.read() as state:
            key = normalize_namespace(ns)
            floor = {rid: state.get(CheckoutSessions.table_name, key, rid) for rid in ids}
        unpackb = msgpack.unpackb

        def floor_get(k: str) -> object:
            return unpackb(floor[k])

        fns: dict[str, Callable[[str], object]] = {
            "floor": floor_get,
            "papertiger": CheckoutSessions.get,
        }
        if mdict is not None:
            fns["manager"] = mdict.__getitem__
        if redis_socket:
            from .peers import RedisPeer

            peer = RedisPeer(redis_socket)
            fns["redis"] = lambda k: peer.get(ns, k)
        keys = random.Random(seed).choices(ids, k=KEYS)
        with papertiger.use_namespace(ns):
            for fn in fns.values():  # warm every path once
                fn(keys[0])
        conn.send(("ready", sorted(fns)))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            _, system, start_at, end_at = msg
            with papertiger.use_namespace(ns):
                conn.send(_read_loop(fns[system], keys, start_at, end_at))
        conn.close()


class ReaderPool:
    """``n`` reader processes, ready to run rounds."""

    def __init__(
        self, ctx: Any, n: int, ns: str, ids: list[str], mdict: Any, redis_socket: str | None
    ) -> None:
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        try:
            for i in range(n):
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=reader_main, args=(theirs, ns, ids, mdict, redis_socket, i)
                )
                proc.start()
                theirs.close()
                self.procs.append(proc)
                self.conns.append(ours)
            systems = None
            for conn in self.conns:
                try:
                    if not conn.poll(300):
                        raise RuntimeError("a reader process did not get ready within 300 s.")
                    _, systems = conn.recv()
                except EOFError:
                    raise RuntimeError(
                        "a reader process exited before it was ready; its error is above."
                    ) from None
            self.systems: list[str] = list(systems or [])
        except BaseException:
            self.close()
            raise

    def round(self, system: str, k: int, seconds: float) -> float:
        """Total operations per second of ``k`` readers reading together."""
        start_at = time.monotonic() + 0.02
        for conn in self.conns[:k]:
            conn.send(("run", system, start_at, start_at + seconds))
        total = 0.0
        for conn in self.conns[:k]:
            ops, elapsed = conn.recv()
            total += ops / elapsed
        return total

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
            conn.close()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def run_scaling(
    ctx: Any,
    counts: Sequence[int],
    seconds: float,
    repeats: int,
    ns: str,
    ids: list[str],
    mdict: Any,
    redis_socket: str | None,
    progress: Callable[[str, int, int, str], None],
) -> dict[str, Any]:
    """Median total read throughput per system and reader count (module doc)."""
    counts = sorted(set(counts))
    progress("scaling", 0, 1, f"starting {max(counts)} readers")
    pool = ReaderPool(ctx, max(counts), ns, ids, mdict, redis_socket)
    try:
        order = [s for s in ("floor", "papertiger", "manager", "redis") if s in pool.systems]
        samples: dict[str, dict[int, list[float]]] = {s: {k: [] for k in counts} for s in order}
        total = repeats * len(order) * len(counts)
        done = 0
        for r in range(repeats):
            shift = r % len(order)
            for system in order[shift:] + order[:shift]:
                for k in counts:
                    samples[system][k].append(pool.round(system, k, seconds))
                    done += 1
                    progress("scaling", done, total, f"{system} × {k}")
    finally:
        pool.close()
    return {
        "readers": counts,
        "seconds": seconds,
        "repeats": repeats,
        "ops_per_s": {
            s: {str(k): statistics.median(v) for k, v in by_k.items()}
            for s, by_k in samples.items()
        },
        "samples": {s: {str(k): v for k, v in by_k.items()} for s, by_k in samples.items()},
    }
