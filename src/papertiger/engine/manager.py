"""The manager: the store's one writer.

Theory of operation
-------------------
The manager owns the authoritative state and the :class:`~.log.LogWriter`.
Its state is what every reader has (a
:class:`~papertiger.core.layered.LayeredState`): the newest checkpoint, read
in place from shared memory, plus a private overlay of what was written
since; the log writer moves it onto each new checkpoint.  So the manager
holds no second private copy of the store: its private memory is the
overlay, and writes are resolved against the same view readers use.

Its main loop is single-threaded, like the GenServer it ports: it waits on
every client connection at once and handles requests in arrival order.

**Group commit.**  Each wake-up reads every connection that has something
ready (one ``readv`` each) and takes every whole request in it: a *group*.
None of them has been answered, so they are concurrent and any order is one
they could have arrived in; they are taken in the order ``poll`` reports the
connections, and in the order each connection sent them.  For each write, in
that order, it

1. resolves the request into an effect against the state as the writes before
   it in the group left it (:func:`papertiger.core.resolve.resolve`; a
   rejected request changes nothing and its caller alone gets an error reply),
2. appends the effect to the log in shared memory, unpublished, and
3. applies it to its own state (before the next request is dispatched).

Then it publishes the whole group with one store of the log's head, sends
every reply (``[OK, seq, result]`` or the error), and only then applies the
group's last effect to its own state and writes a checkpoint if one is due:
that work is off the writers' critical path.  So when a client sees its
reply, every reader that looks at the log sees the effect; and a reader sees
all of a group or none of it.  One writer alone makes groups of one: the same
work as before, in the same order.  Reads never come here.

**The garbage collector.**  The state is a large, growing heap of containers
without reference cycles (dicts, tuples, sorted lists).  Left alone, Python's
cyclic collector walks all of it again and again as it grows: two thirds of
the time of applying a write, measured on the 4 KB checkout session.  So
every :data:`FREEZE_EVERY` writes the manager moves every object it holds
into the collector's permanent generation (``gc.freeze()``, O(1)); objects
are still freed by their reference counts when a record is replaced or
deleted.

A separate thread only accepts connections (including the authkey
handshake, so a slow or hostile client cannot stall the loop) and hands
them over through a pipe.  Every accepted socket gets a 2 s send/receive
timeout, before the handshake, so a client that stops mid-handshake is
dropped instead of stalling everyone else; the loop itself never waits for a
frame that is not whole yet.

``once(key)`` claims are a small state machine of their own
(:mod:`.claims`); the manager stores the results and sends what it says.

Run as ``python -m papertiger.engine``: it reads one JSON line of
configuration from stdin, prints one JSON line (address, pid, control block)
when ready, and — when ``watch_stdin`` is set — stops when stdin reaches EOF,
which is how an embedded manager follows its owner out, even a SIGKILLed one.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import queue
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
from multiprocess import connection as mpc

from .. import __version__, env
from ..core.layered import LayeredState
from ..core.records import check_id
from ..core.resolve import WRITE_REQUESTS, BatchBuilder, Patch, resolve, write_request
from ..core.state import PUT, PutEffect, State
from ..errors import InvalidRequest, StoreError
from . import protocol
from .claims import ONCE_NAMESPACE, ONCE_TABLE, Claims
from .log import DEFAULT_CHECKPOINT_BYTES, DEFAULT_SEGMENT_BYTES, LogWriter, new_prefix
from .protocol import PROTOCOL_VERSION, encode_error, encode_ok, write_frame
from .shm import pid_alive, sweep_dead

__all__ = ["Manager", "ManagerConfig", "main"]

log = logging.getLogger("papertiger.manager")

SOCKET_NAME = "store.sock"
CLIENT_IO_TIMEOUT = 2.0

#: packs the effects the manager logs into one buffer, reused (the loop is single-threaded),
#: from which the log copies them: a batch of 1,000 records (3 MB) is not copied again into
#: a bytes object of its own, whose fresh pages alone cost about 1 µs per record
_packer = msgpack.Packer(use_bin_type=True, autoreset=False)
#: writes between two ``gc.freeze()`` calls (see the module doc)
FREEZE_EVERY = 256
#: bytes asked for by one read of a connection
READ_BYTES = 256 * 1024
#: a frame's length, as multiprocess.connection writes it (-1: an 8-byte length follows)
_FRAME_LENGTH = struct.Struct("!i")


class ManagerConfig:
    """What a manager needs to start; plain data, JSON-friendly."""

    def __init__(
        self,
        *,
        address: str | None = None,
        authkey: bytes,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
        watch_stdin: bool = False,
        watch_pid: int | None = None,
        sweep: bool = True,
    ) -> None:
        self.address = address
        self.authkey = authkey
        self.segment_bytes = segment_bytes
        self.checkpoint_bytes = checkpoint_bytes
        self.watch_stdin = watch_stdin
        #: stop when this process exits (the owner of an on-demand manager)
        self.watch_pid = watch_pid
        self.sweep = sweep

    def to_json(self) -> str:
        return json.dumps(
            {
                "address": self.address,
                "authkey": self.authkey.hex(),
                "segment_bytes": self.segment_bytes,
                "checkpoint_bytes": self.checkpoint_bytes,
                "watch_stdin": self.watch_stdin,
                "watch_pid": self.watch_pid,
                "sweep": self.sweep,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ManagerConfig:
        raw = json.loads(text)
        return cls(
            address=raw.get("address"),
            authkey=bytes.fromhex(raw["authkey"]),
            segment_bytes=int(raw.get("segment_bytes", DEFAULT_SEGMENT_BYTES)),
            checkpoint_bytes=int(raw.get("checkpoint_bytes", DEFAULT_CHECKPOINT_BYTES)),
            watch_stdin=bool(raw.get("watch_stdin", False)),
            watch_pid=None if raw.get("watch_pid") is None else int(raw["watch_pid"]),
            sweep=bool(raw.get("sweep", True)),
        )


def _set_io_timeout(conn: Any, seconds: float) -> None:
    sock = socket.socket(fileno=conn.fileno())
    try:
        tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    finally:
        sock.detach()


class Manager:
    """The single writer. Create, then :meth:`serve_forever` (blocks until stopped)."""

    def __init__(self, config: ManagerConfig) -> None:
        self.config = config
        self.started = time.time()
        self.state = LayeredState()
        self.stopping = False
        self.conns: list[Any] = []
        self.claims = Claims()
        self.staged: dict[tuple[int, str], BatchBuilder] = {}
        self.refused = 0
        self.requests = 0
        #: replies of the current group, sent once it is published
        self._replies: list[tuple[Any, bytes]] = []
        self._unpublished = 0
        #: effects logged but not yet applied to ``state`` (see _publish)
        self._unapplied: list[Any] = []
        self._unfrozen = 0
        #: where requests are read (one readv per ready connection), and the start of a
        #: frame not yet whole, per connection
        self._rbuf = bytearray(READ_BYTES)
        self._rview = memoryview(self._rbuf)
        self._partial: dict[Any, bytearray] = {}
        self.groups = 0
        self.group_writes = 0
        self.largest_group = 0
        self._new_conns: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        self._poller = select.poll()
        self._by_fd: dict[int, Any] = {}
        os.set_blocking(self._wake_w, False)
        self._own_dir: str | None = None
        self.swept: list[str] = []
        # hooks for integrations (persistence): called after each write / each tick
        self.on_write: list[Callable[[Manager], None]] = []
        self.on_tick: list[Callable[[Manager], None]] = []
        self.on_stop: list[Callable[[Manager], None]] = []

        old_umask = os.umask(0o077)
        try:
            if config.sweep:
                self.swept = sweep_dead(exclude_pid=os.getpid())
            self.writer = LogWriter(
                new_prefix(),
                segment_bytes=config.segment_bytes,
                checkpoint_bytes=config.checkpoint_bytes,
                state=self.state,
            )
            try:
                address = config.address
                if address is None:
                    self._own_dir = tempfile.mkdtemp(prefix="ptg-")
                    address = os.path.join(self._own_dir, SOCKET_NAME)
                self.address = address
                self.listener = mpc.Listener(
                    address, family="AF_UNIX", authkey=config.authkey, backlog=128
                )
                os.chmod(address, 0o600)
            except BaseException:
                self.writer.close()
                raise
        finally:
            os.umask(old_umask)
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="papertiger-accept", daemon=True
        )

    # -- the state seen from outside ------------------------------------------------
    @property
    def control_name(self) -> str:
        return self.writer.control_name

    def info(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "pid": os.getpid(),
            "control": self.control_name,
            "protocol": PROTOCOL_VERSION,
            "version": __version__,
        }

    def replace_state(self, state: State) -> None:
        """Load ``state`` (from a snapshot file) before serving: published as a checkpoint,
        which the manager's state then reads in place (``state`` can be dropped)."""
        self.writer.write_checkpoint(source=state)

    def stats(self) -> dict[str, Any]:
        tables: dict[str, Any] = {}
        for name in self.state.table_names():
            namespaces = {"/".join(ns): len(p) for _, ns, p in self.state.partitions(table=name)}
            tables[name] = {"records": sum(namespaces.values()), "namespaces": namespaces}
        return {
            **self.info(),
            "started": self.started,
            "uptime": time.time() - self.started,
            "clients": len(self.conns),
            "requests": self.requests,
            "groups": self.groups,
            "group_writes": self.group_writes,
            "largest_group": self.largest_group,
            "refused_clients": self.refused,
            "tables": tables,
            "log": self.writer.stats(),
        }

    # -- accepting ---------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self.stopping:
            try:
                conn = self._accept_one()
            except mpc.AuthenticationError:
                self.refused += 1
                log.warning("refused a client: authentication failed (wrong authkey)")
                continue
            except (OSError, EOFError) as exc:
                if self.stopping:
                    return
                log.debug("a client went away during the handshake: %s", exc)
                continue
            except Exception:  # pragma: no cover - never let the accept thread die
                log.exception("unexpected error while accepting a client")
                continue
            self._new_conns.put(conn)
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass

    def _accept_one(self) -> Any:
        """Accept one connection and run the authkey handshake under the I/O timeout.

        ``Listener.accept`` would run the handshake with no timeout at all, so one
        client that connects and then says nothing (stopped, hung, hostile) would
        keep every later client out.
        """
        conn = self.listener._listener.accept()
        try:
            _set_io_timeout(conn, CLIENT_IO_TIMEOUT)
            mpc.deliver_challenge(conn, self.config.authkey)
            mpc.answer_challenge(conn, self.config.authkey)
        except BaseException:
            conn.close()
            raise
        return conn

    # -- the loop ---------------------------------------------------------------
    def serve_forever(self, ready: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Serve until :meth:`stop`, SIGTERM/SIGINT, or stdin EOF (with ``watch_stdin``).

        One ``poll`` object lives for the whole loop (connections are registered
        as they come and go), so waiting costs one system call per wake-up.
        """
        self._install_signals()
        self._accept_thread.start()
        if ready is not None:
            ready(self.info())
        watch = 0 if self.config.watch_stdin else None
        self._poller.register(self._wake_r, select.POLLIN)
        if watch is not None:
            self._poller.register(watch, select.POLLIN)
        owner = self.config.watch_pid
        owner_fd = _pidfd(owner) if owner else None
        if owner_fd is not None:
            self._poller.register(owner_fd, select.POLLIN)
        by_fd = self._by_fd
        try:
            while not self.stopping:
                for fd, _ in self._poller.poll(500):
                    conn = by_fd.get(fd)
                    if conn is not None:
                        self._handle(conn)  # one request of the group (module doc)
                    elif fd == self._wake_r:
                        self._take_new_conns()
                    elif fd == watch:
                        if not os.read(watch, 4096):
                            log.info("owner gone (stdin closed): stopping")
                            self.stopping = True
                    elif fd == owner_fd:
                        log.info("owner (pid %s) exited: stopping", owner)
                        self.stopping = True
                    if self.stopping:
                        break
                self._commit_group()
                self.writer.poll_checkpoint()  # publish a background checkpoint once written
                for hook in self.on_tick:
                    hook(self)
                if owner and owner_fd is None and not pid_alive(owner):
                    log.info("owner (pid %s) exited: stopping", owner)
                    self.stopping = True
        finally:
            if owner_fd is not None:
                os.close(owner_fd)
            self.close()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, frame: Any) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def stop(self) -> None:
        """Ask the loop to stop (safe from signal handlers and other threads)."""
        self.stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _take_new_conns(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                conn = self._new_conns.get_nowait()
            except queue.Empty:
                return
            self.conns.append(conn)
            self._by_fd[conn.fileno()] = conn
            self._poller.register(conn.fileno(), select.POLLIN)

    def _drop(self, conn: Any) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
            for fd, known in list(self._by_fd.items()):
                if known is conn:
                    del self._by_fd[fd]
                    with contextlib.suppress(KeyError, ValueError, OSError):
                        self._poller.unregister(fd)
        try:
            conn.close()
        except OSError:
            pass
        self._partial.pop(conn, None)
        for staged in [k for k in self.staged if k[0] == id(conn)]:
            del self.staged[staged]
        for waiter, message in self.claims.drop(conn):
            log.info("once: a caller went away mid-factory; handing over")
            self._send(waiter, encode_ok(self.writer.seq, message))

    def _send(self, conn: Any, frame: bytes) -> None:
        """Queue a reply: it goes out once the current group is published."""
        self._replies.append((conn, frame))

    def _commit_group(self) -> None:
        """Publish the group (one head store), send every queued reply, then settle."""
        count = self._publish_head()
        replies = self._replies
        while replies:
            self._replies = []
            for conn, frame in replies:
                try:
                    write_frame(conn.fileno(), frame)
                except OSError:
                    self._drop(conn)  # may queue hand-overs to waiters: sent by the next pass
            replies = self._replies
        self._settle(count)

    def _publish_head(self) -> int:
        """Publish what was appended since the last publication; how many entries. O(1)."""
        count = self._unpublished
        if count:
            self._unpublished = 0
            self.writer.publish()
            self.groups += 1
            self.group_writes += count
            self.largest_group = max(self.largest_group, count)
        return count

    def _settle(self, count: int) -> None:
        """After ``count`` entries were published: apply the rest, checkpoint if due, hooks."""
        if self._unapplied:
            self._apply_pending()
        if count:
            self.writer.checkpoint_if_due()  # after apply and publish: it covers every entry
            for hook in self.on_write:
                for _ in range(count):
                    hook(self)
            self._unfrozen += count
            if self._unfrozen >= FREEZE_EVERY:
                self._unfrozen = 0
                gc.freeze()  # the state is acyclic: no need to walk it again (module doc)

    def _publish_pending(self) -> None:
        """Publish and settle now (before a checkpoint is written on request)."""
        self._settle(self._publish_head())

    def _apply_pending(self) -> None:
        """Apply the logged effects the state has not seen yet, in log order."""
        pending, self._unapplied = self._unapplied, []
        apply = self.state.apply
        for effect in pending:
            apply(effect)

    # -- requests ---------------------------------------------------------------
    def _handle(self, conn: Any) -> None:
        """Read what ``conn`` sent (one ``readv``) and handle every whole frame in it, in order.

        Frames keep ``multiprocess.connection``'s format (a 4-byte big-endian
        length, or -1 and an 8-byte length, then the bytes); the bytes of a
        frame not yet whole wait in ``_partial`` for the next read.  A client
        that stops mid-frame stalls nobody: the loop never waits for it.
        """
        try:
            n = os.readv(conn.fileno(), [self._rbuf])
        except BlockingIOError:
            return
        except OSError:
            self._drop(conn)
            return
        if n == 0:
            self._drop(conn)
            return
        partial = self._partial.pop(conn, None)
        if partial is None:
            data = self._rview[:n]
        else:
            partial += self._rview[:n]
            data = memoryview(partial)
        pos, end = 0, len(data)
        while end - pos >= 4:
            (size,) = _FRAME_LENGTH.unpack_from(data, pos)
            start = pos + 4
            if size == -1:
                if end - start < 8:
                    break
                size = int.from_bytes(data[start : start + 8], "big")
                start += 8
            elif size < 0:
                log.debug("dropping a client: a frame of length %d", size)
                self._drop(conn)
                return
            if end - start < size:
                break
            pos = start + size
            self._handle_frame(conn, data[start:pos])
        if pos < end:
            self._partial[conn] = bytearray(data[pos:end])
        del data

    def _handle_frame(self, conn: Any, frame: memoryview) -> None:
        self.requests += 1
        try:
            op, fields = protocol.decode_request(frame)
            reply = self._dispatch(conn, op, fields)
        except StoreError as exc:
            reply = encode_error(exc)
        except Exception as exc:  # malformed frames must never stop the manager
            log.debug("malformed request: %r", exc)
            reply = encode_error(
                InvalidRequest(f"Malformed request: {type(exc).__name__}: {exc}", param="request")
            )
        if reply is not None:
            self._send(conn, reply)

    def _dispatch(self, conn: Any, op: str, fields: list[Any]) -> bytes | None:
        if self._unapplied:
            self._apply_pending()  # every request sees the writes before it
        if op in WRITE_REQUESTS:
            req = write_request(op, fields)
            effect = resolve(self.state, req)
            seq = self._publish(effect)
            # a patch's caller gets the merged record the manager worked out
            return encode_ok(seq, effect.packed if isinstance(req, Patch) else None)
        handler = _OPS.get(op)
        if handler is None:
            raise InvalidRequest(f"Unknown operation {op!r}.", param="request")
        return handler(self, conn, fields)

    def _publish(self, effect: Any) -> int:
        """Log ``effect``; readers see it when the group is published.

        The manager's own state applies it before the next request is
        dispatched, or, for the last write of a group, after the replies went
        out: off the writer's critical path.
        """
        try:
            _packer.pack(effect)
            with _packer.getbuffer() as payload:
                # may raise StoreError (/dev/shm full): nothing of this effect was logged or
                # applied
                seq = self.writer.append(payload, publish=False)
        finally:
            _packer.reset()
        self._unapplied.append(effect)
        self._unpublished += 1
        return seq

    # -- non-write operations ------------------------------------------------------
    def _op_hello(self, conn: Any, fields: list[Any]) -> bytes:
        return encode_ok(self.writer.seq, self.info())

    def _op_ping(self, conn: Any, fields: list[Any]) -> bytes:
        return encode_ok(self.writer.seq, None)

    def _op_stats(self, conn: Any, fields: list[Any]) -> bytes:
        return encode_ok(self.writer.seq, self.stats())

    def _op_checkpoint(self, conn: Any, fields: list[Any]) -> bytes:
        self._publish_pending()  # a checkpoint covers published entries only
        self.writer.write_checkpoint()
        return encode_ok(self.writer.seq, None)

    def _op_shutdown(self, conn: Any, fields: list[Any]) -> bytes:
        self.stopping = True
        return encode_ok(self.writer.seq, None)

    def _op_stage(self, conn: Any, fields: list[Any]) -> None:
        # part of a streamed insert_many (protocol.Stage); never replied to.
        txid = fields[0] if fields and isinstance(fields[0], str) else "?"
        key = (id(conn), txid)
        batch = self.staged.get(key)
        try:
            chunk = protocol.read_stage(fields)
            if batch is None:
                batch = self.staged[key] = BatchBuilder(chunk.table, chunk.object_name, chunk.ns)
            elif not batch.matches(chunk.table, chunk.ns):
                raise InvalidRequest(
                    "Malformed stage request: a batch's chunks must share table and namespace.",
                    param="request",
                )
            batch.add(chunk.records)
        except Exception as exc:
            error = (
                exc
                if isinstance(exc, StoreError)
                else InvalidRequest(
                    f"Malformed stage request: {type(exc).__name__}: {exc}", param="request"
                )
            )
            if batch is None:
                batch = self.staged[key] = BatchBuilder("_invalid", "", ["_invalid"])
            if batch.error is None:
                batch.error = error
        return None

    def _op_commit(self, conn: Any, fields: list[Any]) -> bytes:
        # ["commit", txid]: apply the staged batch as one effect, all or nothing.
        txid = fields[0] if len(fields) == 1 else None
        batch = self.staged.pop((id(conn), txid), None) if isinstance(txid, str) else None
        if batch is None:
            raise InvalidRequest(f"No staged batch {txid!r} on this connection.", param="request")
        seq = self._publish(batch.finish(self.state))
        return encode_ok(seq, None)

    def _op_abort(self, conn: Any, fields: list[Any]) -> None:
        # ["abort", txid]: forget a staged batch; never replied to.
        if len(fields) == 1 and isinstance(fields[0], str):
            self.staged.pop((id(conn), fields[0]), None)
        return None

    def _op_once(self, conn: Any, fields: list[Any]) -> bytes | None:
        # ["once", key]: ["done", packed] now, ["run"] now, or a reply held back (claims.py)
        key = _once_key(fields)
        done = self.state.get(ONCE_TABLE, ONCE_NAMESPACE, key)
        if done is not None:
            return encode_ok(self.writer.seq, ["done", done])
        if self.claims.claim(conn, key) == "wait":
            return None
        return encode_ok(self.writer.seq, ["run"])

    def _op_once_done(self, conn: Any, fields: list[Any]) -> bytes:
        # ["once_done", key, packed]
        if len(fields) != 2 or not isinstance(fields[1], bytes):
            raise InvalidRequest("Malformed once_done request.", param="request")
        key = _once_key(fields)
        if not self.claims.holds(conn, key):
            raise InvalidRequest(f"once({key!r}) is not claimed by this client.", param="key")
        packed = fields[1]
        try:  # rare and small: decode it here, so no waiter ever gets bytes it cannot read
            msgpack.unpackb(packed)
        except Exception:
            raise InvalidRequest(
                f"Malformed once_done request: the result for {key!r} is not one msgpack value.",
                param="value",
            ) from None
        seq = self._publish(PutEffect(PUT, ONCE_TABLE, list(ONCE_NAMESPACE), key, 0, packed, None))
        for waiter, message in self.claims.done(conn, key, packed):
            self._send(waiter, encode_ok(seq, message))
        return encode_ok(seq, None)

    def _op_once_abandon(self, conn: Any, fields: list[Any]) -> bytes:
        # ["once_abandon", key]: the holder's factory failed
        key = _once_key(fields)
        for waiter, message in self.claims.abandon(conn, key):
            self._send(waiter, encode_ok(self.writer.seq, message))
        return encode_ok(self.writer.seq, None)

    # -- shutdown ----------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting, drop clients, unlink every segment and the socket."""
        self.stopping = True
        for hook in self.on_stop:
            try:
                hook(self)
            except Exception:  # pragma: no cover
                log.exception("a stop hook failed")
        try:
            self.listener._listener._socket.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        try:
            self.listener.close()
        except OSError:
            pass
        for conn in list(self.conns):
            try:
                conn.close()
            except OSError:
                pass
        self.conns.clear()
        if self.writer.cbuf is not None:
            self.writer.close()
        if self._own_dir is not None:
            try:
                if os.path.exists(self.address):
                    os.unlink(self.address)
                os.rmdir(self._own_dir)
            except OSError:
                pass
            self._own_dir = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1


def _pidfd(pid: int) -> int | None:
    """A descriptor that polls readable when ``pid`` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _once_key(fields: list[Any]) -> str:
    if not fields:
        raise InvalidRequest("Malformed once request: missing key.", param="key")
    return check_id(fields[0], "key")


_OPS: dict[str, Callable[[Manager, Any, list[Any]], bytes | None]] = {
    "hello": Manager._op_hello,
    "ping": Manager._op_ping,
    "stats": Manager._op_stats,
    "checkpoint": Manager._op_checkpoint,
    "shutdown": Manager._op_shutdown,
    "once": Manager._op_once,
    "once_done": Manager._op_once_done,
    "once_abandon": Manager._op_once_abandon,
    "stage": Manager._op_stage,
    "commit": Manager._op_commit,
    "abort": Manager._op_abort,
}


def _read_line(fd: int) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        data += chunk
    return data.decode()


def main() -> None:
    """Entry point of a manager subprocess (see the module docstring)."""
    logging.basicConfig(
        level=env.log_level(),
        format="papertiger manager %(process)d: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    line = _read_line(0)
    if not line:
        sys.exit("papertiger manager: expected one JSON line of configuration on stdin")
    config = ManagerConfig.from_json(line)
    try:
        manager = Manager(config)
    except StoreError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(1)

    def ready(info: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    manager.serve_forever(ready)


if __name__ == "__main__":
    main()
