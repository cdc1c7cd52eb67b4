"""No torn reads: 10^6 checksummed reads while writers rewrite the records.

Every record carries a CRC of its own content.  Four reader processes read
while two writers rewrite (``update``) and patch the records, with segments
and checkpoints so small that the log switches segments and checkpoints all
the time and readers that pause reload from checkpoints.  One mismatch fails.
"""

from __future__ import annotations

import random

import pytest

import papertiger
from papertiger.store import CheckoutSessions

from .helpers import Pool, log_figures, sealed, serve, worker_env

READERS, WRITERS = 4, 2
READS_PER_READER = 250_000  # 10^6 in all
RECORDS = 120


@pytest.mark.slow
def test_million_reads_never_torn(pool: Pool) -> None:
    rng = random.Random(7)
    with serve(segment_bytes=32 * 1024, checkpoint_bytes=32 * 1024) as server:
        pool.env = worker_env(server)
        with papertiger.use_namespace("torn"):
            ids = [
                CheckoutSessions.insert(
                    sealed({"customer": "cus_t", "payload": rng.randbytes(200), "gen": -1})
                )["id"]
                for _ in range(RECORDS)
            ]
        owned = [ids[i::WRITERS] for i in range(WRITERS)]  # each writer owns its records
        writers = [
            pool.start(
                "torn_writer",
                {"ns": "torn", "ids": owned[i], "seed": i, "payload": [16, 2048]},
            )
            for i in range(WRITERS)
        ]
        readers = [
            pool.start(
                "torn_reader",
                {
                    "ns": "torn",
                    "ids": ids,
                    "reads": READS_PER_READER,
                    "seed": 100 + i,
                    "lag": 0.05 if i % 2 else 0,  # half the readers pause, fall behind, reload
                },
            )
            for i in range(READERS)
        ]
        for w in writers + readers:
            w.expect("ready")
        before = log_figures(server)
        for w in writers + readers:
            w.send("go")
        results = [r.result() for r in readers]
        for w in writers:
            w.send("stop")
        writes = sum(w.result()["writes"] for w in writers)
        after = log_figures(server)

    reads = sum(r["reads"] for r in results)
    checked = sum(r["records"] for r in results)
    mismatches = sum(r["mismatch_count"] for r in results)
    reloads = sum(r["reloads"] for r in results)
    switches = after["segment_switches"] - before["segment_switches"]
    checkpoints = after["checkpoints"] - before["checkpoints"]
    print(
        f"\ntorn reads: {reads} reads ({checked} records checked) by {READERS} processes "
        f"during {writes} rewrites by {WRITERS} processes; {switches} segment switches, "
        f"{checkpoints} checkpoints, {reloads} replica reloads; {mismatches} mismatches"
    )
    assert [m for r in results for m in r["mismatches"]] == []
    assert mismatches == 0
    assert reads == READERS * READS_PER_READER
    # the scenario really exercised what it claims to
    assert switches >= 50 and checkpoints >= 20, (switches, checkpoints)
    assert writes > 0
