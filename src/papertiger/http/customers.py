"""``/v1/customers``: create, retrieve, update, delete, list (``email``, ``created``)."""

from __future__ import annotations

import secrets
from typing import Any

from ..store import Customers
from .endpoints import (
    EXPAND,
    Call,
    Endpoint,
    apply_metadata,
    expand_object,
    list_params,
    page,
    stripe_id,
    update_record,
)
from .errors import invalid
from .params import Array, Hash, Integer, Metadata, Spec, String

__all__ = ["ENDPOINTS", "new_customer"]

#: Customer fields nothing can expand (yet): listed so ``expand[]=...`` says so clearly.
EXPANDERS: dict[str, Any] = {}


def _email(value: str, param: str) -> None:
    local, at, domain = value.partition("@")
    if not at or not local or "." not in domain or " " in value:
        raise invalid(f"Invalid email address: {value}", param, code="email_invalid")


ADDRESS = Hash(
    {
        name: String(max_length=200, unsettable=True)
        for name in ("city", "country", "line1", "line2", "postal_code", "state")
    },
    unsettable=True,
)
SHIPPING = Hash(
    {"address": ADDRESS, "name": String(), "phone": String(max_length=50, unsettable=True)},
    required=("address", "name"),
    unsettable=True,
)

#: Parameters of create and update (Stripe's, the ones papertiger keeps).
FIELDS: dict[str, Spec] = {
    "address": ADDRESS,
    "balance": Integer(),
    "description": String(max_length=350, unsettable=True),
    "email": String(max_length=512, unsettable=True, check=_email),
    "invoice_prefix": String(max_length=12, unsettable=True),
    "metadata": Metadata(),
    "name": String(max_length=256, unsettable=True),
    "phone": String(max_length=20, unsettable=True),
    "preferred_locales": Array(String(max_length=20), max_items=10, unsettable=True),
    "shipping": SHIPPING,
    "tax_exempt": String(("none", "exempt", "reverse"), unsettable=True),
    **EXPAND,
}


def new_customer(params: dict[str, Any], now: int) -> dict[str, Any]:
    """A customer as Stripe creates it from ``params`` (every field present). Pure."""
    return {
        "id": stripe_id("cus", 14),
        "object": "customer",
        "address": params.get("address"),
        "balance": params.get("balance") or 0,
        "created": now,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": params.get("description"),
        "discount": None,
        "email": params.get("email"),
        "invoice_prefix": params.get("invoice_prefix") or secrets.token_hex(4).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": apply_metadata({}, params.get("metadata")),
        "name": params.get("name"),
        "next_invoice_sequence": 1,
        "phone": params.get("phone"),
        "preferred_locales": params.get("preferred_locales") or [],
        "shipping": params.get("shipping"),
        "tax_exempt": params.get("tax_exempt") or "none",
        "test_clock": None,
    }


def present(record: dict[str, Any]) -> dict[str, Any]:
    return record


def create(call: Call) -> dict[str, Any]:
    record = Customers.insert(new_customer(call.params, call.now))
    expand_object(record, call.expand, EXPANDERS)
    return record


def retrieve(call: Call) -> dict[str, Any]:
    record = present(Customers.get(call.path["id"]))
    expand_object(record, call.expand, EXPANDERS)
    return record


def update(call: Call) -> dict[str, Any]:
    record = update_record(Customers, call.path["id"], call.params)
    expand_object(record, call.expand, EXPANDERS)
    return record


def delete(call: Call) -> dict[str, Any]:
    return Customers.delete(call.path["id"])


def list_customers(call: Call) -> dict[str, Any]:
    return page(Customers, call, present, EXPANDERS, {"email": call.params.get("email")})


ENDPOINTS = [
    Endpoint("POST", "/v1/customers", Hash(FIELDS), create, "create a customer"),
    Endpoint(
        "GET",
        "/v1/customers",
        list_params(email=String(max_length=512)),
        list_customers,
        "list customers, newest first; filters: email, created",
    ),
    Endpoint("GET", "/v1/customers/{id}", Hash(EXPAND), retrieve, "retrieve a customer"),
    Endpoint(
        "POST",
        "/v1/customers/{id}",
        Hash(FIELDS),
        update,
        "update a customer (metadata: an empty value removes a key)",
    ),
    Endpoint("DELETE", "/v1/customers/{id}", Hash({}), delete, "delete a customer"),
]
