"""A small shop on top of papertiger: a catalogue, customers, checkout sessions.

The catalogue (products and prices) is seeded once per run for every
worker, in a namespace of the run; customers and checkout sessions are made
by each test in its own namespace, from papertiger's realistic Stripe
fixtures.
"""

from __future__ import annotations

from typing import Any

from papertiger.fixtures import checkout_session, customer
from papertiger.pytest_plugin import run_namespace
from papertiger.store import CheckoutSessions, Customers, Prices, Products


def catalogue_namespace() -> tuple[str, ...]:
    """The run's own catalogue namespace: shared by every worker, outside every test's
    namespace, and cleared with the run even on a store that outlives it (Redis, a daemon)."""
    return run_namespace("catalogue")


PLANS = [
    ("Paperback", 1299),
    ("Hardcover", 2499),
    ("E-book", 899),
    ("Audiobook", 1999),
    ("Box set", 7999),
    ("Gift card", 5000),
    ("Bookmark", 299),
    ("Tote bag", 1599),
]


def seed_catalogue() -> dict[str, Any]:
    """Insert every product with its price; return them (made once per run)."""
    products = Products.insert_many(
        {"name": name, "active": True, "metadata": {"sku": f"sku-{i}"}}
        for i, (name, _) in enumerate(PLANS)
    )
    prices = Prices.insert_many(
        {"product": product["id"], "unit_amount": amount, "currency": "usd", "type": "one_time"}
        for product, (_, amount) in zip(products, PLANS, strict=True)
    )
    return {"products": products, "prices": prices}


def new_customer(n: int, **fields: Any) -> dict[str, Any]:
    """Insert the ``n``-th customer (id ``cus_shop<n>``) in the current namespace."""
    record = customer()
    record.update(
        id=f"cus_shop{n:04d}",
        email=f"reader{n}@example.com",
        name=f"Reader {n}",
        created=1767308400 + n,
    )
    record.update(fields)
    return Customers.insert(record)


def new_checkout_session(
    buyer: dict[str, Any], price: dict[str, Any], quantity: int = 1, **fields: Any
) -> dict[str, Any]:
    """Insert an open checkout session of ``buyer`` for ``quantity`` x ``price``."""
    record = checkout_session()
    del record["id"]
    amount = price["unit_amount"] * quantity
    record.update(
        customer=buyer["id"],
        amount_subtotal=amount,
        amount_total=amount,
        status="open",
        payment_status="unpaid",
        metadata={"price": price["id"], "quantity": str(quantity)},
    )
    record.pop("created", None)
    record.update(fields)
    return CheckoutSessions.insert(record)
