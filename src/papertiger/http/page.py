"""The hosted checkout page: what a session's ``url`` opens.

=========================================  ===========================================
``GET  /c/pay/{ns}/{session}``             the page: items, total, email, Pay, Cancel
``POST /c/pay/{ns}/{session}/complete``    Pay: completes the session, then 303 to
                                           ``success_url`` (``{CHECKOUT_SESSION_ID}``
                                           replaced)
``POST /c/pay/{ns}/{session}/cancel``      Cancel: 303 to ``cancel_url``; the session
                                           stays open, as on Stripe
=========================================  ===========================================

``{ns}`` is the session's namespace as a token (:func:`~.keys.namespace_token`):
a browser sends no API key, so the URL itself says where the session lives.
A session that is complete or expired says so instead of offering Pay; a
POST to it answers 409 (with Stripe's error body when the client accepts
JSON, as :func:`papertiger.http.pay_checkout` does).

These functions only render; :mod:`.app` routes and runs them.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

__all__ = ["format_amount", "render_done", "render_page", "success_target"]

#: Currencies whose amounts have no minor unit (Stripe's list).
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 32rem; margin: 3rem auto; color: #1a1f36; }
h1 { font-size: 1.3rem; } table { width: 100%; border-collapse: collapse; }
td { padding: .4rem 0; border-bottom: 1px solid #e3e8ee; } td.amount { text-align: right; }
.total td { font-weight: 600; border-bottom: none; } form { display: inline; }
button { font-size: 1rem; padding: .6rem 1.4rem; margin: 1rem .6rem 0 0; border-radius: 6px;
  border: 1px solid #635bff; background: #635bff; color: white; cursor: pointer; }
button.secondary { background: white; color: #635bff; }
label { display: block; margin-top: 1rem; }
input { font-size: 1rem; padding: .4rem; width: 100%; box-sizing: border-box; }
.note { color: #697386; font-size: .85rem; margin-top: 2rem; }
"""


def format_amount(amount: int | None, currency: str | None) -> str:
    """``4998, "usd"`` -> ``"49.98 USD"``. O(1).

    >>> format_amount(4998, "usd"), format_amount(500, "jpy"), format_amount(None, None)
    ('49.98 USD', '500 JPY', '-')
    """
    if amount is None:
        return "-"
    code = (currency or "").upper()
    if (currency or "").lower() in ZERO_DECIMAL:
        return f"{amount} {code}".strip()
    sign = "-" if amount < 0 else ""
    units, cents = divmod(abs(amount), 100)
    return f"{sign}{units}.{cents:02d} {code}".strip()


def _document(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}<p class=note>papertiger test checkout: no real payment is made.</p>"
        "</body></html>"
    )


def _line_items(session: dict[str, Any]) -> list[dict[str, Any]]:
    items = session.get("line_items")
    if isinstance(items, dict):
        items = items.get("data")
    return [item for item in items or [] if isinstance(item, dict)]


def render_page(session: dict[str, Any], action_base: str) -> str:
    """The page of an open session; ``action_base`` is the page's own path."""
    currency = session.get("currency")
    rows = []
    for item in _line_items(session):
        rows.append(
            "<tr data-testid=line-item>"
            f"<td>{html.escape(str(item.get('description') or item.get('id') or 'item'))}"
            f" &times; <span data-testid=quantity>{int(item.get('quantity') or 0)}</span></td>"
            f"<td class=amount>{format_amount(item.get('amount_total'), currency)}</td></tr>"
        )
    total = format_amount(session.get("amount_total"), currency)
    email = session.get("customer_email") or (session.get("customer_details") or {}).get("email")
    email_value = f' value="{html.escape(email)}"' if email else ""
    pay = "Subscribe" if session.get("mode") == "subscription" else "Pay"
    if session.get("mode") == "setup":
        pay = "Save"
    body = (
        f"<h1 data-testid=title>Checkout</h1>"
        f"<table>{''.join(rows)}"
        f"<tr class=total><td>Total</td><td class=amount data-testid=total>{total}</td></tr>"
        "</table>"
        f'<form method=post action="{html.escape(action_base)}/complete" data-testid=pay-form>'
        f"<label>Email <input type=email name=email data-testid=email{email_value}></label>"
        f"<button type=submit data-testid=pay>{pay}</button></form>"
        f'<form method=post action="{html.escape(action_base)}/cancel">'
        "<button type=submit class=secondary data-testid=cancel>Cancel</button></form>"
    )
    return _document("Checkout", body)


def render_done(title: str, message: str) -> str:
    """A page that only says something: a finished, expired or missing session."""
    return _document(
        title,
        f"<h1 data-testid=title>{html.escape(title)}</h1>"
        f"<p data-testid=message>{html.escape(message)}</p>",
    )


def success_target(url: str, session_id: str) -> str:
    """``success_url`` with ``{CHECKOUT_SESSION_ID}`` replaced, as Stripe does.

    >>> success_target("https://shop.test/ok?s={CHECKOUT_SESSION_ID}", "cs_test_1")
    'https://shop.test/ok?s=cs_test_1'
    """
    return url.replace("{CHECKOUT_SESSION_ID}", quote(session_id, safe=""))
