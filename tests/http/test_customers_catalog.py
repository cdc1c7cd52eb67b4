"""``/v1/customers``, ``/v1/products``, ``/v1/prices`` through stripe-python."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

from papertiger.store import Customers, Prices, Products


def test_customer_lifecycle(client: Any) -> None:
    created = client.v1.customers.create(
        {
            "email": "jenny.rosen@example.com",
            "name": "Jenny Rosen",
            "metadata": {"tier": "gold", "ref": "x"},
            "address": {"city": "Brooklyn", "country": "US"},
        }
    )
    assert created.object == "customer" and created.id.startswith("cus_")
    assert created.livemode is False and created.balance == 0 and created.tax_exempt == "none"
    assert created.address.city == "Brooklyn"
    got = client.v1.customers.retrieve(created.id)
    assert got.to_dict() == created.to_dict()
    updated = client.v1.customers.update(
        created.id, {"name": "Jenny R.", "metadata": {"ref": ""}, "phone": "+15555550100"}
    )
    assert updated.name == "Jenny R." and updated.phone == "+15555550100"
    assert updated.metadata.to_dict() == {"tier": "gold"}
    assert updated.email == "jenny.rosen@example.com"
    unset = client.v1.customers.update(created.id, {"phone": ""})
    assert unset.phone is None
    deleted = client.v1.customers.delete(created.id)
    assert deleted.deleted is True and deleted.id == created.id
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.retrieve(created.id)
    assert info.value.http_status == 404 and info.value.param == "id"


def test_customer_fields_match_a_real_customer(client: Any) -> None:
    import json
    from pathlib import Path

    real = json.loads((Path(__file__).resolve().parent / "fixtures" / "customer.json").read_text())
    ours = client.v1.customers.create({"email": "a@example.com"}).to_dict()
    assert set(ours) == set(real)


def test_list_customers_by_email_and_created(client: Any) -> None:
    a = [client.v1.customers.create({"email": "a@example.com"}) for _ in range(3)]
    b = client.v1.customers.create({"email": "b@example.com"})
    by_email = client.v1.customers.list({"email": "a@example.com"})
    assert [c.id for c in by_email.data] == [c.id for c in reversed(a)]
    assert by_email.url == "/v1/customers"
    everyone = [c.id for c in client.v1.customers.list({"limit": 2}).auto_paging_iter()]
    assert everyone == [b.id, *(c.id for c in reversed(a))]
    newer = client.v1.customers.list({"created": {"gte": b.created}})
    assert b.id in [c.id for c in newer.data]
    assert client.v1.customers.list({"created": b.created + 10_000}).data == []


def test_customer_email_is_checked(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.create({"email": "not-an-email"})
    assert info.value.param == "email" and info.value.code == "email_invalid"


def test_products_and_prices(client: Any) -> None:
    product = client.v1.products.create(
        {
            "name": "Book",
            "metadata": {"isbn": "978-0135957059"},
            "default_price_data": {"currency": "usd", "unit_amount": 2499},
        }
    )
    assert product.active is True and product.default_price.startswith("price_")
    price = client.v1.prices.retrieve(product.default_price, {"expand": ["product"]})
    assert price.product.name == "Book" and str(price.unit_amount_decimal) == "2499"
    got = client.v1.products.retrieve(product.id, {"expand": ["default_price"]})
    assert got.default_price.unit_amount == 2499
    renamed = client.v1.products.update(product.id, {"name": "Book (2nd ed.)", "active": False})
    assert renamed.name == "Book (2nd ed.)" and renamed.active is False
    assert renamed.updated >= product.updated
    monthly = client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "month"},
            "nickname": "monthly",
        }
    )
    assert monthly.type == "recurring" and monthly.recurring.interval == "month"
    assert monthly.recurring.interval_count == 1
    off = client.v1.prices.update(monthly.id, {"active": False, "metadata": {"k": "v"}})
    assert off.active is False and off.metadata.to_dict() == {"k": "v"}
    assert Prices.get(monthly.id)["active"] is False


def test_custom_product_id_and_product_data(client: Any) -> None:
    product = client.v1.products.create({"id": "prod_book", "name": "Book"})
    assert product.id == "prod_book"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.products.create({"id": "prod_book", "name": "Again"})
    assert info.value.code == "resource_already_exists"
    price = client.v1.prices.create(
        {"currency": "usd", "unit_amount": 100, "product_data": {"name": "Sticker"}}
    )
    assert Products.get(price.product)["name"] == "Sticker"


def test_list_filters_on_the_catalogue(client: Any) -> None:
    book = client.v1.products.create({"name": "Book", "shippable": True})
    ebook = client.v1.products.create({"name": "E-book", "shippable": False, "active": False})
    usd = client.v1.prices.create({"product": book.id, "currency": "usd", "unit_amount": 10})
    eur = client.v1.prices.create({"product": book.id, "currency": "eur", "unit_amount": 9})
    sub = client.v1.prices.create(
        {
            "product": ebook.id,
            "currency": "usd",
            "unit_amount": 5,
            "recurring": {"interval": "year"},
        }
    )

    def ids(resource: Any, **params: Any) -> list[str]:
        return [x.id for x in resource.list(params).auto_paging_iter()]

    assert ids(client.v1.products, active=True) == [book.id]
    assert ids(client.v1.products, shippable=False) == [ebook.id]
    assert ids(client.v1.prices, product=book.id) == [eur.id, usd.id]
    assert ids(client.v1.prices, currency="usd") == [sub.id, usd.id]
    assert ids(client.v1.prices, type="recurring") == [sub.id]
    assert ids(client.v1.prices, product=book.id, currency="usd") == [usd.id]


def test_price_needs_an_existing_product(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.prices.create({"product": "prod_nope", "currency": "usd", "unit_amount": 1})
    assert info.value.param == "product" and info.value.code == "resource_missing"
    assert info.value.http_status == 400
    assert Prices.count() == 0


def test_customers_seeded_through_the_store_are_served(client: Any) -> None:
    seeded = Customers.insert({"email": "seed@example.com", "name": "Seed"})
    assert client.v1.customers.retrieve(seeded["id"]).name == "Seed"
    assert [c.id for c in client.v1.customers.list({"email": "seed@example.com"})] == [seeded["id"]]
    client.v1.customers.update(seeded["id"], {"metadata": {"via": "http"}})
    assert Customers.get(seeded["id"])["metadata"] == {"via": "http"}
