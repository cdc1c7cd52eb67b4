"""Large checkpoints are written by a forked child while the manager keeps serving."""

from __future__ import annotations

import sys

import pytest

import papertiger
from papertiger.engine.connection import current_client
from papertiger.engine.log import BACKGROUND_CHECKPOINT_BYTES
from papertiger.engine.replica import Replica
from papertiger.engine.shm import list_segments
from papertiger.fixtures import vary_checkout_session
from papertiger.store import CheckoutSessions

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="background checkpoints fork")

# enough 4 KB sessions that a checkpoint passes the background threshold
RECORDS = BACKGROUND_CHECKPOINT_BYTES // 4000 + 400


def _fill(batches: int) -> list[str]:
    records = [vary_checkout_session(n) for n in range(RECORDS)]
    ids = []
    for batch in range(batches):
        with papertiger.use_namespace(f"bg-{batch}"):
            ids += [r["id"] for r in CheckoutSessions.insert_many(records)]
    return ids


def test_background_checkpoints_are_published_and_loadable() -> None:
    with papertiger.serve(checkpoint_bytes=1 << 20, segment_bytes=1 << 20) as server:
        _fill(4)
        # keep writing small things until a background checkpoint has been published
        for n in range(2000):
            if server.stats()["log"]["background_checkpoints"] >= 1:
                break
            CheckoutSessions.insert({"n": n})
        log = server.stats()["log"]
        assert log["background_checkpoints"] >= 1, log
        fresh = Replica(current_client().info["control"])
        try:
            for batch in range(4):
                assert fresh.count("checkout_sessions", (f"bg-{batch}",)) == RECORDS
            assert fresh.reader.reloads >= 1
        finally:
            fresh.close()
    assert not list(list_segments(server.control[:-2]))


def test_stopping_during_a_background_checkpoint_leaves_nothing() -> None:
    with papertiger.serve(checkpoint_bytes=1 << 20, segment_bytes=1 << 20) as server:
        _fill(3)  # the last batches likely leave a child writing when we stop
    assert not list(list_segments(server.control[:-2]))
