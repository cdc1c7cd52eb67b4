"""What a replica costs in memory: a fresh process's resident memory before and after
it loads the store, against the msgpack bytes the store holds.

The probe runs in its own spawned process so that nothing else lives in its
heap: it imports papertiger, reads ``/proc/self/status``, counts every
namespace (which attaches the newest checkpoint in place and applies the log
written since), collects garbage and reads the status again.  The difference
is the replica's cost; ``rss_shmem`` is the part that is shared memory mapped
from the log and checkpoint segments (pages every replica shares with the
manager), ``rss_anon`` the replica's private heap.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Sequence
from typing import Any

from .machine import memory_of

__all__ = ["probe_main", "probe_replica"]


def probe_main(conn: Any, namespaces: Sequence[str]) -> None:
    """The probe process (see the module doc); sends its figures over ``conn``."""
    with contextlib.suppress(KeyboardInterrupt):
        import papertiger
        from papertiger.store import CheckoutSessions

        gc.collect()
        before = memory_of()
        t0 = time.perf_counter()
        count = 0
        for ns in namespaces:
            with papertiger.use_namespace(ns):
                count += CheckoutSessions.count()
        load = time.perf_counter() - t0
        gc.collect()
        after = memory_of()
        conn.send(
            {
                "before": before,
                "after": after,
                "gained": {k: v - before.get(k, 0) for k, v in after.items()},
                "records": count,
                "load_seconds": load,
            }
        )
        conn.close()


def probe_replica(ctx: Any, namespaces: Sequence[str], timeout: float = 600.0) -> dict[str, Any]:
    """Run :func:`probe_main` in a spawned process and return its figures."""
    ours, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=probe_main, args=(theirs, list(namespaces)))
    proc.start()
    theirs.close()
    try:
        if not ours.poll(timeout):
            raise RuntimeError(f"the memory probe did not report within {timeout:.0f} s.")
        result: dict[str, Any] = ours.recv()
        return result
    finally:
        ours.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
