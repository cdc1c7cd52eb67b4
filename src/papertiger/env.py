"""Every ``PAPERTIGER_*`` environment variable, read here and only here, when needed.

=============================  ===============================================
``PAPERTIGER_URL``             a Redis URL: every process uses that store
                               (``redis://``, ``rediss://``, ``unix://``,
                               ``redis+cluster://``; see the README)
``PAPERTIGER_ADDRESS``         the socket of a running shared-memory manager
``PAPERTIGER_AUTHKEY``         its authkey, as hex
``PAPERTIGER_START``           the manager to start on first use when nobody
                               answers at ``PAPERTIGER_ADDRESS`` (set by the
                               pytest plugin; see :mod:`.engine.spawn`)
``PAPERTIGER_NAMESPACE``       the namespace a child process starts in (JSON)
``PAPERTIGER_ONCE_SCOPE``      a prefix for every ``once`` key (a run's id)
``PAPERTIGER_STATE_DIR``       the daemon's state directory
``PAPERTIGER_SHM_MAX_BYTES``   a cap on the shared memory one manager holds
``PAPERTIGER_LOG_LEVEL``       the manager's log level (default WARNING)
=============================  ===============================================

Nothing is read at import: each accessor reads ``os.environ`` when called,
so a variable set (or fixed) after ``import papertiger`` still counts, and a
bad value fails the call that needs it, with a message naming the variable.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from .errors import StoreError, StoreUnavailable

__all__ = [
    "ADDRESS",
    "AUTHKEY",
    "LOG_LEVEL",
    "NAMESPACE",
    "ONCE_SCOPE",
    "SHM_MAX_BYTES",
    "START",
    "STATE_DIR",
    "URL",
    "exported",
    "for_manager",
    "manager",
    "once_scope",
    "shm_max_bytes",
    "url",
]

URL = "PAPERTIGER_URL"
ADDRESS = "PAPERTIGER_ADDRESS"
AUTHKEY = "PAPERTIGER_AUTHKEY"
START = "PAPERTIGER_START"
NAMESPACE = "PAPERTIGER_NAMESPACE"
ONCE_SCOPE = "PAPERTIGER_ONCE_SCOPE"
STATE_DIR = "PAPERTIGER_STATE_DIR"
SHM_MAX_BYTES = "PAPERTIGER_SHM_MAX_BYTES"
LOG_LEVEL = "PAPERTIGER_LOG_LEVEL"

#: The variables that point a process at a store (cleared for a fresh manager).
CONNECTION = (URL, ADDRESS, AUTHKEY, START)


def get(name: str) -> str | None:
    """The variable's value, or None when unset or empty."""
    return os.environ.get(name) or None


def url() -> str | None:
    """``PAPERTIGER_URL``, or None."""
    return get(URL)


def manager() -> tuple[str, bytes] | None:
    """``(address, authkey)`` from ``PAPERTIGER_ADDRESS`` / ``PAPERTIGER_AUTHKEY``, or None.

    Raises :class:`StoreUnavailable` when the address is set and the key is
    missing or not hex.
    """
    address = get(ADDRESS)
    if address is None:
        return None
    text = get(AUTHKEY)
    if text is None:
        raise StoreUnavailable(
            f"{ADDRESS} is set but {AUTHKEY} is not; set both (the authkey as hex)."
        )
    try:
        return address, bytes.fromhex(text)
    except ValueError:
        raise StoreUnavailable(
            f"{AUTHKEY} must be hex, as papertiger prints it; got {len(text)} characters "
            "that are not."
        ) from None


def for_manager(address: str, authkey: bytes) -> dict[str, str]:
    """The variables that point a process at the manager at ``address``."""
    return {ADDRESS: address, AUTHKEY: authkey.hex()}


def once_scope() -> str | None:
    return get(ONCE_SCOPE)


def state_dir() -> str | None:
    return get(STATE_DIR)


def log_level() -> str:
    return (get(LOG_LEVEL) or "WARNING").upper()


def shm_max_bytes() -> int | None:
    """``PAPERTIGER_SHM_MAX_BYTES`` as an int, or None; :class:`StoreError` when not a number."""
    text = get(SHM_MAX_BYTES)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise StoreError(
            f"{SHM_MAX_BYTES} must be a number of bytes, got {text!r}; fix or unset it."
        ) from None


@contextlib.contextmanager
def exported(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) variables for the ``with`` block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
