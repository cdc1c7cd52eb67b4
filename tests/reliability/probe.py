"""Run as another user: try to open and unlink our segments and to use our socket.

``python probe.py CONFIG_JSON`` prints one JSON line.  Standard library only
(``multiprocessing.connection`` speaks the same handshake as ``multiprocess``),
so any Python that user may run will do.
"""

from __future__ import annotations

import _posixshmem
import json
import os
import signal
import socket
import sys
from typing import Any


def main(cfg: dict[str, Any]) -> None:
    outcome: dict[str, Any] = {"uid": os.getuid(), "segments": {}, "socket": None}
    for name in cfg["segments"]:
        results = []
        for flags in (os.O_RDONLY, os.O_RDWR):
            try:
                os.close(_posixshmem.shm_open("/" + name, flags, mode=0o600))
                results.append("opened")
            except PermissionError:
                results.append("denied")
            except FileNotFoundError:
                results.append("gone")
        try:
            _posixshmem.shm_unlink("/" + name)
            results.append("unlinked")
        except PermissionError:
            results.append("denied")
        except FileNotFoundError:
            results.append("gone")
        outcome["segments"][name] = results

    def give_up(signum: int, frame: Any) -> None:
        raise TimeoutError("no answer")

    signal.signal(signal.SIGALRM, give_up)  # whatever happens, answer
    signal.alarm(10)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(cfg["socket"])
        outcome["socket"] = "connected"
        sock.close()
        # holding the right key, as a thief of the environment would
        from multiprocessing import connection

        conn = connection.Client(
            cfg["socket"], family="AF_UNIX", authkey=bytes.fromhex(cfg["authkey"])
        )
        conn.send_bytes(bytes.fromhex(cfg["frame"]))
        outcome["socket"] = "wrote"
        conn.close()
    except PermissionError:
        outcome["socket"] = "denied"
    except OSError as exc:  # TimeoutError included: it got further than it should
        outcome["socket"] = f"error {exc!r}"
    finally:
        sock.close()
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
