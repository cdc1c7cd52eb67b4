"""A process's handle on a running manager: one connection plus one replica.

Writes go to the manager over the connection (one request in flight per
client; threads take turns under a lock).  Reads go to the :class:`Replica`.

A write never hangs on a dead manager: the reply is awaited in slices of
:data:`LIVENESS_INTERVAL` seconds and, between slices, the manager's pid is
checked; a closed socket or a dead manager raises :class:`StoreUnavailable`.

A reply is read with one ``read`` system call (the socket's receive timeout
is the slice), not a ``poll`` and two ``read`` calls as
``Connection.recv_bytes`` would: one request is in flight per connection, so
whatever arrives is that reply.  Frames keep ``multiprocess.connection``'s
format (a 4-byte big-endian length, then the bytes).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterable

# The standard library's connection module: the same wire format and handshake as
# multiprocess.connection (the manager's Listener) on the same Python, without dill,
# which multiprocess imports and which is most of what a new process paid to connect.
from multiprocessing import AuthenticationError
from multiprocessing import connection as mpc
from typing import Any

import msgpack
import ormsgpack

from ..errors import InvalidRequest, StoreUnavailable
from . import protocol
from .protocol import PROTOCOL_VERSION, decode_reply, write_frame
from .replica import Replica
from .shm import pid_alive

__all__ = ["Channel", "Client"]

LIVENESS_INTERVAL = 0.25
#: bytes asked for by the first read of a reply (most replies are a few bytes)
FIRST_READ = 64 * 1024
_LENGTH = struct.Struct("!i")
_LONG_LENGTH = struct.Struct("!Q")


def encode_frame(req: list[Any]) -> bytes:
    """msgpack of a request frame; ormsgpack's packer first (the same bytes, faster)."""
    try:
        return ormsgpack.packb(req)
    except TypeError:  # a namedtuple, say: msgpack packs it as a list
        return msgpack.packb(req, use_bin_type=True)  # type: ignore[no-any-return]


class Channel:
    """One authenticated connection to the manager; requests are serialised by a lock."""

    def __init__(self, address: str, authkey: bytes, manager_pid: int = 0) -> None:
        self.address = address
        self.authkey = authkey
        self.pid = os.getpid()
        self.lock = threading.Lock()
        try:
            self.conn = mpc.Client(address, family="AF_UNIX", authkey=authkey)
        except AuthenticationError:
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
        self._fd = self.conn.fileno()
        sock = socket.socket(fileno=self._fd)
        try:  # a blocking read returns (EAGAIN) after one liveness slice
            seconds = int(LIVENESS_INTERVAL)
            micros = int((LIVENESS_INTERVAL - seconds) * 1e6)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", seconds, micros)
            )
        finally:
            sock.detach()

    def request(self, req: list[Any]) -> tuple[int, Any]:
        """Send one request, wait for its reply; ``(seq, result)`` or raise its error."""
        try:
            frame = encode_frame(req)
        except (TypeError, ValueError, OverflowError) as exc:  # e.g. a lone surrogate
            raise InvalidRequest(
                f"Invalid request: it cannot be encoded ({exc}); use str, int, float, bool, "
                "None, bytes, lists and dicts with str keys, and valid Unicode text.",
                param="request",
            ) from None
        with self.lock:
            try:
                write_frame(self._fd, frame)
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
        with self.lock:
            try:
                try:
                    for req in frames:
                        write_frame(self._fd, encode_frame(req))
                except (EOFError, OSError):
                    raise
                except BaseException:
                    write_frame(self._fd, encode_frame(abort))
                    raise
                write_frame(self._fd, encode_frame(final))
                reply = self._await_reply()
            except (EOFError, OSError) as exc:
                raise self._lost(exc) from None
        return decode_reply(reply)

    def _await_reply(self) -> bytes:
        """The reply's bytes: usually one ``read``; more only for a long reply."""
        data = self._read(FIRST_READ)
        while len(data) < 4:
            data += self._read(4 - len(data))
        (size,) = _LENGTH.unpack_from(data)
        start = 4
        if size == -1:  # a frame over 2 GB: an 8-byte length follows
            while len(data) < 12:
                data += self._read(12 - len(data))
            (size,) = _LONG_LENGTH.unpack_from(data, 4)
            start = 12
        end = start + size
        if len(data) < end:
            parts = [data]
            have = len(data)
            while have < end:
                chunk = self._read(end - have)
                parts.append(chunk)
                have += len(chunk)
            data = b"".join(parts)
        return data[start:end]

    def _read(self, size: int) -> bytes:
        """Up to ``size`` bytes; waits in liveness slices; EOFError when the manager closed."""
        while True:
            try:
                chunk = os.read(self._fd, size)
            except BlockingIOError:  # the receive timeout: one slice passed
                if self.manager_pid and not pid_alive(self.manager_pid):
                    raise StoreUnavailable(
                        f"the papertiger manager (pid {self.manager_pid}) died; "
                        "the write was not acknowledged."
                    ) from None
                continue
            if not chunk:
                raise EOFError
            return chunk

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
