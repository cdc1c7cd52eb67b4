"""The shop's payment code against papertiger: each test has its own Stripe, in parallel."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from shop import CartLine, abandon, add_to_catalogue, order_status, paid_orders, start_checkout


@pytest.fixture
def book(papertiger_stripe: Any) -> str:
    return add_to_catalogue("The Pragmatic Programmer", 2499)


@pytest.mark.parametrize("quantity", range(1, 13))
def test_checkout_total(book: str, quantity: int) -> None:
    session = start_checkout([CartLine(book, quantity)], "jenny@example.com", f"o-{quantity}")
    assert session.amount_total == 2499 * quantity
    assert order_status(session.id) == "awaiting payment"


@pytest.mark.parametrize("order", range(8))
def test_paying_completes_the_order(papertiger_stripe: Any, book: str, order: int) -> None:
    session = start_checkout([CartLine(book, 1)], "jenny@example.com", f"order-{order}")
    landing = papertiger_stripe.pay(session)  # what the customer's browser does
    assert landing == f"https://shop.example.com/orders/{session.id}/thanks"
    assert order_status(session.id) == "paid"


def test_a_double_click_opens_one_session(book: str) -> None:
    first = start_checkout([CartLine(book, 2)], "jenny@example.com", "order-1")
    again = start_checkout([CartLine(book, 2)], "jenny@example.com", "order-1")
    assert again.id == first.id
    assert len(stripe.checkout.Session.list().data) == 1


def test_abandoned_checkout(papertiger_stripe: Any, book: str) -> None:
    session = start_checkout([CartLine(book, 1)], "jenny@example.com", "order-2")
    abandon(session.id)
    assert order_status(session.id) == "abandoned"
    with pytest.raises(Exception, match="expired"):
        papertiger_stripe.pay(session)


def test_paid_orders_are_listed_across_pages(papertiger_stripe: Any, book: str) -> None:
    for n in range(7):
        session = start_checkout([CartLine(book, 1)], "jenny@example.com", f"order-{n}")
        if n % 2 == 0:
            papertiger_stripe.pay(session)
    assert paid_orders("jenny@example.com") == ["order-6", "order-4", "order-2", "order-0"]


def test_each_test_sees_only_its_own_stripe(papertiger_stripe: Any) -> None:
    assert stripe.checkout.Session.list().data == []
    assert stripe.Product.list().data == []


def test_an_empty_cart_is_refused_before_stripe(book: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        start_checkout([], "jenny@example.com", "order-3")
    with pytest.raises(stripe.InvalidRequestError) as info:
        start_checkout([CartLine("price_missing", 1)], "jenny@example.com", "order-4")
    assert info.value.param == "line_items[0][price]"
