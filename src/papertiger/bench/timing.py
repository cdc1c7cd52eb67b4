"""Timing cases: calibrated loops, interleaved samples, medians through pyperf.

Theory of operation
-------------------
A :class:`Case` is one operation on one system at one namespace size.  Its
``make(loops)`` prepares the inputs of ``loops`` operations *untimed* (fresh
records, random keys) and returns a callable that performs them; only that
callable is timed.  One *sample* is one such call, reported as seconds per
unit (per operation, per record for ``insert_many``, per effect for catch-up).

Cases that are compared with each other form a *group* (every system and
size of one operation).  :func:`run_rounds` takes one sample of every case of
a group, then moves to the next group, and repeats; the order inside a group
rotates every round, so no system is always first or last.  Slow drifts of
the machine (another process, frequency changes) therefore hit the systems
being compared alike, and the ratios between them are what this harness
reports.  The first round is a warm-up and is kept apart.

The worker freezes its heap (:func:`gc.freeze`) once everything is seeded,
so the garbage collector's passes over the harness's own millions of
objects never land in a sample; what a sample allocates is collected as
usual.

Statistics are pyperf's: each case becomes a :class:`pyperf.Benchmark`
(``median``, ``median_abs_dev``), and the whole run can be written as a
pyperf suite so ``python -m pyperf compare_to old.json new.json`` compares
two runs.  pyperf's own runner is not used: it spawns a fresh process per
benchmark, while these cases must run in one worker process that shares a
running store, a Manager and a Redis server, interleaved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Case", "calibrate", "pyperf_benchmark", "rounds_work", "run_rounds", "summarize"]

Timed = Callable[[], object]


@dataclass(eq=False)
class Case:
    """One operation on one system at one size; see the module doc."""

    op: str
    system: str
    size: int
    make: Callable[[int], Timed]
    #: what one timed unit is: "op", "record" or "effect"
    unit: str = "op"
    #: units per loop iteration (records per insert_many call)
    per_loop: int = 1
    #: cap on loops per sample (writes grow a namespace)
    max_loops: int = 200_000
    #: samples wanted (fewer for the slow cases)
    samples: int = 0
    loops: int = 0
    values: list[float] = field(default_factory=list)
    warmups: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.op}[{self.size}]/{self.system}"

    def sample(self, loops: int | None = None) -> float:
        """Time one sample; seconds per unit."""
        n = self.loops if loops is None else loops
        fn = self.make(n)
        t0 = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - t0
        return max(elapsed, 1e-9) / (n * self.per_loop)


def calibrate(case: Case, target_seconds: float) -> int:
    """Choose ``case.loops`` so one sample takes about ``target_seconds``.

    Doubles the loop count from 1 (at least three times) until a sample takes a
    fifth of the target (or hits ``max_loops``), looks once more, and sizes the loop
    from the *fastest* per-unit time seen: a sample slowed by another process
    must not shrink every later sample.  These samples also warm the case up.
    """
    loops = 1
    best = float("inf")
    for step in range(64):
        per_unit = case.sample(loops)
        best = min(best, per_unit)
        long_enough = per_unit * loops * case.per_loop >= target_seconds / 5
        if (long_enough and step >= 3) or loops >= case.max_loops:
            break
        loops = min(case.max_loops, loops * 2)
    best = min(best, case.sample(loops))
    wanted = round(target_seconds / (best * case.per_loop))
    case.loops = max(1, min(case.max_loops, wanted))
    return case.loops


def run_rounds(
    groups: Sequence[Sequence[Case]],
    repeats: int,
    tick: Callable[[Case], None] | None = None,
) -> None:
    """One warm-up round, then ``repeats`` rounds of every group, interleaved (module doc).

    A case whose ``samples`` is set stops once it has that many.
    """
    for round_no in range(repeats + 1):
        for group in groups:
            shift = round_no % len(group) if group else 0
            for case in [*group[shift:], *group[:shift]]:
                wanted = case.samples or repeats
                if round_no > 0 and len(case.values) >= wanted:
                    continue
                value = case.sample()
                (case.values if round_no > 0 else case.warmups).append(value)
                if tick is not None:
                    tick(case)


def rounds_work(groups: Iterable[Sequence[Case]], repeats: int) -> int:
    """How many samples :func:`run_rounds` will take (for a progress bar)."""
    return sum(1 + (case.samples or repeats) for group in groups for case in group)


def pyperf_benchmark(summary: dict[str, Any]) -> Any:
    """A :func:`summarize` result as a :class:`pyperf.Benchmark` (seconds per unit)."""
    import pyperf

    loops = max(1, int(summary["loops"]))
    metadata = {
        "name": f"{summary['op']}[{summary['size']}]/{summary['system']}",
        "unit": "second",
        "loops": loops,
        "inner_loops": int(summary["per_loop"]),
        "description": (
            f"{summary['op']} on {summary['system']}, {summary['size']} records, "
            f"seconds per {summary['unit']}"
        ),
    }
    warmups = [(loops, float(w)) for w in summary["warmups_s"]]
    run = pyperf.Run(
        [float(v) for v in summary["values_s"]],
        warmups=warmups or None,
        metadata=metadata,
        collect_metadata=False,
    )
    return pyperf.Benchmark([run])


def summarize(case: Case) -> dict[str, Any]:
    """The case as plain data, with pyperf's median and median absolute deviation."""
    summary: dict[str, Any] = {
        "op": case.op,
        "system": case.system,
        "size": case.size,
        "unit": case.unit,
        "loops": case.loops,
        "per_loop": case.per_loop,
        "values_s": list(case.values),
        "warmups_s": list(case.warmups),
    }
    bench = pyperf_benchmark(summary)
    summary["median_s"] = bench.median()
    summary["mad_s"] = bench.median_abs_dev() if len(case.values) > 1 else 0.0
    return summary
