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

__all__ = [
    "ProcessPool",
    "ReaderPool",
    "reader_main",
    "run_scaling",
    "summarize_rounds",
    "timed_loop",
]

#: random ids each reader cycles through
KEYS = 4096
CHUNK = 32


def timed_loop(
    fn: Callable[[Any], object],
    items: Sequence[Any],
    start_at: float,
    end_at: float,
    chunk: int = CHUNK,
) -> tuple[int, float]:
    """Call ``fn`` on ``items`` in turn, from ``start_at`` until ``end_at`` (``time.monotonic``
    instants shared by the workers of a round), ``chunk`` calls between looks at the
    clock; returns ``(calls, seconds taken)``."""
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    start = time.monotonic()
    n = j = 0
    size = len(items)
    while True:
        for item in items[j : j + chunk]:
            fn(item)
        n += chunk
        j = (j + chunk) % size
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
                conn.send(timed_loop(fns[system], keys, start_at, end_at))
        conn.close()


class ProcessPool:
    """``n`` worker processes running ``target(conn, *args, i)``, ready to run rounds.

    Each worker sends ``("ready", systems)`` once it has connected to every
    system, then answers ``("run", system, start_at, end_at)`` with
    ``(operations, elapsed)`` until it gets ``("stop",)``.  Readers and writers
    (:mod:`.writers`) both run in one.
    """

    role = "worker"

    def __init__(self, ctx: Any, n: int, target: Callable[..., None], *args: Any) -> None:
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        try:
            for i in range(n):
                ours, theirs = ctx.Pipe()
                proc = ctx.Process(target=target, args=(theirs, *args, i))
                proc.start()
                theirs.close()
                self.procs.append(proc)
                self.conns.append(ours)
            systems = None
            for conn in self.conns:
                try:
                    if not conn.poll(300):
                        raise RuntimeError(f"a {self.role} process did not get ready within 300 s.")
                    _, systems = conn.recv()
                except EOFError:
                    raise RuntimeError(
                        f"a {self.role} process exited before it was ready; its error is above."
                    ) from None
            self.systems: list[str] = list(systems or [])
        except BaseException:
            self.close()
            raise

    def round(self, system: str, k: int, seconds: float) -> float:
        """Total operations per second of ``k`` workers working together."""
        start_at = time.monotonic() + 0.02
        for conn in self.conns[:k]:
            conn.send(("run", system, start_at, start_at + seconds))
        total = 0.0
        for conn in self.conns[:k]:
            ops, elapsed = conn.recv()
            total += ops / elapsed
        return total

    def interleaved(
        self,
        preference: Sequence[str],
        counts: Sequence[int],
        seconds: float,
        repeats: int,
        progress: Callable[[str, int, int, str], None],
        stage: str,
    ) -> dict[str, dict[int, list[float]]]:
        """``repeats`` rounds of every system the workers have (in ``preference``'s
        order, rotated each repeat) and every count: the samples, per system and count."""
        order = [s for s in preference if s in self.systems]
        samples: dict[str, dict[int, list[float]]] = {s: {k: [] for k in counts} for s in order}
        total = repeats * len(order) * len(counts)
        done = 0
        for r in range(repeats):
            shift = r % len(order)
            for system in order[shift:] + order[:shift]:
                for k in counts:
                    samples[system][k].append(self.round(system, k, seconds))
                    done += 1
                    progress(stage, done, total, f"{system} × {k}")
        return samples

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


class ReaderPool(ProcessPool):
    """``n`` reader processes (:func:`reader_main`), ready to run rounds."""

    role = "reader"

    def __init__(
        self, ctx: Any, n: int, ns: str, ids: list[str], mdict: Any, redis_socket: str | None
    ) -> None:
        super().__init__(ctx, n, reader_main, ns, ids, mdict, redis_socket)


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
        systems = ("floor", "papertiger", "manager", "redis")
        samples = pool.interleaved(systems, counts, seconds, repeats, progress, "scaling")
    finally:
        pool.close()
    return {"readers": counts, **summarize_rounds(samples, "ops_per_s", seconds, repeats)}


def summarize_rounds(
    samples: dict[str, dict[int, list[float]]], figure: str, seconds: float, repeats: int
) -> dict[str, Any]:
    """The medians (under ``figure``) and the samples of :meth:`ProcessPool.interleaved`."""
    return {
        "seconds": seconds,
        "repeats": repeats,
        figure: {
            s: {str(k): statistics.median(v) for k, v in by_k.items()}
            for s, by_k in samples.items()
        },
        "samples": {s: {str(k): v for k, v in by_k.items()} for s, by_k in samples.items()},
    }
