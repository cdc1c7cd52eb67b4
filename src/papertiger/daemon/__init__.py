"""The daemon: a long-lived manager that the user's processes find by themselves.

=====================  ========================================================
:mod:`.paths`          the per-user state directory and its files
:mod:`.statefile`      the state file, its lock, and discovery
:mod:`.run`            running a daemon (``python -m papertiger.daemon``)
:mod:`.control`        start (detached), query, stop
:mod:`.gc`             remove what dead managers left
=====================  ========================================================

The names below load their module on first use, so a client that only
discovers a daemon (:func:`discover`) never imports the manager.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DaemonConfig",
    "DaemonInfo",
    "DaemonPaths",
    "StopReport",
    "collect_garbage",
    "daemon_paths",
    "discover",
    "ensure_state_dir",
    "find_daemon",
    "query",
    "run",
    "start",
    "stop",
]

_HOMES = {
    "DaemonPaths": "paths",
    "daemon_paths": "paths",
    "ensure_state_dir": "paths",
    "DaemonInfo": "statefile",
    "discover": "statefile",
    "find_daemon": "statefile",
    "DaemonConfig": "run",
    "run": "run",
    "StopReport": "control",
    "query": "control",
    "start": "control",
    "stop": "control",
    "collect_garbage": "gc",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'papertiger.daemon' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{home}", __name__), name)
