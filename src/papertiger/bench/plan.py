"""What a benchmark run measures and how long it may take: the presets and their knobs.

``quick`` finishes in about a minute on a 2-core machine, the default in a
few minutes, and ``full`` adds the one-million-record growth namespace: about
5 minutes, and about 20 GB of memory and /dev/shm at its peak, most of it
copies of 3 GB of records (the manager's state, its log and checkpoint
segments, the measuring worker's replica and the memory probe's).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PRESETS", "Plan"]


def _cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _default_readers() -> tuple[int, ...]:
    n = max(4, os.cpu_count() or 1)
    return (1, 2, n)


@dataclass(frozen=True)
class Plan:
    """Every knob of a run. Times are in seconds."""

    #: the preset this plan started from
    name: str = "default"
    #: records in the main namespace (list, count, ... run over it)
    records: int = 10_000
    #: namespace sizes of the growth runs (the main namespace is reused when listed)
    sizes: tuple[int, ...] = (1_000, 100_000)
    #: timed samples per case, after one warm-up sample
    repeats: int = 15
    #: how long one sample should take (its loop count is calibrated to it)
    sample_seconds: float = 0.02
    #: samples of the slow cases (catch-up, insert_many), which write a lot per sample
    slow_repeats: int = 5
    #: reader-process counts of the scaling runs
    readers: tuple[int, ...] = field(default_factory=_default_readers)
    #: writer-process counts of the write scaling runs (:mod:`.writers`)
    writers: tuple[int, ...] = (1, 2, 4, 8)
    #: how long each scaling round reads
    scaling_seconds: float = 0.5
    #: rounds per (system, reader count) in the scaling runs
    scaling_repeats: int = 5
    #: records per insert_many call
    batch: int = 1_000
    #: effects written while a replica is idle, per catch-up sample
    catchup_effects: int = 3_000
    #: compare against Redis when redis-server and the redis package exist
    redis: bool = True
    #: draw the PNG chart (needs matplotlib)
    chart: bool = True
    #: write cProfile statistics of papertiger's operations under ``OUT/profile``
    profile: bool = False
    #: run the worker and every server on this one CPU while operations are timed
    #: (see the README: round trips then cost the same every time)
    pin_cpu: int | None = None
    #: measure Stripe's HTTP API through stripe-python (see bench/stripe_api.py)
    http: bool = True
    #: requests per client per HTTP sample (cut short after http_budget seconds)
    http_requests: int = 300
    http_budget: float = 3.0
    #: rounds of HTTP samples, and customers seeded before any read is timed
    http_repeats: int = 5
    http_customers: int = 1_000
    #: client-process counts of the HTTP samples
    http_clients: tuple[int, ...] = (1, 4)
    #: store sizes of "a new process's first read" (:mod:`.readers`); the largest is
    #: also the store of "memory of N readers"
    first_read_sizes: tuple[int, ...] = (1_000, 100_000)
    #: new processes per system and size
    first_read_repeats: int = 7
    #: reader-process counts of "memory of N readers"
    reader_counts: tuple[int, ...] = (1, 2, 4, 8)
    #: the share of the records each of those readers reads
    reader_fraction: float = 0.01

    def with_overrides(self, **changes: Any) -> Plan:
        """A copy with the non-None ``changes`` applied."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def check(self) -> None:
        """Raise ValueError when a knob is out of range."""
        if self.records < 20:
            raise ValueError(f"records must be at least 20, got {self.records}.")
        if not self.sizes or min(self.sizes) < 20:
            raise ValueError(f"every growth size must be at least 20, got {self.sizes}.")
        if self.repeats < 2 or self.slow_repeats < 2 or self.scaling_repeats < 1:
            raise ValueError("repeats and slow_repeats must be at least 2, scaling_repeats 1.")
        if not self.readers or min(self.readers) < 1:
            raise ValueError(f"reader counts must be at least 1, got {self.readers}.")
        if not self.writers or min(self.writers) < 1:
            raise ValueError(f"writer counts must be at least 1, got {self.writers}.")
        if self.batch < 1 or self.catchup_effects < 1:
            raise ValueError("batch and catchup_effects must be at least 1.")
        if self.sample_seconds <= 0 or self.scaling_seconds <= 0:
            raise ValueError("sample_seconds and scaling_seconds must be positive.")
        if self.http_requests < 1 or self.http_repeats < 1 or self.http_customers < 1:
            raise ValueError("http_requests, http_repeats and http_customers must be at least 1.")
        if not self.http_clients or min(self.http_clients) < 1:
            raise ValueError(f"HTTP client counts must be at least 1, got {self.http_clients}.")
        if not self.first_read_sizes or min(self.first_read_sizes) < 20:
            raise ValueError(f"first-read sizes must be at least 20, got {self.first_read_sizes}.")
        if self.first_read_repeats < 1 or not self.reader_counts or min(self.reader_counts) < 1:
            raise ValueError("first_read_repeats and every reader count must be at least 1.")
        if not 0 < self.reader_fraction <= 1:
            raise ValueError(f"reader_fraction must be in (0, 1], got {self.reader_fraction}.")
        if self.pin_cpu is not None and self.pin_cpu not in _cpus():
            raise ValueError(f"pin_cpu {self.pin_cpu} is not one of this process's CPUs {_cpus()}.")

    @property
    def growth_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.sizes)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Plan] = {
    "quick": Plan(
        name="quick",
        sizes=(1_000, 10_000),
        repeats=9,
        sample_seconds=0.015,
        slow_repeats=3,
        readers=(1, 2),
        scaling_seconds=0.25,
        scaling_repeats=3,
        catchup_effects=1_000,
        http_requests=150,
        http_budget=1.5,
        http_repeats=3,
        http_customers=300,
        first_read_sizes=(1_000, 10_000),
        first_read_repeats=3,
        reader_counts=(1, 2, 4),
    ),
    "default": Plan(),
    "full": Plan(name="full", sizes=(1_000, 100_000, 1_000_000)),
}
