"""The resource stores. Each is a few declarative lines over :class:`Store`.

Filters are Stripe's list filters for the resource (``created`` always
works); ``indexes`` give ``find_by_<field>``.
"""

from __future__ import annotations

from typing import Any

from .base import Store

__all__ = ["CheckoutSessions", "Customers", "Prices", "Products", "Store"]


class CheckoutSessions(Store):
    """Stripe Checkout Sessions (``cs_...``), indexed by ``customer``."""

    table_name = "checkout_sessions"
    resource = "checkout_session"
    object_name = "checkout.session"
    prefix = "cs"
    url = "/v1/checkout/sessions"
    indexes = ("customer",)
    filters = (
        "customer",
        "customer_details.email",
        "payment_intent",
        "payment_link",
        "status",
        "subscription",
    )

    @classmethod
    def find_by_customer(cls, customer: Any) -> list[dict[str, Any]]:
        """Sessions of ``customer`` (an id or an expanded customer), newest first.

        Scoped to the current namespace. O(log n + k) for k matches.
        """
        return cls.find_by("customer", customer)


class Customers(Store):
    """Stripe Customers (``cus_...``), indexed by ``email``."""

    table_name = "customers"
    resource = "customer"
    object_name = "customer"
    prefix = "cus"
    url = "/v1/customers"
    indexes = ("email",)
    filters = ("email",)

    @classmethod
    def find_by_email(cls, email: str) -> list[dict[str, Any]]:
        """Customers with this ``email``, newest first, in the current namespace."""
        return cls.find_by("email", email)


class Products(Store):
    """Stripe Products (``prod_...``)."""

    table_name = "products"
    resource = "product"
    object_name = "product"
    prefix = "prod"
    url = "/v1/products"
    filters = ("active", "shippable", "url")


class Prices(Store):
    """Stripe Prices (``price_...``), indexed by ``product``."""

    table_name = "prices"
    resource = "price"
    object_name = "price"
    prefix = "price"
    url = "/v1/prices"
    indexes = ("product",)
    filters = ("active", "currency", "product", "type")
