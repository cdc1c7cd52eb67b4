"""Transitions raced on two servers over one store: one wins, every time.

The run's HTTP server (its own process) and a second server in this test's
process serve one store.  For each session, two threads start together: one
presses Pay on the hosted page of one server, the other expires the session
through the API of the other.  A transition is a conditional patch
(``expect={"status": "open"}``), so exactly one applies; the other gets the
answer it would get a moment later (Stripe's error for a session that is no
longer open), and a customer made for a Pay that lost is deleted.

The same holds for taking over a stale ``Idempotency-Key`` claim: of two
retries that find it at once, exactly one runs the request.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import stripe

import papertiger
from papertiger.http import pay_checkout
from papertiger.http.idempotency import STALE_SECONDS, IdempotencyKeys, fingerprint
from papertiger.store import CheckoutSessions, Customers
from stripe_support import make_price, make_session, raw

SESSIONS = 30
KEYS = 60


def race(first: Callable[[], Any], second: Callable[[], Any]) -> list[Any]:
    """Run both at once (in two threads); what each returned or raised."""
    start = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def run(i: int, call: Callable[[], Any]) -> None:
        start.wait()
        try:
            outcomes[i] = call()
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_pay_and_expire_at_once_exactly_one_wins(client: Any, papertiger_stripe: Any) -> None:
    price = make_price(client)
    sessions = [
        make_session(client, price, customer_creation="always", customer_email=f"c{i}@example.com")
        for i in range(SESSIONS)
    ]
    wins = {"pay": 0, "expire": 0}
    with papertiger.serve_http() as other:
        clients = {
            papertiger_stripe.url: client,
            other.url: stripe.StripeClient(
                papertiger_stripe.api_key, base_addresses={"api": other.url}
            ),
        }
        servers = list(clients)
        for i, session in enumerate(sessions):
            pay_at, expire_at = servers[i % 2], servers[1 - i % 2]  # each role on each server
            page = session.url.replace(papertiger_stripe.url, pay_at, 1)
            paid, expired = race(
                lambda page=page: pay_checkout(page),
                lambda sid=session.id, at=expire_at: clients[at].v1.checkout.sessions.expire(sid),
            )
            stored = CheckoutSessions.get(session.id)
            if isinstance(expired, Exception):  # Pay won
                wins["pay"] += 1
                assert isinstance(paid, str) and paid.endswith(session.id), paid
                assert isinstance(expired, stripe.InvalidRequestError), repr(expired)
                assert expired.http_status == 400
                assert expired.user_message == (
                    'Only Checkout Sessions with a status in ["open"] can be expired. This '
                    'Checkout Session has a status of "complete".'
                )
                assert (stored["status"], stored["payment_status"]) == ("complete", "paid")
                assert stored["payment_intent"].startswith("pi_")
                assert Customers.get(stored["customer"])["email"] == f"c{i}@example.com"
            else:  # the expire won
                wins["expire"] += 1
                assert expired.status == "expired", expired
                assert isinstance(paid, papertiger.InvalidRequest), repr(paid)
                assert "expired" in paid.message
                assert (stored["status"], stored["payment_status"]) == ("expired", "unpaid")
                assert stored["payment_intent"] is None and stored["customer"] is None
    # every Pay that won made its customer; every Pay that lost left none behind
    assert Customers.count() == wins["pay"]
    assert wins["pay"] + wins["expire"] == SESSIONS


def test_two_retries_taking_over_a_stale_claim_run_the_request_once(
    papertiger_stripe: Any,
) -> None:
    body = "email=stale%40example.com"
    digest = fingerprint("POST", "/v1/customers", {"email": "stale@example.com"})
    ran = 0
    with papertiger.serve_http() as other:
        for _ in range(KEYS):
            key = str(uuid.uuid4())
            # a claim whose server died before it answered
            IdempotencyKeys.insert(
                {
                    "id": key,
                    "request": digest,
                    "state": "running",
                    "claimed": time.time() - 2 * STALE_SECONDS,
                }
            )

            def retry(url: str, key: str = key) -> Any:
                headers = {"Idempotency-Key": key}
                api_key = papertiger_stripe.api_key
                return raw(url, "POST", "/v1/customers", body, key=api_key, headers=headers)

            first, second = race(lambda: retry(papertiger_stripe.url), lambda: retry(other.url))
            answers = [first, second]
            for answer in answers:
                assert not isinstance(answer, Exception), repr(answer)
                assert answer.status in (200, 409), answer.text
            ran_now = [
                a for a in answers if a.status == 200 and "idempotent-replayed" not in a.headers
            ]
            assert len(ran_now) == 1, [(a.status, a.headers, a.text) for a in answers]
            ran += 1
            for answer in answers:
                if answer.status == 409:  # the other one was still running: in flight
                    assert answer.error["code"] == "idempotency_key_in_use"
                else:
                    assert json.loads(answer.text)["id"] == ran_now[0].json["id"]
    assert Customers.count() == ran == KEYS
