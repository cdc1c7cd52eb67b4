"""Fixtures of the HTTP API tests: the real stripe-python client against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from stripe_support import make_price


@pytest.fixture
def client(papertiger_stripe: Any) -> Any:
    """The test's ``stripe.StripeClient`` (the run's server, this test's namespace)."""
    return papertiger_stripe.client


@pytest.fixture
def price(client: Any) -> Any:
    """A one-time price of 24.99 USD for a product named "The Pragmatic Programmer"."""
    return make_price(client)
