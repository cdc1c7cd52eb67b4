"""A shop's payment code, as it would be written against Stripe: nothing here knows papertiger.

The application uses stripe-python's module-level API with ``stripe.api_key``
set at start-up; in tests, the ``papertiger_stripe`` fixture points
``stripe.api_key`` and ``stripe.api_base`` at papertiger, so this code runs
unchanged against a stateful Stripe of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe

SUCCESS_URL = "https://shop.example.com/orders/{CHECKOUT_SESSION_ID}/thanks"
CANCEL_URL = "https://shop.example.com/cart"


@dataclass(frozen=True)
class CartLine:
    price: str
    quantity: int


def add_to_catalogue(name: str, unit_amount: int, currency: str = "usd") -> str:
    """Create a product and its price; return the price id the cart will use."""
    product = stripe.Product.create(name=name)
    price = stripe.Price.create(product=product.id, unit_amount=unit_amount, currency=currency)
    return price.id


def start_checkout(cart: list[CartLine], email: str, order_id: str) -> stripe.checkout.Session:
    """Open a Checkout Session for the cart; the customer is sent to ``session.url``.

    The order id is the idempotency key, so a double click opens one session.
    """
    if not cart:
        raise ValueError("the cart is empty")
    return stripe.checkout.Session.create(
        mode="payment",
        line_items=[{"price": line.price, "quantity": line.quantity} for line in cart],
        customer_email=email,
        client_reference_id=order_id,
        metadata={"order_id": order_id},
        success_url=SUCCESS_URL,
        cancel_url=CANCEL_URL,
        idempotency_key=f"checkout-{order_id}",
    )


def order_status(session_id: str) -> str:
    """``paid``, ``awaiting payment`` or ``abandoned``, from the session's state."""
    session = stripe.checkout.Session.retrieve(session_id)
    if session.status == "complete" and session.payment_status == "paid":
        return "paid"
    if session.status == "expired":
        return "abandoned"
    return "awaiting payment"


def abandon(session_id: str) -> None:
    """The customer left: expire the session so its link stops working."""
    stripe.checkout.Session.expire(session_id)


def paid_orders(email: str) -> list[str]:
    """Order ids this customer has paid, newest first (every page of the list)."""
    sessions = stripe.checkout.Session.list(
        customer_details={"email": email}, status="complete", limit=3
    )
    return [s.metadata["order_id"] for s in sessions.auto_paging_iter()]
