"""New reader processes: what a new process pays for its first read, and what N readers cost.

Theory of operation
-------------------
Both figures are taken against stores of their own, one per size, holding
the same 4 KB checkout sessions (:mod:`.records`) as msgpack bytes:

* papertiger: a private manager (:func:`papertiger.serve`), seeded with
  ``insert_many``, then asked for a checkpoint if the last one does not cover
  every record, so that a new process starts from a current image (the state
  a store reaches on its own once writes pause, within 1/32 of its records:
  the idle checkpoint of :mod:`papertiger.engine.log`);
* Redis: a private ``redis-server`` (:class:`~.peers.RedisServer`), one key
  per record (``SET id packed``);
* ``multiprocessing.Manager().dict()``: id -> packed bytes (bytes, not dicts:
  a Manager holding 100k dicts would measure pickling, not sharing).

**A new process's first read** (:func:`first_read`): a fresh interpreter
(``python -c``) that notes the time, imports the client (``papertiger``;
``redis`` + ``msgpack``; ``multiprocessing`` + ``msgpack``), connects, reads
one record and decodes it, then reports the time from before the import to
the decoded record and its peak RSS (``VmHWM``: ``ru_maxrss`` would carry the
parent's peak across ``exec``).  Interpreter start-up is left out: it is the
same for everyone.  Every process runs with its bytecode cached, as an
installed package does (a private ``PYTHONPYCACHEPREFIX``, filled by one
untimed process per system first; ``PYTHONDONTWRITEBYTECODE`` is dropped),
so no client is timed compiling its sources.  Rounds interleave systems and
sizes; each figure is the median of ``first_read_repeats`` processes.

**Memory of N readers** (:func:`readers_memory`): N such processes at once,
against the largest store, each reading its own random ``reader_fraction``
of the records (decoded, as a test would).  Each reports its resident
memory (``/proc/self/status``; PSS from ``smaps_rollup``) after its first
record -- the *fixed per-process cost*: interpreter, client, connection --
and after its reads.  The target: the readers' RSS together stay within
``1.5 x`` the bytes the store holds plus N fixed costs.  The server's memory
(and, for papertiger, the shared memory its segments hold) is reported
beside them.

``python -m papertiger.bench.readers [--quick] [--out DIR]`` runs just these
two figures; ``papertiger bench`` runs them after the others, and
:mod:`.report` and :mod:`.chart` show them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack

from .machine import memory_of
from .plan import Plan
from .records import checkout_sessions
from .report import count_label

__all__ = [
    "analyse",
    "draw_first_read",
    "draw_readers_memory",
    "measure",
    "sections",
    "targets",
]

NS = "bench-first"
SEED_BATCH = 2_000
TIMEOUT = 300.0
SYSTEMS = ("papertiger", "redis", "manager")
NAMES = {"papertiger": "papertiger", "redis": "Redis", "manager": "Manager().dict()"}
Progress = Callable[[str, int, int, str], None]

# -- what the new processes run (nothing of the harness: only the client under test) --------

_REPORT = """
def _report(**figures):
    import json
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssShmem", "RssFile"):
                status[key] = int(rest.split()[0]) * 1024
    pss = None
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    figures.update(rss=status.get("VmRSS"), rss_anon=status.get("RssAnon"),
                   rss_shmem=status.get("RssShmem"), rss_file=status.get("RssFile"), pss=pss,
                   maxrss=status.get("VmHWM"))
    print(json.dumps(figures), flush=True)
"""

_OPEN = {
    "papertiger": """
import papertiger
from papertiger.store import CheckoutSessions
ns = papertiger.use_namespace(sys.argv[2])
ns.__enter__()
get = CheckoutSessions.get
""",
    "redis": """
import msgpack
import redis
client = redis.Redis(unix_socket_path=os.environ["BENCH_REDIS_SOCKET"])
def get(key):
    return msgpack.unpackb(client.get(key))
""",
    "manager": """
import multiprocessing, pickle
import msgpack
multiprocessing.current_process().authkey = bytes.fromhex(os.environ["BENCH_MANAGER_AUTHKEY"])
with open(os.environ["BENCH_MANAGER_PROXY"], "rb") as f:
    records = pickle.load(f)
def get(key):
    return msgpack.unpackb(records[key])
""",
}

#: argv: system, namespace, first id
FIRST_READ = """
import time
t0 = time.perf_counter()
import os, sys
{open}
record = get(sys.argv[3])
seconds = time.perf_counter() - t0
assert record["id"] == sys.argv[3]
{report}
_report(seconds=seconds)
"""

#: argv: system, namespace, file of ids to read (the first is read alone, first)
READER = """
import os, sys
{open}
with open(sys.argv[3]) as f:
    ids = f.read().split()
assert get(ids[0])["id"] == ids[0]
{report}
_report(stage="first")
for key in ids:
    get(key)
_report(stage="read", records=len(ids))
sys.stdin.read()  # stay alive until every reader has reported
"""


def _script(template: str, system: str) -> str:
    return template.format(open=_OPEN[system], report=_REPORT)


# -- the stores ----------------------------------------------------------------------------------


class Stores:
    """One size's stores, seeded with the same ``n`` records; :meth:`close` stops them."""

    def __init__(self, n: int, workdir: str, redis: bool, progress: Progress) -> None:
        self.n = n
        self.workdir = tempfile.mkdtemp(prefix=f"first-{n}-", dir=workdir)
        #: bytecode of every client, shared by the processes of every size
        self.pycache = os.path.join(workdir, "pycache")
        self.stack = contextlib.ExitStack()
        self.ids: list[str] = []
        self.bytes_held = 0
        self.env: dict[str, dict[str, str]] = {}
        self.pids: dict[str, int | None] = {}
        self.prefix: str | None = None
        try:
            self._papertiger(progress)
            if redis:
                self._redis(progress)
            self._manager(progress)
        except BaseException:
            self.close()
            raise

    def _base_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PAPERTIGER_") and k != "PYTHONDONTWRITEBYTECODE"
        }
        env["PYTHONPYCACHEPREFIX"] = self.pycache
        return env

    def _papertiger(self, progress: Progress) -> None:
        import papertiger
        from papertiger.store import CheckoutSessions

        server = self.stack.enter_context(papertiger.serve())
        self.pids["papertiger"] = server.pid
        self.prefix = server.control[:-2]
        with papertiger.use_namespace(NS):
            for start in range(0, self.n, SEED_BATCH):
                count = min(SEED_BATCH, self.n - start)
                batch = checkout_sessions(start, count, customers=max(1, self.n // 10))
                stored = CheckoutSessions.insert_many(batch)
                self.ids += [r["id"] for r in stored]
                self.bytes_held += sum(len(msgpack.packb(r)) for r in stored)
                progress("seeding", start + count, self.n, f"papertiger {self.n:,}")
        _settle(server)
        self.env["papertiger"] = {
            **self._base_env(),
            "PAPERTIGER_ADDRESS": server.address,
            "PAPERTIGER_AUTHKEY": server.authkey.hex(),
        }

    def _packed(self) -> Iterator[list[tuple[str, bytes]]]:
        """The records as papertiger stores them, in batches (this size's store is the
        process's current one while the stores are made)."""
        from papertiger.engine.connection import current_client
        from papertiger.namespace import normalize_namespace

        key = normalize_namespace(NS)
        for start in range(0, len(self.ids), SEED_BATCH):
            with current_client().replica.read() as state:
                yield [
                    (rid, state.get("checkout_sessions", key, rid) or b"")
                    for rid in self.ids[start : start + SEED_BATCH]
                ]

    def _redis(self, progress: Progress) -> None:
        import redis

        from .peers import RedisServer

        server = RedisServer(workdir=self.workdir)
        self.stack.callback(server.stop)
        self.pids["redis"] = server.pid
        client = redis.Redis(unix_socket_path=server.socket)
        try:
            done = 0
            for batch in self._packed():
                client.mset(dict(batch))
                done += len(batch)
                progress("seeding", done, self.n, f"Redis {self.n:,}")
        finally:
            client.close()
        self.env["redis"] = {**self._base_env(), "BENCH_REDIS_SOCKET": server.socket}

    def _manager(self, progress: Progress) -> None:
        import multiprocessing

        from .peers import start_manager

        ctx = multiprocessing.get_context("spawn")
        manager, pid = start_manager(ctx)
        self.stack.callback(_shutdown, manager)
        self.pids["manager"] = pid
        records = manager.dict()
        done = 0
        for batch in self._packed():
            records.update(dict(batch))
            done += len(batch)
            progress("seeding", done, self.n, f"Manager {self.n:,}")
        proxy = os.path.join(self.workdir, "proxy.pickle")
        with open(proxy, "wb") as f:
            pickle.dump(records, f)
        self.env["manager"] = {
            **self._base_env(),
            "BENCH_MANAGER_PROXY": proxy,
            "BENCH_MANAGER_AUTHKEY": bytes(multiprocessing.current_process().authkey).hex(),
        }
        self._records_proxy = records  # keeps the dict alive on the server

    @property
    def systems(self) -> list[str]:
        return [s for s in SYSTEMS if s in self.env]

    def shm_bytes(self) -> int | None:
        if self.prefix is None:
            return None
        from papertiger.engine.shm import SHM_DIR, list_segments

        total = 0
        for name in list_segments(self.prefix + "_"):
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(SHM_DIR, name)).st_blocks * 512
        return total

    def close(self) -> None:
        self._records_proxy = None
        self.stack.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _shutdown(manager: Any) -> None:
    with contextlib.suppress(Exception):
        manager.shutdown()


def _settle(server: Any, timeout: float = TIMEOUT) -> None:
    """Make the newest checkpoint cover every record: new processes start from a current
    image, whatever part of the seeding the last checkpoint happened to cover."""
    from papertiger.engine.connection import current_client

    deadline = time.monotonic() + timeout
    while not server.stats()["log"]["settled"]:  # a checkpoint being written: let it end
        if time.monotonic() > deadline:
            raise RuntimeError(f"the papertiger manager did not settle within {timeout:.0f} s.")
        time.sleep(0.05)
    if server.stats()["log"]["bytes_since_checkpoint"]:
        current_client().request(["checkpoint"])


# -- the figures ---------------------------------------------------------------------------------


def _run(script: str, args: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"a new reader process failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def first_read(
    stores: Sequence[Stores], repeats: int, progress: Progress
) -> dict[str, dict[str, Any]]:
    """Per system and size: the seconds and peak RSS of ``repeats`` new processes."""
    found: dict[str, dict[str, Any]] = {}
    for system in stores[0].systems:  # untimed: caches the bytecode, warms the page cache
        s = stores[0]
        _run(_script(FIRST_READ, system), [system, NS, s.ids[0]], s.env[system])
    rounds = [(s, system) for _ in range(repeats) for s in stores for system in s.systems]
    for i, (s, system) in enumerate(rounds):
        rid = s.ids[(i * 7919) % len(s.ids)]
        got = _run(_script(FIRST_READ, system), [system, NS, rid], s.env[system])
        entry = found.setdefault(system, {}).setdefault(str(s.n), {"seconds": [], "maxrss": []})
        entry["seconds"].append(got["seconds"])
        entry["maxrss"].append(got["maxrss"])
        progress("first read", i + 1, len(rounds), f"{system} {s.n:,}")
    for by_size in found.values():
        for entry in by_size.values():
            entry["median_s"] = statistics.median(entry["seconds"])
            entry["median_maxrss"] = statistics.median(entry["maxrss"])
    return found


def readers_memory(
    s: Stores, counts: Sequence[int], fraction: float, progress: Progress
) -> dict[str, Any]:
    """Per system and reader count: each reader's memory, their total, the server's."""
    per_reader = max(1, int(len(s.ids) * fraction))
    out: dict[str, Any] = {}
    rng = random.Random(11)
    steps = [(system, k) for k in counts for system in s.systems]
    for step, (system, k) in enumerate(steps):
        files = []
        for r in range(k):
            path = os.path.join(s.workdir, f"ids-{system}-{k}-{r}.txt")
            with open(path, "w") as f:
                f.write("\n".join(rng.sample(s.ids, per_reader)))
            files.append(path)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _script(READER, system), system, NS, path],
                env=s.env[system],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for path in files
        ]
        readers = []
        try:
            for proc in procs:
                assert proc.stdout is not None
                first = json.loads(proc.stdout.readline() or "null")
                read = json.loads(proc.stdout.readline() or "null")
                if first is None or read is None:
                    raise RuntimeError(f"a {system} reader failed:\n{proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
                readers.append({"first": first, "read": read})
            pid = s.pids.get(system)
            server = memory_of(pid) if pid else {}
        finally:
            for proc in procs:
                with contextlib.suppress(OSError):
                    proc.communicate(timeout=TIMEOUT)
        fixed = statistics.median(r["first"]["rss"] for r in readers)
        total = sum(r["read"]["rss"] for r in readers)
        out.setdefault(system, {})[str(k)] = {
            "readers": readers,
            "readers_rss": total,
            "readers_anon": sum(r["read"]["rss_anon"] or 0 for r in readers),
            "readers_shmem": sum(r["read"]["rss_shmem"] or 0 for r in readers),
            "readers_pss": sum(r["read"]["pss"] or 0 for r in readers),
            "fixed": fixed,
            "server": server,
            "shm_bytes": s.shm_bytes() if system == "papertiger" else None,
        }
        progress("N readers", step + 1, len(steps), f"{system} x {k}")
    return {
        "records": len(s.ids),
        "per_reader": per_reader,
        "fraction": fraction,
        "bytes_held": s.bytes_held,
        "counts": list(counts),
        "systems": out,
    }


def measure(plan: Plan, workdir: str, redis: bool, progress: Progress) -> dict[str, Any]:
    """Both figures of ``plan`` (see the module doc); every store is stopped afterwards."""
    sizes = sorted(set(plan.first_read_sizes))
    stores: list[Stores] = []
    try:
        for n in sizes:
            stores.append(Stores(n, workdir, redis, progress))
        first = first_read(stores, plan.first_read_repeats, progress)
        memory = readers_memory(stores[-1], plan.reader_counts, plan.reader_fraction, progress)
    finally:
        for s in reversed(stores):  # each store's serve() block ends in the order it began
            s.close()
    return {
        "sizes": sizes,
        "repeats": plan.first_read_repeats,
        "first_read": first,
        "readers_memory": memory,
    }


# -- figures for the report ----------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b


def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    """Ratios of both figures, added to ``raw["new_processes"]`` (returned)."""
    found = raw.get("new_processes") or {}
    if not found:
        return {}
    sizes = found["sizes"]
    small, large = str(sizes[0]), str(sizes[-1])
    first = found["first_read"]
    ratios: dict[str, Any] = {"small": sizes[0], "large": sizes[-1]}
    pt = first.get("papertiger", {})
    if small in pt and large in pt:
        ratios["time_large_vs_small"] = _ratio(pt[large]["median_s"], pt[small]["median_s"])
        ratios["maxrss_large_vs_small"] = _ratio(
            pt[large]["median_maxrss"], pt[small]["median_maxrss"]
        )
    for peer in ("redis", "manager"):
        theirs = first.get(peer, {}).get(large)
        if theirs and large in pt:
            ratios[f"papertiger_vs_{peer}"] = _ratio(pt[large]["median_s"], theirs["median_s"])
    memory = found["readers_memory"]
    held = memory["bytes_held"]
    beyond: dict[str, dict[str, float | None]] = {}
    for system, by_k in memory["systems"].items():
        beyond[system] = {}
        for k, entry in by_k.items():
            entry["beyond_fixed"] = entry["readers_rss"] - int(k) * entry["fixed"]
            entry["beyond_fixed_vs_held"] = _ratio(entry["beyond_fixed"], held)
            beyond[system][k] = entry["beyond_fixed_vs_held"]
    ratios["readers_beyond_fixed_vs_held"] = beyond
    found["ratios"] = ratios
    return ratios


def targets(raw: dict[str, Any], target: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """This module's targets, made with :func:`.report._target`."""
    found = raw.get("new_processes") or {}
    ratios = found.get("ratios") or {}
    if not found:
        why = "the new-process figures did not run"
        return [target("a new process's first read: targets", None, "<=", 1.0, why)]
    small, large = count_label(ratios["small"]), count_label(ratios["large"])
    redis_why = str(raw.get("systems", {}).get("redis", {}).get("reason") or "no Redis")
    out = [
        target(
            f"new process's first read at {large} records ≤ 2× at {small}",
            ratios.get("time_large_vs_small"),
            "<=",
            2.0,
            "one size only",
        ),
        target(
            f"new process's peak RSS at {large} records ≤ 1.5× at {small}",
            ratios.get("maxrss_large_vs_small"),
            "<=",
            1.5,
            "one size only",
        ),
        target(
            f"new process's first read ≤ 1.0× redis-py's (at {large})",
            ratios.get("papertiger_vs_redis"),
            "<=",
            1.0,
            redis_why,
        ),
    ]
    memory = found["readers_memory"]
    worst = None
    for value in ratios.get("readers_beyond_fixed_vs_held", {}).get("papertiger", {}).values():
        if value is not None:
            worst = value if worst is None else max(worst, value)
    counts = ", ".join(str(k) for k in memory["counts"])
    out.append(
        target(
            f"N readers (N = {counts}) each reading {memory['fraction']:.0%}: total RSS ≤ 1.5× "
            "bytes held + N × per-process cost",
            worst,
            "<=",
            1.5,
            "the readers did not run",
        )
    )
    return out


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f} ms"


def _mib(n: float | None) -> str:
    return "—" if n is None else f"{n / 2**20:.1f} MiB"


def first_read_rows(raw: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    found = raw.get("new_processes") or {}
    if not found:
        return [], []
    sizes = found["sizes"]
    header = ["system"]
    for n in sizes:
        header += [f"time at {count_label(n)}", f"peak RSS at {count_label(n)}"]
    if len(sizes) > 1:
        header.append(f"time {count_label(sizes[-1])}/{count_label(sizes[0])}")
    rows = []
    pt_large = found["first_read"].get("papertiger", {}).get(str(sizes[-1]), {}).get("median_s")
    for system in SYSTEMS:
        by_size = found["first_read"].get(system)
        if not by_size:
            continue
        cells = [NAMES[system]]
        for n in sizes:
            entry = by_size.get(str(n), {})
            cells += [_ms(entry.get("median_s")), _mib(entry.get("median_maxrss"))]
        if len(sizes) > 1:
            a = by_size.get(str(sizes[-1]), {}).get("median_s")
            b = by_size.get(str(sizes[0]), {}).get("median_s")
            r = _ratio(a, b)
            cells.append("—" if r is None else f"{r:.2f}×")
        if system != "papertiger" and pt_large:
            theirs = by_size.get(str(sizes[-1]), {}).get("median_s")
            if theirs:
                cells[0] += f" ({theirs / pt_large:.2f}× papertiger's time)"
        rows.append(cells)
    return header, rows


def readers_memory_rows(raw: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    found = raw.get("new_processes") or {}
    if not found:
        return [], []
    memory = found["readers_memory"]
    held = memory["bytes_held"]
    header = ["system", "readers", "readers' RSS", "per-process", "beyond/bytes held", "server RSS"]
    rows = []
    for system in SYSTEMS:
        by_k = memory["systems"].get(system)
        if not by_k:
            continue
        for k in memory["counts"]:
            entry = by_k.get(str(k))
            if not entry:
                continue
            beyond = entry.get("beyond_fixed_vs_held")
            server = entry.get("server", {}).get("rss")
            shm = entry.get("shm_bytes")
            rows.append(
                [
                    NAMES[system],
                    str(k),
                    _mib(entry["readers_rss"]),
                    _mib(entry["fixed"]),
                    "—" if beyond is None else f"{beyond:.3f}×",
                    _mib(server) + (f" + {_mib(shm)} shm" if shm else ""),
                ]
            )
    header[0] = f"system ({memory['records']:,} records, {_mib(held)} held)"
    return header, rows


def sections(raw: dict[str, Any]) -> list[tuple[str, Callable[..., Any]]]:
    """This module's tables, for :mod:`.report`."""
    found = raw.get("new_processes") or {}
    if not found:
        return []
    memory = found["readers_memory"]
    return [
        (
            "A new process's first read (from before the import to a decoded record; "
            f"median of {found['repeats']} processes)",
            first_read_rows,
        ),
        (
            f"Memory of N reader processes, each reading a random {memory['fraction']:.0%} "
            "(RSS beyond the per-process cost, over the bytes held)",
            readers_memory_rows,
        ),
    ]


# -- the chart's panels --------------------------------------------------------------------------


def draw_first_read(ax: Any, raw: dict[str, Any], colours: dict[str, str]) -> None:
    """Bars: each system's first read at each size, labelled with its peak RSS."""
    found = raw.get("new_processes") or {}
    if not found:
        ax.set_axis_off()
        return
    sizes = found["sizes"]
    systems = [s for s in SYSTEMS if s in found["first_read"]]
    width = 0.8 / max(1, len(systems))
    for j, system in enumerate(systems):
        for i, n in enumerate(sizes):
            entry = found["first_read"][system].get(str(n))
            if not entry:
                continue
            x = i - 0.4 + width * (j + 0.5)
            ms = entry["median_s"] * 1000
            ax.bar(x, ms, width * 0.92, color=colours[system], zorder=2,
                   label=NAMES[system] if i == 0 else None)  # fmt: skip
            ax.annotate(
                f"{ms:.0f} ms\n{entry['median_maxrss'] / 2**20:.0f} MiB", (x, ms),
                textcoords="offset points", xytext=(0, 2), ha="center", va="bottom", fontsize=7,
            )  # fmt: skip
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels([f"{n:,} records" for n in sizes], fontsize=8)
    ax.set_ylabel("ms, import to first decoded record")
    ax.set_title("A new process's first read (labels: time, peak RSS)", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.25)
    ax.grid(axis="y", color="#eeeeee", zorder=0)


def draw_readers_memory(ax: Any, raw: dict[str, Any], colours: dict[str, str]) -> None:
    """Lines: the readers' total RSS by reader count, with the target line."""
    found = raw.get("new_processes") or {}
    if not found:
        ax.set_axis_off()
        return
    memory = found["readers_memory"]
    counts = memory["counts"]
    held = memory["bytes_held"]
    for system in SYSTEMS:
        by_k = memory["systems"].get(system)
        if not by_k:
            continue
        ks = [k for k in counts if str(k) in by_k]
        ax.plot(ks, [by_k[str(k)]["readers_rss"] / 2**20 for k in ks], marker="o",
                color=colours[system], label=f"{NAMES[system]} readers")  # fmt: skip
        if system == "papertiger":
            fixed = statistics.median(by_k[str(k)]["fixed"] for k in ks)
            ax.plot(ks, [(1.5 * held + k * fixed) / 2**20 for k in ks], ls="--",
                    color="#aa0000", lw=1, label="target: 1.5× held + N × per-process")  # fmt: skip
    ax.axhline(held / 2**20, color="#222222", lw=1)
    ax.annotate(
        "bytes held", (counts[0], held / 2**20), xytext=(3, 3), textcoords="offset points",
        fontsize=7,
    )  # fmt: skip
    ax.set_xticks(counts)
    ax.set_xlabel("reader processes")
    ax.set_ylabel("MiB, total RSS of the readers")
    ax.set_title(
        f"Memory of N readers, each reading {memory['fraction']:.0%} of "
        f"{memory['records']:,} records",
        fontsize=10,
    )
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, frameon=False)
    ax.grid(color="#eeeeee")


# -- on its own ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m papertiger.bench.readers [--quick|--full] [--out DIR]``."""
    import argparse

    from .machine import describe
    from .peers import redis_unavailable
    from .plan import PRESETS
    from .progress import ProgressBar

    parser = argparse.ArgumentParser(prog="python -m papertiger.bench.readers", description=(
        "Measure a new process's first read and the memory of N reader processes, for "
        "papertiger, Redis and Manager().dict()."))  # fmt: skip
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", dest="preset", action="store_const", const="quick")
    preset.add_argument("--full", dest="preset", action="store_const", const="full")
    parser.add_argument("--out", type=Path, default=Path("papertiger-bench"))
    parser.set_defaults(preset="default")
    args = parser.parse_args(argv)
    plan = PRESETS[args.preset]
    args.out.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar()
    workdir = tempfile.mkdtemp(prefix="ptg-bench-")
    load = os.getloadavg()[0]
    try:
        why = redis_unavailable()
        found = measure(plan, workdir, why is None, bar.update)
    finally:
        bar.close()
        shutil.rmtree(workdir, ignore_errors=True)
    raw: dict[str, Any] = {"plan": plan.to_dict(), "machine": describe(), "new_processes": found}
    raw["machine"]["load_before"] = load
    analyse(raw)
    text = []
    from .report import _target, _text_table

    for title, rows_of in sections(raw):
        header, rows = rows_of(raw)
        text.append(f"{title}\n{_text_table(header, rows)}")
    for t in targets(raw, _target):
        text.append(f"{t['name']}: {t['status']} ({t.get('shown') or t.get('why')})")
    (args.out / "new_processes.json").write_text(
        json.dumps(raw, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8"
    )
    print("\n\n".join(text) + f"\n\nload average before the run: {load:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
