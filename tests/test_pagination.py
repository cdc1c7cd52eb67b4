"""Stripe's list rules (DESIGN.md), on the pure functions and through the real Store API."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

import papertiger
from papertiger.core.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ListQuery,
    check_page_params,
)
from papertiger.core.pagination import select_page as select_query
from papertiger.core.state import PUT, State
from papertiger.errors import InvalidRequest, NotFound
from papertiger.store import CheckoutSessions, Customers


def select_page(
    part: Any,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    resource: str = "object",
) -> tuple[list[bytes], bool]:
    return select_query(part, ListQuery(limit, starting_after, ending_before), resource)


BAD_LIMITS: list[Any] = [0, -1, 101, "10", True, False, None, 10.0, 1.5]


# -- the pure functions -------------------------------------------------------------------


def partition_of(n: int) -> Any:
    s = State()
    for i in range(n):
        s.apply([PUT, "t", ["ns"], f"id_{i}", i // 3, msgpack.packb({"id": f"id_{i}"}), None])
    return s.partition("t", ("ns",))


def ids(packed: list[bytes]) -> list[str]:
    return [msgpack.unpackb(p)["id"] for p in packed]


@pytest.mark.parametrize("limit", BAD_LIMITS)
def test_check_page_params_rejects_bad_limits(limit: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_page_params(limit, None, None)
    assert info.value.param == "limit"
    assert "1 to 100" in info.value.message and repr(limit) in info.value.message


@pytest.mark.parametrize("limit", [1, DEFAULT_LIMIT, MAX_LIMIT])
def test_check_page_params_accepts_1_to_100(limit: int) -> None:
    check_page_params(limit, None, None)


def test_both_cursors_are_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_page_params(10, "a", "b")
    assert "starting_after" in info.value.message and "ending_before" in info.value.message


@pytest.mark.parametrize("name", ["starting_after", "ending_before"])
@pytest.mark.parametrize("cursor", ["", 5, b"id_1"])
def test_malformed_cursor_names_itself(name: str, cursor: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_page_params(10, **{"starting_after": None, "ending_before": None, name: cursor})
    assert info.value.param == name


def test_pages_from_the_top_and_next_to_a_cursor() -> None:
    part = partition_of(7)  # created 0,0,0,1,1,1,2: ties broken by later insert first
    order = ["id_6", "id_5", "id_4", "id_3", "id_2", "id_1", "id_0"]
    assert select_page(part, 3, None, None) == (
        [part.records[i].packed for i in order[:3]],
        True,
    )
    assert ids(select_page(part, 7, None, None)[0]) == order
    assert select_page(part, 7, None, None)[1] is False
    assert ids(select_page(part, 2, "id_4", None)[0]) == ["id_3", "id_2"]
    assert select_page(part, 2, "id_4", None)[1] is True
    assert select_page(part, 2, "id_1", None) == ([part.records["id_0"].packed], False)
    assert select_page(part, 2, "id_0", None) == ([], False)
    # ending_before: the page just newer than the cursor, still newest first
    assert ids(select_page(part, 2, None, "id_1")[0]) == ["id_3", "id_2"]
    assert select_page(part, 2, None, "id_1")[1] is True
    assert select_page(part, 2, None, "id_4") == (
        [part.records["id_6"].packed, part.records["id_5"].packed],
        False,
    )
    assert select_page(part, 2, None, "id_6") == ([], False)


@pytest.mark.parametrize("name", ["starting_after", "ending_before"])
@pytest.mark.parametrize("size", [0, 3])
def test_unknown_cursor_is_not_found_naming_the_cursor(name: str, size: int) -> None:
    part = partition_of(size) if size else None
    kwargs = {"starting_after": None, "ending_before": None, name: "cs_nope"}
    with pytest.raises(NotFound) as info:
        select_page(part, 10, resource="checkout.session", **kwargs)
    assert info.value.param == name
    assert "cs_nope" in info.value.message and "checkout.session" in info.value.message


# -- through the Store API ----------------------------------------------------------------------


def cursor(name: str, value: str) -> dict[str, Any]:
    return {name: value}


def seed(n: int) -> list[str]:
    """``n`` sessions, all with the same ``created``: order is later insert first."""
    made = CheckoutSessions.insert_many([{"created": 1_700_000_000} for _ in range(n)])
    return [r["id"] for r in reversed(made)]


def test_default_limit_is_10_and_max_is_100(fresh_namespace: str) -> None:
    order = seed(120)
    page = CheckoutSessions.list()
    assert [r["id"] for r in page] == order[:DEFAULT_LIMIT] and page.has_more
    page = CheckoutSessions.list(limit=MAX_LIMIT)
    assert [r["id"] for r in page] == order[:MAX_LIMIT] and page.has_more
    page = CheckoutSessions.list(limit=MAX_LIMIT, starting_after=order[99])
    assert [r["id"] for r in page] == order[100:] and not page.has_more


@pytest.mark.parametrize("limit", BAD_LIMITS)
def test_store_list_rejects_bad_limits(fresh_namespace: str, limit: Any) -> None:
    seed(2)
    with pytest.raises(InvalidRequest) as info:
        CheckoutSessions.list(limit=limit)
    assert info.value.param == "limit"
    assert isinstance(info.value, ValueError)  # InvalidRequest is also a ValueError


def test_store_list_refuses_both_cursors(fresh_namespace: str) -> None:
    order = seed(3)
    with pytest.raises(InvalidRequest):
        CheckoutSessions.list(starting_after=order[0], ending_before=order[2])


@pytest.mark.parametrize("name", ["starting_after", "ending_before"])
def test_store_unknown_cursor(fresh_namespace: str, name: str) -> None:
    order = seed(3)
    with pytest.raises(NotFound) as info:
        CheckoutSessions.list(**cursor(name, "cs_missing"))
    assert info.value.param == name
    assert isinstance(info.value, KeyError)
    # a cursor from another namespace is unknown here, too
    with papertiger.use_namespace(fresh_namespace + "-other"), pytest.raises(NotFound) as info:
        CheckoutSessions.list(**cursor(name, order[1]))
    assert info.value.param == name


def test_store_walks_both_ways(fresh_namespace: str) -> None:
    order = seed(23)
    seen: list[str] = []
    page = CheckoutSessions.list(limit=5)
    while True:
        seen += [r["id"] for r in page]
        if not page.has_more:
            break
        page = CheckoutSessions.list(limit=5, starting_after=page.data[-1]["id"])
    assert seen == order
    back: list[str] = []
    page = CheckoutSessions.list(limit=5, ending_before=order[-1])
    while True:
        back += [r["id"] for r in reversed(page.data)]
        if not page.has_more:
            break
        page = CheckoutSessions.list(limit=5, ending_before=page.data[0]["id"])
    assert [order[-1], *back] == list(reversed(order))


def test_url_is_the_resource_path_and_to_dict_shape(fresh_namespace: str) -> None:
    order = seed(3)
    page = CheckoutSessions.list(limit=2)
    assert page.url == "/v1/checkout/sessions"
    body = page.to_dict()
    assert list(body) == ["object", "data", "has_more", "url"]
    assert body["object"] == "list" and body["has_more"] is True
    assert body["url"] == "/v1/checkout/sessions"
    assert [r["id"] for r in body["data"]] == order[:2]
    assert page["data"] is page.data and page["object"] == "list"
    with pytest.raises(KeyError):
        page["nope"]
    assert len(page) == 2 and [r["id"] for r in page] == order[:2]
    assert Customers.list().url == "/v1/customers"
    empty = Customers.list()
    assert empty.to_dict() == {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": "/v1/customers",
    }


def test_list_is_scoped_to_the_namespace(fresh_namespace: str) -> None:
    order = seed(4)
    with papertiger.use_namespace((fresh_namespace, "acct_1")):
        assert CheckoutSessions.list().data == []
        seed(1)
    assert [r["id"] for r in CheckoutSessions.list()] == order
