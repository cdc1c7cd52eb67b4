"""Stripe list semantics over an ordered partition, and :class:`StripeList`.

Stripe lists newest first: ``created`` descending, then later insert first.
A partition keeps its order ascending, so the list is the order read
backwards; with ``i`` the cursor's ascending position and ``n`` the size:

* no cursor: the ``limit`` newest, ascending ``[n-limit, n)`` reversed;
  ``has_more`` when ``n > limit``;
* ``starting_after=X``: the ``limit`` items just older than X, ascending
  ``[max(0, i-limit), i)`` reversed; ``has_more`` when ``i > limit``;
* ``ending_before=X``: the ``limit`` items just newer than X, ascending
  ``[i+1, i+1+limit)`` reversed (still newest first); ``has_more`` when
  anything newer than ``data[0]`` remains, ``i+1+limit < n``.

A forward walk (``starting_after=data[-1]``) and a backward walk
(``ending_before=data[0]``) therefore each visit every item exactly once,
as stripe-python's ``auto_paging_iter`` expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequest, NotFound
from .state import Partition

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "StripeList", "check_page_params", "select_page"]

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def check_page_params(limit: object, starting_after: object, ending_before: object) -> None:
    """Raise :class:`InvalidRequest` for a bad ``limit`` or cursor combination. O(1).

    >>> check_page_params(10, None, None)
    >>> check_page_params(0, None, None)
    Traceback (most recent call last):
    ...
    papertiger.errors.InvalidRequest: Invalid limit: must be an integer from 1 to 100, got 0.
    """
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(
            f"Invalid limit: must be an integer from 1 to {MAX_LIMIT}, got {limit!r}.",
            param="limit",
        )
    if starting_after is not None and ending_before is not None:
        raise InvalidRequest(
            "Received both starting_after and ending_before parameters. Please pass in only one."
        )
    for name, cursor in (("starting_after", starting_after), ("ending_before", ending_before)):
        if cursor is not None and (not isinstance(cursor, str) or not cursor):
            raise InvalidRequest(
                f"Invalid {name}: expected an object id (a non-empty str), got {cursor!r}.",
                param=name,
            )


def select_page(
    partition: Partition | None,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    resource: str = "object",
) -> tuple[list[bytes], bool]:
    """The packed records of one page and ``has_more``. O(log n + limit).

    Parameters must already have passed :func:`check_page_params`.  An
    unknown cursor raises :class:`NotFound` with ``param`` set to its name.
    """
    cursor_name = "starting_after" if starting_after is not None else "ending_before"
    cursor = starting_after if starting_after is not None else ending_before
    if partition is None or not partition.records:
        if cursor is not None:
            raise NotFound(f"No such {resource}: '{cursor}'", param=cursor_name)
        return [], False
    order = partition.order
    n = len(order)
    if cursor is None:
        lo, hi = max(0, n - limit), n
        has_more = n > limit
    else:
        i = partition.position(cursor)
        if i is None:
            raise NotFound(f"No such {resource}: '{cursor}'", param=cursor_name)
        if starting_after is not None:
            lo, hi = max(0, i - limit), i
            has_more = i > limit
        else:
            lo, hi = i + 1, min(n, i + 1 + limit)
            has_more = i + 1 + limit < n
    records = partition.records
    keys = order[lo:hi]
    keys.reverse()
    return [records[key[2]].packed for key in keys], has_more


@dataclass
class StripeList:
    """One page of a Stripe list: ``object``, ``data``, ``has_more``, ``url``.

    Iterating a ``StripeList`` iterates ``data``; ``len()`` is its length.

    >>> page = StripeList(data=[{"id": "cs_1"}], has_more=False, url="/v1/checkout/sessions")
    >>> page.to_dict()["object"], len(page), [r["id"] for r in page]
    ('list', 1, ['cs_1'])
    """

    data: list[dict[str, Any]]
    has_more: bool
    url: str
    object: str = field(default="list")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: str) -> Any:
        """Dict-style access (``page["data"]``), as Stripe's objects allow."""
        if key not in ("object", "data", "has_more", "url"):
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        """Stripe's JSON shape, with ``object`` first."""
        return {
            "object": self.object,
            "data": self.data,
            "has_more": self.has_more,
            "url": self.url,
        }
