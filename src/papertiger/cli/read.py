"""The read commands: ``inspect``, ``get``, ``list``.

================================  =================================================
``papertiger inspect``            what is stored: tables, namespaces, counts
``papertiger get TABLE ID``       one record as Stripe JSON
``papertiger list TABLE``         one Stripe list page
================================  =================================================

They find the store the way a client does (``PAPERTIGER_URL``, else
``PAPERTIGER_ADDRESS``, else the daemon's state file) but never start a
manager, and read through the backend seam: on shared memory through a
replica of the log, so they never queue behind writers.  ``get`` and
``list`` print the response body on stdout either way; an error is Stripe's
error body and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
from collections.abc import Iterator
from typing import Any

import msgpack

from .. import env
from ..backends import SHM, Backend, backend_for_url, use_backend
from ..backends.base import TableSpec
from ..core.pagination import DEFAULT_LIMIT, StripeList, list_query
from ..engine import connection
from ..errors import InvalidRequest, NotFound, StoreError, StoreUnavailable
from ..namespace import Namespace, current_namespace, normalize_namespace
from .output import dump, fail

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the read commands to the ``papertiger`` parser."""
    inspect = subparsers.add_parser(
        "inspect",
        help="show what is stored (read without disturbing writers)",
        description="Show the tables, namespaces and counts, or one table's records. On "
        "shared memory they are read through a replica of the log (writers are not "
        "disturbed); with PAPERTIGER_URL, from Redis.",
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
    lst.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="keep records whose FIELD equals VALUE (the resource's list filters; repeatable)",
    )
    _add_namespace_option(lst, "the namespace (default: PAPERTIGER_NAMESPACE or global)")
    lst.set_defaults(func=cmd_list)


def _add_namespace_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help=help + "; nested parts joined by '/' (test-a/acct_1) or a JSON list",
    )


@contextlib.contextmanager
def _reading() -> Iterator[tuple[dict[str, Any], Backend]]:
    """The store to read and where it is; never starts a manager."""
    url = env.url()
    if url:
        backend = backend_for_url(url)
        yield {"backend": backend.description}, backend
        return
    found = connection.find_manager()
    if found is None:
        raise StoreUnavailable(
            f"no papertiger store to read from: neither {env.URL} nor {env.ADDRESS} is set "
            "and no daemon is running. Start one with 'papertiger daemon start' (or "
            "'papertiger serve')."
        )
    with connection.use_manager(*found), use_backend(SHM):
        client = connection.current_client()
        yield (
            {
                "pid": client.info["pid"],
                "address": client.info["address"],
                "seq": client.replica.seq,
            },
            SHM,
        )


def _where(place: dict[str, Any]) -> str:
    if "pid" in place:
        return f"manager pid {place['pid']} at {place['address']}, seq {place['seq']}"
    return str(place["backend"])


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
    from ..store import Store

    found: dict[str, Any] = {}
    pending = list(Store.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        for key in (cls.resource, cls.object_name, cls.table_name):
            found.setdefault(key, cls)
    return found


class _Table:
    """A table named on the command line: its name, spec, list path and filters."""

    def __init__(self, given: str, backend: Backend) -> None:
        stores = _stores()
        store = stores.get(given)
        if store is not None:
            self.name: str = store.table_name
        else:
            present = {info.table for info in backend.partitions()}
            if given not in present:
                known = sorted(present | {s.table_name for s in stores.values()})
                raise InvalidRequest(
                    f"Unknown table {given!r}; expected one of: {', '.join(known)}.",
                    param="table",
                )
            self.name = given
        self.spec: TableSpec = store.spec if store is not None else TableSpec(given, given)
        self.object_name: str = self.spec.object_name
        self.url: str = store.url if store is not None else f"/v1/{self.name}"
        self.filters: tuple[str, ...] = store.filters if store is not None else ()


def _stripe_error(exc: StoreError) -> int:
    print(dump(exc.to_dict()))
    return 1


def cmd_get(args: argparse.Namespace) -> int:
    try:
        ns = _parse_namespace(args.namespace) or current_namespace()
        with _reading() as (_, backend):
            table = _Table(args.table, backend)
            packed = backend.get(table.spec, ns, args.id)
            if packed is None:
                raise NotFound(f"No such {table.object_name}: '{args.id}'", param="id")
            record = msgpack.unpackb(packed)
    except StoreError as exc:
        return _stripe_error(exc)
    print(dump(record))
    return 0


def _filters(given: list[str]) -> dict[str, str]:
    found = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidRequest(
                f"Invalid filter {item!r}: write FIELD=VALUE (status=open).", param="filter"
            )
        found[name] = value
    return found


def cmd_list(args: argparse.Namespace) -> int:
    try:
        ns = _parse_namespace(args.namespace) or current_namespace()
        filters = _filters(args.filter)
        with _reading() as (_, backend):
            table = _Table(args.table, backend)
            query = list_query(
                args.limit,
                args.starting_after,
                args.ending_before,
                None,
                filters,
                filterable=table.filters,
                resource=table.object_name,
            )
            packed, has_more = backend.page(table.spec, ns, query)
            page = StripeList([msgpack.unpackb(p) for p in packed], has_more, table.url)
    except StoreError as exc:
        return _stripe_error(exc)
    print(dump(page.to_dict()))
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
        with _reading() as (place, backend):
            if args.table is None:
                result = _inspect_tables(backend, under)
            else:
                result = _inspect_table(backend, _Table(args.table, backend), under, args.limit)
    except StoreError as exc:
        return fail(str(exc))
    if args.json:
        print(dump({"manager": place, **result}))
        return 0
    print(_where(place))
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


def _inspect_tables(backend: Backend, under: Namespace | None) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for info in backend.partitions(under):
        table = tables.setdefault(info.table, {"records": 0, "namespaces": {}})
        table["records"] += info.size
        table["namespaces"][_ns_text(info.namespace)] = info.size
    return {"tables": tables}


def _inspect_table(
    backend: Backend, table: _Table, under: Namespace | None, limit: int
) -> dict[str, Any]:
    namespaces: dict[str, Any] = {}
    total = 0
    for info in backend.partitions(under, table.name):
        packed = backend.records(table.spec, info.namespace)
        shown = packed[:limit] if limit else packed
        namespaces[_ns_text(info.namespace)] = {
            "records": info.size,
            "data": [msgpack.unpackb(p) for p in shown],
        }
        total += info.size
    return {"table": table.name, "records": total, "namespaces": namespaces}
