from __future__ import annotations

from typing import Any

import pytest
from shop import PLANS, new_checkout_session, new_customer

import papertiger
from papertiger.store import CheckoutSessions


@pytest.mark.parametrize("i", range(len(PLANS)))
@pytest.mark.parametrize("quantity", [1, 3])
def test_checkout_for_each_price(catalogue: dict[str, Any], i: int, quantity: int) -> None:
    price = catalogue["prices"][i]
    buyer = new_customer(i)
    session = new_checkout_session(buyer, price, quantity)
    assert session["id"].startswith("cs_")
    stored = CheckoutSessions.get(session["id"])
    assert stored["amount_total"] == price["unit_amount"] * quantity
    assert CheckoutSessions.find_by_customer(buyer["id"]) == [stored]


@pytest.mark.parametrize("i", range(len(PLANS)))
def test_complete_a_session(catalogue: dict[str, Any], i: int) -> None:
    session = new_checkout_session(new_customer(i), catalogue["prices"][i])
    done = CheckoutSessions.patch(
        session["id"], {"status": "complete", "payment_status": "paid", "metadata": {"n": "1"}}
    )
    assert (done["status"], done["payment_status"]) == ("complete", "paid")
    assert done["metadata"]["price"] == catalogue["prices"][i]["id"]


@pytest.mark.parametrize("n", range(12))
def test_sessions_of_a_customer_newest_first(catalogue: dict[str, Any], n: int) -> None:
    buyer, other = new_customer(n), new_customer(n + 1)
    prices = catalogue["prices"]
    ids = [
        new_checkout_session(buyer, prices[k % len(prices)], created=1767312000 + k)["id"]
        for k in range(n + 1)
    ]
    new_checkout_session(other, prices[0])
    assert [s["id"] for s in CheckoutSessions.find_by_customer(buyer["id"])] == ids[::-1]
    assert CheckoutSessions.count() == n + 2


@pytest.mark.parametrize("account", ["acct_1", "acct_2", "acct_3"])
@pytest.mark.parametrize("n", range(4))
def test_connect_accounts_are_nested_namespaces(
    papertiger_namespace: tuple[str, ...], catalogue: dict[str, Any], account: str, n: int
) -> None:
    buyer = new_customer(n)
    new_checkout_session(buyer, catalogue["prices"][0])
    with papertiger.use_namespace((*papertiger_namespace, account)):
        # the same customer id again, on a connected account: no clash
        new_checkout_session(new_customer(n), catalogue["prices"][1])
        assert CheckoutSessions.count() == 1
    assert CheckoutSessions.count() == 1


@pytest.mark.parametrize("n", range(8))
def test_threads_see_the_test_namespace(catalogue: dict[str, Any], n: int) -> None:
    import threading

    buyer = new_customer(n)
    made: list[str] = []

    def buy() -> None:
        made.append(new_checkout_session(buyer, catalogue["prices"][n % 8])["id"])

    threads = [threading.Thread(target=buy) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s["id"] for s in CheckoutSessions.find_by_customer(buyer["id"])) == sorted(made)
