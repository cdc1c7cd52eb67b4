"""Stripe's HTTP API in front of the store: stripe-python talks to papertiger.

=======================  ==============================================================
:mod:`.server`           :func:`serve_http` (in this process), the server process,
                         once-per-run start for the pytest plugin
:mod:`.app`              the ASGI application: routing, auth, parameters, idempotency
:mod:`.keys`             :func:`api_key_for`: keys that name a namespace
:mod:`.forms`            Stripe's bracket encoding, decoded
:mod:`.params`           declared parameters, checked (Stripe's error codes)
:mod:`.errors`           Stripe's error bodies and statuses
:mod:`.endpoints`        what the resources share (lists, expansion, metadata)
:mod:`.checkout`         ``/v1/checkout/sessions``
:mod:`.customers`        ``/v1/customers``
:mod:`.catalog`          ``/v1/products``, ``/v1/prices``
:mod:`.idempotency`      ``Idempotency-Key``: records kept in the store
:mod:`.page`             the hosted checkout page
:mod:`.hosted`           its buttons without a browser: :func:`pay_checkout`
=======================  ==============================================================

>>> import papertiger, stripe
>>> with papertiger.serve(), papertiger.serve_http() as api:
...     client = stripe.StripeClient(
...         papertiger.api_key_for("docs"), base_addresses={"api": api.url}
...     )
...     client.v1.customers.create({"email": "jenny@example.com"}).email
'jenny@example.com'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes
from .keys import api_key_for

if TYPE_CHECKING:  # pragma: no cover - the lazy names below, for type checkers
    from .hosted import cancel_checkout, pay_checkout
    from .server import HttpServer, serve_http

__all__ = ["HttpServer", "api_key_for", "cancel_checkout", "pay_checkout", "serve_http"]

# Loaded on first use: a key costs no HTTP machinery.
_LAZY = {
    "HttpServer": ".server",
    "serve_http": ".server",
    "cancel_checkout": ".hosted",
    "pay_checkout": ".hosted",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
