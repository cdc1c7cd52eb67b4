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

from ..lazy import lazy_attributes

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
    "DaemonPaths": ".paths",
    "daemon_paths": ".paths",
    "ensure_state_dir": ".paths",
    "DaemonInfo": ".statefile",
    "discover": ".statefile",
    "find_daemon": ".statefile",
    "DaemonConfig": ".run",
    "run": ".run",
    "StopReport": ".control",
    "query": ".control",
    "start": ".control",
    "stop": ".control",
    "collect_garbage": ".gc",
}


__getattr__, __dir__ = lazy_attributes(__name__, _HOMES, __all__)
