"""``/v1/checkout/sessions``: create, retrieve, update, expire, line items, list; and paying.

Theory of operation
-------------------
A session is created the way Stripe creates one: its line items are
resolved first (each names a stored, active price or carries ``price_data``,
see :func:`~.catalog.inline_price`), the amounts are summed from them, and
the record gets every field of Stripe's object (``status`` "open",
``payment_status``, ``expires_at`` = ``created`` + 24 h unless given,
``url`` of papertiger's hosted page, ``livemode`` false...).  Everything is
checked before the one write, so a refused request stores nothing.

The line items live in the stored record as Stripe's list object under
``line_items``, so a session seeded through the store API can carry them
too.  Responses leave them out unless ``expand[]=line_items`` asks for them
(as Stripe does); ``/line_items`` pages through them.

A session moves ``open`` -> ``complete`` (paid, through the hosted page or
:func:`complete_session`) or ``open`` -> ``expired`` (``/expire``, or its
``expires_at`` passing, noticed when it is next read).  Nothing leaves
``complete`` or ``expired``.  Every transition is a conditional patch,
``patch(id, changes, expect={"status": "open"})`` (:func:`_transition`): the
store checks that the session is still open atomically with the write, so of
two transitions racing each other (a Pay and an expire in the same
millisecond, on two servers or two threads) exactly one applies.  The other
gets :class:`~papertiger.Conflict` and answers what it would have answered
had it come a moment later: Stripe's error for a session that is not open
(and an expiry noticed on read shows the session as the winner left it).
The read and check before the patch only refuse early, before a Pay creates
a customer; the conditional patch decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..errors import Conflict, NotFound, StoreError
from ..store import CheckoutSessions, Customers, Prices, Products
from .catalog import CURRENCY, PRICE_DATA, inline_price
from .customers import new_customer
from .endpoints import (
    EXPAND,
    Call,
    Endpoint,
    apply_metadata,
    expand_object,
    list_params,
    page,
    require_object,
    stripe_id,
    update_record,
)
from .errors import APIError, invalid, not_found
from .keys import namespace_token
from .params import Array, Boolean, Hash, Integer, Metadata, String, exclusive

__all__ = [
    "ENDPOINTS",
    "complete_session",
    "hosted_page_path",
    "present",
    "refresh_status",
]

#: How long a session stays open by default (Stripe: 24 hours).
DEFAULT_LIFETIME = 24 * 3600
MIN_LIFETIME = 30 * 60
#: Line items included when a session is retrieved with ``expand[]=line_items``.
EXPANDED_LINE_ITEMS = 10


def hosted_page_path(token: str, session_id: str) -> str:
    """The path of a session's hosted checkout page (see :mod:`.page`)."""
    return f"/c/pay/{token}/{session_id}"


# -- parameters ---------------------------------------------------------------------

LINE_ITEM = Hash(
    {
        "price": String(max_length=255),
        "price_data": PRICE_DATA,
        "quantity": Integer(0, 999_999),
        "adjustable_quantity": Hash(
            {"enabled": Boolean(), "maximum": Integer(1, 999_999), "minimum": Integer(0, 999_999)},
            required=("enabled",),
        ),
        "tax_rates": Array(String(max_length=255), max_items=5),
        "dynamic_tax_rates": Array(String(max_length=255), max_items=5),
    },
    required=("quantity",),
    rules=(exclusive("price", "price_data", one_required=True),),
)

ENABLED = Hash({"enabled": Boolean()}, required=("enabled",))

CREATE = Hash(
    {
        "mode": String(("payment", "setup", "subscription")),
        "line_items": Array(LINE_ITEM, max_items=100),
        "success_url": String(max_length=5000),
        "cancel_url": String(max_length=5000),
        "return_url": String(max_length=5000),
        "ui_mode": String(("hosted", "hosted_page", "embedded", "embedded_page", "custom")),
        "customer": String(max_length=255),
        "customer_email": String(max_length=800),
        "customer_creation": String(("always", "if_required")),
        "client_reference_id": String(max_length=200),
        "currency": CURRENCY,
        "expires_at": Integer(),
        "metadata": Metadata(),
        "locale": String(max_length=10),
        "payment_method_types": Array(String(max_length=50), max_items=30),
        "submit_type": String(("auto", "book", "donate", "pay", "subscribe")),
        "allow_promotion_codes": Boolean(),
        "billing_address_collection": String(("auto", "required")),
        "phone_number_collection": ENABLED,
        "automatic_tax": ENABLED,
        "tax_id_collection": ENABLED,
        "invoice_creation": ENABLED,
        "shipping_address_collection": Hash(
            {"allowed_countries": Array(String(max_length=2), max_items=250)},
            required=("allowed_countries",),
        ),
        "payment_intent_data": Hash(
            {
                "capture_method": String(("automatic", "automatic_async", "manual")),
                "description": String(max_length=1000),
                "metadata": Metadata(),
                "receipt_email": String(max_length=800),
                "setup_future_usage": String(("off_session", "on_session")),
                "statement_descriptor": String(max_length=22),
                "statement_descriptor_suffix": String(max_length=22),
            }
        ),
        "subscription_data": Hash(
            {
                "description": String(max_length=500),
                "metadata": Metadata(),
                "trial_period_days": Integer(1, 730),
            }
        ),
        **EXPAND,
    },
    required=("mode",),
    rules=(exclusive("customer", "customer_email"),),
)

UPDATE = Hash({"metadata": Metadata(), **EXPAND})

LIST = list_params(
    customer=String(max_length=255),
    customer_details=Hash({"email": String(max_length=800)}, required=("email",)),
    payment_intent=String(max_length=255),
    payment_link=String(max_length=255),
    status=String(("open", "complete", "expired")),
    subscription=String(max_length=255),
)

LINE_ITEMS_LIST = Hash(
    {
        "limit": Integer(1, 100),
        "starting_after": String(max_length=255),
        "ending_before": String(max_length=255),
        **EXPAND,
    }
)


# -- building a session ----------------------------------------------------------------


def _line_item(item: dict[str, Any], param: str, now: int) -> dict[str, Any]:
    """One line item of Stripe's shape, from its checked parameters."""
    if item.get("price") is not None:
        price = require_object(Prices, item["price"], f"{param}[price]")
        if not price.get("active", True):
            raise invalid(
                f"The price specified ({item['price']}) is inactive. This field only accepts "
                "active prices.",
                f"{param}[price]",
            )
    else:
        price = inline_price(item["price_data"], f"{param}[price_data]", now)
    unit = price.get("unit_amount")
    if not isinstance(unit, int):
        raise invalid(
            f"The price {price.get('id')} has no integer unit_amount; papertiger sums integer "
            "amounts only.",
            f"{param}[price]",
        )
    quantity = item["quantity"]
    amount = unit * quantity
    description = None
    product_data = price.pop("product_data", None)
    if product_data is not None:
        description = product_data.get("name")
    elif isinstance(price.get("product"), str):
        try:
            description = Products.get(price["product"]).get("name")
        except NotFound:
            description = None
    adjustable = item.get("adjustable_quantity")
    return {
        "id": stripe_id("li"),
        "object": "item",
        "adjustable_quantity": adjustable,
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price.get("currency"),
        "description": description,
        "metadata": {},
        "price": price,
        "quantity": quantity,
    }


def _line_items(call: Call, mode: str) -> list[dict[str, Any]]:
    given = call.params.get("line_items") or []
    if mode == "setup":
        if given:
            raise invalid("You cannot pass `line_items` in `setup` mode.", "line_items")
        return []
    if not given:
        raise APIError(
            400,
            f"Missing required param: line_items. `line_items` is required in `{mode}` mode.",
            code="parameter_missing",
            param="line_items",
        )
    items = [_line_item(item, f"line_items[{i}]", call.now) for i, item in enumerate(given)]
    currency = items[0]["currency"]
    recurring = False
    for i, item in enumerate(items):
        if item["currency"] != currency:
            raise invalid(
                f"Line items must all use one currency: line_items[0] is in {currency}, "
                f"line_items[{i}] in {item['currency']}.",
                f"line_items[{i}]",
            )
        if item["price"].get("type") == "recurring":
            recurring = True
            if mode == "payment":
                raise invalid(
                    "You specified `payment` mode but passed a recurring price. Either switch "
                    "to `subscription` mode or use only one-time prices.",
                    f"line_items[{i}]",
                )
    if mode == "subscription" and not recurring:
        raise invalid(
            "You must provide at least one recurring price in `subscription` mode when using "
            "prices.",
            "line_items",
        )
    return items


def _expires_at(call: Call) -> int:
    given = call.params.get("expires_at")
    if given is None:
        return call.now + DEFAULT_LIFETIME
    if not call.now + MIN_LIFETIME <= given <= call.now + DEFAULT_LIFETIME:
        raise invalid(
            "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout "
            f"Session creation (between {call.now + MIN_LIFETIME} and "
            f"{call.now + DEFAULT_LIFETIME}); got {given}.",
            "expires_at",
            code="parameter_invalid_integer",
        )
    return int(given)


def _ui_mode(given: str | None) -> str:
    return {"hosted": "hosted_page", "embedded": "embedded_page"}.get(
        given or "hosted_page", given or "hosted_page"
    )


def new_session(call: Call) -> dict[str, Any]:
    """The session ``call`` creates, fully checked, not yet stored."""
    p = call.params
    mode = p["mode"]
    customer = p.get("customer")
    if customer is not None:
        require_object(Customers, customer, "customer")
    items = _line_items(call, mode)
    currency = items[0]["currency"] if items else p.get("currency")
    if items and p.get("currency") is not None and p["currency"] != currency:
        raise invalid(
            f"currency {p['currency']} does not match the line items' currency {currency}.",
            "currency",
        )
    subtotal = sum(item["amount_subtotal"] for item in items) if items else None
    if mode == "setup":
        payment_status = "no_payment_required"
    else:
        payment_status = "unpaid" if subtotal or mode == "subscription" else "no_payment_required"
    session_id = stripe_id("cs_test", 58)
    ui_mode = _ui_mode(p.get("ui_mode"))
    url = None
    if ui_mode == "hosted_page":
        url = call.base_url + hosted_page_path(namespace_token(call.namespace), session_id)
    enabled = {"enabled": False}
    session = {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": p.get("allow_promotion_codes"),
        "amount_subtotal": subtotal,
        "amount_total": subtotal,
        "automatic_tax": {
            "enabled": bool((p.get("automatic_tax") or {}).get("enabled")),
            "liability": None,
            "provider": None,
            "status": None,
        },
        "billing_address_collection": p.get("billing_address_collection"),
        "cancel_url": p.get("cancel_url"),
        "client_reference_id": p.get("client_reference_id"),
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": call.now,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_account": None,
        "customer_creation": p.get("customer_creation")
        or (None if customer or mode == "subscription" else "if_required"),
        "customer_details": None,
        "customer_email": p.get("customer_email"),
        "discounts": [],
        "excluded_payment_method_types": [],
        "expires_at": _expires_at(call),
        "integration_identifier": None,
        "invoice": None,
        "invoice_creation": None
        if mode != "payment"
        else {
            "enabled": bool((p.get("invoice_creation") or {}).get("enabled")),
            "invoice_data": {
                "account_tax_ids": None,
                "custom_fields": None,
                "description": None,
                "footer": None,
                "issuer": None,
                "metadata": {},
                "rendering_options": None,
            },
        },
        "line_items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "url": f"/v1/checkout/sessions/{session_id}/line_items",
        },
        "livemode": False,
        "locale": p.get("locale"),
        "managed_payments": None,
        "metadata": apply_metadata({}, p.get("metadata")),
        "mode": mode,
        "name_collection": {
            "business": {"enabled": False, "optional": False},
            "individual": {"enabled": False, "optional": False},
        },
        "optional_items": None,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "if_required" if mode != "payment" else None,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": p.get("payment_method_types") or ["card"],
        "payment_status": payment_status,
        "permissions": None,
        "phone_number_collection": {
            "enabled": bool((p.get("phone_number_collection") or {}).get("enabled"))
        },
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": p.get("shipping_address_collection"),
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": p.get("submit_type"),
        "subscription": None,
        "success_url": p.get("success_url"),
        "tax_id_collection": {
            "enabled": bool((p.get("tax_id_collection") or enabled).get("enabled")),
            "required": "never",
        },
        "total_details": None
        if subtotal is None
        else {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": ui_mode,
        "url": url,
        "wallet_options": None,
    }
    if p.get("return_url") is not None:  # embedded sessions only, as in Stripe
        session["return_url"] = p["return_url"]
    return session


# -- presenting ----------------------------------------------------------------------


def present(record: dict[str, Any]) -> dict[str, Any]:
    """The session as a response carries it: without ``line_items`` (they are expanded)."""
    record.pop("line_items", None)
    return record


def _line_items_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    items = record.get("line_items")
    if isinstance(items, dict):
        data = items.get("data")
        return data if isinstance(data, list) else []
    return items if isinstance(items, list) else []


def _expander(stored: dict[str, Any]) -> dict[str, Any]:
    def line_items(_: Any) -> dict[str, Any]:
        items = _line_items_of(stored)
        return {
            "object": "list",
            "data": items[:EXPANDED_LINE_ITEMS],
            "has_more": len(items) > EXPANDED_LINE_ITEMS,
            "url": f"/v1/checkout/sessions/{stored.get('id')}/line_items",
        }

    def customer(value: Any) -> Any:
        if isinstance(value, str):
            try:
                return Customers.get(value)
            except NotFound:
                return None
        return None

    return {"line_items": line_items, "customer": customer}


def _shown(stored: dict[str, Any], expand: list[str], on_list: bool = False) -> dict[str, Any]:
    """The response for ``stored``, with ``expand`` applied (``data.<field>`` on a list)."""
    expanders = _expander(stored)
    shown = present(dict(stored))
    if on_list:
        for i, path in enumerate(expand):
            if not path.startswith("data.") or path[5:] not in expanders:
                raise invalid(
                    f"This property cannot be expanded ({path}). On a list of sessions, expand "
                    "data.line_items or data.customer.",
                    f"expand[{i}]",
                )
        expand = [path[5:] for path in expand]
    expand_object(shown, expand, expanders)
    return shown


# -- status -------------------------------------------------------------------------

#: What every transition expects of the session: that it is still open.
STILL_OPEN: Mapping[str, Any] = MappingProxyType({"status": "open"})
#: The changes that expire a session (its hosted page goes away).
EXPIRE: Mapping[str, Any] = MappingProxyType({"status": "expired", "url": None})


def _not_open(status: object, what: str) -> APIError:
    """Stripe's answer to a transition of a session that is not open."""
    return APIError(
        400,
        f'Only Checkout Sessions with a status in ["open"] can be {what}. This Checkout '
        f'Session has a status of "{status}".',
        param=None,
    )


def _transition(session_id: str, changes: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Apply ``changes`` to the session if it is still open, atomically; the stored session.

    When another transition got there first, raises what :func:`_open_session`
    raises for a session that is not open (re-reading its status: nothing
    leaves ``complete`` or ``expired``, so it is the winner's).
    """
    try:
        return CheckoutSessions.patch(session_id, changes, expect=STILL_OPEN)
    except Conflict:
        raise _not_open(CheckoutSessions.get(session_id).get("status"), what) from None


def refresh_status(record: dict[str, Any], now: int) -> dict[str, Any]:
    """Expire an open session whose ``expires_at`` has passed (stored); return the record.

    If another transition (a Pay, an expire) got there first, the session as
    it left it.
    """
    expires_at = record.get("expires_at")
    if (
        record.get("status") == "open"
        and isinstance(expires_at, int)
        and expires_at <= now
        and isinstance(record.get("id"), str)
    ):
        try:
            return CheckoutSessions.patch(record["id"], EXPIRE, expect=STILL_OPEN)
        except Conflict:
            return CheckoutSessions.get(record["id"])
    return record


def _open_session(session_id: str, now: int, what: str) -> dict[str, Any]:
    record = refresh_status(CheckoutSessions.get(session_id), now)
    status = record.get("status")
    if status != "open":
        raise _not_open(status, what)
    return record


def complete_session(session_id: str, now: int, email: str | None = None) -> dict[str, Any]:
    """Pay an open session in the current namespace: what the hosted page's Pay does.

    The session becomes ``complete`` and ``paid`` (or stays
    ``no_payment_required``), gets a ``payment_intent`` (payment mode), a
    ``subscription`` (subscription mode) or a ``setup_intent`` (setup mode),
    and ``customer_details`` with ``email``.  A customer is created when the
    session has none and Stripe would create one (subscription mode, or
    ``customer_creation`` "always").  Raises :class:`~.errors.APIError` when
    the session is not open, also when another transition (an expire, another
    Pay) wins a race with this one; then the customer made for it is deleted.
    """
    record = _open_session(session_id, now, "completed")
    email = email or record.get("customer_email")
    customer = record.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    if email is None and isinstance(customer, str):
        try:
            email = Customers.get(customer).get("email")
        except NotFound:
            pass
    mode = record.get("mode")
    made_customer = None
    if customer is None and (mode == "subscription" or record.get("customer_creation") == "always"):
        customer = made_customer = Customers.insert(new_customer({"email": email}, now))["id"]
    changes: dict[str, Any] = {
        "status": "complete",
        "url": None,
        "customer": customer,
        "customer_details": {
            "address": None,
            "business_name": None,
            "email": email,
            "individual_name": None,
            "name": None,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        },
    }
    if record.get("payment_status") == "unpaid":
        changes["payment_status"] = "paid"
    if mode == "payment":
        changes["payment_intent"] = stripe_id("pi")
    elif mode == "subscription":
        changes["subscription"] = stripe_id("sub")
    elif mode == "setup":
        changes["setup_intent"] = stripe_id("seti")
    try:
        return _transition(session_id, changes, "completed")
    except (APIError, StoreError):
        if made_customer is not None:
            _forget_customer(made_customer)
        raise


def _forget_customer(customer_id: str) -> None:
    """Delete a customer made for a Pay that did not happen (best effort)."""
    try:
        Customers.delete(customer_id)
    except StoreError:
        pass


# -- handlers ------------------------------------------------------------------------


def create(call: Call) -> dict[str, Any]:
    stored = CheckoutSessions.insert(new_session(call))
    return _shown(stored, call.expand)


def retrieve(call: Call) -> dict[str, Any]:
    stored = refresh_status(CheckoutSessions.get(call.path["id"]), call.now)
    return _shown(stored, call.expand)


def update(call: Call) -> dict[str, Any]:
    session_id = call.path["id"]
    metadata = call.params.get("metadata")
    if metadata is None:
        stored = CheckoutSessions.get(session_id)
    else:
        stored = update_record(CheckoutSessions, session_id, {"metadata": metadata})
    return _shown(stored, call.expand)


def expire(call: Call) -> dict[str, Any]:
    session_id = call.path["id"]
    _open_session(session_id, call.now, "expired")
    stored = _transition(session_id, EXPIRE, "expired")
    return _shown(stored, call.expand)


def line_items(call: Call) -> dict[str, Any]:
    """A page of a session's line items, in the order they were given. O(items)."""
    session_id = call.path["id"]
    items = _line_items_of(CheckoutSessions.get(session_id))
    p = call.params
    limit = p.get("limit") or 10
    after, before = p.get("starting_after"), p.get("ending_before")
    if after is not None and before is not None:
        raise invalid(
            "Received both starting_after and ending_before parameters. Please pass in only one.",
            None,
        )
    ids = [item.get("id") for item in items]
    if after is not None or before is not None:
        cursor, name = (after, "starting_after") if after is not None else (before, "ending_before")
        if cursor not in ids:
            raise not_found("item", str(cursor), name, status=400)
        i = ids.index(cursor)
        if after is not None:
            data, has_more = items[i + 1 : i + 1 + limit], len(items) - (i + 1) > limit
        else:
            start = max(0, i - limit)
            data, has_more = items[start:i], start > 0
    else:
        data, has_more = items[:limit], len(items) > limit
    expand = call.expand
    for i, path in enumerate(expand):
        if path not in ("data.price.product",):
            raise invalid(
                f"This property cannot be expanded ({path}). Line items expand data.price.product.",
                f"expand[{i}]",
            )
    if expand:
        data = [dict(item) for item in data]
        for item in data:
            price = item.get("price")
            if isinstance(price, dict) and isinstance(price.get("product"), str):
                try:
                    item["price"] = {**price, "product": Products.get(price["product"])}
                except NotFound:
                    pass
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "url": f"/v1/checkout/sessions/{session_id}/line_items",
    }


def list_sessions(call: Call) -> dict[str, Any]:
    p = call.params
    _shown({}, call.expand, on_list=True)  # a bad expand is refused even on an empty page
    filters: dict[str, Any] = {
        name: p.get(name)
        for name in ("customer", "payment_intent", "payment_link", "status", "subscription")
    }
    details = p.get("customer_details")
    if details is not None:
        filters["customer_details.email"] = details["email"]
    unexpanded = dataclasses.replace(call, params={**p, "expand": []})
    result = page(CheckoutSessions, unexpanded, lambda r: r, {}, filters)
    result["data"] = [_shown(r, call.expand, on_list=True) for r in result["data"]]
    return result


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/checkout/sessions",
        CREATE,
        create,
        "create a session (line_items with price or price_data; amounts computed)",
    ),
    Endpoint(
        "GET",
        "/v1/checkout/sessions",
        LIST,
        list_sessions,
        "list sessions; filters: customer, customer_details[email], payment_intent, "
        "payment_link, status, subscription, created",
    ),
    Endpoint(
        "GET",
        "/v1/checkout/sessions/{id}",
        Hash(EXPAND),
        retrieve,
        "retrieve a session (expand[]=line_items, expand[]=customer)",
    ),
    Endpoint(
        "POST",
        "/v1/checkout/sessions/{id}",
        UPDATE,
        update,
        "update a session's metadata (an empty value removes a key)",
    ),
    Endpoint(
        "POST",
        "/v1/checkout/sessions/{id}/expire",
        Hash(EXPAND),
        expire,
        "expire an open session",
    ),
    Endpoint(
        "GET",
        "/v1/checkout/sessions/{id}/line_items",
        LINE_ITEMS_LIST,
        line_items,
        "list a session's line items (paginated)",
    ),
]
