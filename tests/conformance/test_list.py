"""Stripe's list rules through the Store API, on every backend: pages, cursors, filters.

The pure rules are pinned in ``tests/test_pagination.py``; here every
backend must agree with them, and with a plain-Python model of a list
(:func:`model_page`) on a deterministic sample of queries.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

import papertiger
from papertiger import InvalidRequest, NotFound, Store
from papertiger.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from papertiger.core.records import field_value, index_value
from papertiger.store import CheckoutSessions, Customers, Products

BAD_LIMITS: list[Any] = [0, -1, 101, "10", True, False, None, 10.0, 1.5]


# -- pages and cursors ----------------------------------------------------------------------


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


# -- filters -----------------------------------------------------------------------------------


class Attempts(Store):
    """A resource with an integer filter (ints and strs are different values)."""

    table_name = "test_attempts"
    resource = "attempt"
    prefix = "att"
    url = "/v1/attempts"
    filters: ClassVar[tuple[str, ...]] = ("number", "customer")


def model_page(
    records: list[dict[str, Any]],
    limit: int = DEFAULT_LIMIT,
    starting_after: str | None = None,
    ending_before: str | None = None,
    created: Any = None,
    filters: Mapping[str, Any] | None = None,
) -> tuple[list[str], bool] | str:
    """What a page must hold (ids, has_more), from the records newest first; or the
    name of the cursor parameter that must raise NotFound."""
    lo, hi = None, None
    if isinstance(created, int):
        lo, hi = created, created + 1
    elif created:
        for op, bound in created.items():
            if op == "gt":
                lo = bound + 1 if lo is None else max(lo, bound + 1)
            if op == "gte":
                lo = bound if lo is None else max(lo, bound)
            if op == "lt":
                hi = bound if hi is None else min(hi, bound)
            if op == "lte":
                hi = bound + 1 if hi is None else min(hi, bound + 1)

    def keep(r: dict[str, Any]) -> bool:
        if lo is not None and r["created"] < lo:
            return False
        if hi is not None and r["created"] >= hi:
            return False
        return all(
            index_value(field_value(r, name)) == index_value(value)
            for name, value in (filters or {}).items()
        )

    listed = [r["id"] for r in records if keep(r)]
    if starting_after is not None:
        if starting_after not in listed:
            return "starting_after"
        i = listed.index(starting_after) + 1
        return listed[i : i + limit], len(listed) - i > limit
    if ending_before is not None:
        if ending_before not in listed:
            return "ending_before"
        j = listed.index(ending_before)
        start = max(0, j - limit)
        return listed[start:j], start > 0
    return listed[:limit], len(listed) > limit


def check_against_model(records: list[dict[str, Any]], **query: Any) -> None:
    """``CheckoutSessions.list(**query)`` is what :func:`model_page` says."""
    filters = {k: v for k, v in query.items() if k not in ("limit", "created", "cursor")}
    call: dict[str, Any] = {k: v for k, v in query.items() if k in ("limit", "created")}
    call.update(filters)
    cursor = query.get("cursor")
    if cursor is not None:
        call[cursor[0]] = cursor[1]
    expected = model_page(
        records,
        query.get("limit", DEFAULT_LIMIT),
        call.get("starting_after"),
        call.get("ending_before"),
        query.get("created"),
        filters,
    )
    if isinstance(expected, str):
        with pytest.raises(NotFound) as info:
            CheckoutSessions.list(**call)
        assert info.value.param == expected, call
        return
    page = CheckoutSessions.list(**call)
    assert ([r["id"] for r in page], page.has_more) == expected, call


def seed_sample(n: int = 60) -> list[dict[str, Any]]:
    """``n`` sessions with tied ``created``s and a few filterable fields; newest first."""
    rng = random.Random(7)
    made = []
    for _ in range(n):
        record: dict[str, Any] = {"created": 100 + rng.randrange(8)}
        if rng.random() < 0.8:
            customer = f"cus_{rng.randrange(3)}"
            record["customer"] = {"id": customer} if rng.random() < 0.3 else customer
        record["status"] = rng.choice(["open", "complete", "expired"])
        if rng.random() < 0.6:
            record["customer_details"] = {"email": f"{rng.randrange(2)}@example.com"}
        made.append(CheckoutSessions.insert(record))
    order = sorted(range(n), key=lambda i: (made[i]["created"], i), reverse=True)
    return [made[i] for i in order]


def sample_queries(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    rng = random.Random(11)
    ids = [r["id"] for r in records]
    created_forms: list[Any] = [
        None,
        None,
        103,
        {"gte": 102},
        {"gt": 102},
        {"lt": 105},
        {"lte": 105},
        {"gte": 101, "lt": 104},
        {"gt": 103, "lte": 106},
        {"gt": 106, "lt": 102},  # empty
    ]
    filter_forms: list[dict[str, Any]] = [
        {},
        {},
        {"status": "open"},
        {"customer": "cus_1"},
        {"customer": {"id": "cus_2", "object": "customer"}},
        {"customer_details.email": "0@example.com"},
        {"customer": "cus_0", "status": "complete"},
        {"status": "expired", "customer_details.email": "1@example.com", "customer": "cus_2"},
        {"customer": "cus_nobody"},
    ]
    queries = []
    for _ in range(n):
        query: dict[str, Any] = {"limit": rng.choice([1, 2, 3, 5, 10, 100])}
        created = rng.choice(created_forms)
        if created is not None:
            query["created"] = created
        query.update(rng.choice(filter_forms))
        roll = rng.random()
        if roll < 0.35:
            query["cursor"] = ("starting_after", rng.choice(ids))
        elif roll < 0.7:
            query["cursor"] = ("ending_before", rng.choice(ids))
        queries.append(query)
    return queries


def test_list_agrees_with_the_model_on_a_sample_of_queries(fresh_namespace: str) -> None:
    records = seed_sample()
    for query in sample_queries(records, 300):
        check_against_model(records, **query)


def test_filtered_walks_visit_every_match_once_both_ways(fresh_namespace: str) -> None:
    records = seed_sample()
    for filters in [
        {"customer": "cus_1"},
        {"status": "open", "created": {"gte": 102, "lte": 105}},
        {"customer": "cus_0", "customer_details.email": "1@example.com"},
    ]:
        expected = model_page(
            records,
            100,
            created=filters.get("created"),
            filters={k: v for k, v in filters.items() if k != "created"},
        )
        assert not isinstance(expected, str)
        want = expected[0]
        seen: list[str] = []
        page = CheckoutSessions.list(limit=2, **filters)
        while True:
            seen += [r["id"] for r in page]
            if not page.has_more:
                break
            page = CheckoutSessions.list(limit=2, starting_after=page.data[-1]["id"], **filters)
        assert seen == want
        if not want:
            continue
        back: list[str] = []
        page = CheckoutSessions.list(limit=2, ending_before=want[-1], **filters)
        while True:
            back += [r["id"] for r in reversed(page.data)]
            if not page.has_more:
                break
            page = CheckoutSessions.list(limit=2, ending_before=page.data[0]["id"], **filters)
        assert [want[-1], *back] == list(reversed(want))


def test_created_equal_and_ranges(fresh_namespace: str) -> None:
    made = CheckoutSessions.insert_many([{"created": c} for c in (10, 20, 20, 30, 40)])
    ids = [r["id"] for r in made]

    def listed(**kwargs: Any) -> list[str]:
        return [r["id"] for r in CheckoutSessions.list(limit=100, **kwargs)]

    assert listed(created=20) == [ids[2], ids[1]]
    assert listed(created={"gt": 20}) == [ids[4], ids[3]]
    assert listed(created={"gte": 20}) == [ids[4], ids[3], ids[2], ids[1]]
    assert listed(created={"lt": 20}) == [ids[0]]
    assert listed(created={"lte": 20}) == [ids[2], ids[1], ids[0]]
    assert listed(created={"gt": 10, "lt": 40}) == [ids[3], ids[2], ids[1]]
    assert listed(created={"gt": 40}) == [] and listed(created=15) == []
    assert listed(created={"gte": -(2**63), "lte": 2**63 - 1}) == list(reversed(ids))
    # a cursor outside the range does not match: NotFound names it
    for name in ("starting_after", "ending_before"):
        with pytest.raises(NotFound) as info:
            CheckoutSessions.list(created={"gte": 20}, **{name: ids[0]})
        assert info.value.param == name


def test_equality_filters_dotted_and_expanded(fresh_namespace: str) -> None:
    a = CheckoutSessions.insert(
        {"customer": "cus_a", "status": "open", "customer_details": {"email": "a@x.io"}}
    )
    b = CheckoutSessions.insert({"customer": {"id": "cus_a", "object": "customer"}})
    c = CheckoutSessions.insert({"customer": "cus_b", "customer_details": {"email": "a@x.io"}})
    CheckoutSessions.insert({"customer_details": {"email": None}, "status": "expired"})

    def listed(**filters: Any) -> list[str]:
        return [r["id"] for r in CheckoutSessions.list(**filters)]

    assert set(listed(customer="cus_a")) == {a["id"], b["id"]}
    assert listed(customer={"id": "cus_b"}) == [c["id"]]
    assert set(listed(**{"customer_details.email": "a@x.io"})) == {a["id"], c["id"]}
    assert listed(customer="cus_a", **{"customer_details.email": "a@x.io"}) == [a["id"]]
    assert listed(customer="cus_a", status="open") == [a["id"]]
    assert listed(customer="cus_b", status="open") == []
    assert listed(status="nothing") == []
    # the index follows writes
    CheckoutSessions.patch(a["id"], {"status": "complete", "customer_details": {"email": "z@x.io"}})
    assert listed(status="open") == []
    assert listed(status="complete") == [a["id"]]
    assert listed(**{"customer_details.email": "a@x.io"}) == [c["id"]]
    CheckoutSessions.update({"id": c["id"], "created": c["created"], "status": "open"})
    assert listed(customer="cus_b") == [] and listed(status="open") == [c["id"]]
    CheckoutSessions.delete(b["id"])
    assert listed(customer="cus_a") == [a["id"]]


def test_booleans_and_integers_are_filter_values(fresh_namespace: str) -> None:
    on = Products.insert({"name": "on", "active": True})
    off = Products.insert({"name": "off", "active": False})
    assert [r["id"] for r in Products.list(active=True)] == [on["id"]]
    assert [r["id"] for r in Products.list(active="false")] == [off["id"]]
    one = Attempts.insert({"number": 1})
    text = Attempts.insert({"number": "1"})
    assert [r["id"] for r in Attempts.list(number=1)] == [one["id"]]
    assert [r["id"] for r in Attempts.list(number="1")] == [text["id"]]


def test_a_cursor_must_match_the_filters(fresh_namespace: str) -> None:
    mine = CheckoutSessions.insert({"customer": "cus_1", "status": "open"})
    other = CheckoutSessions.insert({"customer": "cus_2", "status": "open"})
    for name in ("starting_after", "ending_before"):
        with pytest.raises(NotFound) as info:
            CheckoutSessions.list(customer="cus_1", **{name: other["id"]})
        assert info.value.param == name and other["id"] in info.value.message
        with pytest.raises(NotFound) as info:
            CheckoutSessions.list(customer="cus_1", status="complete", **{name: mine["id"]})
        assert info.value.param == name
        page = CheckoutSessions.list(status="open", **{name: mine["id"]})
        assert len(page) == (name == "ending_before")


def test_unknown_filters_and_unusable_values_are_refused(fresh_namespace: str) -> None:
    CheckoutSessions.insert({"currency": "usd"})
    with pytest.raises(InvalidRequest) as info:
        CheckoutSessions.list(currency="usd")
    assert info.value.param == "currency" and "customer_details.email" in info.value.message
    for value in (None, 1.5, ["cus_1"]):
        with pytest.raises(InvalidRequest) as info:
            CheckoutSessions.list(customer=value)
        assert info.value.param == "customer"
    bad_created: list[Any] = [{"after": 1}, {"gt": "1"}, "1", 1.5, {}, {"gte": True}]
    for created in bad_created:
        with pytest.raises(InvalidRequest) as info:
            CheckoutSessions.list(created=created)
        assert info.value.param is not None and info.value.param.startswith("created")
    with pytest.raises(InvalidRequest) as info:
        Customers.list(status="open")
    assert info.value.param == "status" and "email" in info.value.message


def test_filters_are_scoped_to_the_namespace(fresh_namespace: str) -> None:
    mine = CheckoutSessions.insert({"customer": "cus_1"})
    with papertiger.use_namespace((fresh_namespace, "acct_1")):
        theirs = CheckoutSessions.insert({"customer": "cus_1"})
        assert [r["id"] for r in CheckoutSessions.list(customer="cus_1")] == [theirs["id"]]
        with pytest.raises(NotFound):
            CheckoutSessions.list(customer="cus_1", starting_after=mine["id"])
    assert [r["id"] for r in CheckoutSessions.list(customer="cus_1")] == [mine["id"]]
