"""Where a daemon keeps its files: the per-user state directory.

The state directory (mode 0700) is, in order::

    $PAPERTIGER_STATE_DIR                    when set (tests use a temporary one), else
    $XDG_RUNTIME_DIR/papertiger/             when that runtime directory exists, else
    <tempdir>/papertiger-<uid>/

and holds four files::

    daemon.lock   held (flock) by the running daemon for its whole life
    daemon.json   the state file, 0600: address, authkey, pid, control block...
    daemon.sock   the Unix socket, 0600
    daemon.log    the detached daemon's log (stderr)
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import env
from ..errors import StoreError

__all__ = ["ENV_STATE_DIR", "MAX_SOCKET_PATH", "DaemonPaths", "daemon_paths", "ensure_state_dir"]

ENV_STATE_DIR = env.STATE_DIR
#: Longest Unix socket path every platform accepts (macOS: 104 bytes with the NUL).
MAX_SOCKET_PATH = 103


@dataclass(frozen=True)
class DaemonPaths:
    """The files of one state directory."""

    dir: Path

    @property
    def state(self) -> Path:
        return self.dir / "daemon.json"

    @property
    def socket(self) -> Path:
        return self.dir / "daemon.sock"

    @property
    def lock(self) -> Path:
        return self.dir / "daemon.lock"

    @property
    def log(self) -> Path:
        return self.dir / "daemon.log"


def _default_state_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            st = os.stat(runtime)
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            return Path(runtime) / "papertiger"
    return Path(tempfile.gettempdir()) / f"papertiger-{os.getuid()}"


def daemon_paths(state_dir: str | os.PathLike[str] | None = None) -> DaemonPaths:
    """The state directory's files: ``state_dir``, else ``$PAPERTIGER_STATE_DIR``, else the default.

    Creates nothing. O(1).
    """
    if state_dir is None:
        state_dir = env.state_dir() or _default_state_dir()
    return DaemonPaths(Path(os.path.abspath(state_dir)))


def ensure_state_dir(paths: DaemonPaths) -> DaemonPaths:
    """Create the state directory (0700) or check that an existing one is private to us."""
    try:
        os.makedirs(paths.dir.parent, mode=0o700, exist_ok=True)
        os.mkdir(paths.dir, 0o700)
        os.chmod(paths.dir, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(
            f"cannot create the papertiger state directory {paths.dir}: {exc.strerror}. "
            f"Point {ENV_STATE_DIR} at a directory you own."
        ) from None
    problem = dir_problem(paths.dir)
    if problem:
        raise StoreError(
            f"the papertiger state directory {paths.dir} {problem}; it must be a directory "
            f"owned by you with mode 0700. Fix it (chmod 700 {paths.dir}) or point "
            f"{ENV_STATE_DIR} elsewhere."
        )
    if len(os.fsencode(paths.socket)) > MAX_SOCKET_PATH:
        raise StoreError(
            f"the socket path {paths.socket} is longer than {MAX_SOCKET_PATH} bytes, the most a "
            f"Unix socket allows. Point {ENV_STATE_DIR} at a shorter directory."
        )
    return paths


def dir_problem(path: Path) -> str | None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot be examined ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != os.getuid():
        return f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    if st.st_mode & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}"
    return None
