"""Helpers for the HTTP API tests (tests/http): requests stripe-python would never send.

Most tests use the plugin's ``papertiger_stripe`` fixture (the run's HTTP
server process, this test's namespace); :func:`raw` sends exactly the bytes
given (malformed forms, no key, oversized bodies).
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

SUCCESS_URL = "https://shop.example.com/success?session_id={CHECKOUT_SESSION_ID}"
CANCEL_URL = "https://shop.example.com/cart"


class Raw:
    """A response of :func:`raw`: status, headers, decoded JSON body."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.text = body.decode(errors="replace")
        try:
            self.json: Any = json.loads(body)
        except ValueError:
            self.json = None

    @property
    def error(self) -> dict[str, Any]:
        assert isinstance(self.json, dict) and "error" in self.json, self.text
        return self.json["error"]  # type: ignore[no-any-return]


def raw(
    base: str,
    method: str,
    path: str,
    body: bytes | str | None = None,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Raw:
    """One request with http.client: exactly these bytes, these headers."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    if body is not None and "Content-Type" not in sent:
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return Raw(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


def make_price(client: Any, amount: int = 2499, **extra: Any) -> Any:
    product = client.v1.products.create({"name": extra.pop("name", "The Pragmatic Programmer")})
    return client.v1.prices.create(
        {"product": product.id, "unit_amount": amount, "currency": "usd", **extra}
    )


def make_session(client: Any, price: Any, quantity: int = 2, **extra: Any) -> Any:
    params = {
        "mode": "payment",
        "line_items": [{"price": price.id, "quantity": quantity}],
        "success_url": SUCCESS_URL,
        "cancel_url": CANCEL_URL,
        **extra,
    }
    return client.v1.checkout.sessions.create(params)


def http_servers_of(address: str) -> list[int]:
    """Pids of HTTP server processes serving the store at ``address``."""
    found = []
    needle = f"PAPERTIGER_ADDRESS={address}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"papertiger.http" not in f.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found
