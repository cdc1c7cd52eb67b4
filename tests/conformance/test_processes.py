"""The store across real processes, on every backend: concurrent writers lose nothing.

Children are fresh interpreters (``subprocess``) pointed at the backend under
test through the environment (``PAPERTIGER_URL`` for Redis, the manager's
address for shared memory), as the processes of a test run are.  They start
together: each waits for a file the test creates once all are ready.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import papertiger
from papertiger.store import CheckoutSessions
from support import BackendUnderTest

WAIT = 120.0

CHILD = """
import os, sys, time
import papertiger
from papertiger.store import CheckoutSessions

ns, k, n, go, mode, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:7]
open(go + f".ready-{k}", "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
with papertiger.use_namespace(ns):
    if mode == "insert":
        for i in range(n):
            CheckoutSessions.insert({"id": f"cs_w{k}_{i:05d}", "customer": f"cus_{k}"})
    else:
        for i in range(n):
            CheckoutSessions.patch(target, {"metadata": {f"p{k}_{i}": str(i)}, "last": k})
    print(CheckoutSessions.count())
"""


def run_children(
    backend: BackendUnderTest, tmp_path: Path, mode: str, n: int, target: str = "-"
) -> list[int]:
    """Start 4 children doing ``mode`` ``n`` times at once; their final counts."""
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, backend.namespace, str(k), str(n), str(go), mode, target],
            env=backend.child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    try:
        deadline = time.monotonic() + WAIT
        while len(list(tmp_path.glob("go.ready-*"))) < 4:
            assert time.monotonic() < deadline, "the children did not start"
            assert all(c.poll() is None for c in children), children[0].communicate()
            time.sleep(0.01)
        go.touch()  # all four at once
        counts = []
        for child in children:
            out, err = child.communicate(timeout=WAIT)
            assert child.returncode == 0, err
            counts.append(int(out))
        return counts
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_four_processes_inserting_lose_nothing(
    backend: BackendUnderTest, fresh_namespace: str, tmp_path: Path
) -> None:
    n = 500
    counts = run_children(backend, tmp_path, "insert", n)
    assert all(count >= n for count in counts)  # each sees at least its own records
    assert CheckoutSessions.count() == 4 * n
    expected = {f"cs_w{k}_{i:05d}" for k in range(4) for i in range(n)}
    listed = CheckoutSessions.list_namespace()
    assert {r["id"] for r in listed} == expected and len(listed) == 4 * n
    for k in range(4):
        assert len(CheckoutSessions.find_by_customer(f"cus_{k}")) == n
    # a full walk of the list visits each record once
    seen: list[str] = []
    page = CheckoutSessions.list(limit=100)
    while True:
        seen += [r["id"] for r in page]
        if not page.has_more:
            break
        page = CheckoutSessions.list(limit=100, starting_after=page.data[-1]["id"])
    assert seen == [r["id"] for r in listed]


def test_concurrent_patches_of_one_record_lose_no_key(
    backend: BackendUnderTest, fresh_namespace: str, tmp_path: Path
) -> None:
    n = 100
    target = CheckoutSessions.insert({"customer": "cus_1", "metadata": {"seed": "yes"}})
    run_children(backend, tmp_path, "patch", n, target["id"])
    got = CheckoutSessions.get(target["id"])
    expected = {f"p{k}_{i}": str(i) for k in range(4) for i in range(n)}
    assert got["metadata"] == {"seed": "yes", **expected}
    assert got["last"] in range(4) and got["customer"] == "cus_1"
    assert CheckoutSessions.count() == 1
    assert [r["id"] for r in CheckoutSessions.find_by_customer("cus_1")] == [target["id"]]


def test_a_child_sees_the_same_store(backend: BackendUnderTest, fresh_namespace: str) -> None:
    made = CheckoutSessions.insert({"customer": "cus_child"})
    code = (
        "import sys, papertiger\n"
        "from papertiger.store import CheckoutSessions as C\n"
        "with papertiger.use_namespace(sys.argv[1]):\n"
        "    print(C.get(sys.argv[2])['customer'])\n"
        "    C.insert({'id': 'cs_from_child'})\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, fresh_namespace, made["id"]],
        env=backend.child_env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "cus_child"
    assert CheckoutSessions.get("cs_from_child")["id"] == "cs_from_child"
    with papertiger.use_namespace(f"{fresh_namespace}-elsewhere"):
        assert CheckoutSessions.count() == 0
