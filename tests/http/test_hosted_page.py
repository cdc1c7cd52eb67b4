"""The hosted checkout page: in a real headless Chromium, and through the helper without one."""

from __future__ import annotations

import http.server
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

import papertiger
from papertiger.http import cancel_checkout, pay_checkout
from papertiger.store import CheckoutSessions, Customers
from stripe_support import make_price, make_session
from support import need_program

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Shop:
    """A stand-in for the shop's own pages that success_url and cancel_url point at."""

    def __init__(self) -> None:
        visits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                visits.append(self.path)
                body = f"<h1 id=shop>shop page {self.path}</h1>".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.visits = visits
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def shop() -> Iterator[Shop]:
    s = Shop()
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Debian's), driven by Playwright, with a fresh profile."""
    chromium = need_program("chromium", "apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    tab = browser.new_page()
    tab.set_default_timeout(30_000)
    yield tab
    tab.close()


def shop_session(client: Any, shop: Shop, **extra: Any) -> Any:
    price = make_price(client, 2499)
    return make_session(
        client,
        price,
        quantity=2,
        success_url=shop.url + "/success?session_id={CHECKOUT_SESSION_ID}",
        cancel_url=shop.url + "/cart",
        **extra,
    )


def test_pay_in_a_browser(client: Any, shop: Shop, page: Any) -> None:
    session = shop_session(client, shop, customer_email="jenny.rosen@example.com")
    page.goto(session.url)
    assert page.get_by_test_id("title").inner_text() == "Checkout"
    item = page.get_by_test_id("line-item")
    assert "The Pragmatic Programmer" in item.inner_text()
    assert page.get_by_test_id("quantity").inner_text() == "2"
    assert page.get_by_test_id("total").inner_text() == "49.98 USD"
    assert page.get_by_test_id("email").input_value() == "jenny.rosen@example.com"
    page.get_by_test_id("pay").click()
    page.wait_for_url(f"{shop.url}/success?session_id={session.id}")
    assert page.locator("#shop").inner_text() == f"shop page /success?session_id={session.id}"
    paid = client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_status) == ("complete", "paid")
    assert paid.payment_intent.startswith("pi_") and paid.url is None
    assert paid.customer_details.email == "jenny.rosen@example.com"
    page.goto(session.url)  # the old link now says so
    assert page.get_by_test_id("title").inner_text() == "Already paid"
    assert page.get_by_test_id("pay").count() == 0


def test_email_typed_in_the_page(client: Any, shop: Shop, page: Any) -> None:
    session = shop_session(client, shop)
    page.goto(session.url)
    page.get_by_test_id("email").fill("typed@example.com")
    page.get_by_test_id("pay").click()
    page.wait_for_url(f"{shop.url}/success?session_id={session.id}")
    listed = client.v1.checkout.sessions.list({"customer_details": {"email": "typed@example.com"}})
    assert [s.id for s in listed.data] == [session.id]


def test_cancel_in_a_browser(client: Any, shop: Shop, page: Any) -> None:
    session = shop_session(client, shop)
    page.goto(session.url)
    page.get_by_test_id("cancel").click()
    page.wait_for_url(f"{shop.url}/cart")
    assert client.v1.checkout.sessions.retrieve(session.id).status == "open"  # as on Stripe


def test_expired_session_in_a_browser(client: Any, shop: Shop, page: Any) -> None:
    session = shop_session(client, shop)
    url = session.url
    client.v1.checkout.sessions.expire(session.id)
    page.goto(url)
    assert page.get_by_test_id("title").inner_text() == "Session expired"
    assert "expired" in page.get_by_test_id("message").inner_text()


def test_pay_without_a_browser(client: Any) -> None:
    price = make_price(client)
    session = make_session(client, price, client_reference_id="order_1")
    target = pay_checkout(session, email="helper@example.com")
    assert target == f"https://shop.example.com/success?session_id={session.id}"
    paid = client.v1.checkout.sessions.retrieve(session.id)
    assert (paid.status, paid.payment_status) == ("complete", "paid")
    assert paid.customer_details.email == "helper@example.com"
    with pytest.raises(papertiger.InvalidRequest, match="complete"):
        pay_checkout(session)
    assert CheckoutSessions.get(session.id)["payment_intent"] == paid.payment_intent


def test_cancel_and_expired_without_a_browser(client: Any, papertiger_stripe: Any) -> None:
    price = make_price(client)
    session = make_session(client, price)
    assert cancel_checkout(session.url) == "https://shop.example.com/cart"
    client.v1.checkout.sessions.expire(session.id)
    with pytest.raises(papertiger.InvalidRequest, match="expired"):
        papertiger_stripe.pay(session)
    with pytest.raises(papertiger.NotFound):
        pay_checkout(session.url.replace(session.id, "cs_test_nope"))
    with pytest.raises(papertiger.InvalidRequest):
        pay_checkout({"url": None})


def test_subscription_checkout_creates_the_customer(client: Any) -> None:
    monthly = make_price(client, 900, recurring={"interval": "month"})
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "line_items": [{"price": monthly.id, "quantity": 1}],
            "customer_email": "new@example.com",
        }
    )
    pay_checkout(session)
    done = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["customer"]})
    assert done.subscription.startswith("sub_") and done.customer.email == "new@example.com"
    assert Customers.find_by_email("new@example.com")[0]["id"] == done.customer.id


def test_a_session_expired_by_time_cannot_be_paid(client: Any) -> None:
    import time

    price = make_price(client)
    session = make_session(client, price)
    CheckoutSessions.patch(session.id, {"expires_at": int(time.time()) - 5})
    with pytest.raises(papertiger.InvalidRequest, match="expired"):
        pay_checkout(session)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(session.id)
