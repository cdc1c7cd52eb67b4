"""The benchmark harness: it runs, writes its outputs and leaves nothing behind.

These tests check that the harness works, never how fast anything is.  The
smoke test runs ``papertiger bench`` in a tiny configuration as a real
subprocess (real manager, Manager, Redis when redis-server exists, worker
and reader processes); the interrupt test sends it Ctrl-C mid-run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from papertiger.bench.floors import FloorIndex, FloorReplica
from papertiger.bench.plan import PRESETS
from papertiger.bench.records import checkout_sessions
from papertiger.bench.workloads import OPS
from papertiger.engine.shm import list_segments
from papertiger.fixtures import vary_checkout_session

pytest.importorskip(
    "pyperf", reason="the benchmark harness needs its extra: pip install -e '.[bench]'"
)

TINY = [
    "--quick",
    "--records", "300",
    "--sizes", "100,300",
    "--repeats", "2",
    "--sample-ms", "2",
    "--readers", "1,2",
    "--writers", "1,2",
    "--scaling-seconds", "0.05",
    "--catchup-effects", "50",
    "--batch", "50",
    "--no-http",  # the Stripe API figures have their own smoke test (tests/http)
    "--first-read-sizes", "100,300",
    "--first-read-repeats", "1",
    "--reader-counts", "1,2",
    "--no-progress",
]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("PAPERTIGER_ADDRESS", "PAPERTIGER_AUTHKEY", "PAPERTIGER_NAMESPACE"):
        env.pop(key, None)  # the harness starts its own manager
    return env


def _gone(pid: int | None) -> bool:
    if not pid:
        return True
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def _assert_nothing_left(systems: dict[str, Any]) -> None:
    pt = systems["papertiger"]
    left = [n for n in list_segments() if n.startswith(pt["prefix"] + "_")]
    assert not left, f"shared memory left behind: {left}"
    assert not os.path.exists(pt["workdir"]), f"{pt['workdir']} left behind"
    for pid in (pt["manager_pid"], systems["manager"].get("pid"), systems["redis"].get("pid")):
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(pid), f"process {pid} of the run is still running"


def _redis_expected() -> bool:
    from papertiger.bench.peers import redis_unavailable

    return redis_unavailable() is None


def test_records_are_the_fixture_varied() -> None:
    fast = list(checkout_sessions(0, 30, customers=7))
    slow = [vary_checkout_session(n, customers=7) for n in range(30)]
    assert fast == slow
    assert [msgpack.packb(r) for r in fast] == [msgpack.packb(r) for r in slow]
    assert len({r["client_reference_id"] for r in fast}) == 30


def test_floor_index_reads_like_the_store() -> None:
    rows = [
        (f"cs_{i}", 100 + i // 3, i, msgpack.packb({"n": i}), f"cus_{i % 4}") for i in range(20)
    ]
    floor = FloorIndex(rows)
    assert floor.count() == 20
    assert [r["n"] for r in floor.page(10)] == list(range(19, 9, -1))
    assert [r["n"] for r in floor.find("cus_1")] == [17, 13, 9, 5, 1]
    assert floor.get("cs_3") == {"n": 3}
    assert floor.get("cs_3") is not floor.get("cs_3")  # a fresh dict every time
    replica = FloorReplica()
    entry = msgpack.packb([0, "t", ["ns"], "cs_x", 5, msgpack.packb({"a": 1}), {"c": "cus_9"}])
    replica.apply_all([entry, entry])
    assert replica.records == {"cs_x": msgpack.packb({"a": 1})}
    assert "cus_9" in replica.index


def test_presets_are_valid() -> None:
    for plan in PRESETS.values():
        plan.check()
    assert PRESETS["full"].growth_sizes[-1] == 1_000_000
    with pytest.raises(ValueError, match="repeats"):
        PRESETS["quick"].with_overrides(repeats=1).check()


def test_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "papertiger", "bench", *TINY, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Operations (300 records" in proc.stdout
    assert "Targets" in proc.stdout and "get ≤ 1.15× its floor" in proc.stdout

    raw = json.loads((out / "results.json").read_text())
    by_case = {(c["op"], c["system"], c["size"]) for c in raw["cases"]}
    for op in OPS:
        assert (op, "papertiger", 300) in by_case, op
        assert (op, "floor", 300) in by_case, op
    for op in ("get", "list", "count", "find_by_customer", "insert", "update", "patch"):
        assert (op, "papertiger", 100) in by_case, op
    for op in ("get", "count", "insert", "update", "insert_many"):
        assert (op, "manager", 300) in by_case, op
    for case in raw["cases"]:
        assert len(case["values_s"]) >= 2 and all(v > 0 for v in case["values_s"])

    redis = raw["systems"]["redis"]
    if _redis_expected():
        assert redis["available"], redis
        assert ("get", "redis", 300) in by_case
        assert ("list", "redis", 300) in by_case
        on_redis = raw["on_redis"]  # papertiger on Redis against the raw commands
        assert on_redis["available"], on_redis
        assert set(on_redis["overhead"]) == {"get", "list", "insert"}
        assert all(ratio > 0 for ratio in on_redis["overhead"].values())
        assert "papertiger on Redis against the raw redis-py commands" in proc.stdout
        assert "papertiger on Redis: insert ≤ 1.3× the raw commands" in proc.stdout
    else:
        assert not redis["available"]
        assert redis["reason"] and not any(c[1] == "redis" for c in by_case)
        assert "Redis peer skipped" in proc.stdout
        assert not raw["on_redis"]["available"] and raw["on_redis"]["reason"]

    statuses = {t["status"] for t in raw["targets"]}
    assert statuses <= {"met", "missed", "skipped"}
    assert {"papertiger", "floor", "manager"} <= set(raw["scaling"]["ops_per_s"])
    writers = raw["writers"]["inserts_per_s"]
    assert {"papertiger", "manager"} <= set(writers)
    assert all(writers[s]["1"] > 0 and writers[s]["2"] > 0 for s in writers)
    assert ("redis" in writers) == _redis_expected()
    assert "Write throughput by writer processes" in proc.stdout
    assert raw["memory"]["replica"]["records"] > 0
    assert raw["memory_ratios"]["replica"]["rss"] > 0
    new = raw["new_processes"]
    systems = {"papertiger", "manager", "redis"} if _redis_expected() else {"papertiger", "manager"}
    assert set(new["first_read"]) == systems
    for by_size in new["first_read"].values():
        assert set(by_size) == {"100", "300"}
        assert all(e["median_s"] > 0 and e["median_maxrss"] > 0 for e in by_size.values())
    assert set(new["readers_memory"]["systems"]) == systems
    for by_k in new["readers_memory"]["systems"].values():
        assert set(by_k) == {"1", "2"} and all(e["readers_rss"] > 0 for e in by_k.values())
    assert "A new process's first read" in proc.stdout and "Memory of N reader" in proc.stdout

    import pyperf

    suite = pyperf.BenchmarkSuite.load(str(out / "pyperf.json"))
    assert "get[300]/papertiger" in suite.get_benchmark_names()
    assert "get" in (out / "table.txt").read_text()
    assert (out / "table.md").read_text().count("|") > 20
    if _has_matplotlib():
        assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _assert_nothing_left(raw["systems"])


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_bench_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    args = ["bench", *TINY, "--records", "3000", "--out", str(tmp_path / "r")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "papertiger", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches
    )
    try:
        assert proc.stderr is not None
        line = ""
        deadline = time.monotonic() + 120
        while "bench systems:" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
        found = re.search(
            r"papertiger manager pid (\d+) \(segments (\S+)_\*\); files in (\S+); "
            r"multiprocessing.Manager pid (\d+|None)(?:; redis-server \S+ pid (\d+))?",
            line,
        )
        assert found, f"no systems line; stderr: {line!r}"
        time.sleep(0.5)  # into seeding or measuring
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err
    systems = {
        "papertiger": {
            "manager_pid": int(found.group(1)),
            "prefix": found.group(2),
            "workdir": found.group(3),
        },
        "manager": {"pid": int(found.group(4)) if found.group(4) != "None" else None},
        "redis": {"pid": int(found.group(5)) if found.group(5) else None},
    }
    _assert_nothing_left(systems)
