"""``/v1/products`` and ``/v1/prices``: create, retrieve, update, list.

Prices are what checkout line items name (``line_items[i][price]``) or
describe inline (``price_data``, built by :func:`inline_price` here too).
"""

from __future__ import annotations

from typing import Any

from ..store import Prices, Products
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
from .errors import invalid
from .params import (
    Array,
    Boolean,
    Decimal,
    Hash,
    Integer,
    Metadata,
    Spec,
    String,
    exclusive,
)

__all__ = ["ENDPOINTS", "PRICE_DATA", "inline_price", "new_price"]

_MAX_AMOUNT = 99_999_999_999


def _currency(value: str, param: str) -> None:
    if len(value) != 3 or not value.isascii() or not value.isalpha():
        raise invalid(
            f"Invalid currency: {value}. Use a three-letter ISO code in lowercase, such as usd.",
            param,
        )


CURRENCY = String(max_length=3, check=_currency)
RECURRING = Hash(
    {
        "interval": String(("day", "week", "month", "year")),
        "interval_count": Integer(1, 365),
        "usage_type": String(("licensed", "metered")),
        "trial_period_days": Integer(0, 730),
    },
    required=("interval",),
)
TAX_BEHAVIOR = String(("exclusive", "inclusive", "unspecified"))

PRODUCT_DATA = Hash(
    {
        "name": String(max_length=250),
        "active": Boolean(),
        "description": String(max_length=40000),
        "images": Array(String(max_length=2048), max_items=8),
        "metadata": Metadata(),
        "statement_descriptor": String(max_length=22),
        "tax_code": String(),
        "unit_label": String(max_length=12),
    },
    required=("name",),
)

_AMOUNT_FIELDS: dict[str, Spec] = {
    "unit_amount": Integer(0, _MAX_AMOUNT),
    "unit_amount_decimal": Decimal(),
}

#: ``price_data`` of a checkout line item (Stripe's, without tiers).
PRICE_DATA = Hash(
    {
        "currency": CURRENCY,
        "product": String(max_length=255),
        "product_data": PRODUCT_DATA,
        "recurring": RECURRING,
        "tax_behavior": TAX_BEHAVIOR,
        **_AMOUNT_FIELDS,
    },
    required=("currency",),
    rules=(
        exclusive("product", "product_data", one_required=True),
        exclusive("unit_amount", "unit_amount_decimal", one_required=True),
    ),
)


def _product_object(params: dict[str, Any], now: int) -> dict[str, Any]:
    return {
        "id": params.get("id") or stripe_id("prod", 14),
        "object": "product",
        "active": params.get("active", True),
        "created": now,
        "default_price": None,
        "description": params.get("description"),
        "images": params.get("images") or [],
        "livemode": False,
        "marketing_features": [],
        "metadata": apply_metadata({}, params.get("metadata")),
        "name": params["name"],
        "package_dimensions": None,
        "shippable": params.get("shippable"),
        "statement_descriptor": params.get("statement_descriptor"),
        "tax_code": params.get("tax_code"),
        "type": "service",
        "unit_label": params.get("unit_label"),
        "updated": now,
        "url": params.get("url"),
    }


def new_price(params: dict[str, Any], product: str, now: int) -> dict[str, Any]:
    """A price as Stripe creates it (every field present). Pure.

    >>> p = new_price({"currency": "usd", "unit_amount": 2499}, "prod_1", 7)
    >>> p["type"], p["unit_amount_decimal"], p["recurring"]
    ('one_time', '2499', None)
    """
    recurring = params.get("recurring")
    if recurring is not None:
        recurring = {
            "interval": recurring["interval"],
            "interval_count": recurring.get("interval_count") or 1,
            "meter": None,
            "trial_period_days": recurring.get("trial_period_days"),
            "usage_type": recurring.get("usage_type") or "licensed",
        }
    amount = params.get("unit_amount")
    decimal = params.get("unit_amount_decimal")
    if amount is None and decimal is not None and "." not in decimal:
        amount = int(decimal)
    return {
        "id": stripe_id("price"),
        "object": "price",
        "active": params.get("active", True),
        "billing_scheme": "per_unit",
        "created": now,
        "currency": params["currency"],
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": params.get("lookup_key"),
        "metadata": apply_metadata({}, params.get("metadata")),
        "nickname": params.get("nickname"),
        "product": product,
        "recurring": recurring,
        "tax_behavior": params.get("tax_behavior") or "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "one_time" if recurring is None else "recurring",
        "unit_amount": amount,
        "unit_amount_decimal": decimal if decimal is not None else str(amount),
    }


def inline_price(price_data: dict[str, Any], param: str, now: int) -> dict[str, Any]:
    """The price a line item's ``price_data`` describes (not stored on its own, as in Stripe).

    ``product`` must name a stored product; ``product_data`` makes an inline one.
    """
    product = price_data.get("product")
    if product is not None:
        require_object(Products, product, f"{param}[product]")
    else:
        product = stripe_id("prod", 14)
    price = new_price(price_data, product, now)
    price["active"] = False  # Stripe's inline prices cannot be reused
    product_data = price_data.get("product_data")
    if product_data is not None:
        price["product_data"] = _product_object({**product_data, "id": product}, now)
    return price


# -- products -----------------------------------------------------------------------

PRODUCT_FIELDS: dict[str, Spec] = {
    "name": String(max_length=250),
    "active": Boolean(),
    "description": String(max_length=40000, unsettable=True),
    "images": Array(String(max_length=2048), max_items=8, unsettable=True),
    "metadata": Metadata(),
    "shippable": Boolean(),
    "statement_descriptor": String(max_length=22, unsettable=True),
    "tax_code": String(unsettable=True),
    "unit_label": String(max_length=12, unsettable=True),
    "url": String(max_length=5000, unsettable=True),
    **EXPAND,
}

DEFAULT_PRICE_DATA = Hash(
    {"currency": CURRENCY, "recurring": RECURRING, "tax_behavior": TAX_BEHAVIOR, **_AMOUNT_FIELDS},
    required=("currency",),
    rules=(exclusive("unit_amount", "unit_amount_decimal", one_required=True),),
)


def _expand_default_price(value: Any) -> Any:
    return Prices.get(value) if isinstance(value, str) else None


PRODUCT_EXPANDERS = {"default_price": _expand_default_price}


def create_product(call: Call) -> dict[str, Any]:
    params = call.params
    product = _product_object(params, call.now)
    price_data = params.get("default_price_data")
    if price_data is None:
        record = Products.insert(product)
    else:
        price = new_price(price_data, product["id"], call.now)
        product["default_price"] = price["id"]
        record = Products.insert(product)
        Prices.insert(price)
    expand_object(record, call.expand, PRODUCT_EXPANDERS)
    return record


def retrieve_product(call: Call) -> dict[str, Any]:
    record = Products.get(call.path["id"])
    expand_object(record, call.expand, PRODUCT_EXPANDERS)
    return record


def update_product(call: Call) -> dict[str, Any]:
    product_id = call.path["id"]
    params = dict(call.params)
    default_price = params.get("default_price")
    if default_price is not None:
        price = require_object(Prices, default_price, "default_price")
        if price.get("product") != product_id:
            raise invalid(
                f"The price {default_price} belongs to product {price.get('product')}, not "
                f"{product_id}; a product's default_price must be one of its own prices.",
                "default_price",
            )
    Products.get(product_id)  # 404 before anything changes
    params["updated"] = call.now
    record = update_record(Products, product_id, params)
    expand_object(record, call.expand, PRODUCT_EXPANDERS)
    return record


def list_products(call: Call) -> dict[str, Any]:
    p = call.params
    filters = {name: p.get(name) for name in ("active", "shippable", "url")}
    return page(Products, call, lambda r: r, PRODUCT_EXPANDERS, filters)


# -- prices -------------------------------------------------------------------------

PRICE_UPDATE_FIELDS: dict[str, Spec] = {
    "active": Boolean(),
    "lookup_key": String(max_length=200, unsettable=True),
    "metadata": Metadata(),
    "nickname": String(max_length=5000, unsettable=True),
    "tax_behavior": TAX_BEHAVIOR,
    "transfer_lookup_key": Boolean(),
    **EXPAND,
}

PRICE_CREATE = Hash(
    {
        **PRICE_UPDATE_FIELDS,
        "currency": CURRENCY,
        "product": String(max_length=255),
        "product_data": PRODUCT_DATA,
        "recurring": RECURRING,
        "billing_scheme": String(("per_unit",)),
        **_AMOUNT_FIELDS,
    },
    required=("currency",),
    rules=(
        exclusive("product", "product_data", one_required=True),
        exclusive("unit_amount", "unit_amount_decimal", one_required=True),
    ),
)


def _expand_product(value: Any) -> Any:
    return Products.get(value) if isinstance(value, str) else None


PRICE_EXPANDERS = {"product": _expand_product}


def create_price(call: Call) -> dict[str, Any]:
    params = call.params
    product_data = params.get("product_data")
    if product_data is not None:
        product = _product_object(product_data, call.now)
        price = new_price(params, product["id"], call.now)
        Products.insert(product)
    else:
        product_id = params["product"]
        require_object(Products, product_id, "product")
        price = new_price(params, product_id, call.now)
    record = Prices.insert(price)
    expand_object(record, call.expand, PRICE_EXPANDERS)
    return record


def retrieve_price(call: Call) -> dict[str, Any]:
    record = Prices.get(call.path["id"])
    expand_object(record, call.expand, PRICE_EXPANDERS)
    return record


def update_price(call: Call) -> dict[str, Any]:
    params = {k: v for k, v in call.params.items() if k != "transfer_lookup_key"}
    record = update_record(Prices, call.path["id"], params)
    expand_object(record, call.expand, PRICE_EXPANDERS)
    return record


def list_prices(call: Call) -> dict[str, Any]:
    p = call.params
    filters = {name: p.get(name) for name in ("active", "currency", "product", "type")}
    return page(Prices, call, lambda r: r, PRICE_EXPANDERS, filters)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/products",
        Hash(
            {
                **PRODUCT_FIELDS,
                "id": String(max_length=255),
                "default_price_data": DEFAULT_PRICE_DATA,
            },
            required=("name",),
        ),
        create_product,
        "create a product (with default_price_data: and its price)",
    ),
    Endpoint(
        "GET",
        "/v1/products",
        list_params(active=Boolean(), shippable=Boolean(), url=String()),
        list_products,
        "list products; filters: active, shippable, url, created",
    ),
    Endpoint("GET", "/v1/products/{id}", Hash(EXPAND), retrieve_product, "retrieve a product"),
    Endpoint(
        "POST",
        "/v1/products/{id}",
        Hash({**PRODUCT_FIELDS, "default_price": String(max_length=255)}),
        update_product,
        "update a product",
    ),
    Endpoint("POST", "/v1/prices", PRICE_CREATE, create_price, "create a price"),
    Endpoint(
        "GET",
        "/v1/prices",
        list_params(
            active=Boolean(),
            currency=CURRENCY,
            product=String(max_length=255),
            type=String(("one_time", "recurring")),
        ),
        list_prices,
        "list prices; filters: active, currency, product, type, created",
    ),
    Endpoint("GET", "/v1/prices/{id}", Hash(EXPAND), retrieve_price, "retrieve a price"),
    Endpoint("POST", "/v1/prices/{id}", Hash(PRICE_UPDATE_FIELDS), update_price, "update a price"),
]
