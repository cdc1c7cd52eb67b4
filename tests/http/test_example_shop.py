"""The example application (examples/stripe_shop) tested with papertiger_stripe under -n 4."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from stripe_support import http_servers_of
from support import wait_dead

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "stripe_shop"
HEADER = re.compile(r"papertiger: a manager started on first use at (\S+), run ([0-9a-f]+)")


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
    for pid in http_servers_of(address):  # the run's HTTP server stopped with the run
        wait_dead(pid)
    assert not http_servers_of(address)
