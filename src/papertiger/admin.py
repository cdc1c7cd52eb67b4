"""The administration commands: ``serve``, ``daemon``, ``inspect``, ``get``, ``list``, ``gc``.

================================  =================================================
``papertiger serve``              a manager in the foreground (logs on stderr,
                                  Ctrl-C or SIGTERM stops it)
``papertiger daemon start``       the same, detached; prints the ``export`` lines
``papertiger daemon stop``        stop it and remove its shared memory
``papertiger daemon status``      pid, uptime, tables, counts, sizes (``--json``)
``papertiger inspect``            what is stored, read from shared memory
``papertiger get TABLE ID``       one record as Stripe JSON
``papertiger list TABLE``         one Stripe list page
``papertiger gc``                 remove what dead managers left behind
================================  =================================================

``inspect``, ``get`` and ``list`` find the manager the way a client does
(``PAPERTIGER_ADDRESS``, then the daemon's state file) but never start one,
and read through a replica of the shared-memory log: they never queue behind
writers.  ``get`` and ``list`` print the response body on stdout either way;
an error is Stripe's error body and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import msgpack

from .engine import daemon
from .engine.client import Channel
from .engine.persistence import DEFAULT_CHANGES, DEFAULT_INTERVAL
from .engine.replica import Replica
from .engine.server import ENV_ADDRESS, ENV_AUTHKEY
from .errors import InvalidRequest, NotFound, StoreError, StoreUnavailable
from .namespace import Namespace, current_namespace, is_nested, normalize_namespace
from .pagination import DEFAULT_LIMIT, StripeList, check_page_params, select_page
from .state import State

__all__ = ["register"]

#: ``daemon status`` exit status when no daemon runs (the LSB convention).
EXIT_NOT_RUNNING = 3


def register(subparsers: Any) -> None:
    """Add this module's subcommands to the ``papertiger`` parser."""
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
        "--timeout", type=float, default=daemon.START_TIMEOUT, help="seconds to wait (default 30)"
    )
    start.set_defaults(func=cmd_daemon_start)
    stop = actions.add_parser("stop", help="stop the daemon and remove its shared memory")
    stop.add_argument(
        "--timeout",
        type=float,
        default=daemon.STOP_TIMEOUT,
        help="seconds to wait before SIGTERM (default 10)",
    )
    stop.set_defaults(func=cmd_daemon_stop)
    status = actions.add_parser("status", help="pid, uptime, tables, counts and sizes")
    status.add_argument("--json", action="store_true", help="print the figures as JSON")
    status.set_defaults(func=cmd_daemon_status)

    inspect = subparsers.add_parser(
        "inspect",
        help="show what is stored (read from shared memory)",
        description="Show the tables, namespaces and counts, or one table's records, read "
        "through a replica of the shared memory log (writers are not disturbed).",
    )
    inspect.add_argument("table", nargs="?", help="show this table's records")
    _add_namespace_option(inspect, "only this namespace and those nested under it")
    inspect.add_argument(
        "--limit",
        type=int,
        default=20,
        help="records shown per namespace with TABLE (default 20, 0 for all)",
    )
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(func=cmd_inspect)

    get = subparsers.add_parser("get", help="print one record as Stripe JSON")
    get.add_argument("table", help="table or resource (checkout_sessions, customer...)")
    get.add_argument("id", help="the record's id")
    _add_namespace_option(get, "the namespace (default: PAPERTIGER_NAMESPACE or global)")
    get.set_defaults(func=cmd_get)

    lst = subparsers.add_parser("list", help="print one Stripe list page")
    lst.add_argument("table", help="table or resource (checkout_sessions, customer...)")
    lst.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="1 to 100 (default 10)")
    lst.add_argument("--starting-after", metavar="ID", help="the page just older than ID")
    lst.add_argument("--ending-before", metavar="ID", help="the page just newer than ID")
    _add_namespace_option(lst, "the namespace (default: PAPERTIGER_NAMESPACE or global)")
    lst.set_defaults(func=cmd_list)

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


def _add_namespace_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help=help + "; nested parts joined by '/' (test-a/acct_1) or a JSON list",
    )


def _run_config(args: argparse.Namespace) -> daemon.DaemonConfig:
    return daemon.DaemonConfig(
        data=os.path.abspath(args.data) if args.data else None,
        snapshot_interval=args.snapshot_interval,
        snapshot_changes=args.snapshot_changes,
        log_level=args.log_level,
    )


def _fail(message: str, code: int = 1) -> int:
    print(f"papertiger: {message}", file=sys.stderr)
    return code


# -- serve and daemon --------------------------------------------------------------------


def _connect_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for what in report.get("removed", []) + report.get("swept", []):
        label = what if " " in what else f"segment {what}"
        lines.append(f"# removed stale {label}")
    loaded = report.get("loaded")
    if loaded:
        lines.append(f"# loaded {loaded['records']} record(s) from {loaded['path']}")
    lines.append("# processes of this user find it with no variable set; elsewhere:")
    lines.append(f"export {ENV_ADDRESS}={report['address']}")
    lines.append(f"export {ENV_AUTHKEY}={report['authkey']}")
    return lines


def cmd_serve(args: argparse.Namespace) -> int:
    daemon.configure_logging(args.log_level)

    def ready(report: dict[str, Any]) -> None:
        print(f"# papertiger manager pid {report['pid']} serving; Ctrl-C stops it")
        print("\n".join(_connect_lines(report)), flush=True)

    try:
        daemon.run(_run_config(args), ready)
    except StoreError as exc:
        return _fail(str(exc))
    return 0


def cmd_daemon_start(args: argparse.Namespace) -> int:
    try:
        report = daemon.start(_run_config(args), timeout=args.timeout)
    except StoreError as exc:
        return _fail(str(exc))
    print(
        f"# papertiger daemon started: pid {report['pid']}, "
        f"state file {report['state_file']}, log {report['log_file']}"
    )
    print("\n".join(_connect_lines(report)))
    return 0


def cmd_daemon_stop(args: argparse.Namespace) -> int:
    try:
        result = daemon.stop(timeout=args.timeout)
    except daemon.NoDaemon as exc:
        return _fail(str(exc))
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
        return _fail(f"the daemon (pid {info.pid}) does not answer: {exc}")
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


# -- reading the store -----------------------------------------------------------------


def _locate() -> tuple[str, bytes]:
    """The manager to read: ``PAPERTIGER_ADDRESS``, else the daemon. Never starts one."""
    address = os.environ.get(ENV_ADDRESS)
    if address:
        text = os.environ.get(ENV_AUTHKEY, "")
        try:
            return address, bytes.fromhex(text)
        except ValueError:
            raise StoreUnavailable(f"{ENV_AUTHKEY} must be hex, as papertiger prints it.") from None
    found = daemon.discover()
    if found is None:
        raise StoreUnavailable(
            f"no papertiger manager to read from: {ENV_ADDRESS} is not set and no daemon is "
            "running. Start one with 'papertiger daemon start' (or 'papertiger serve')."
        )
    return found


@contextlib.contextmanager
def _replica() -> Iterator[tuple[dict[str, Any], Replica]]:
    """A replica of the manager's state (one ``hello`` to learn the control block)."""
    address, authkey = _locate()
    channel = Channel(address, authkey)
    try:
        _, hello = channel.request(["hello"])
    finally:
        channel.close()
    replica = Replica(hello["control"])
    try:
        yield hello, replica
    finally:
        replica.close()


def _parse_namespace(text: str | None) -> Namespace | None:
    if text is None:
        return None
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise InvalidRequest(
                f"Invalid namespace: {text!r} is not a JSON list.", param="namespace"
            ) from None
        return normalize_namespace(value)
    return normalize_namespace(tuple(text.split("/")))


def _ns_text(ns: Namespace) -> str:
    return "/".join(ns)


def _stores() -> dict[str, Any]:
    """Known resource stores by table name, resource and object name."""
    from .store import Store

    found: dict[str, Any] = {}
    pending = list(Store.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        for key in (cls.resource, cls.object_name, cls.table_name):
            found.setdefault(key, cls)
    return found


class _Table:
    """A table named on the command line: its name, and how Stripe calls its objects."""

    def __init__(self, given: str, state: State) -> None:
        store = _stores().get(given)
        if given in state.tables:
            self.name = given
        elif store is not None:
            self.name = store.table_name
        else:
            known = sorted(set(state.table_names()) | {s.table_name for s in _stores().values()})
            raise InvalidRequest(
                f"Unknown table {given!r}; expected one of: {', '.join(known)}.", param="table"
            )
        if store is None or store.table_name != self.name:
            store = _stores().get(self.name)
        self.object_name: str = store.object_name if store is not None else self.name
        self.url: str = store.url if store is not None else f"/v1/{self.name}"


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dump(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default)


def _stripe_error(exc: StoreError) -> int:
    print(_dump(exc.to_dict()))
    return 1


def cmd_get(args: argparse.Namespace) -> int:
    try:
        ns = _parse_namespace(args.namespace) or current_namespace()
        with _replica() as (_, replica), replica.lock:
            state = replica.catch_up()
            table = _Table(args.table, state)
            packed = state.get(table.name, ns, args.id)
            if packed is None:
                raise NotFound(f"No such {table.object_name}: '{args.id}'", param="id")
            record = msgpack.unpackb(packed)
    except StoreError as exc:
        return _stripe_error(exc)
    print(_dump(record))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        check_page_params(args.limit, args.starting_after, args.ending_before)
        ns = _parse_namespace(args.namespace) or current_namespace()
        with _replica() as (_, replica), replica.lock:
            state = replica.catch_up()
            table = _Table(args.table, state)
            packed, has_more = select_page(
                state.partition(table.name, ns),
                args.limit,
                args.starting_after,
                args.ending_before,
                table.object_name,
            )
            page = StripeList([msgpack.unpackb(p) for p in packed], has_more, table.url)
    except StoreError as exc:
        return _stripe_error(exc)
    print(_dump(page.to_dict()))
    return 0


def _created_text(created: int) -> str:
    try:
        when = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return str(created)
    return when.strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_inspect(args: argparse.Namespace) -> int:
    try:
        under = _parse_namespace(args.namespace)
        if args.limit < 0:
            raise InvalidRequest("Invalid limit: use 0 for all records, or a positive number.")
        with _replica() as (hello, replica), replica.lock:
            state = replica.catch_up()
            manager = {"pid": hello["pid"], "address": hello["address"], "seq": replica.seq}
            if args.table is None:
                result = _inspect_tables(state, under)
            else:
                result = _inspect_table(state, _Table(args.table, state), under, args.limit)
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(_dump({"manager": manager, **result}))
        return 0
    print(f"manager pid {manager['pid']} at {manager['address']}, seq {manager['seq']}")
    if args.table is None:
        if not result["tables"]:
            print("  (nothing stored" + (f" under {_ns_text(under)})" if under else ")"))
        for name, table in result["tables"].items():
            print(
                f"{name}: {table['records']} record(s) in {len(table['namespaces'])} namespace(s)"
            )
            for ns, count in table["namespaces"].items():
                print(f"  {ns:<32} {count:>8}")
        return 0
    print(f"{result['table']}: {result['records']} record(s)")
    for ns, part in result["namespaces"].items():
        print(f"  namespace {ns}: {part['records']} record(s), newest first")
        for record in part["data"]:
            rid = record.get("id") if isinstance(record, dict) else None
            created = record.get("created") if isinstance(record, dict) else None
            when = _created_text(created) if isinstance(created, int) else "-"
            print(f"    {rid!s:<36} {when}")
        hidden = part["records"] - len(part["data"])
        if hidden > 0:
            print(f"    ... and {hidden} more (--limit 0 shows all)")
    return 0


def _visible(ns: Namespace, under: Namespace | None) -> bool:
    return under is None or is_nested(ns, under)


def _inspect_tables(state: State, under: Namespace | None) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for name in state.table_names():
        namespaces = {
            _ns_text(ns): len(p.records)
            for ns, p in sorted(state.tables[name].items())
            if p.records and _visible(ns, under)
        }
        if namespaces:
            tables[name] = {"records": sum(namespaces.values()), "namespaces": namespaces}
    return {"tables": tables}


def _inspect_table(
    state: State, table: _Table, under: Namespace | None, limit: int
) -> dict[str, Any]:
    namespaces: dict[str, Any] = {}
    total = 0
    for ns, partition in sorted(state.tables.get(table.name, {}).items()):
        if not partition.records or not _visible(ns, under):
            continue
        data: list[Any] = []
        for packed in partition.newest_first():
            if limit and len(data) >= limit:
                break
            data.append(msgpack.unpackb(packed))
        namespaces[_ns_text(ns)] = {"records": len(partition.records), "data": data}
        total += len(partition.records)
    return {"table": table.name, "records": total, "namespaces": namespaces}


def cmd_gc(args: argparse.Namespace) -> int:
    found = daemon.collect_garbage(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for what in found:
        print(f"{verb} {what}")
    if not found:
        print("nothing to remove: no leftovers of dead managers")
    return 0
