"""``papertiger.once`` on every backend: one factory run across threads and processes,
hand-over when the caller raises or is killed, results outside every namespace.

The plugin's use of it (``once_fixture``, a run's scope) is tested in
``tests/test_plugin.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import papertiger
from papertiger.once import ENV_ONCE_SCOPE
from support import BackendUnderTest


def read_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


ONCE_CHILD = """
import json, os, signal, sys, time
import papertiger

key, calls, mode = sys.argv[1:4]

def make():
    with open(calls, "a") as f:
        f.write(f"{os.getpid()}\\n")
    first = len(open(calls).read().split()) == 1
    time.sleep(0.4)
    if first and mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if first and mode == "raise":
        raise RuntimeError("the first factory failed")
    return {"made_by": os.getpid()}

try:
    print(json.dumps(papertiger.once(key, make)))
except RuntimeError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def start_children(
    backend: BackendUnderTest, key: str, calls: Path, mode: str, n: int
) -> list[Any]:
    env = backend.child_env()
    return [
        subprocess.Popen(
            [sys.executable, "-c", ONCE_CHILD, key, str(calls), mode],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(n)
    ]


def finish(children: list[Any]) -> list[tuple[int, Any]]:
    done = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        done.append((child.returncode, json.loads(out) if out.strip() else None))
    return done


@pytest.mark.parametrize("mode", ["plain", "kill", "raise"])
def test_once_across_processes(backend: BackendUnderTest, tmp_path: Path, mode: str) -> None:
    calls = tmp_path / "calls"
    results = finish(start_children(backend, f"k-{mode}-{tmp_path.name}", calls, mode, 5))
    made = read_lines(calls)
    if mode == "plain":
        assert len(made) == 1
        assert results == [(0, {"made_by": int(made[0])})] * 5
        return
    # the first caller failed mid-factory: exactly one other caller made the value
    _first, taker = made
    assert len(made) == 2
    failed = [r for r in results if r[1] is None or "error" in r[1]]
    assert len(failed) == 1
    if mode == "kill":
        assert failed[0][0] == -signal.SIGKILL
    else:
        assert failed[0] == (0, {"error": "the first factory failed"})
    assert [r for r in results if r not in failed] == [(0, {"made_by": int(taker)})] * 4


def test_once_survives_a_waiter_that_dies(backend: BackendUnderTest, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    key = f"k-waiter-{tmp_path.name}"
    children = start_children(backend, key, calls, "plain", 4)
    time.sleep(0.2)  # whether or not it is waiting yet, killing it must not matter
    children[-1].kill()
    results = finish(children[:-1])
    children[-1].wait()
    assert len(read_lines(calls)) <= 2  # the victim may have been the first caller
    assert len({json.dumps(r) for r in results}) == 1 and results[0][0] == 0


def test_once_results_are_outside_every_namespace(backend: BackendUnderTest) -> None:
    calls: list[int] = []

    def make() -> dict[str, Any]:
        calls.append(1)
        return {"n": len(calls), "tuple": (1, 2)}

    key = f"outside-{time.monotonic_ns()}"
    with papertiger.use_namespace("test-a"):
        assert papertiger.once(key, make) == {"n": 1, "tuple": [1, 2]}
    backend.backend.clear_namespace(None, ("test-a",))
    backend.backend.clear(None)
    with papertiger.use_namespace("test-b"):
        assert papertiger.once(key, make) == {"n": 1, "tuple": [1, 2]}
    assert calls == [1]


def test_once_factory_values_must_be_storable(backend: BackendUnderTest) -> None:
    key = f"unstorable-{time.monotonic_ns()}"
    with pytest.raises(papertiger.InvalidRequest, match="cannot be stored"):
        papertiger.once(key, object)
    assert papertiger.once(key, lambda: "fine") == "fine"  # the claim was given back


def test_once_threads_share_one_result(backend: BackendUnderTest) -> None:
    key = f"threads-{time.monotonic_ns()}"
    calls: list[str] = []
    results: list[Any] = []

    def make() -> list[str]:
        calls.append(threading.current_thread().name)
        time.sleep(0.2)
        if len(calls) == 1:
            raise RuntimeError("first one fails")
        return calls[:]

    def call() -> None:
        try:
            results.append(papertiger.once(key, make))
        except RuntimeError as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=call, name=f"t{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 2
    assert sorted(map(str, results)) == sorted(["first one fails"] + [str(calls)] * 3)


def test_once_refuses_to_wait_for_itself(backend: BackendUnderTest) -> None:
    key = f"nested-{time.monotonic_ns()}"
    with pytest.raises(papertiger.StoreError, match="inside its own factory"):
        papertiger.once(key, lambda: papertiger.once(key, lambda: 1))
    assert papertiger.once(key, lambda: 2) == 2  # the outer claim was given back


def test_once_scope_separates_runs(
    backend: BackendUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"scoped-{time.monotonic_ns()}"
    monkeypatch.setenv(ENV_ONCE_SCOPE, "run-1")
    assert papertiger.once(key, lambda: 1) == 1
    monkeypatch.setenv(ENV_ONCE_SCOPE, "run-2")
    assert papertiger.once(key, lambda: 2) == 2
    monkeypatch.delenv(ENV_ONCE_SCOPE)
    assert papertiger.once(key, lambda: 3) == 3
    monkeypatch.setenv(ENV_ONCE_SCOPE, "run-1")
    assert papertiger.once(key, lambda: 4) == 1


@pytest.mark.parametrize(
    ("key", "factory", "error"),
    [("", lambda: 1, papertiger.InvalidRequest), (7, lambda: 1, papertiger.InvalidRequest),
     ("k", 5, TypeError), ("x" * 300, lambda: 1, papertiger.InvalidRequest)],
)  # fmt: skip
def test_once_checks_its_arguments(
    backend: BackendUnderTest, key: Any, factory: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        papertiger.once(key, factory)
