"""The daemon: start/status/stop, discovery, stale cleanup, persistence, hostile clients.

Every test runs real ``papertiger`` processes against a private state
directory (``PAPERTIGER_STATE_DIR``), with ``PAPERTIGER_ADDRESS`` /
``PAPERTIGER_AUTHKEY`` removed, so the user's own daemon is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
from multiprocess import connection as mpc

from papertiger import daemon
from papertiger.core.state import PUT, State
from papertiger.daemon import gc as daemon_gc
from papertiger.daemon import statefile
from papertiger.engine import persistence
from papertiger.engine.shm import KIND_CONTROL, Segment, list_segments, pid_alive
from support import DaemonEnv, exports, segments_of, wait_dead


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- start, status, stop ------------------------------------------------------------------


def test_start_status_stop_cycles(env: DaemonEnv) -> None:
    for _ in range(2):
        info, out = env.start()
        pid = info["pid"]
        assert exports(out) == {
            "PAPERTIGER_ADDRESS": info["address"],
            "PAPERTIGER_AUTHKEY": info["authkey"],
        }
        assert pid_alive(pid) and segments_of(pid)

        again = env.run("daemon", "start")
        assert again.returncode != 0
        assert "already running" in again.stderr and str(pid) in again.stderr
        assert env.state() == info  # the running daemon's state file is untouched

        text = env.run("daemon", "status")
        assert text.returncode == 0
        assert f"pid {pid}" in text.stdout and "shared memory" in text.stdout
        figures = env.status()
        assert figures["pid"] == pid and figures["running"] is True
        assert figures["log"]["shm_bytes"] > 0 and figures["uptime"] >= 0

        out = env.stop()
        assert f"pid {pid} stopped" in out
        wait_dead(pid)
        assert env.state() is None
        assert not (env.state_dir / "daemon.sock").exists()
        assert not segments_of(pid), "the daemon's segments outlived it"
        gone = env.run("daemon", "status")
        assert gone.returncode == 3 and "no papertiger daemon" in gone.stdout
        assert env.run("daemon", "stop").returncode == 1


def test_files_are_private(env: DaemonEnv) -> None:
    info, _ = env.start()
    assert mode(env.state_dir) == 0o700
    assert mode(env.state_dir / "daemon.json") == 0o600
    assert mode(env.state_dir / "daemon.log") == 0o600
    sock = env.state_dir / "daemon.sock"
    assert stat.S_ISSOCK(os.stat(sock).st_mode) and mode(sock) == 0o600
    assert info["address"] == str(sock)
    names = segments_of(info["pid"])
    assert names
    for name in names:
        assert mode(f"/dev/shm/{name}") == 0o600, name
    env.stop()


def test_a_state_directory_open_to_others_is_refused(env: DaemonEnv) -> None:
    env.state_dir.mkdir(mode=0o755)
    os.chmod(env.state_dir, 0o755)
    proc = env.run("daemon", "start")
    assert proc.returncode == 1
    assert "mode 0755" in proc.stderr and "chmod 700" in proc.stderr
    assert env.state() is None


def test_status_reports_tables_namespaces_and_counts(env: DaemonEnv) -> None:
    env.start()
    env.python(
        """
        import papertiger
        from papertiger.store import CheckoutSessions, Customers
        Customers.insert_many([{"email": f"c{i}@example.com"} for i in range(3)])
        with papertiger.use_namespace(("t-a", "acct_1")):
            CheckoutSessions.insert({"customer": "cus_1"})
        """
    )
    figures = env.status()
    assert figures["tables"]["customers"] == {"records": 3, "namespaces": {":global": 3}}
    assert figures["tables"]["checkout_sessions"]["namespaces"] == {"t-a/acct_1": 1}
    assert figures["log"]["seq"] == 2
    assert figures["daemon"]["state_file"] == str(env.state_dir / "daemon.json")
    assert figures["daemon"]["log_file_bytes"] > 0
    text = env.run("daemon", "status").stdout
    assert "customers: 3 record(s) in 1 namespace(s)" in text
    assert "t-a/acct_1" in text
    env.stop()


# -- discovery ----------------------------------------------------------------------------


def test_two_client_processes_find_and_share_the_daemon(env: DaemonEnv) -> None:
    info, _ = env.start()
    first = env.python(
        """
        import os
        import papertiger
        from papertiger.engine.connection import current_client
        from papertiger.store import Customers
        with papertiger.use_namespace("shared"):
            c = Customers.insert({"email": "one@example.com"})
        print(c["id"], current_client().manager_pid, os.environ.get("PAPERTIGER_ADDRESS"))
        """
    ).stdout.split()
    record_id, manager_pid, address = first
    assert int(manager_pid) == info["pid"]
    assert address == "None"  # found through the state file, not a variable
    second = env.python(
        f"""
        import papertiger
        from papertiger.engine.connection import current_client
        from papertiger.store import Customers
        with papertiger.use_namespace("shared"):
            print(Customers.get({record_id!r})["email"], current_client().manager_pid)
        """
    ).stdout.split()
    assert second == ["one@example.com", str(info["pid"])]
    assert env.status()["tables"]["customers"]["records"] == 1
    env.stop()


def _write_state(state_dir: Path, **fields: Any) -> Path:
    state_dir.mkdir(mode=0o700, exist_ok=True)
    path = state_dir / "daemon.json"
    record = {
        "address": str(state_dir / "daemon.sock"),
        "authkey": "ab" * 32,
        "pid": os.getpid(),
        "pid_start": None,
        "control": "ptg_1_000000_c",
        "started": time.time(),
        **fields,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, json.dumps(record).encode())
    os.close(fd)
    return path


def test_discover_trusts_only_a_live_daemon(
    env: DaemonEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERTIGER_STATE_DIR", str(env.state_dir))
    assert daemon.discover() is None  # no directory at all

    path = _write_state(env.state_dir, pid_start=statefile.process_start(os.getpid()))
    assert daemon.discover() == (str(env.state_dir / "daemon.sock"), b"\xab" * 32)

    # a recycled pid: alive, but it started at another time than the daemon did
    _write_state(env.state_dir, pid_start=1)
    assert daemon.discover() is None
    assert not path.exists(), "a dead daemon's state file is removed"

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_state(env.state_dir, pid=dead.pid)
    assert daemon.discover() is None
    assert not path.exists()

    _write_state(env.state_dir)
    os.chmod(path, 0o644)
    assert daemon.discover() is None, "a state file others can read is not trusted"


def test_discover_leaves_a_starting_daemons_state_file_alone(
    env: DaemonEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERTIGER_STATE_DIR", str(env.state_dir))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = _write_state(env.state_dir, pid=dead.pid)
    holder = statefile.take_lock(daemon.daemon_paths())  # as a daemon that is starting does
    assert holder is not None
    try:
        assert daemon.discover() is None
        assert path.exists(), "only the lock holder may remove the state file"
    finally:
        os.close(holder)
    assert daemon.discover() is None
    assert not path.exists()


# -- stale cleanup ------------------------------------------------------------------------


def test_sigkill_then_start_removes_and_reports_what_was_left(env: DaemonEnv) -> None:
    """Power loss: the daemon and its resource tracker die at once (the process group)."""
    for _attempt in range(3):
        info, _ = env.start()
        pid = info["pid"]
        os.killpg(pid, signal.SIGKILL)
        wait_dead(pid)
        left = segments_of(pid)
        assert env.state() == info, "a SIGKILLed daemon leaves its state file"

        new, out = env.start()
        assert new["pid"] != pid
        assert f"removed stale state file {env.state_dir / 'daemon.json'}" in out
        assert f"(dead daemon pid {pid})" in out
        assert f"removed stale socket {env.state_dir / 'daemon.sock'}" in out
        assert not segments_of(pid), "the dead daemon's segments are gone"
        log = (env.state_dir / "daemon.log").read_text()
        assert f"dead daemon pid {pid}" in log
        env.stop()
        wait_dead(new["pid"])
        assert not segments_of(new["pid"])
        # Any manager starting on this machine sweeps dead segments, so another test's
        # manager may have removed ours before our daemon could: then try again.
        if left and all(f"removed stale segment {name}" in out for name in left):
            return
    pytest.fail("three times, the stale segments were not reported by 'daemon start'")


def _stale_embedded_socket() -> Path:
    """An embedded manager's socket that nobody listens on, old enough to be stale."""
    sock_dir = Path(tempfile.mkdtemp(prefix=daemon_gc.EMBEDDED_DIR_PREFIX))
    sock_path = sock_dir / "store.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    s.close()
    old = time.time() - 2 * daemon_gc.STALE_SOCKET_AGE
    os.utime(sock_path, (old, old))
    return sock_path


def test_gc_removes_dead_leftovers_and_spares_the_living(env: DaemonEnv) -> None:
    info, _ = env.start()
    live = segments_of(info["pid"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    young_dir = Path(tempfile.mkdtemp(prefix=daemon_gc.EMBEDDED_DIR_PREFIX))
    young = socket.socket(socket.AF_UNIX)
    young.bind(str(young_dir / "store.sock"))
    young.close()
    made: list[Path] = []
    try:
        for _attempt in range(3):
            name = f"ptg_{dead.pid}_{os.urandom(3).hex()}_c"
            Segment.create(name, KIND_CONTROL, 64, track=False).close()
            sock_path = _stale_embedded_socket()
            made.append(sock_path.parent)
            found = daemon.collect_garbage(daemon.daemon_paths(env.state_dir))
            assert name not in set(list_segments())
            assert not sock_path.parent.exists()
            if f"segment {name} (dead manager pid {dead.pid})" in found and (
                f"socket {sock_path} (dead embedded manager)" in found
            ):
                break
            # (else something else removed it first: any manager's start-up sweep removes
            # dead segments, and a concurrent 'papertiger gc' stale sockets)
        else:
            pytest.fail("collect_garbage never reported what it removed")
        assert (young_dir / "store.sock").exists(), "a young socket may be a manager starting"
        assert segments_of(info["pid"]) == live, "gc touched a live manager's segments"
        assert not any(str(info["pid"]) in line for line in found)

        proc = env.run("gc")
        assert proc.returncode == 0
        assert segments_of(info["pid"]) == live
        assert env.status()["pid"] == info["pid"]
    finally:
        for directory in [young_dir, *made]:
            shutil.rmtree(directory, ignore_errors=True)
    env.stop()


# -- hostile clients ---------------------------------------------------------------------


def test_a_wrong_authkey_is_refused_and_logged_without_the_key(env: DaemonEnv) -> None:
    info, _ = env.start()
    wrong = b"not-the-key-" + os.urandom(8).hex().encode()
    with pytest.raises(mpc.AuthenticationError):
        mpc.Client(info["address"], family="AF_UNIX", authkey=wrong)
    figures = env.status()
    assert figures["refused_clients"] == 1
    env.stop()
    log = (env.state_dir / "daemon.log").read_text()
    assert "refused a client" in log
    assert info["authkey"] not in log and wrong.hex() not in log and wrong.decode() not in log


def test_malformed_frames_get_errors_and_others_are_still_served(env: DaemonEnv) -> None:
    info, _ = env.start()
    key = bytes.fromhex(info["authkey"])
    hostile = mpc.Client(info["address"], family="AF_UNIX", authkey=key)
    bystander = mpc.Client(info["address"], family="AF_UNIX", authkey=key)

    def ask(conn: Any, frame: bytes) -> list[Any]:
        conn.send_bytes(frame)
        assert conn.poll(10), "no reply"
        return list(msgpack.unpackb(conn.recv_bytes()))

    for frame in (
        b"\xc1",  # never valid msgpack
        b"\x92\x01",  # a list cut short
        msgpack.packb({"op": "ping"}),
        msgpack.packb([]),
        msgpack.packb(["no-such-op"]),
        msgpack.packb(["put", 1, 2]),
        msgpack.packb(["once"]),
    ):
        reply = ask(hostile, frame)
        assert reply[0] == 1, (frame, reply)  # ERR
        assert reply[1] == "InvalidRequest" and reply[3] in ("request", "key"), reply
        assert ask(bystander, msgpack.packb(["ping"]))[0] == 0
    assert ask(hostile, msgpack.packb(["ping"]))[0] == 0, "the sender is still served too"
    hostile.close()
    bystander.close()
    assert env.status()["pid"] == info["pid"]
    env.stop()


# -- persistence ------------------------------------------------------------------------


SEED = """
import json
import papertiger
from papertiger.store import CheckoutSessions, Customers
for i in range(3):
    Customers.insert({"id": f"cus_{i}", "email": f"c{i}@example.com", "created": 1700000000 + i})
with papertiger.use_namespace(("t-a", "acct_1")):
    CheckoutSessions.insert({"id": "cs_1", "customer": "cus_1", "amount_total": 4998})
print(json.dumps(Customers.list(limit=3).to_dict()))
"""


def test_data_survives_a_restart(env: DaemonEnv) -> None:
    data = env.dir / "store.data"
    info, _ = env.start("--data", str(data), "--snapshot-interval", "3600")
    before = json.loads(env.python(SEED).stdout)
    assert not data.exists(), "nothing is due before the stop"
    env.stop()
    wait_dead(info["pid"])
    assert data.read_bytes()[:8] == persistence.FILE_MAGIC
    assert mode(data) == 0o600

    info, out = env.start("--data", str(data))
    assert f"# loaded 4 record(s) from {data}" in out
    after = env.run("list", "customers", "--limit", "3")
    assert after.returncode == 0
    assert json.loads(after.stdout) == before
    got = env.run("get", "checkout_sessions", "cs_1", "--namespace", "t-a/acct_1")
    assert json.loads(got.stdout)["amount_total"] == 4998
    figures = env.status()
    assert figures["daemon"]["data"]["path"] == str(data)
    env.python(
        """
        from papertiger.store import Customers
        Customers.delete("cus_0")
        """
    )
    env.stop()
    wait_dead(info["pid"])
    env.start("--data", str(data))
    assert env.status()["tables"]["customers"]["records"] == 2
    env.stop()


@pytest.mark.parametrize(
    "options",
    [["--snapshot-changes", "1"], ["--snapshot-interval", "0.2"]],
    ids=["changes", "time"],
)
def test_periodic_snapshots_survive_a_sigkill(env: DaemonEnv, options: list[str]) -> None:
    data = env.dir / "store.data"
    info, _ = env.start("--data", str(data), *options)
    env.python(
        """
        from papertiger.store import Customers
        Customers.insert({"id": "cus_kept", "email": "kept@example.com"})
        """
    )
    deadline = time.monotonic() + 30
    while not data.exists():
        assert time.monotonic() < deadline, "no periodic snapshot was written"
        time.sleep(0.05)
    os.killpg(info["pid"], signal.SIGKILL)
    wait_dead(info["pid"])
    _, out = env.start("--data", str(data))
    assert "# loaded 1 record(s)" in out
    got = env.run("get", "customers", "cus_kept")
    assert json.loads(got.stdout)["email"] == "kept@example.com"
    env.stop()


def _good_data_file(path: Path) -> bytes:
    state = State()
    state.apply([PUT, "customers", [":global"], "cus_1", 1, msgpack.packb({"id": "cus_1"}), None])
    persistence.write_snapshot(str(path), state.snapshot())
    return path.read_bytes()


def _corrupt(data: bytes) -> bytes:
    middle = len(data) // 2 + 8
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda b: b[: len(b) - 7], "is truncated"),
        (lambda b: b[:20], "is truncated"),
        (lambda b: b"", "is truncated"),
        (_corrupt, "is corrupt: its checksum"),
        (lambda b: b + b"\x00", "is corrupt"),
        (lambda b: b"GARBAGE!" + b[8:], "is not a papertiger data file"),
    ],
    ids=["cut", "cut-in-header", "empty", "flipped-byte", "trailing", "foreign"],
)
def test_a_bad_data_file_is_refused_and_kept(env: DaemonEnv, damage: Any, words: str) -> None:
    data = env.dir / "store.data"
    bad = damage(_good_data_file(data))
    data.write_bytes(bad)
    for command in (["daemon", "start"], ["serve"]):
        proc = env.run(*command, "--data", str(data))
        assert proc.returncode == 1, proc.stdout
        assert words in proc.stderr
        assert f"mv {data} {data}.bad" in proc.stderr, "says how to move it aside"
        assert data.read_bytes() == bad, "a bad data file is never overwritten"
        assert env.state() is None
    assert env.run("daemon", "status").returncode == 3


def test_data_file_header_and_checksum() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d"
        data = _good_data_file(path)
        magic, version, _, length, crc, _ = persistence.FILE_HEADER.unpack_from(data)
        assert (magic, version) == (persistence.FILE_MAGIC, persistence.FILE_VERSION)
        assert length == len(data) - persistence.FILE_HEADER.size
        assert crc == zlib.crc32(data[persistence.FILE_HEADER.size :])
        state = persistence.load_state(str(path))
        assert state is not None and state.get("customers", (":global",), "cus_1")
        assert persistence.load_state(str(Path(tmp) / "missing")) is None

        newer = bytearray(data)
        newer[8] = persistence.FILE_VERSION + 1
        path.write_bytes(bytes(newer))
        with pytest.raises(persistence.DataFileError, match="format version"):
            persistence.load_state(str(path))
        assert os.listdir(tmp) == ["d"], "no temporary file is left behind"


def test_a_data_file_in_a_missing_directory_is_refused_at_start(env: DaemonEnv) -> None:
    data = env.dir / "no-such-dir" / "store.data"
    proc = env.run("daemon", "start", "--data", str(data))
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and f"mkdir -p {data.parent}" in proc.stderr
    assert env.state() is None
