"""A process's handle on a running manager: one connection plus one replica.

Writes go to the manager over the connection (one request in flight per
client; threads take turns under a lock).  Reads go to the :class:`Replica`.

A write never hangs on a dead manager: the reply is awaited in slices of
:data:`LIVENESS_INTERVAL` seconds and, between slices, the manager's pid is
checked; a closed socket or a dead manager raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterable
from typing import Any

import msgpack
from multiprocess import connection as mpc

from ..errors import InvalidRequest, StoreUnavailable
from . import protocol
from .protocol import PROTOCOL_VERSION, decode_reply
from .replica import Replica
from .shm import pid_alive

__all__ = ["Channel", "Client"]

LIVENESS_INTERVAL = 0.25
LIVENESS_MS = int(LIVENESS_INTERVAL * 1000)


class Channel:
    """One authenticated connection to the manager; requests are serialised by a lock."""

    def __init__(self, address: str, authkey: bytes, manager_pid: int = 0) -> None:
        self.address = address
        self.authkey = authkey
        self.pid = os.getpid()
        self.lock = threading.Lock()
        try:
            self.conn = mpc.Client(address, family="AF_UNIX", authkey=authkey)
        except mpc.AuthenticationError:
            raise StoreUnavailable(
                f"the manager at {address} refused this client: wrong authkey. Check "
                "PAPERTIGER_AUTHKEY (or the key passed to connect())."
            ) from None
        except (OSError, EOFError) as exc:
            raise StoreUnavailable(
                f"no papertiger manager answers at {address} ({exc}). Start one with "
                "papertiger.serve() or 'papertiger daemon start', or unset PAPERTIGER_ADDRESS."
            ) from None
        self.manager_pid = manager_pid
        self._poller = select.poll()
        self._poller.register(self.conn.fileno(), select.POLLIN)

    def request(self, req: list[Any]) -> tuple[int, Any]:
        """Send one request, wait for its reply; ``(seq, result)`` or raise its error."""
        try:
            frame = msgpack.packb(req, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:  # e.g. a lone surrogate
            raise InvalidRequest(
                f"Invalid request: it cannot be encoded ({exc}); use str, int, float, bool, "
                "None, bytes, lists and dicts with str keys, and valid Unicode text.",
                param="request",
            ) from None
        with self.lock:
            try:
                self.conn.send_bytes(frame)
                reply = self._await_reply()
            except (EOFError, OSError) as exc:
                raise self._lost(exc) from None
        return decode_reply(reply)

    def request_streamed(
        self, frames: Iterable[list[Any]], final: list[Any], abort: list[Any]
    ) -> tuple[int, Any]:
        """Send ``frames`` (no replies) as they are produced, then ``final``; await its reply.

        The frames are produced lazily, so the caller's work on the next one
        overlaps the manager's work on the previous one.  If producing a frame
        raises, ``abort`` is sent instead of ``final`` and the error propagates.
        """
        packb = msgpack.packb
        with self.lock:
            try:
                try:
                    for req in frames:
                        self.conn.send_bytes(packb(req, use_bin_type=True))
                except (EOFError, OSError):
                    raise
                except BaseException:
                    self.conn.send_bytes(packb(abort, use_bin_type=True))
                    raise
                self.conn.send_bytes(packb(final, use_bin_type=True))
                reply = self._await_reply()
            except (EOFError, OSError) as exc:
                raise self._lost(exc) from None
        return decode_reply(reply)

    def _await_reply(self) -> bytes:
        while not self._poller.poll(LIVENESS_MS):
            if self.manager_pid and not pid_alive(self.manager_pid):
                raise StoreUnavailable(
                    f"the papertiger manager (pid {self.manager_pid}) died; "
                    "the write was not acknowledged."
                )
        return bytes(self.conn.recv_bytes())

    def _lost(self, exc: BaseException) -> StoreUnavailable:
        if isinstance(exc, StoreUnavailable):
            return exc
        return StoreUnavailable(
            f"lost the connection to the papertiger manager at {self.address} "
            f"({type(exc).__name__}); it has stopped or was killed."
        )

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


class Client(Channel):
    """Connection and replica for one process. Never shared across ``fork``."""

    def __init__(self, address: str, authkey: bytes) -> None:
        super().__init__(address, authkey)
        try:
            _, info = self.request(protocol.request("hello"))
            if info.get("protocol") != PROTOCOL_VERSION:
                raise StoreUnavailable(
                    f"the manager at {address} speaks protocol {info.get('protocol')}, this "
                    f"client {PROTOCOL_VERSION}; use the same papertiger version on both sides."
                )
            self.info = info
            self.manager_pid = int(info["pid"])
            self.replica = Replica(info["control"])
        except BaseException:
            super().close()
            raise

    def channel(self) -> Channel:
        """A separate connection to the same manager (for calls that may wait long)."""
        return Channel(self.address, self.authkey, self.manager_pid)

    def close(self) -> None:
        super().close()
        self.replica.close()
