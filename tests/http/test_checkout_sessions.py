"""``/v1/checkout/sessions`` through stripe-python: create, retrieve, update, expire, list."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import stripe

from papertiger.store import CheckoutSessions, Customers
from stripe_support import CANCEL_URL, SUCCESS_URL, make_price, make_session

#: Copies of real Stripe objects (from the project's shared fixtures).
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def test_create_fills_in_what_stripe_fills_in(client: Any, price: Any) -> None:
    before = int(time.time())
    session = make_session(client, price, quantity=2, metadata={"order_id": "8842"})
    assert session.object == "checkout.session"
    assert session.id.startswith("cs_test_")
    assert session.status == "open"
    assert session.payment_status == "unpaid"
    assert session.mode == "payment"
    assert session.livemode is False
    assert session.currency == "usd"
    assert session.amount_subtotal == session.amount_total == 4998
    assert session.total_details.amount_tax == 0
    assert before <= session.created <= int(time.time())
    assert session.expires_at == session.created + 24 * 3600
    assert session.url.endswith(session.id) and "/c/pay/" in session.url
    assert session.success_url == SUCCESS_URL and session.cancel_url == CANCEL_URL
    assert session.metadata.to_dict() == {"order_id": "8842"}
    assert "line_items" not in session  # only with expand[]=line_items, as on Stripe


def test_created_session_has_the_fields_of_a_real_one(client: Any, price: Any) -> None:
    real = fixture("checkout_session.json")
    ours = make_session(client, price).to_dict()
    expected = set(real) - {"line_items", "branding_settings"}  # expanded / optional
    assert expected <= set(ours), sorted(expected - set(ours))
    for name in expected:
        if real[name] is not None and ours[name] is not None:
            assert type(ours[name]) is type(real[name]), name


def test_expand_line_items_and_customer(client: Any, price: Any) -> None:
    customer = client.v1.customers.create({"email": "jenny.rosen@example.com"})
    session = make_session(client, price, quantity=3, customer=customer.id)
    got = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["line_items", "customer"]})
    assert got.customer.email == "jenny.rosen@example.com"
    items = got.line_items
    assert items.object == "list" and items.has_more is False
    assert items.url == f"/v1/checkout/sessions/{session.id}/line_items"
    (item,) = items.data
    assert item.object == "item" and item.quantity == 3
    assert item.price.id == price.id and item.price.unit_amount == 2499
    assert item.amount_total == 3 * 2499 and item.description == "The Pragmatic Programmer"
    assert client.v1.checkout.sessions.retrieve(session.id).customer == customer.id


def test_price_data_with_product_data(client: Any) -> None:
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": "eur",
                        "unit_amount": 1250,
                        "product_data": {"name": "T-shirt"},
                    },
                    "quantity": 4,
                },
            ],
            "success_url": SUCCESS_URL,
        }
    )
    assert session.amount_total == 5000 and session.currency == "eur"
    (item,) = client.v1.checkout.sessions.line_items.list(session.id).data
    assert item.description == "T-shirt" and item.price.unit_amount == 1250
    assert item.price.product.startswith("prod_")


def test_price_data_naming_a_product_and_mixed_items(client: Any, price: Any) -> None:
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [
                {"price": price.id, "quantity": 1},
                {
                    "price_data": {"currency": "usd", "product": price.product, "unit_amount": 1},
                    "quantity": 1,
                },
            ],
        }
    )
    assert session.amount_total == 2500


def test_subscription_mode_needs_a_recurring_price(client: Any, price: Any) -> None:
    monthly = make_price(client, 900, recurring={"interval": "month"})
    session = client.v1.checkout.sessions.create(
        {"mode": "subscription", "line_items": [{"price": monthly.id, "quantity": 1}]}
    )
    assert session.mode == "subscription" and session.amount_total == 900
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.create(
            {"mode": "subscription", "line_items": [{"price": price.id, "quantity": 1}]}
        )
    assert info.value.param == "line_items"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.create(
            {"mode": "payment", "line_items": [{"price": monthly.id, "quantity": 1}]}
        )
    assert info.value.param == "line_items[0]"


def test_setup_mode(client: Any) -> None:
    session = client.v1.checkout.sessions.create({"mode": "setup", "currency": "usd"})
    assert session.payment_status == "no_payment_required" and session.amount_total is None


def test_update_metadata_with_stripes_rules(client: Any, price: Any) -> None:
    session = make_session(client, price, metadata={"a": "1", "b": "2"})
    updated = client.v1.checkout.sessions.update(session.id, {"metadata": {"b": "", "c": "3"}})
    assert updated.metadata.to_dict() == {"a": "1", "c": "3"}
    assert CheckoutSessions.get(session.id)["metadata"] == {"a": "1", "c": "3"}
    updated = client.v1.checkout.sessions.update(session.id, {"metadata": {"d": "4"}})
    assert updated.metadata.to_dict() == {"a": "1", "c": "3", "d": "4"}
    cleared = client.v1.checkout.sessions.update(session.id, {"metadata": ""})
    assert cleared.metadata.to_dict() == {}
    assert CheckoutSessions.get(session.id)["amount_total"] == 4998  # the rest is untouched


def test_expire_only_from_open(client: Any, price: Any) -> None:
    session = make_session(client, price)
    expired = client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired" and expired.url is None
    with pytest.raises(stripe.InvalidRequestError, match='status of "expired"'):
        client.v1.checkout.sessions.expire(session.id)
    paid = make_session(client, price)
    client.v1.checkout.sessions  # noqa: B018
    from papertiger.http import pay_checkout

    pay_checkout(paid)
    with pytest.raises(stripe.InvalidRequestError, match='status of "complete"'):
        client.v1.checkout.sessions.expire(paid.id)


def test_a_session_past_expires_at_is_expired_when_read(client: Any, price: Any) -> None:
    session = make_session(client, price)
    CheckoutSessions.patch(session.id, {"expires_at": int(time.time()) - 1})
    assert client.v1.checkout.sessions.retrieve(session.id).status == "expired"
    assert CheckoutSessions.get(session.id)["status"] == "expired"


def test_expires_at_is_checked(client: Any, price: Any) -> None:
    soon = int(time.time()) + 3600
    assert make_session(client, price, expires_at=soon).expires_at == soon
    with pytest.raises(stripe.InvalidRequestError) as info:
        make_session(client, price, expires_at=int(time.time()) + 60)
    assert info.value.param == "expires_at"


def test_line_items_are_paginated_both_ways(client: Any) -> None:
    prices = [make_price(client, 100 + i, name=f"item {i}") for i in range(7)]
    session = client.v1.checkout.sessions.create(
        {"mode": "payment", "line_items": [{"price": p.id, "quantity": 1} for p in prices]}
    )
    assert session.amount_total == sum(100 + i for i in range(7))
    first = client.v1.checkout.sessions.line_items.list(session.id, {"limit": 3})
    assert first.has_more and [i.price.id for i in first.data] == [p.id for p in prices[:3]]
    everything = list(first.auto_paging_iter())
    assert [i.price.id for i in everything] == [p.id for p in prices]
    last = everything[-1].id
    backwards = client.v1.checkout.sessions.line_items.list(
        session.id, {"limit": 2, "ending_before": last}
    )
    reversed_ids = [i.price.id for i in backwards.auto_paging_iter()]
    assert reversed_ids == [p.id for p in reversed(prices[:-1])]
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.line_items.list(session.id, {"starting_after": "li_nope"})
    assert info.value.param == "starting_after" and info.value.http_status == 400
    expanded = client.v1.checkout.sessions.line_items.list(
        session.id, {"limit": 1, "expand": ["data.price.product"]}
    )
    assert expanded.data[0].price.product.name == "item 0"


def test_retrieve_missing(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert info.value.http_status == 404
    assert info.value.code == "resource_missing" and info.value.param == "id"
    assert "No such checkout.session: 'cs_test_nope'" in str(info.value)


def test_list_filters(client: Any, price: Any) -> None:
    jenny = client.v1.customers.create({"email": "jenny@example.com"})
    mine = [make_session(client, price, customer=jenny.id) for _ in range(3)]
    other = make_session(client, price)
    client.v1.checkout.sessions.expire(mine[0].id)
    from papertiger.http import pay_checkout

    pay_checkout(other, email="paid@example.com")

    def ids(**params: Any) -> list[str]:
        return [s.id for s in client.v1.checkout.sessions.list(params).auto_paging_iter()]

    assert ids(customer=jenny.id) == [s.id for s in reversed(mine)]
    assert ids(status="expired") == [mine[0].id]
    assert ids(status="complete") == [other.id]
    assert set(ids(status="open")) == {mine[1].id, mine[2].id}
    assert ids(customer_details={"email": "paid@example.com"}) == [other.id]
    payment_intent = client.v1.checkout.sessions.retrieve(other.id).payment_intent
    assert ids(payment_intent=payment_intent) == [other.id]
    assert ids(customer=jenny.id, status="open") == [mine[2].id, mine[1].id]
    created = mine[1].created
    assert set(ids(created={"gte": created})) >= {mine[1].id, mine[2].id, other.id}
    assert ids(created={"lt": mine[0].created}) == []
    page = client.v1.checkout.sessions.list({"limit": 2})
    assert page.url == "/v1/checkout/sessions" and page.has_more
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.list({"status": "paid"})
    assert info.value.param == "status"
    with pytest.raises(stripe.InvalidRequestError) as info:  # a cursor outside the filter
        client.v1.checkout.sessions.list({"customer": jenny.id, "starting_after": other.id})
    assert info.value.param == "starting_after" and info.value.code == "resource_missing"


def test_list_expands_data_fields(client: Any, price: Any) -> None:
    jenny = client.v1.customers.create({"email": "jenny@example.com"})
    make_session(client, price, customer=jenny.id)
    page = client.v1.checkout.sessions.list({"expand": ["data.customer", "data.line_items"]})
    (session,) = page.data
    assert session.customer.email == "jenny@example.com"
    assert session.line_items.data[0].quantity == 2
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.checkout.sessions.list({"expand": ["customer"]})
    assert info.value.param == "expand[0]"


def test_global_module_api(papertiger_stripe: Any, price: Any) -> None:
    assert stripe.api_base == papertiger_stripe.url
    session = stripe.checkout.Session.create(
        mode="payment", line_items=[{"price": price.id, "quantity": 1}]
    )
    assert stripe.checkout.Session.retrieve(session.id).amount_total == 2499
    assert [s.id for s in stripe.checkout.Session.list().auto_paging_iter()] == [session.id]


def test_sessions_seeded_through_the_store_are_served(client: Any) -> None:
    seeded = CheckoutSessions.insert(
        {"customer": "cus_seed", "status": "open", "amount_total": 4998, "currency": "usd"}
    )
    got = client.v1.checkout.sessions.retrieve(seeded["id"])
    assert got.amount_total == 4998 and got.customer == "cus_seed"
    assert [s.id for s in client.v1.checkout.sessions.list({"customer": "cus_seed"})] == [
        seeded["id"]
    ]
    created = client.v1.customers.create({"email": "http@example.com"})
    assert Customers.find_by_email("http@example.com")[0]["id"] == created.id
