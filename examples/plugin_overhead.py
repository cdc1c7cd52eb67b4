"""What the pytest plugin adds to a run's wall time, measured with and without it.

    python examples/plugin_overhead.py [--repeat 7]

Three comparisons, each run alternately with and without the plugin
(``-p no:papertiger``) in the same invocation, medians reported:

1. start-up and collection of the sample suite (``--collect-only``);
2. start-up of 4 xdist workers on the sample suite, every test deselected;
3. a 200-test suite in which every test inserts one record, run with the
   plugin (a namespace per test, cleared after it) and without it (the
   embedded default: every test writes to the global namespace).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = Path(__file__).resolve().parent / "checkout_suite"

WRITE_ONE = """
import pytest
from papertiger.store import Customers

@pytest.mark.parametrize("i", range(200))
def test_write_one(i):
    Customers.insert({"id": f"cus_{i}", "email": f"{i}@example.com"})
    assert Customers.get(f"cus_{i}")["email"] == f"{i}@example.com"
"""


def wall(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 5):
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def compare(name: str, args: list[str], cwd: Path, repeat: int) -> None:
    with_plugin: list[float] = []
    without: list[float] = []
    for _ in range(repeat):
        with_plugin.append(wall(args, cwd))
        without.append(wall([*args, "-p", "no:papertiger"], cwd))
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"{name:<44} {a:7.3f} s {b:7.3f} s {a / b:6.2f}x {1000 * (a - b):+8.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    repeat = parser.parse_args().repeat
    print(
        f"{'median of ' + str(repeat):<44} {'plugin':>9} {'without':>9} {'ratio':>7} {'added':>11}"
    )
    compare("sample suite: start-up + collection", ["--collect-only"], SUITE, repeat)
    compare(
        "sample suite: start-up, -n 4, all deselected", ["-n", "4", "-k", "none_"], SUITE, repeat
    )
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "test_write_one.py").write_text(WRITE_ONE)
        Path(tmp, "pytest.ini").write_text("[pytest]\npapertiger_autouse = true\n")
        compare("200 tests writing one record each", ["-p", "no:xdist"], Path(tmp), repeat)
        compare("200 tests writing one record each, -n 4", ["-n", "4"], Path(tmp), repeat)


if __name__ == "__main__":
    main()
