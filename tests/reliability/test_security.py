"""Security: nobody without the key gets in; nobody else can even open our files.

* a client with a wrong authkey (or none, speaking raw bytes) is refused and
  nothing it sent is applied; a client that connects and goes silent does
  not keep others out;
* segments, the socket and the daemon's state file are 0600, their
  directories 0700;
* a process running as another user can open neither the segments nor the
  socket, not even holding the right authkey, and cannot unlink a segment.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from multiprocess import connection as mpc

import papertiger
from papertiger.engine.client import Channel, Client
from papertiger.store import CheckoutSessions

from .helpers import segments_of, serve

NOBODY = 65534
PROBE = Path(__file__).with_name("probe.py")


def _seq(server: papertiger.Server) -> int:
    return int(server.stats()["log"]["seq"])


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _put_frame(rid: str) -> bytes:
    record = msgpack.packb({"id": rid, "object": "checkout.session", "created": 1})
    return msgpack.packb(  # type: ignore[no-any-return]
        [
            "put",
            "checkout_sessions",
            "checkout.session",
            ["intruder"],
            "upsert",
            [rid, 1, record, None],
        ]
    )


def test_wrong_authkey_is_refused_and_nothing_applied() -> None:
    with serve() as server:
        seq = _seq(server)
        with pytest.raises(papertiger.StoreUnavailable, match="wrong authkey"):
            Channel(server.address, b"not the key")
        with pytest.raises(papertiger.StoreUnavailable, match="wrong authkey"):
            papertiger.connect(server.address, os.urandom(32).hex())
        with pytest.raises(mpc.AuthenticationError):
            mpc.Client(server.address, family="AF_UNIX", authkey=os.urandom(32))
        # raw bytes, no handshake: a well-formed write request, framed as a client would
        for answer in (b"", os.urandom(40)):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.settimeout(10)
                raw.connect(server.address)
                frame = _put_frame("cs_intruder")
                raw.sendall(answer + struct.pack("!i", len(frame)) + frame)
                try:
                    while raw.recv(4096):
                        pass
                except OSError:
                    pass
        assert _seq(server) == seq, "something a refused client sent was applied"
        with papertiger.use_namespace("intruder"):
            assert CheckoutSessions.count() == 0
        stats = server.stats()
        assert stats["refused_clients"] >= 3
        # the right key still works
        with papertiger.use_namespace("ok"):
            CheckoutSessions.insert({"customer": "cus_ok"})
        assert _seq(server) == seq + 1


def test_silent_client_does_not_keep_others_out() -> None:
    """A client that connects and never answers the challenge holds no one up for long."""
    with serve() as server:
        silent = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
        for s in silent:
            s.connect(server.address)
        box: dict[str, Any] = {}

        def connect() -> None:
            try:
                client = Client(server.address, server.authkey)
                box["seq"] = client.request(["ping"])[0]
                client.close()
            except Exception as exc:  # pragma: no cover - reported below
                box["error"] = repr(exc)

        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(60)  # a hang detector: the handshake times out after seconds
        alive = thread.is_alive()
        for s in silent:
            s.close()
        thread.join(10)
        assert not alive, "a silent client kept every other client out"
        assert "error" not in box, box


def test_files_are_private() -> None:
    """Segments and socket 0600, owned by us; the socket's own directory 0700."""
    with serve(segment_bytes=4096, checkpoint_bytes=4096) as server:
        with papertiger.use_namespace("modes"):  # a few segment switches and checkpoints
            for i in range(100):
                CheckoutSessions.insert({"customer": "cus_m", "pad": "p" * 200, "i": i})
        names = segments_of(server.control[:-2])
        assert len(names) >= 4
        for name in names:
            path = f"/dev/shm/{name}"
            assert _mode(path) == 0o600, f"{name} is {oct(_mode(path))}"
            assert os.stat(path).st_uid == os.getuid()
        assert stat.S_ISSOCK(os.stat(server.address).st_mode)
        assert _mode(server.address) == 0o600
        assert _mode(os.path.dirname(server.address)) == 0o700
    # and with a socket path the caller chose, in a directory others may enter
    with _open_dir() as where, serve(address=str(where / "s.sock")) as server:
        assert _mode(server.address) == 0o600


@pytest.fixture
def state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ptg-rel-") as tmp:
        yield Path(tmp) / "state"


def test_daemon_files_are_private(state_dir: Path) -> None:
    """The daemon's state file, socket, lock and log are 0600; their directory 0700."""
    from papertiger import daemon

    daemon.start(daemon.DaemonConfig(state_dir=str(state_dir), log_level="WARNING"))
    paths = daemon.daemon_paths(state_dir)
    info = daemon.find_daemon(paths)
    assert info is not None
    try:
        assert _mode(paths.dir) == 0o700
        for path in (paths.state, paths.socket, paths.lock, paths.log):
            assert path.exists(), path
            assert _mode(path) == 0o600, f"{path} is {oct(_mode(path))}"
        assert json.loads(paths.state.read_text())["address"] == str(paths.socket)
        for name in segments_of(info.prefix):
            assert _mode(f"/dev/shm/{name}") == 0o600
        if isinstance(_python_for_nobody(), str):
            outcome = _probe_as_nobody(info.prefix, str(paths.socket), info.authkey)
            _assert_locked_out(outcome)
            with pytest.raises(subprocess.CalledProcessError):
                _run_as_nobody(["cat", str(paths.state)])
    finally:
        daemon.stop(paths)
    assert not segments_of(info.prefix)


# -- another user ------------------------------------------------------------------------------


class _open_dir:
    """A fresh directory that every user may enter (0755), removed afterwards."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="rel-open-", dir="/tmp"))
        os.chmod(self.path, 0o755)
        return self.path

    def __exit__(self, *exc: Any) -> None:
        for child in self.path.iterdir():
            child.unlink()
        self.path.rmdir()


def _drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


class _Unavailable(str):
    """Why no process can run as another user here (a skip reason)."""


def _python_for_nobody() -> str | _Unavailable:
    """A Python the other user may run (ours may live in a private home), or why none."""
    if os.geteuid() != 0:
        return _Unavailable("needs root to run a process as another user")
    problems = []
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]):
        try:
            subprocess.run(
                [python, "-I", "-c", "import _posixshmem, multiprocessing.connection"],
                preexec_fn=_drop_to_nobody,
                check=True,
                capture_output=True,
                timeout=60,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            problems.append(f"{python}: {exc}")
            continue
        return python
    return _Unavailable(f"cannot run Python as uid {NOBODY} here: {'; '.join(problems)}")


def _run_as_nobody(argv: list[str]) -> str:
    done = subprocess.run(
        argv, preexec_fn=_drop_to_nobody, check=True, capture_output=True, timeout=60
    )
    return done.stdout.decode()


def _probe_as_nobody(prefix: str, sock: str, authkey: bytes) -> dict[str, Any]:
    config = {
        "segments": sorted(segments_of(prefix)),
        "socket": sock,
        "authkey": authkey.hex(),
        "frame": msgpack.packb(["clear", None]).hex(),
    }
    python = _python_for_nobody()
    assert not isinstance(python, _Unavailable)
    # the checkout may sit where the other user cannot read (a private home): run a copy
    with tempfile.TemporaryDirectory(prefix="ptg-probe-") as scratch:
        os.chmod(scratch, 0o755)
        probe = Path(scratch) / PROBE.name
        probe.write_text(PROBE.read_text())
        probe.chmod(0o644)
        out = _run_as_nobody([python, "-I", str(probe), json.dumps(config)])
    outcome: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return outcome


def _assert_locked_out(outcome: dict[str, Any]) -> None:
    assert outcome["uid"] == NOBODY
    assert outcome["segments"], "no segments were probed"
    for name, results in outcome["segments"].items():
        assert results == ["denied", "denied", "denied"], f"{name}: {results}"
    assert outcome["socket"] == "denied", outcome["socket"]


def test_another_user_cannot_open_segments_or_socket() -> None:
    python = _python_for_nobody()
    if isinstance(python, _Unavailable):
        pytest.skip(python)
    with serve(segment_bytes=4096, checkpoint_bytes=4096) as server:
        with papertiger.use_namespace("private"):
            for i in range(50):
                CheckoutSessions.insert({"customer": "cus_s", "pad": "s" * 200, "i": i})
        seq = _seq(server)
        prefix = server.control[:-2]
        before = segments_of(prefix)
        # the socket in its own 0700 directory
        _assert_locked_out(_probe_as_nobody(prefix, server.address, server.authkey))
        assert segments_of(prefix) == before, "another user unlinked a segment"
        assert _seq(server) == seq, "another user's request was applied"
    # a socket in a directory everyone may enter: the socket's own mode keeps them out
    with _open_dir() as where, serve(address=str(where / "s.sock")) as server:
        with papertiger.use_namespace("private"):
            CheckoutSessions.insert({"customer": "cus_s"})
        seq = _seq(server)
        _assert_locked_out(_probe_as_nobody(server.control[:-2], server.address, server.authkey))
        assert _seq(server) == seq, "another user's request was applied"
