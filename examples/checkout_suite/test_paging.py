from __future__ import annotations

from typing import Any

import pytest
from shop import new_checkout_session, new_customer

import papertiger
from papertiger.store import CheckoutSessions, Customers

TOTAL = 23


@pytest.fixture
def sessions(catalogue: dict[str, Any]) -> list[str]:
    """TOTAL sessions of one customer, newest first."""
    buyer = new_customer(1)
    prices = catalogue["prices"]
    made = [
        new_checkout_session(buyer, prices[k % len(prices)], created=1767312000 + k)["id"]
        for k in range(TOTAL)
    ]
    return made[::-1]


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 7, 10, 11, 22, 23, 100])
def test_page_forward(sessions: list[str], limit: int) -> None:
    seen: list[str] = []
    page = CheckoutSessions.list(limit=limit)
    while True:
        seen += [s["id"] for s in page.data]
        if not page.has_more:
            break
        page = CheckoutSessions.list(limit=limit, starting_after=page.data[-1]["id"])
    assert seen == sessions


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 7, 10, 11, 22, 23, 100])
def test_page_backward(sessions: list[str], limit: int) -> None:
    seen: list[str] = []
    page = CheckoutSessions.list(limit=limit, ending_before=sessions[-1])
    seen = [s["id"] for s in page.data] + [sessions[-1]]
    while page.has_more:
        page = CheckoutSessions.list(limit=limit, ending_before=page.data[0]["id"])
        seen = [s["id"] for s in page.data] + seen
    assert seen == sessions


@pytest.mark.parametrize("cursor", [0, 5, 11, 22])
def test_page_after_a_cursor(sessions: list[str], cursor: int) -> None:
    page = CheckoutSessions.list(limit=5, starting_after=sessions[cursor])
    assert [s["id"] for s in page.data] == sessions[cursor + 1 : cursor + 6]
    assert page.has_more == (cursor + 6 < TOTAL)


def test_list_object_is_stripe_shaped(sessions: list[str]) -> None:
    page = CheckoutSessions.list(limit=2).to_dict()
    assert (page["object"], page["url"], page["has_more"]) == (
        "list",
        "/v1/checkout/sessions",
        True,
    )


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"starting_after": "cs_missing"}, "starting_after"),
        ({"ending_before": "cs_missing"}, "ending_before"),
    ],
)
def test_bad_page_parameters(sessions: list[str], params: dict[str, Any], param: str) -> None:
    with pytest.raises(papertiger.StoreError) as info:
        CheckoutSessions.list(**params)
    assert info.value.param == param


@pytest.mark.parametrize("n", range(10))
def test_customers_page_by_creation(n: int) -> None:
    for k in range(n + 1):
        new_customer(k)
    page = Customers.list(limit=3)
    assert [c["id"] for c in page.data] == [f"cus_shop{k:04d}" for k in range(n, -1, -1)][:3]
    assert page.has_more == (n + 1 > 3)
