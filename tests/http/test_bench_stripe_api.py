"""The Stripe API benchmark runs, reports every figure and target, and leaves nothing behind.

It checks that the harness works, never how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "pyperf", reason="the benchmark harness needs its extra: pip install -e '.[bench]'"
)


def test_http_only_bench_smoke(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAPERTIGER_")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papertiger",
            "bench",
            "--http-only",
            "--quick",
            "--repeats",
            "2",
            "--http-requests",
            "3",
            "--http-customers",
            "5",
            "--no-progress",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "http.json").read_text())
    assert {r["op"] for r in result["rows"]} == {"create", "retrieve", "list"}
    assert {r["clients"] for r in result["rows"]} == {1, 4}
    assert result["systems"]["floor"]["available"]
    localstripe = result["systems"]["localstripe"]
    assert localstripe["available"], localstripe
    for row in result["rows"]:
        assert row["papertiger"]["per_s"] > 0 and row["vs_floor"] > 0 and row["vs_localstripe"] > 0
    statuses = {t["status"] for t in result["targets"]}
    assert statuses <= {"met", "missed"} and len(result["targets"]) == 12
    assert "\u00d7 localstripe" in proc.stdout and "\u00f7 floor" in proc.stdout
    assert (out / "http.md").read_text().count("|") > 20
    assert not list(Path("/tmp").glob("ptg-bench-http-*")), "the run's directory is left"
