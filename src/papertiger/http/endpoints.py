"""What every resource's endpoints share: the call, the declaration, lists, expansion.

A resource module (:mod:`.customers`, :mod:`.catalog`, :mod:`.checkout`)
declares its endpoints as :class:`Endpoint` values: method, Stripe's path,
the parameters (:mod:`.params`) and a handler.  A handler is a plain
function of a :class:`Call` that returns the JSON object to send; it runs
with the request's namespace current (:func:`papertiger.use_namespace`), so
it reaches the store only through the store API (``Customers.get`` ...),
whichever backend the process uses.  Handlers raise
:class:`~.errors.APIError` or papertiger's own errors; :mod:`.app` turns
both into Stripe's error responses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.records import generate_id
from ..namespace import Namespace
from ..store.base import Store
from .errors import APIError, invalid
from .params import Array, Created, Hash, Integer, Spec, String

__all__ = [
    "EXPAND",
    "LIST_PARAMS",
    "Call",
    "Endpoint",
    "Expanders",
    "Handler",
    "apply_metadata",
    "expand_list",
    "expand_object",
    "list_params",
    "page",
    "removes_metadata",
    "require_object",
    "stripe_id",
    "update_record",
]

#: ``expand[]=...``, accepted by every endpoint.
EXPAND: dict[str, Spec] = {"expand": Array(String(max_length=200), max_items=20)}

#: The pagination parameters of every list endpoint.
LIST_PARAMS: dict[str, Spec] = {
    "limit": Integer(1, 100),
    "starting_after": String(max_length=255),
    "ending_before": String(max_length=255),
    **EXPAND,
}


def list_params(**filters: Spec) -> Hash:
    """A list endpoint's parameters: pagination, ``created`` and ``filters``."""
    return Hash({**LIST_PARAMS, "created": Created(), **filters})


@dataclass(frozen=True)
class Call:
    """One request, checked: what a handler gets."""

    #: the checked parameters (only those given)
    params: dict[str, Any]
    #: the path's parameters (``{"id": "cus_..."}``)
    path: Mapping[str, str] = field(default_factory=dict)
    #: where the client reached this server (``http://127.0.0.1:8123``), for hosted-page URLs
    base_url: str = ""
    #: the namespace the request reads and writes (already current)
    namespace: Namespace = (":global",)
    #: the request's time (unix seconds)
    now: int = field(default_factory=lambda: int(time.time()))

    @property
    def expand(self) -> list[str]:
        return list(self.params.get("expand") or ())


Handler = Callable[[Call], dict[str, Any]]


@dataclass(frozen=True)
class Endpoint:
    """One of Stripe's endpoints as papertiger serves it."""

    method: str
    #: Stripe's path, with ``{id}`` for the object's id
    path: str
    params: Hash
    handler: Handler
    #: one line for the documentation's table of endpoints
    summary: str


def stripe_id(prefix: str, length: int = 24) -> str:
    """A fresh id shaped like Stripe's: ``<prefix>_`` + ``length`` alphanumerics. O(length)."""
    if length == 24:
        return generate_id(prefix)
    text = ""
    while len(text) < length:
        text += generate_id("x")[2:]
    return f"{prefix}_{text[:length]}"


def apply_metadata(current: Mapping[str, Any] | None, given: Any) -> dict[str, str]:
    """Stripe's metadata update: ``""`` clears everything, a key set to ``""`` is removed.

    >>> apply_metadata({"a": "1", "b": "2"}, {"b": "", "c": "3"})
    {'a': '1', 'c': '3'}
    >>> apply_metadata({"a": "1"}, "")
    {}
    """
    if given == "" or given is None:
        return {}
    merged = dict(current or {})
    for key, value in given.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def removes_metadata(given: Any) -> bool:
    """True when a metadata update removes keys (so a merge cannot express it)."""
    return given == "" or (isinstance(given, dict) and any(v == "" for v in given.values()))


#: path -> function(value of that field) -> the expanded value (None: leave it as is)
Expanders = Mapping[str, Callable[[Any], Any]]


def _expand_one(record: dict[str, Any], path: str, expanders: Expanders, param: str) -> None:
    expander = expanders.get(path)
    if expander is None:
        raise invalid(
            f"This property cannot be expanded ({path}). papertiger expands here: "
            f"{', '.join(expanders) or 'nothing'}.",
            param,
        )
    value = record.get(path)
    expanded = expander(value if path in record else None)
    if expanded is not None:
        record[path] = expanded


def expand_object(record: dict[str, Any], paths: Iterable[str], expanders: Expanders) -> None:
    """Replace the ids at ``paths`` by the objects they name, in place. O(paths)."""
    for i, path in enumerate(paths):
        _expand_one(record, path, expanders, f"expand[{i}]")


def expand_list(records: list[dict[str, Any]], paths: Iterable[str], expanders: Expanders) -> None:
    """``expand[]=data.<field>`` on a list page, in place. O(records x paths)."""
    for i, path in enumerate(paths):
        if not path.startswith("data."):
            raise invalid(
                f"This property cannot be expanded ({path}). On a list, expand the items' "
                f"fields as data.<field>: {', '.join('data.' + p for p in expanders) or 'none'}.",
                f"expand[{i}]",
            )
        for record in records:
            _expand_one(record, path[5:], expanders, f"expand[{i}]")


def page(
    store: type[Store],
    call: Call,
    present: Callable[[dict[str, Any]], dict[str, Any]],
    expanders: Expanders,
    filters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One page of a list endpoint, as Stripe's list object. O(log n + limit)."""
    p = call.params
    chosen = {k: v for k, v in (filters or {}).items() if v is not None}
    result = store.list(
        p.get("limit") or 10,
        p.get("starting_after"),
        p.get("ending_before"),
        created=p.get("created"),
        **chosen,
    )
    data = [present(record) for record in result.data]
    expand_list(data, call.expand, expanders)
    return {"object": "list", "data": data, "has_more": result.has_more, "url": store.url}


def update_record(store: type[Store], record_id: str, params: dict[str, Any]) -> dict[str, Any]:
    """Apply Stripe's update rules: given fields replace, ``""`` unsets, metadata merges.

    A merge (the store's atomic ``patch``: nested hashes merge too) when no
    metadata key is removed; otherwise the record is read, changed and written
    back (``update``), which a concurrent update of the same record can race.
    """
    changes = {k: v for k, v in params.items() if k not in ("expand", "metadata")}
    metadata = params.get("metadata")
    if metadata is not None and removes_metadata(metadata):
        current = store.get(record_id)
        current.update(changes)
        current["metadata"] = apply_metadata(current.get("metadata"), metadata)
        return store.update(current)
    if metadata is not None:
        changes["metadata"] = metadata
    if not changes:
        return store.get(record_id)
    return store.patch(record_id, changes)


def require_object(store: type[Store], object_id: str, param: str) -> dict[str, Any]:
    """The record ``object_id`` named by parameter ``param``; a 400 naming it when absent."""
    from ..errors import NotFound

    try:
        return store.get(object_id)
    except NotFound:
        raise APIError(
            400,
            f"No such {store.object_name}: '{object_id}'",
            code="resource_missing",
            param=param,
        ) from None
