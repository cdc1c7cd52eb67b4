"""From a run's samples to figures: ratios, targets, tables and the JSON file.

Every ratio is of two medians measured in the same run, interleaved:

* ``papertiger / floor``: papertiger's time over the floor's (1.0 is the
  floor; lower is better);
* ``peer / papertiger``: the peer's time over papertiger's (above 1,
  papertiger is that many times faster).

Throughput operations (``insert_many`` in records/s, catch-up in effects/s)
are timed per record or per effect, so the same ratios apply.

The targets are reported, never asserted: each is *met*, *missed* (with the
measured value), or *skipped* (with the reason, e.g. no redis-server).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import on_redis

__all__ = [
    "LABELS",
    "analyse",
    "markdown_tables",
    "terminal_tables",
    "write_json",
    "write_pyperf",
]

SYSTEMS = ("papertiger", "floor", "manager", "redis")
PEERS = ("manager", "redis")
PEER_NAMES = {"manager": "Manager", "redis": "Redis", "floor": "floor", "papertiger": "papertiger"}
LABELS = {
    "get": "get",
    "list": "list(limit=10)",
    "count": "count",
    "find_by_customer": "find_by_customer",
    "insert": "insert",
    "update": "update",
    "patch": "patch",
    "insert_many": "insert_many",
    "catch_up": "catch-up",
}
RATES = {"insert_many": "rec/s", "catch_up": "effects/s"}


# -- looking things up -----------------------------------------------------------
def _index(raw: dict[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return {(c["op"], c["system"], c["size"]): c for c in raw["cases"]}


def median(raw: dict[str, Any], op: str, system: str, size: int | None = None) -> float | None:
    """Median seconds per unit of one case, or None when it was not measured."""
    size = raw["plan"]["records"] if size is None else size
    case = _index(raw).get((op, system, size))
    return None if case is None else float(case["median_s"])


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


# -- analysis ----------------------------------------------------------------------
def analyse(raw: dict[str, Any]) -> dict[str, Any]:
    """Add ``operations``, ``growth``, ``scaling_ratios``, ``memory_ratios`` and
    ``targets`` to a run's raw results (returned, and changed in place)."""
    size = raw["plan"]["records"]
    operations = []
    for op in LABELS:
        row: dict[str, Any] = {"op": op, "label": LABELS[op], "size": size, "median_s": {}}
        for system in SYSTEMS:
            value = median(raw, op, system)
            if value is not None:
                row["median_s"][system] = value
        if "papertiger" not in row["median_s"]:
            continue
        pt = row["median_s"]["papertiger"]
        row["papertiger_vs_floor"] = _ratio(pt, row["median_s"].get("floor"))
        row["peer_vs_papertiger"] = {
            p: _ratio(row["median_s"][p], pt) for p in PEERS if p in row["median_s"]
        }
        if op in RATES:
            row["per_second"] = {s: 1 / v for s, v in row["median_s"].items()}
        operations.append(row)
    raw["operations"] = operations

    sizes = sorted(raw.get("sizes", []))
    growth = []
    for op in ("get", "list", "count", "find_by_customer", "insert", "update", "patch"):
        by_size = {str(n): median(raw, op, "papertiger", n) for n in sizes}
        floor = {str(n): median(raw, op, "floor", n) for n in sizes}
        if not sizes or by_size[str(sizes[0])] is None:
            continue
        growth.append(
            {
                "op": op,
                "papertiger_s": by_size,
                "floor_s": {k: v for k, v in floor.items() if v is not None},
                "largest_vs_smallest": _ratio(by_size[str(sizes[-1])], by_size[str(sizes[0])]),
                "smallest": sizes[0],
                "largest": sizes[-1],
            }
        )
    raw["growth"] = growth

    scaling = raw.get("scaling") or {}
    ratios: dict[str, dict[str, float | None]] = {}
    for system, by_k in scaling.get("ops_per_s", {}).items():
        one = by_k.get("1")
        ratios[system] = {k: _ratio(v, one) for k, v in by_k.items()}
    raw["scaling_ratios"] = ratios

    writers = raw.get("writers") or {}
    by_system = writers.get("inserts_per_s", {})
    pt = by_system.get("papertiger", {})
    raw["writer_ratios"] = {
        peer: {k: _ratio(v, by_system[peer].get(k)) for k, v in pt.items()}
        for peer in PEERS
        if peer in by_system
    }

    memory = raw.get("memory") or {}
    mem_ratios: dict[str, Any] = {}
    replica = memory.get("replica")
    if replica and memory.get("bytes_held"):
        gained = replica["gained"]
        mem_ratios["replica"] = {
            "rss": _ratio(gained.get("rss"), memory["bytes_held"]),
            "rss_anon": _ratio(gained.get("rss_anon"), memory["bytes_held"]),
            "rss_shmem": _ratio(gained.get("rss_shmem"), memory["bytes_held"]),
            "bytes_held": memory["bytes_held"],
        }
    for name in ("papertiger_manager", "manager", "redis"):
        entry = memory.get(name)
        if entry and entry.get("bytes_held"):
            mem_ratios[name] = {
                "rss": _ratio(entry["gained"].get("rss"), entry["bytes_held"]),
                "rss_anon": _ratio(entry["gained"].get("rss_anon"), entry["bytes_held"]),
                "rss_shmem": _ratio(entry["gained"].get("rss_shmem"), entry["bytes_held"]),
                "bytes_held": entry["bytes_held"],
            }
    raw["memory_ratios"] = mem_ratios
    from .readers import analyse as analyse_new_processes

    analyse_new_processes(raw)
    raw["targets"] = _targets(raw)
    return raw


def _target(
    name: str, value: float | None, comparison: str, limit: float, why: str, unit: str = "×"
) -> dict[str, Any]:
    if value is None:
        return {"name": name, "status": "skipped", "why": why, "limit": limit, "value": None}
    ok = {
        "<=": value <= limit,
        ">=": value >= limit,
        ">": value > limit,
    }[comparison]
    return {
        "name": name,
        "status": "met" if ok else "missed",
        "value": value,
        "comparison": comparison,
        "limit": limit,
        "shown": _fmt_rate(value, unit) if unit != "×" else f"{value:.2f}×",
    }


def _systems_reason(raw: dict[str, Any], peer: str) -> str:
    info = raw.get("systems", {}).get(peer, {})
    return str(info.get("reason") or f"{PEER_NAMES[peer]} was not measured")


def _targets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    ops = {row["op"]: row for row in raw["operations"]}

    def pt_floor(op: str) -> float | None:
        return ops[op]["papertiger_vs_floor"] if op in ops else None

    def peer(op: str, p: str) -> float | None:
        return ops[op]["peer_vs_papertiger"].get(p) if op in ops else None

    def rate(op: str) -> float | None:
        return ops[op]["per_second"]["papertiger"] if op in ops else None

    redis_why = _systems_reason(raw, "redis")
    manager_why = _systems_reason(raw, "manager")
    out = [
        _target("get ≤ 1.15× its floor", pt_floor("get"), "<=", 1.15, "not measured"),
        _target("get ≥ 4× faster than Redis GET+decode", peer("get", "redis"), ">=", 4, redis_why),
        _target("get ≥ 4× faster than Manager get", peer("get", "manager"), ">=", 4, manager_why),
        _target("list ≤ 1.2× its floor", pt_floor("list"), "<=", 1.2, "not measured"),
        _target(
            "list ≥ 2× faster than Redis ZREVRANGE+MGET+decode",
            peer("list", "redis"),
            ">=",
            2,
            redis_why,
        ),
        _target("insert ≤ 1.6× its floor", pt_floor("insert"), "<=", 1.6, "not measured"),
        _target("insert ≥ 1.0× Manager set", peer("insert", "manager"), ">=", 1, manager_why),
        _target("insert ≥ 1.0× Redis SET", peer("insert", "redis"), ">=", 1, redis_why),
        _target("update ≥ 1.0× Manager set", peer("update", "manager"), ">=", 1, manager_why),
        _target("update ≥ 1.0× Redis SET XX", peer("update", "redis"), ">=", 1, redis_why),
        _target(
            "insert_many ≥ 100k records/s",
            rate("insert_many"),
            ">=",
            100_000,
            "not measured",
            "rec/s",
        ),
        _target("insert_many ≥ 1.0× Redis MSET", peer("insert_many", "redis"), ">=", 1, redis_why),
        _target(
            "catch-up ≥ 200k effects/s",
            rate("catch_up"),
            ">=",
            200_000,
            "not measured",
            "effects/s",
        ),
    ]
    scaling = raw.get("scaling_ratios", {}).get("papertiger", {})
    out.append(
        _target(
            "2 readers ≥ 1.7× one",
            scaling.get("2"),
            ">=",
            1.7,
            "the scaling run did not include 2 readers",
        )
    )
    redis_writers = raw.get("writer_ratios", {}).get("redis", {})
    for k in (1, 4, 8):
        out.append(
            _target(
                f"{k} writer{'s' if k > 1 else ''}: inserts/s ≥ 1.0× Redis SET from {k}",
                redis_writers.get(str(k)),
                ">=",
                1.0,
                redis_why if "redis" not in redis_writers else f"no run with {k} writers",
            )
        )
    for row in raw["growth"]:
        largest, smallest = row["largest"], row["smallest"]
        name = (
            f"{LABELS[row['op']]} at {count_label(largest)} records ≤ 1.25× its cost "
            f"at {count_label(smallest)}"
        )
        if largest < 1_000_000:
            name += " (1M with --full)"
        out.append(_target(name, row["largest_vs_smallest"], "<=", 1.25, "one size only"))
    for name, value, why in on_redis.targets(raw):
        out.append(_target(name, value, "<=", on_redis.TARGET, why))
    mem = raw.get("memory_ratios", {}).get("replica", {})
    out.append(
        _target(
            "replica RSS ≤ 1.5× the bytes it holds",
            mem.get("rss"),
            "<=",
            1.5,
            "the memory probe did not run",
        )
    )
    from .readers import targets as new_process_targets

    out += new_process_targets(raw, _target)
    return out


# -- formatting --------------------------------------------------------------------
def count_label(n: int) -> str:
    """``n`` as a row label: 1k, 100k, 1M, or 1,234. O(1)."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    us = seconds * 1e6
    if us < 1:
        return f"{us * 1000:.0f} ns"
    if us < 1000:
        return f"{us:.3g} µs" if us < 100 else f"{us:.0f} µs"
    return f"{us / 1000:.3g} ms"


def _fmt_rate(per_s: float | None, unit: str) -> str:
    if per_s is None:
        return "—"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f}M {unit}"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f}k {unit}"
    return f"{per_s:.0f} {unit}"


def _fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}×"


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _cell(op: str, seconds: float | None) -> str:
    if op in RATES:
        return _fmt_rate(None if seconds is None else 1 / seconds, RATES[op])
    return _fmt_time(seconds)


def _label(raw: dict[str, Any], op: str) -> str:
    plan = raw["plan"]
    extra = {
        "find_by_customer": " (10 found)",
        "insert_many": f" ({plan['batch']:,}/call)",
        "catch_up": f" ({plan['catchup_effects']:,} effects)",
    }.get(op, "")
    return LABELS[op] + extra


def operation_rows(raw: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: operation, papertiger, floor, ratio, each peer and its ratio."""
    peers = [p for p in PEERS if raw.get("systems", {}).get(p, {}).get("available")]
    header = ["operation", "papertiger", "floor", "pt/floor"]
    for p in peers:
        header += [PEER_NAMES[p], f"{PEER_NAMES[p]}/pt"]
    rows = []
    for row in raw["operations"]:
        op, med = row["op"], row["median_s"]
        cells = [
            _label(raw, op),
            _cell(op, med.get("papertiger")),
            _cell(op, med.get("floor")),
            _fmt_ratio(row.get("papertiger_vs_floor")),
        ]
        for p in peers:
            cells += [_cell(op, med.get(p)), _fmt_ratio(row["peer_vs_papertiger"].get(p))]
        rows.append(cells)
    return header, rows


def target_rows(raw: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["target", "status", "measured"]
    rows = []
    for t in raw["targets"]:
        status = {"met": "met", "missed": "MISSED", "skipped": "skipped"}[t["status"]]
        rows.append([t["name"], status, t.get("shown") or t.get("why", "")])
    return header, rows


def scaling_rows(raw: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    scaling = raw.get("scaling") or {}
    by_system = scaling.get("ops_per_s", {})
    systems = [s for s in SYSTEMS if s in by_system]
    header = ["readers", *(f"{PEER_NAMES[s]} get/s" for s in systems)]
    rows = []
    for k in scaling.get("readers", []):
        cells = [str(k)]
        for s in systems:
            value = by_system[s].get(str(k))
            ratio = raw["scaling_ratios"][s].get(str(k))
            cells.append(
                f"{_fmt_rate(value, '')}".strip() + (f" ({ratio:.2f}×)" if k != 1 and ratio else "")
            )
        rows.append(cells)
    return header, rows


def writer_rows(raw: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    writers = raw.get("writers") or {}
    by_system = writers.get("inserts_per_s", {})
    systems = [s for s in ("papertiger", "redis", "manager") if s in by_system]
    ratios = raw.get("writer_ratios", {})
    header = ["writers", *(f"{PEER_NAMES[s]} inserts/s" for s in systems)]
    header += [f"pt/{PEER_NAMES[p]}" for p in PEERS if p in ratios]
    rows = []
    for k in writers.get("writers", []):
        cells = [str(k)]
        cells += [_fmt_rate(by_system[s].get(str(k)), "").strip() for s in systems]
        cells += [_fmt_ratio(ratios[p].get(str(k))) for p in PEERS if p in ratios]
        rows.append(cells)
    return header, rows


def growth_rows(raw: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    sizes = sorted(raw.get("sizes", []))
    header = ["operation", *(f"{count_label(n)} records" for n in sizes), "largest/smallest"]
    rows = []
    for row in raw["growth"]:
        cells = [LABELS[row["op"]]]
        cells += [_fmt_time(row["papertiger_s"].get(str(n))) for n in sizes]
        cells.append(_fmt_ratio(row["largest_vs_smallest"]))
        rows.append(cells)
    return header, rows


def memory_rows(raw: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    memory = raw.get("memory") or {}
    ratios = raw.get("memory_ratios") or {}
    header = ["process", "bytes held", "RSS gained", "RSS/bytes", "anon/bytes", "shm/bytes"]
    names = {
        "replica": "papertiger replica (a reader)",
        "papertiger_manager": "papertiger manager",
        "redis": "Redis server",
        "manager": "Manager server",
    }
    rows = []
    for key, name in names.items():
        r = ratios.get(key)
        if not r:
            continue
        entry = memory.get(key, {})
        rows.append(
            [
                name,
                _fmt_bytes(r["bytes_held"]),
                _fmt_bytes(entry.get("gained", {}).get("rss")),
                _fmt_ratio(r["rss"]),
                _fmt_ratio(r["rss_anon"]),
                _fmt_ratio(r["rss_shmem"]),
            ]
        )
    return header, rows


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _sections(
    raw: dict[str, Any],
) -> list[tuple[str, Callable[..., tuple[list[str], list[list[str]]]]]]:
    size = raw["plan"]["records"]
    return [
        (
            f"Operations ({size:,} records in the namespace; time per operation, or throughput)",
            operation_rows,
        ),
        ("Targets", target_rows),
        ("Read throughput by reader processes (total, all readers; × one reader)", scaling_rows),
        (
            "Write throughput by writer processes (total inserts/s, all writers; "
            "pt/peer above 1: papertiger is faster)",
            writer_rows,
        ),
        ("Growth: papertiger's time per operation by namespace size", growth_rows),
        ("Memory against the msgpack bytes held", memory_rows),
        (on_redis.title(raw), on_redis.rows),
        *_readers_sections(raw),
    ]


def _readers_sections(
    raw: dict[str, Any],
) -> list[tuple[str, Callable[..., tuple[list[str], list[list[str]]]]]]:
    from .readers import sections

    return sections(raw)


def machine_line(raw: dict[str, Any]) -> str:
    m = raw.get("machine", {})
    return (
        f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB, "
        f"Python {m.get('python', '?')}, {m.get('os', '?')}"
    )


def terminal_tables(raw: dict[str, Any]) -> str:
    """Every table, as plain text for the terminal."""
    parts = [
        f"papertiger bench ({raw['plan']['name']}) on {machine_line(raw)}; "
        f"medians of {raw['plan']['repeats']} interleaved samples"
    ]
    for title, rows_of in _sections(raw):
        header, rows = rows_of(raw)
        if rows:
            parts.append(f"{title}\n{_text_table(header, rows)}")
    for note in raw.get("notes", []):
        parts.append(f"note: {note}")
    return "\n\n".join(parts) + "\n"


def markdown_tables(raw: dict[str, Any]) -> str:
    """Every table, as Markdown (what the README carries)."""
    parts = [
        f"Measured with `papertiger bench` ({raw['plan']['name']}) on {machine_line(raw)}, "
        f"{raw.get('date', '')}; medians of {raw['plan']['repeats']} interleaved samples. "
        "`pt/floor` is papertiger's time over the floor's; a peer's `/pt` column is its time "
        "over papertiger's (above 1: papertiger is faster)."
    ]
    for title, rows_of in _sections(raw):
        header, rows = rows_of(raw)
        if rows:
            parts.append(f"**{title}**\n\n{_md_table(header, rows)}")
    for note in raw.get("notes", []):
        parts.append(f"Note: {note}")
    return "\n\n".join(parts) + "\n"


def write_json(raw: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(raw, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")


def write_pyperf(raw: dict[str, Any], path: Path) -> None:
    """Every case as a pyperf suite: ``python -m pyperf compare_to old.json new.json``."""
    import pyperf

    from .timing import pyperf_benchmark

    suite = pyperf.BenchmarkSuite([pyperf_benchmark(c) for c in raw["cases"]])
    suite.dump(str(path), replace=True)
