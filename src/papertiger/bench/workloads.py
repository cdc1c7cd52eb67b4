"""The measuring worker: seeds every system, then times every operation on each.

Theory of operation
-------------------
:func:`worker_main` runs in a worker process spawned by the harness, the way
a test or benchmark process would use the store: papertiger through the
``PAPERTIGER_ADDRESS`` the harness exported, the Manager through dict
proxies, Redis through its socket.  It

1. seeds the main namespace (``plan.records`` checkout sessions, ten per
   customer) into papertiger (``insert_many``), the Manager dict and Redis,
   and one papertiger namespace per growth size;
2. measures memory: the resident memory each server gained while seeding,
   and a fresh *probe* process's replica (:mod:`.memory`), against the
   msgpack bytes held;
3. builds one :class:`~.timing.Case` per operation, system and size: the
   floors of :mod:`.floors` on the same records and keys, papertiger's
   store API, and what each peer offers (:mod:`.peers`); calibrates each;
   and times them interleaved (:func:`.timing.run_rounds`);
4. returns every sample as plain data, and the main namespace's ids for the
   scaling runs.

Writes go to the namespace being measured (so "insert at 100k" inserts into
a namespace of 100k records), except ``insert_many`` and the catch-up
effects, which have namespaces of their own.  Catch-up: the worker writes
``catchup_effects`` single-record inserts while its replica is idle (writes
never touch the writer's replica), then times the one read that applies them.
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import io
import os
import pstats
import random
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack

from .floors import FloorIndex, FloorReplica, floor_writer
from .machine import memory_of
from .plan import Plan
from .records import checkout_sessions
from .timing import Case, calibrate, rounds_work, run_rounds, summarize

__all__ = ["MAIN_NS", "Worker", "worker_main"]

MAIN_NS = "bench"
MANY_NS = "bench-many"
CATCHUP_NS = "bench-catchup"
TABLE = "checkout_sessions"
#: records per seeding insert_many call
SEED_BATCH = 2_000
#: the ops, in the order the table and chart show them
OPS = (
    "get",
    "list",
    "count",
    "find_by_customer",
    "insert",
    "update",
    "patch",
    "insert_many",
    "catch_up",
)
#: the ops measured at every growth size
GROWTH_OPS = ("get", "list", "count", "find_by_customer", "insert", "update", "patch")
#: customers of the records made for writes: one each (see Worker.fresh)
NEVER_REPEATS = 10**13
#: loops per sample at most, for writes (each loop adds or changes a record)
MAX_WRITE_LOOPS = 5_000

Progress = Callable[[str, int, int, str], None]


def _growth_ns(size: int) -> str:
    return f"bench-{size}"


class Seeded:
    """What the worker knows about one seeded namespace."""

    def __init__(self, ns: str, size: int) -> None:
        self.ns = ns
        self.size = size
        self.customers = max(1, size // 10)
        self.ids: list[str] = []
        self.created: list[int] = []
        self.floor: FloorIndex | None = None
        self.nbytes = 0

    def customer(self, n: int) -> str:
        return f"cus_{n % self.customers:014d}"


class Worker:
    """See the module doc. ``manager_dicts`` and ``redis_socket`` may be None (peer off)."""

    def __init__(
        self,
        plan: Plan,
        progress: Progress,
        ctx: Any,
        manager_dicts: tuple[Any, Any] | None,
        redis_socket: str | None,
        pids: dict[str, Any],
        out_dir: str | None = None,
    ) -> None:
        from papertiger.store import CheckoutSessions

        self.plan = plan
        self.progress = progress
        self.ctx = ctx
        self.store = CheckoutSessions
        self.mdict: Any = manager_dicts[0] if manager_dicts else None
        self.mwrites: Any = manager_dicts[1] if manager_dicts else None
        self.redis: Any = None
        if redis_socket:
            from .peers import RedisPeer

            self.redis = RedisPeer(redis_socket)
        self.pids = pids
        self.out_dir = out_dir
        self.next_n = 10_000_000  # records made for writes are numbered from here
        self.peer_n = 0
        self.seeded: dict[int, Seeded] = {}
        self.seed_seconds: dict[str, float] = {}
        self._main_records: list[dict[str, Any]] = []

    # -- helpers -------------------------------------------------------------
    def fresh(self, count: int) -> list[dict[str, Any]]:
        """New records for writes, each with a customer of its own, so that writes never
        change what ``find_by_customer`` returns for the seeded customers."""
        start = self.next_n
        self.next_n += count
        return list(checkout_sessions(start, count, customers=NEVER_REPEATS))

    def fresh_with_ids(self, count: int) -> list[dict[str, Any]]:
        """Records as papertiger would store them (id, created, object), for the peers."""
        now = int(time.time())
        out = []
        for record in self.fresh(count):
            self.peer_n += 1
            record["id"] = f"cs_bench{self.peer_n:019d}"
            record["created"] = now
            record["object"] = "checkout.session"
            out.append(record)
        return out

    @contextlib.contextmanager
    def ns(self, name: str) -> Iterator[None]:
        import papertiger

        with papertiger.use_namespace(name):
            yield

    def state(self) -> Any:
        from papertiger.engine.connection import current_client

        with current_client().replica.read() as state:
            return state

    # -- 1. seeding ------------------------------------------------------------
    def seed(self) -> None:
        plan = self.plan
        sizes = [s for s in plan.growth_sizes if s != plan.records]
        total = plan.records * (1 + bool(self.mdict) + bool(self.redis)) + sum(sizes)
        done = 0

        def tick(n: int, label: str) -> None:
            nonlocal done
            done += n
            self.progress("seeding", done, total, label)

        main = self.seed_store(MAIN_NS, plan.records, tick, keep_records=True)
        self.seeded[plan.records] = main
        for size in sizes:
            self.seeded[size] = self.seed_store(_growth_ns(size), size, tick)
        self.build_floors()
        records = self._main_records
        if self.mdict is not None:
            t0 = time.perf_counter()
            rows = [(r["id"], r) for r in records]
            for i in range(0, len(rows), 1000):
                self.mdict.update(dict(rows[i : i + 1000]))
                tick(len(rows[i : i + 1000]), "Manager")
            self.seed_seconds["manager"] = time.perf_counter() - t0
        if self.redis is not None:
            t0 = time.perf_counter()
            floor = main.floor
            assert floor is not None
            self.redis.seed(
                MAIN_NS,
                ((rid, i, floor.records[rid], main.customer(i)) for i, rid in enumerate(main.ids)),
            )
            tick(len(main.ids), "Redis")
            self.seed_seconds["redis"] = time.perf_counter() - t0
        self._main_records = []
        self.settle_store()

    def settle_store(self, timeout: float = 1800.0) -> None:
        """Wait until the manager has written the checkpoint its seeding calls for, so
        that timing starts with the store at rest (not beside a checkpoint being written)."""
        from papertiger.engine.connection import current_client

        t0 = time.perf_counter()
        client = current_client()
        while not client.request(["stats"])[1]["log"].get("settled", True):
            if time.perf_counter() - t0 > timeout:
                break
            time.sleep(0.1)
        self.seed_seconds["checkpoint_after_seeding"] = time.perf_counter() - t0

    def seed_store(
        self, ns: str, size: int, tick: Callable[[int, str], None], keep_records: bool = False
    ) -> Seeded:
        seeded = Seeded(ns, size)
        kept: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        with self.ns(ns):
            for start in range(0, size, SEED_BATCH):
                count = min(SEED_BATCH, size - start)
                batch = checkout_sessions(start, count, customers=seeded.customers)
                stored = self.store.insert_many(batch)
                seeded.ids.extend(r["id"] for r in stored)
                seeded.created.extend(r["created"] for r in stored)
                if keep_records:
                    kept.extend(stored)
                tick(count, f"papertiger {ns}")
        self.seed_seconds[f"papertiger:{size}"] = time.perf_counter() - t0
        if keep_records:
            self._main_records = kept
        return seeded

    def build_floors(self) -> None:
        """Floors over the replica's own bytes (no copies), and the bytes held."""
        from papertiger.namespace import normalize_namespace

        t0 = time.perf_counter()
        state = self.state()
        self.seed_seconds["catch_up_after_seeding"] = time.perf_counter() - t0
        for seeded in self.seeded.values():
            key = normalize_namespace(seeded.ns)
            packed = [state.get(TABLE, key, rid) for rid in seeded.ids]
            seeded.nbytes = sum(len(p) for p in packed)
            seeded.floor = FloorIndex(
                (rid, created, i, p, seeded.customer(i))
                for i, (rid, created, p) in enumerate(
                    zip(seeded.ids, seeded.created, packed, strict=True)
                )
            )

    # -- 2. memory ---------------------------------------------------------------
    def memory(self, before: dict[str, dict[str, int]]) -> dict[str, Any]:
        from .memory import probe_replica

        held = sum(s.nbytes for s in self.seeded.values())
        main_bytes = self.seeded[self.plan.records].nbytes
        after = self.server_memory()
        out: dict[str, Any] = {"bytes_held": held, "main_bytes": main_bytes}
        for name, mem in after.items():
            base = before.get(name, {})
            gained = {k: v - base.get(k, 0) for k, v in mem.items()}
            holds = held if name == "papertiger_manager" else main_bytes
            out[name] = {"before": base, "after": mem, "gained": gained, "bytes_held": holds}
        self.progress("memory", 0, 1, "replica probe")
        probe = probe_replica(self.ctx, [s.ns for s in self.seeded.values()])
        probe["bytes_held"] = held
        out["replica"] = probe
        out["shm_bytes"] = _shm_bytes(self.pids.get("papertiger_prefix"))
        self.progress("memory", 1, 1, "replica probe")
        return out

    def server_memory(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for name in ("papertiger_manager", "manager", "redis"):
            pid = self.pids.get(name)
            if pid:
                mem = memory_of(pid)
                if mem:
                    found[name] = mem
        return found

    # -- 3. cases ------------------------------------------------------------------
    def cases(self, writer: Any) -> list[list[Case]]:
        """One group per operation: every system and size of it (see the module doc)."""
        plan = self.plan
        groups: dict[str, list[Case]] = {op: [] for op in OPS}
        for size, seeded in sorted(self.seeded.items()):
            is_main = size == plan.records
            for case in self.store_cases(seeded):
                if is_main or case.op in GROWTH_OPS:
                    groups[case.op].append(case)
            for case in self.floor_read_cases(seeded):
                groups[case.op].append(case)
        main = self.seeded[plan.records]
        for case in self.floor_write_cases(main, writer):
            groups[case.op].append(case)
        if self.mdict is not None:
            for case in self.manager_cases(main):
                groups[case.op].append(case)
        if self.redis is not None:
            for case in self.redis_cases(main):
                groups[case.op].append(case)
        for case in groups["insert_many"] + groups["catch_up"]:
            case.samples = plan.slow_repeats
        return [g for g in groups.values() if g]

    def store_cases(self, s: Seeded) -> list[Case]:
        store, ns, ids, size = self.store, self.ns, s.ids, s.size
        rng = random.Random(size)
        plan = self.plan

        current = self.state  # reads start from a current replica: catch-up is timed apart

        def get(n: int) -> Callable[[], None]:
            keys = rng.choices(ids, k=n)
            current()

            def run() -> None:
                with ns(s.ns):
                    for k in keys:
                        store.get(k)

            return run

        def list_(n: int) -> Callable[[], None]:
            current()

            def run() -> None:
                with ns(s.ns):
                    for _ in range(n):
                        store.list(limit=10)

            return run

        def count(n: int) -> Callable[[], None]:
            current()

            def run() -> None:
                with ns(s.ns):
                    for _ in range(n):
                        store.count()

            return run

        def find(n: int) -> Callable[[], None]:
            customers = [s.customer(rng.randrange(size)) for _ in range(n)]
            current()

            def run() -> None:
                with ns(s.ns):
                    for c in customers:
                        store.find_by_customer(c)

            return run

        inserted: list[str] = []

        def insert(n: int) -> Callable[[], None]:
            # the namespace stays at its size: the last sample's records go, untimed
            with ns(s.ns):
                for rid in inserted:
                    store.delete(rid)
            inserted.clear()
            records = self.fresh(n)
            keep = inserted.append

            def run() -> None:
                with ns(s.ns):
                    for r in records:
                        keep(store.insert(r)["id"])

            return run

        def update(n: int) -> Callable[[], None]:
            records = self.fresh(n)
            for r in records:  # the same record, new contents: same order and customer
                i = rng.randrange(size)
                r["id"], r["created"], r["customer"] = ids[i], s.created[i], s.customer(i)

            def run() -> None:
                with ns(s.ns):
                    for r in records:
                        store.update(r)

            return run

        def patch(n: int) -> Callable[[], None]:
            keys = rng.choices(ids, k=n)
            changes = [{"metadata": {"patched": str(i)}} for i in range(n)]

            def run() -> None:
                with ns(s.ns):
                    for k, c in zip(keys, changes, strict=True):
                        store.patch(k, c)

            return run

        def insert_many(n: int) -> Callable[[], None]:
            store.clear_namespace(MANY_NS)  # the store stays at its size
            batches = [self.fresh(plan.batch) for _ in range(n)]

            def run() -> None:
                with ns(MANY_NS):
                    for b in batches:
                        store.insert_many(b)

            return run

        def catch_up(n: int) -> Callable[[], None]:
            store.clear_namespace(CATCHUP_NS)
            with ns(CATCHUP_NS):
                self.state()  # the replica is current before it goes idle
                for r in self.fresh(plan.catchup_effects):
                    store.insert(r)

            def run() -> None:
                with ns(CATCHUP_NS):
                    store.count()

            return run

        w = MAX_WRITE_LOOPS
        return [
            Case("get", "papertiger", size, get),
            Case("list", "papertiger", size, list_),
            Case("count", "papertiger", size, count),
            Case("find_by_customer", "papertiger", size, find),
            Case("insert", "papertiger", size, insert, max_loops=w),
            Case("update", "papertiger", size, update, max_loops=w),
            Case("patch", "papertiger", size, patch, max_loops=w),
            Case("insert_many", "papertiger", size, insert_many, "record", plan.batch, 3),
            Case("catch_up", "papertiger", size, catch_up, "effect", plan.catchup_effects, 1),
        ]

    def floor_read_cases(self, s: Seeded) -> list[Case]:
        floor = s.floor
        assert floor is not None
        ids, size = s.ids, s.size
        rng = random.Random(size + 1)

        def get(n: int) -> Callable[[], None]:
            keys = rng.choices(ids, k=n)
            fget = floor.get

            def run() -> None:
                for k in keys:
                    fget(k)

            return run

        def list_(n: int) -> Callable[[], None]:
            page = floor.page

            def run() -> None:
                for _ in range(n):
                    page(10)

            return run

        def count(n: int) -> Callable[[], None]:
            fcount = floor.count

            def run() -> None:
                for _ in range(n):
                    fcount()

            return run

        def find(n: int) -> Callable[[], None]:
            customers = [s.customer(rng.randrange(size)) for _ in range(n)]
            ffind = floor.find

            def run() -> None:
                for c in customers:
                    ffind(c)

            return run

        return [
            Case("get", "floor", size, get),
            Case("list", "floor", size, list_),
            Case("count", "floor", size, count),
            Case("find_by_customer", "floor", size, find),
        ]

    def floor_write_cases(self, s: Seeded, writer: Any) -> list[Case]:
        plan, size = self.plan, s.size
        replica = FloorReplica()
        put = writer.put

        def insert(n: int) -> Callable[[], None]:
            records = self.fresh(n)

            def run() -> None:
                for r in records:
                    put(r)

            return run

        def patch(n: int) -> Callable[[], None]:
            changes = [{"metadata": {"patched": str(i)}} for i in range(n)]
            fpatch = writer.patch

            def run() -> None:
                for c in changes:
                    fpatch(c)

            return run

        def insert_many(n: int) -> Callable[[], None]:
            batches = [self.fresh(plan.batch) for _ in range(n)]

            def run() -> None:
                for b in batches:
                    put(b)

            return run

        def catch_up(n: int) -> Callable[[], None]:
            packb = msgpack.packb
            entries = [
                packb(
                    [0, TABLE, [CATCHUP_NS], r["id"], r["created"], packb(r), {"c": r["customer"]}]
                )
                for r in self.fresh_with_ids(plan.catchup_effects)
            ]

            def run() -> None:
                replica.apply_all(entries)

            return run

        w = MAX_WRITE_LOOPS
        return [
            Case("insert", "floor", size, insert, max_loops=w),
            Case("update", "floor", size, insert, max_loops=w),
            Case("patch", "floor", size, patch, max_loops=w),
            Case("insert_many", "floor", size, insert_many, "record", plan.batch, 3),
            Case("catch_up", "floor", size, catch_up, "effect", plan.catchup_effects, 1),
        ]

    def manager_cases(self, s: Seeded) -> list[Case]:
        d, dw, ids, size, plan = self.mdict, self.mwrites, s.ids, s.size, self.plan
        rng = random.Random(size + 2)

        def get(n: int) -> Callable[[], None]:
            keys = rng.choices(ids, k=n)
            dget = d.__getitem__

            def run() -> None:
                for k in keys:
                    dget(k)

            return run

        def count(n: int) -> Callable[[], None]:
            def run() -> None:
                for _ in range(n):
                    len(d)

            return run

        def insert(n: int) -> Callable[[], None]:
            records = self.fresh_with_ids(n)

            def run() -> None:
                for r in records:
                    d[r["id"]] = r

            return run

        def update(n: int) -> Callable[[], None]:
            records = self.fresh_with_ids(n)
            for r in records:
                r["id"] = ids[rng.randrange(size)]

            def run() -> None:
                for r in records:
                    d[r["id"]] = r

            return run

        def insert_many(n: int) -> Callable[[], None]:
            batches = [{r["id"]: r for r in self.fresh_with_ids(plan.batch)} for _ in range(n)]

            def run() -> None:
                for b in batches:
                    dw.update(b)

            return run

        w = MAX_WRITE_LOOPS
        return [
            Case("get", "manager", size, get),
            Case("count", "manager", size, count),
            Case("insert", "manager", size, insert, max_loops=w),
            Case("update", "manager", size, update, max_loops=w),
            Case("insert_many", "manager", size, insert_many, "record", plan.batch, 3),
        ]

    def redis_cases(self, s: Seeded) -> list[Case]:
        r, ids, size, plan = self.redis, s.ids, s.size, self.plan
        rng = random.Random(size + 3)

        def get(n: int) -> Callable[[], None]:
            keys = rng.choices(ids, k=n)
            rget = r.get

            def run() -> None:
                for k in keys:
                    rget(MAIN_NS, k)

            return run

        def list_(n: int) -> Callable[[], None]:
            def run() -> None:
                for _ in range(n):
                    r.page(MAIN_NS, 10)

            return run

        def count(n: int) -> Callable[[], None]:
            def run() -> None:
                for _ in range(n):
                    r.count(MAIN_NS)

            return run

        def find(n: int) -> Callable[[], None]:
            customers = [s.customer(rng.randrange(size)) for _ in range(n)]

            def run() -> None:
                for c in customers:
                    r.find(MAIN_NS, c)

            return run

        def insert(n: int) -> Callable[[], None]:
            records = self.fresh_with_ids(n)

            def run() -> None:
                for rec in records:
                    r.insert(MAIN_NS, rec)

            return run

        def update(n: int) -> Callable[[], None]:
            records = self.fresh_with_ids(n)
            for rec in records:
                rec["id"] = ids[rng.randrange(size)]

            def run() -> None:
                for rec in records:
                    r.update(MAIN_NS, rec)

            return run

        def insert_many(n: int) -> Callable[[], None]:
            batches = [self.fresh_with_ids(plan.batch) for _ in range(n)]

            def run() -> None:
                for b in batches:
                    r.insert_many(MANY_NS, b)

            return run

        w = MAX_WRITE_LOOPS
        return [
            Case("get", "redis", size, get),
            Case("list", "redis", size, list_),
            Case("count", "redis", size, count),
            Case("find_by_customer", "redis", size, find),
            Case("insert", "redis", size, insert, max_loops=w),
            Case("update", "redis", size, update, max_loops=w),
            Case("insert_many", "redis", size, insert_many, "record", plan.batch, 3),
        ]

    # -- 4. the run ----------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        plan = self.plan
        before = self.server_memory()
        if self.redis is not None:
            before.setdefault("redis_info", self.redis.memory())
        self.seed()
        memory = self.memory(before)
        if self.redis is not None:
            memory["redis_info"] = {
                "before": before.pop("redis_info"),
                "after": self.redis.memory(),
            }
        main = self.seeded[plan.records]
        assert main.floor is not None
        sample_record = main.floor.records[main.ids[0]]
        with floor_writer(self.ctx, sample_record, self.pids.get("workdir")) as writer:
            groups = self.cases(writer)
            gc.collect()
            gc.freeze()  # see timing's doc: the seeded heap is out of the collector's way
            every = [c for g in groups for c in g]
            for i, case in enumerate(every):
                self.progress("calibrating", i, len(every), case.name)
                calibrate(case, plan.sample_seconds)
            total = rounds_work(groups, plan.repeats)
            done = 0

            def tick(case: Case) -> None:
                nonlocal done
                done += 1
                self.progress("measuring", done, total, case.name)

            run_rounds(groups, plan.repeats, tick)
            profiles = self.profile(every) if plan.profile and self.out_dir else {}
        return {
            "cases": [summarize(c) for c in every],
            "memory": memory,
            "seed_seconds": self.seed_seconds,
            "sizes": sorted(self.seeded),
            "main_ns": MAIN_NS,
            "main_ids": main.ids,
            "profiles": profiles,
        }

    def profile(self, cases: Sequence[Case]) -> dict[str, str]:
        """cProfile of each papertiger case at the main size: ``OUT/profile/<op>.pstats``."""
        assert self.out_dir is not None
        folder = Path(self.out_dir) / "profile"
        folder.mkdir(parents=True, exist_ok=True)
        written: dict[str, str] = {}
        mine = [c for c in cases if c.system == "papertiger" and c.size == self.plan.records]
        for i, case in enumerate(mine):
            self.progress("profiling", i, len(mine), case.op)
            fn = case.make(max(1, min(case.loops * 5, case.max_loops)))
            prof = cProfile.Profile()
            prof.runcall(fn)
            path = folder / f"{case.op}.pstats"
            prof.dump_stats(path)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
            (folder / f"{case.op}.txt").write_text(text.getvalue(), encoding="utf-8")
            written[case.op] = str(path)
        return written


def _shm_bytes(prefix: int | str | None) -> int | None:
    if not prefix or not isinstance(prefix, str):
        return None
    from papertiger.engine.shm import SHM_DIR, list_segments

    total = 0
    for name in list_segments(prefix):
        with contextlib.suppress(OSError):
            total += os.stat(os.path.join(SHM_DIR, name)).st_blocks * 512
    return total


def worker_main(
    conn: Any,
    plan: Plan,
    manager_dicts: tuple[Any, Any] | None,
    redis_socket: str | None,
    pids: dict[str, Any],
    out_dir: str | None,
) -> None:
    """Entry point of the worker process: results (or the error) go back over ``conn``."""
    import multiprocessing

    def progress(phase: str, done: int, total: int, label: str) -> None:
        conn.send(("progress", phase, done, total, label))

    try:
        if plan.pin_cpu is not None:
            os.sched_setaffinity(0, {plan.pin_cpu})  # its echo and probe processes inherit it
        ctx = multiprocessing.get_context("spawn")
        worker = Worker(plan, progress, ctx, manager_dicts, redis_socket, pids, out_dir)
        conn.send(("result", worker.run()))
    except KeyboardInterrupt:
        pass
    except BaseException:
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
