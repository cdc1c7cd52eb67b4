"""Requests as stripe-python sends them, and every error as stripe-python expects it.

Errors come back as Stripe's body and status, which stripe-python turns into
``InvalidRequestError`` (with ``param`` and ``code``), ``AuthenticationError``
or ``IdempotencyError``.  Bad input never changes the store, and the server
keeps serving.
"""

from __future__ import annotations

import base64
import http.client
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe

import papertiger
from papertiger.store import CheckoutSessions, Customers
from stripe_support import make_session, raw


def invalid(call: Any) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as info:
        call()
    return info.value


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({}, "mode", "parameter_missing"),
        ({"mode": "payment"}, "line_items", "parameter_missing"),
        ({"mode": "nope"}, "mode", None),
        ({"mode": "payment", "bogus": "1"}, "bogus", "parameter_unknown"),
        (
            {"mode": "payment", "line_items": [{"price": "p", "quantity": 1, "colour": "red"}]},
            "line_items[0][colour]",
            "parameter_unknown",
        ),
        (
            {"mode": "payment", "line_items": [{"price": "p", "quantity": "two"}]},
            "line_items[0][quantity]",
            "parameter_invalid_integer",
        ),
        (
            {"mode": "payment", "line_items": [{"price": "price_nope", "quantity": 1}]},
            "line_items[0][price]",
            "resource_missing",
        ),
        (
            {"mode": "payment", "line_items": [{"price": "p"}]},
            "line_items[0][quantity]",
            "parameter_missing",
        ),
        (
            {
                "mode": "payment",
                "line_items": [
                    {
                        "price": "p",
                        "price_data": {"currency": "usd", "product": "p", "unit_amount": 1},
                        "quantity": 1,
                    }
                ],
            },
            "line_items[0][price_data]",
            "parameters_exclusive",
        ),
        ({"mode": "payment", "metadata": "x"}, "metadata", None),
        ({"mode": "payment", "customer": {"id": "cus_1"}}, "customer", None),
        ({"mode": "payment", "customer": "cus_nope"}, "customer", "resource_missing"),
        ({"mode": "payment", "success_url": ""}, "success_url", "parameter_invalid_empty"),
        ({"mode": "payment", "allow_promotion_codes": "yes"}, "allow_promotion_codes", None),
    ],
)
def test_bad_parameters(client: Any, params: dict[str, Any], param: str, code: str | None) -> None:
    error = invalid(lambda: client.v1.checkout.sessions.create(params))
    assert error.http_status == 400
    assert (error.param, error.code) == (param, code)
    assert error.json_body["error"]["type"] == "invalid_request_error"
    assert CheckoutSessions.count() == 0


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"limit": 0}, "limit", "parameter_invalid_integer"),
        ({"limit": 101}, "limit", "parameter_invalid_integer"),
        ({"limit": "abc"}, "limit", "parameter_invalid_integer"),
        ({"starting_after": "cus_nope"}, "starting_after", "resource_missing"),
        ({"ending_before": "cus_nope"}, "ending_before", "resource_missing"),
        ({"created": {"after": 1}}, "created[after]", "parameter_unknown"),
        ({"created": "yesterday"}, "created", "parameter_invalid_integer"),
        ({"colour": "red"}, "colour", "parameter_unknown"),
    ],
)
def test_bad_list_parameters(client: Any, params: dict[str, Any], param: str, code: str) -> None:
    error = invalid(lambda: client.v1.customers.list(params))
    assert (error.http_status, error.param, error.code) == (400, param, code)


def test_both_cursors(client: Any) -> None:
    a = client.v1.customers.create({})
    error = invalid(
        lambda: client.v1.customers.list({"starting_after": a.id, "ending_before": a.id})
    )
    assert error.param is None and "only one" in str(error)


def test_empty_string_for_a_required_value(client: Any) -> None:
    error = invalid(lambda: client.v1.products.create({"name": ""}))
    assert (error.param, error.code) == ("name", "parameter_invalid_empty")
    assert "cannot be unset" in str(error)
    error = invalid(lambda: client.v1.products.create({"name": "x", "active": ""}))
    assert (error.param, error.code) == ("active", "parameter_invalid_empty")


def test_missing_objects_are_404_with_param_id(client: Any) -> None:
    for call in (
        lambda: client.v1.customers.retrieve("cus_nope"),
        lambda: client.v1.customers.update("cus_nope", {"name": "x"}),
        lambda: client.v1.customers.delete("cus_nope"),
        lambda: client.v1.products.retrieve("prod_nope"),
        lambda: client.v1.prices.retrieve("price_nope"),
        lambda: client.v1.checkout.sessions.expire("cs_test_nope"),
        lambda: client.v1.checkout.sessions.line_items.list("cs_test_nope"),
    ):
        error = invalid(call)
        assert (error.http_status, error.code, error.param) == (404, "resource_missing", "id")


def test_authentication(papertiger_stripe: Any) -> None:
    url = papertiger_stripe.url
    bad = stripe.StripeClient("not-a-key", base_addresses={"api": url})
    with pytest.raises(stripe.AuthenticationError) as info:
        bad.v1.customers.list()
    assert info.value.http_status == 401 and "Invalid API Key" in str(info.value)
    broken = stripe.StripeClient("sk_test_ptg_%%%", base_addresses={"api": url})
    with pytest.raises(stripe.AuthenticationError):
        broken.v1.customers.list()
    response = raw(url, "GET", "/v1/customers")
    assert response.status == 401 and "did not provide an API key" in response.error["message"]
    basic = base64.b64encode(f"{papertiger_stripe.api_key}:".encode()).decode()
    ok = raw(url, "GET", "/v1/customers", headers={"Authorization": f"Basic {basic}"})
    assert ok.status == 200 and ok.json["object"] == "list"


def test_any_well_formed_key_addresses_global(papertiger_stripe: Any) -> None:
    other = stripe.StripeClient(
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc", base_addresses={"api": papertiger_stripe.url}
    )
    email = f"global-{uuid.uuid4().hex}@example.com"
    created = other.v1.customers.create({"email": email})
    try:
        with papertiger.use_namespace(papertiger.GLOBAL):
            assert Customers.get(created.id)["email"] == email
        assert papertiger_stripe.client.v1.customers.list({"email": email}).data == []
    finally:
        other.v1.customers.delete(created.id)


def test_idempotent_replay(client: Any, papertiger_stripe: Any) -> None:
    key = str(uuid.uuid4())
    first = client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": key})
    again = client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": key})
    assert again.id == first.id and again.to_dict() == first.to_dict()
    assert again.last_response.headers["idempotent-replayed"] == "true"
    assert Customers.count() == 1
    with pytest.raises(stripe.IdempotencyError) as info:
        client.v1.customers.create({"email": "b@example.com"}, {"idempotency_key": key})
    assert info.value.http_status == 400
    assert Customers.count() == 1
    # a refused request is not replayed: its key runs again once the request is right
    bad_key = str(uuid.uuid4())
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update("cus_nope", {"name": "x"}, {"idempotency_key": bad_key})
    # keys are per namespace (Stripe: per account)
    other = client.v1.customers.create(
        {"email": "a@example.com"}, {"idempotency_key": key, "stripe_account": "acct_1"}
    )
    assert other.id != first.id


def test_idempotency_key_too_long(client: Any) -> None:
    error = invalid(lambda: client.v1.customers.create({}, {"idempotency_key": "k" * 256}))
    assert error.param == "Idempotency-Key"


def test_stripe_account_nests_the_namespace(client: Any, papertiger_stripe: Any) -> None:
    mine = client.v1.customers.create({"email": "platform@example.com"})
    connected = client.v1.customers.create(
        {"email": "connected@example.com"}, {"stripe_account": "acct_1Abc"}
    )
    assert [c.id for c in client.v1.customers.list().data] == [mine.id]
    listed = client.v1.customers.list(options={"stripe_account": "acct_1Abc"})
    assert [c.id for c in listed.data] == [connected.id]
    other = client.v1.customers.list(options={"stripe_account": "acct_2Xyz"})
    assert other.data == []
    with papertiger.use_namespace((*papertiger_stripe.namespace, "acct_1Abc")):
        assert Customers.get(connected.id)["email"] == "connected@example.com"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve(connected.id)
    error = invalid(lambda: client.v1.customers.list(options={"stripe_account": "not an account"}))
    assert error.param == "Stripe-Account"


def test_stripe_version_is_accepted_and_echoed(papertiger_stripe: Any) -> None:
    response = raw(
        papertiger_stripe.url,
        "GET",
        "/v1/customers",
        key=papertiger_stripe.api_key,
        headers={"Stripe-Version": "2024-06-20"},
    )
    assert response.status == 200 and response.headers["stripe-version"] == "2024-06-20"
    assert response.headers["request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ("mode=payment&line_items[1][price]=p&line_items[1][quantity]=1", "line_items"),
        ("mode=payment&mode=setup", "mode"),
        ("mode=payment&metadata[a=1", "metadata[a"),
        ("mode=payment&metadata=1&metadata[a]=2", "metadata"),
        ("mode=payment&metadata[%FF]=1", "metadata[%FF]"),
    ],
)
def test_malformed_forms(papertiger_stripe: Any, body: str, param: str) -> None:
    response = raw(
        papertiger_stripe.url, "POST", "/v1/checkout/sessions", body, key=papertiger_stripe.api_key
    )
    assert response.status == 400, response.text
    assert response.error["type"] == "invalid_request_error"
    assert response.error.get("param") == param
    assert response.headers["stripe-should-retry"] == "false"
    assert CheckoutSessions.count() == 0
    assert papertiger_stripe.client.v1.customers.list().data == []  # still serving


def test_wrong_content_type(papertiger_stripe: Any) -> None:
    response = raw(
        papertiger_stripe.url,
        "POST",
        "/v1/customers",
        '{"email": "a@example.com"}',
        key=papertiger_stripe.api_key,
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400 and "x-www-form-urlencoded" in response.error["message"]
    assert Customers.count() == 0


def test_oversized_bodies_are_refused(papertiger_stripe: Any) -> None:
    from papertiger.http.app import MAX_BODY_BYTES

    big = "description=" + "x" * (MAX_BODY_BYTES + 1)
    response = raw(
        papertiger_stripe.url, "POST", "/v1/customers", big, key=papertiger_stripe.api_key
    )
    assert response.status == 413 and response.error["code"] == "request_too_large"
    # without a Content-Length (chunked), the limit holds while reading
    parts = urlsplit(papertiger_stripe.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("POST", "/v1/customers")
        conn.putheader("Authorization", f"Bearer {papertiger_stripe.api_key}")
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * 65536
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
        assert conn.getresponse().status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close the connection once it has answered
    finally:
        conn.close()
    assert Customers.count() == 0
    assert papertiger_stripe.client.v1.customers.list().data == []  # still serving


def test_unknown_urls_and_methods(papertiger_stripe: Any) -> None:
    for method, path in (
        ("GET", "/v1/charges"),
        ("PUT", "/v1/customers"),
        ("DELETE", "/v1/prices/x"),
    ):
        response = raw(papertiger_stripe.url, method, path, key=papertiger_stripe.api_key)
        assert response.status == 404
        assert response.error["message"].startswith(f"Unrecognized request URL ({method}: {path})")


def test_query_parameters_on_a_post_are_read(papertiger_stripe: Any) -> None:
    response = raw(
        papertiger_stripe.url,
        "POST",
        "/v1/customers?email=q%40example.com",
        "name=Q",
        key=papertiger_stripe.api_key,
    )
    assert response.status == 200 and response.json["email"] == "q@example.com"


def test_expand_of_something_not_expandable(client: Any, price: Any) -> None:
    session = make_session(client, price)
    error = invalid(lambda: client.v1.checkout.sessions.retrieve(session.id, {"expand": ["nope"]}))
    assert error.param == "expand[0]"


def test_every_server_over_one_store_agrees_on_idempotency(
    client: Any, papertiger_stripe: Any
) -> None:
    key = str(uuid.uuid4())
    first = client.v1.customers.create({"email": "once@example.com"}, {"idempotency_key": key})
    # a second server, in this test's process, over the same store
    with papertiger.serve_http() as other:
        again = stripe.StripeClient(
            papertiger_stripe.api_key, base_addresses={"api": other.url}
        ).v1.customers.create({"email": "once@example.com"}, {"idempotency_key": key})
    assert again.id == first.id
    assert again.last_response.headers["idempotent-replayed"] == "true"
    assert Customers.count() == 1
