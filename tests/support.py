"""Helpers shared by the test modules (on the path through pytest's ``pythonpath``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from papertiger import env as papertiger_env
from papertiger.backends.base import Backend
from papertiger.engine.shm import list_segments, pid_alive

ROOT = Path(__file__).resolve().parents[1]
WAIT = 20.0


def wait_dead(pid: int | None, timeout: float = WAIT) -> None:
    """Wait (bounded) until ``pid`` is gone, such as a child's resource tracker."""
    if not pid:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} is still alive"
        time.sleep(0.02)


class DaemonEnv:
    """A private state directory and the environment that points papertiger at it."""

    def __init__(self) -> None:
        # short path: a Unix socket path may not exceed ~100 bytes
        self.dir = Path(tempfile.mkdtemp(prefix="ptgd-"))
        self.state_dir = self.dir / "state"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PAPERTIGER_ADDRESS", "PAPERTIGER_AUTHKEY", "PAPERTIGER_NAMESPACE")
        }
        self.env["PAPERTIGER_STATE_DIR"] = str(self.state_dir)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "src"), self.env.get("PYTHONPATH")) if p
        )
        self.pids: set[int] = set()

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "papertiger", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def json(self, *args: str, **env: str) -> tuple[int, Any]:
        proc = self.run(*args, **env)
        return proc.returncode, json.loads(proc.stdout)

    def python(self, code: str, **env: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    def start(self, *args: str) -> tuple[dict[str, Any], str]:
        proc = self.run("daemon", "start", *args)
        assert proc.returncode == 0, proc.stderr
        info = self.state()
        assert info is not None
        self.pids.add(info["pid"])
        return info, proc.stdout

    def stop(self) -> str:
        proc = self.run("daemon", "stop")
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def state(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.state_dir / "daemon.json").read_text()))
        except FileNotFoundError:
            return None

    def status(self) -> dict[str, Any]:
        proc = self.run("daemon", "status", "--json")
        assert proc.returncode == 0, proc.stderr
        return dict(json.loads(proc.stdout))

    def cleanup(self) -> None:
        info = self.state()
        if info is not None and pid_alive(info["pid"]):
            self.run("daemon", "stop")
        for pid in self.pids:
            if pid_alive(pid):  # a test failed half way: this daemon is ours to end
                os.killpg(pid, signal.SIGKILL)
                wait_dead(pid)
            for name in list_segments(f"ptg_{pid}_"):
                os.unlink(f"/dev/shm/{name}")
        shutil.rmtree(self.dir, ignore_errors=True)


def settle(server: Any, timeout: float = WAIT) -> None:
    """Wait until ``server`` (anything with ``stats()``) has no checkpoint to write.

    A manager that stops receiving writes writes one more checkpoint (the
    idle checkpoint); tests that compare the segments in ``/dev/shm`` before
    and after something wait for it first.
    """
    deadline = time.monotonic() + timeout
    while not server.stats()["log"]["settled"]:
        assert time.monotonic() < deadline, "the manager never settled"
        time.sleep(0.02)


def segments_of(pid: int) -> set[str]:
    return set(list_segments(f"ptg_{pid}_"))


def exports(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            found[key] = value
    return found


#: Set by ``.ci/run``: a test that needs a system program fails instead of skipping.
ENV_REQUIRE_PROGRAMS = "PAPERTIGER_REQUIRE_PROGRAMS"


def need_program(name: str, install: str) -> str:
    """The path of system program ``name``; skip the test (naming ``install``) when absent.

    Under ``.ci/run`` (``PAPERTIGER_REQUIRE_PROGRAMS=1``) an absent program
    fails the test instead, so CI never passes by skipping.
    """
    import pytest

    path = shutil.which(name)
    if path is None:
        message = f"needs {name}: install it with '{install}'"
        if os.environ.get(ENV_REQUIRE_PROGRAMS):
            pytest.fail(f"{message} ({ENV_REQUIRE_PROGRAMS} is set)", pytrace=False)
        pytest.skip(message)
    return path


@dataclass
class BackendUnderTest:
    """The backend a test runs on, and how to reach it from another process."""

    name: str
    backend: Backend
    namespace: str
    #: variables that point a child process at this store (None: unset it)
    environ: dict[str, str | None]

    def child_env(self) -> dict[str, str]:
        """``os.environ`` for a child: this store, no inherited namespace or once scope."""
        skip = {papertiger_env.NAMESPACE, papertiger_env.ONCE_SCOPE, *papertiger_env.CONNECTION}
        base = {k: v for k, v in os.environ.items() if k not in skip}
        base.update({k: v for k, v in self.environ.items() if v is not None})
        return base
