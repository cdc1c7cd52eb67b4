"""The daemon commands: ``serve``, ``daemon start|stop|status``, ``gc``.

================================  =================================================
``papertiger serve``              a manager in the foreground (logs on stderr,
                                  Ctrl-C or SIGTERM stops it); ``--http``
                                  also serves Stripe's API over it
``papertiger daemon start``       the same, detached; prints the ``export`` lines
``papertiger daemon stop``        stop it and remove its shared memory
``papertiger daemon status``      pid, uptime, tables, counts, sizes (``--json``)
``papertiger gc``                 remove what dead managers left behind
================================  =================================================
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from .. import daemon, env
from ..engine.persistence import DEFAULT_CHANGES, DEFAULT_INTERVAL
from ..engine.spawn import START_TIMEOUT, STOP_TIMEOUT
from ..errors import NoDaemon, StoreError, StoreUnavailable
from .output import fail

__all__ = ["register"]

#: ``daemon status`` exit status when no daemon runs (the LSB convention).
EXIT_NOT_RUNNING = 3


def register(subparsers: Any) -> None:
    """Add the daemon commands to the ``papertiger`` parser."""
    serve = subparsers.add_parser(
        "serve",
        help="run a manager in the foreground (Ctrl-C stops it)",
        description="Run a manager in the foreground, logging to stderr. It registers in the "
        "state file like the daemon, so processes of this user find it with no variable set. "
        "Ctrl-C or SIGTERM stops it cleanly.",
    )
    _add_run_options(serve)
    serve.set_defaults(func=cmd_serve)

    dmn = subparsers.add_parser(
        "daemon",
        help="start, stop or query the background manager",
        description="A detached manager that the processes of this user find by themselves.",
    )
    actions = dmn.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start the daemon; prints the export lines")
    _add_run_options(start)
    start.add_argument(
        "--timeout", type=float, default=START_TIMEOUT, help="seconds to wait (default 30)"
    )
    start.set_defaults(func=cmd_daemon_start)
    stop = actions.add_parser("stop", help="stop the daemon and remove its shared memory")
    stop.add_argument(
        "--timeout",
        type=float,
        default=STOP_TIMEOUT,
        help="seconds to wait before SIGTERM (default 10)",
    )
    stop.set_defaults(func=cmd_daemon_stop)
    status = actions.add_parser("status", help="pid, uptime, tables, counts and sizes")
    status.add_argument("--json", action="store_true", help="print the figures as JSON")
    status.set_defaults(func=cmd_daemon_status)

    gc = subparsers.add_parser(
        "gc",
        help="remove what dead managers left (segments, state file, sockets)",
        description="Remove shared-memory segments, a daemon state file and sockets left by "
        "managers that died (SIGKILL, power loss). Never touches a live manager's.",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would be removed")
    gc.set_defaults(func=cmd_gc)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="FILE",
        help="load FILE at start and save snapshots to it (periodically and on stop)",
    )
    parser.add_argument(
        "--snapshot-interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"save at most this long after a change (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument(
        "--snapshot-changes",
        type=int,
        default=DEFAULT_CHANGES,
        metavar="N",
        help=f"save after N changes (default {DEFAULT_CHANGES})",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )
    parser.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        help="also serve Stripe's HTTP API there (HOST defaults to 127.0.0.1; PORT 0 picks "
        "a free one); point stripe-python's api_base at the URL it prints",
    )


def _run_config(args: argparse.Namespace) -> daemon.DaemonConfig:
    return daemon.DaemonConfig(
        data=os.path.abspath(args.data) if args.data else None,
        snapshot_interval=args.snapshot_interval,
        snapshot_changes=args.snapshot_changes,
        log_level=args.log_level,
        http=args.http,
    )


def _connect_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for what in report.get("removed", []) + report.get("swept", []):
        label = what if " " in what else f"segment {what}"
        lines.append(f"# removed stale {label}")
    loaded = report.get("loaded")
    if loaded:
        lines.append(f"# loaded {loaded['records']} record(s) from {loaded['path']}")
    lines.append("# processes of this user find it with no variable set; elsewhere:")
    lines.append(f"export {env.ADDRESS}={report['address']}")
    lines.append(f"export {env.AUTHKEY}={report['authkey']}")
    if report.get("http"):
        lines.append(
            f'# Stripe\'s API: stripe.api_base = "{report["http"]}" with any sk_test_ key '
            "(papertiger.api_key_for(namespace) for one namespace)"
        )
    return lines


def cmd_serve(args: argparse.Namespace) -> int:
    from ..daemon.run import configure_logging, run

    configure_logging(args.log_level)

    def ready(report: dict[str, Any]) -> None:
        print(f"# papertiger manager pid {report['pid']} serving; Ctrl-C stops it")
        print("\n".join(_connect_lines(report)), flush=True)

    try:
        run(_run_config(args), ready)
    except StoreError as exc:
        return fail(str(exc))
    return 0


def cmd_daemon_start(args: argparse.Namespace) -> int:
    try:
        report = daemon.start(_run_config(args), timeout=args.timeout)
    except StoreError as exc:
        return fail(str(exc))
    print(
        f"# papertiger daemon started: pid {report['pid']}, "
        f"state file {report['state_file']}, log {report['log_file']}"
    )
    print("\n".join(_connect_lines(report)))
    return 0


def cmd_daemon_stop(args: argparse.Namespace) -> int:
    try:
        result = daemon.stop(timeout=args.timeout)
    except NoDaemon as exc:
        return fail(str(exc))
    how = {"shutdown": "", "SIGTERM": " (with SIGTERM)", "SIGKILL": " (with SIGKILL)"}[result.how]
    print(f"papertiger daemon pid {result.pid} stopped{how}")
    for what in result.removed:
        print(f"removed leftover {what}")
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {s:02d}s"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{seconds:.1f}s"


def cmd_daemon_status(args: argparse.Namespace) -> int:
    paths = daemon.daemon_paths()
    info = daemon.find_daemon(paths)
    if info is None:
        if args.json:
            print(json.dumps({"running": False, "state_dir": str(paths.dir)}))
        else:
            print(f"no papertiger daemon is running (state directory {paths.dir})")
        return EXIT_NOT_RUNNING
    try:
        stats: dict[str, Any] = daemon.query(info, "stats")
    except StoreUnavailable as exc:
        return fail(f"the daemon (pid {info.pid}) does not answer: {exc}")
    stats["running"] = True
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print("\n".join(_status_lines(stats)))
    return 0


def _status_lines(stats: dict[str, Any]) -> list[str]:
    extra = stats.get("daemon") or {}
    shm = stats["log"]
    lines = [
        f"papertiger daemon pid {stats['pid']}: running for {_duration(stats['uptime'])} "
        f"(version {stats['version']})",
        f"  address        {stats['address']}",
        f"  state file     {extra.get('state_file')}",
        f"  log file       {extra.get('log_file') or '(stderr)'} "
        f"({_size(extra.get('log_file_bytes'))})",
    ]
    if extra.get("http"):
        lines.append(f"  Stripe API     {extra['http']}")
    data = extra.get("data")
    if data is None:
        lines.append("  data file      none (nothing is saved; start with --data FILE to keep it)")
    else:
        if data["last_saved"] is None:
            saved = "not saved yet"
        else:
            ago = _duration(max(0.0, stats["started"] + stats["uptime"] - data["last_saved"]))
            saved = f"saved {ago} ago, {_size(data['last_size'])}"
        error = f"; LAST SAVE FAILED: {data['last_error']}" if data["last_error"] else ""
        lines.append(
            f"  data file      {data['path']} ({saved}; {data['unsaved_changes']} unsaved "
            f"change(s){error})"
        )
    lines += [
        f"  clients        {stats['clients']} connected, {stats['requests']} requests, "
        f"{stats['refused_clients']} refused",
        f"  shared memory  {_size(shm['shm_bytes'])} in use: {shm['log_segments']} log "
        f"segment(s) {_size(shm['log_bytes'])}, {shm['checkpoints']} checkpoint(s) "
        f"{_size(shm['checkpoint_bytes'])} (seq {shm['seq']}, "
        f"{shm['checkpoint_count']} checkpoints written)",
    ]
    tables = stats["tables"]
    total = sum(t["records"] for t in tables.values())
    lines.append(f"  tables         {len(tables)} table(s), {total} record(s)")
    for name, table in tables.items():
        lines.append(
            f"    {name}: {table['records']} record(s) in {len(table['namespaces'])} namespace(s)"
        )
        for ns, count in table["namespaces"].items():
            lines.append(f"      {ns:<30} {count:>8}")
    return lines


def cmd_gc(args: argparse.Namespace) -> int:
    found = daemon.collect_garbage(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for what in found:
        print(f"{verb} {what}")
    if not found:
        print("nothing to remove: no leftovers of dead managers")
    return 0
