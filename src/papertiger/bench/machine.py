"""The machine a run measured, and the memory of a process as the kernel counts it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from typing import Any

__all__ = ["cpu_model", "describe", "memory_of"]

_STATUS_FIELDS = {
    "VmRSS": "rss",
    "RssAnon": "rss_anon",
    "RssFile": "rss_file",
    "RssShmem": "rss_shmem",
}


def cpu_model() -> str:
    """The CPU's model name, as ``lscpu`` prints it (``/proc/cpuinfo`` as a fallback)."""
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def describe() -> dict[str, Any]:
    """CPU, cores, memory, OS and the versions of what was measured."""
    import msgpack

    from .. import __version__

    total = _memory_total()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": total,
        "memory_gib": round(total / 2**30, 1) if total else None,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "papertiger": __version__,
        "msgpack": ".".join(map(str, msgpack.version)),
        "executable": sys.executable,
    }


def memory_of(pid: int | str = "self") -> dict[str, int]:
    """Resident memory of ``pid`` in bytes: ``rss`` and its ``rss_anon`` / ``rss_file`` /
    ``rss_shmem`` parts, from ``/proc/<pid>/status``. Empty when the process is gone."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                key, _, rest = line.partition(":")
                name = _STATUS_FIELDS.get(key)
                if name is not None:
                    found[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return found
