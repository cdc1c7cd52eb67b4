"""The example application (examples/stripe_shop) tested with papertiger_stripe under -n 4."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from support import wait_dead

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "stripe_shop"
HEADER = re.compile(r"papertiger: a manager started on first use at (\S+), run ([0-9a-f]+)")


def _servers_of(address: str) -> list[int]:
    """Pids of HTTP server processes serving the store at ``address``."""
    found = []
    needle = f"PAPERTIGER_ADDRESS={address}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"papertiger.http" not in f.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_example_shop_with_4_workers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "PAPERTIGER_ADDRESS",
        "PAPERTIGER_AUTHKEY",
        "PAPERTIGER_NAMESPACE",
        "PAPERTIGER_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    for path in EXAMPLE.iterdir():
        if path.suffix in (".py", ".ini"):
            shutil.copy(path, pytester.path / path.name)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "4", timeout=240)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 25 and set(outcomes) == {"passed"}, result.stdout.str()
    found = HEADER.search(result.stdout.str())
    assert found, result.stdout.str()
    address, _ = found.groups()
    assert not os.path.exists(os.path.dirname(address)), "the run's directory is left"
    for pid in _servers_of(address):  # the run's HTTP server stopped with the run
        wait_dead(pid)
    assert not _servers_of(address)
