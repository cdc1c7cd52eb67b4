"""Stripe's bracket encoding: decoded exactly as stripe-python encodes it, or refused."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stripe._encode import _api_encode

from papertiger.http.forms import MAX_DEPTH, FormError, decode_form


def stripe_encode(params: dict[str, Any]) -> str:
    """What stripe-python puts on the wire (its encoder, its bracket un-escaping)."""
    text = urlencode(list(_api_encode(params)))
    return text.replace("%5B", "[").replace("%5D", "]")


def as_strings(value: Any) -> Any:
    """``params`` as the server sees it: every leaf a string, booleans as true/false.

    stripe-python's quirks included: a boolean item of a list is written True/False,
    and a list inside a list is encoded as a hash of its indices (so its own
    boolean items are true/false again).
    """
    if isinstance(value, dict):
        return {k: as_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [
            str(v)
            if isinstance(v, bool)
            else [as_strings(x) for x in v]
            if isinstance(v, list)
            else as_strings(v)
            for v in value
        ]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def test_the_shapes_stripe_sends() -> None:
    params = {
        "mode": "payment",
        "line_items": [
            {"price": "price_1", "quantity": 2},
            {"price_data": {"currency": "usd", "unit_amount": 500, "product_data": {"name": "A"}}},
        ],
        "metadata": {"order": "42", "note": "a & b = c [x]"},
        "expand": ["line_items", "customer"],
        "created": {"gte": 1700000000},
        "allow_promotion_codes": True,
    }
    assert decode_form(stripe_encode(params)) == as_strings(params)


def test_empty_values_and_appends() -> None:
    assert decode_form("metadata=") == {"metadata": ""}
    assert decode_form("metadata[a]=&metadata[b]=2") == {"metadata": {"a": "", "b": "2"}}
    assert decode_form("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}
    assert decode_form("a=1&&b=2") == {"a": "1", "b": "2"}
    assert decode_form(b"") == {}
    assert decode_form("k=%E2%9C%93+ok") == {"k": "\u2713 ok"}


def test_long_lists_stay_lists() -> None:
    params = {"line_items": [{"price": f"price_{i}", "quantity": 1} for i in range(100)]}
    decoded = decode_form(stripe_encode(params))
    assert isinstance(decoded["line_items"], list)
    assert [item["price"] for item in decoded["line_items"]] == [f"price_{i}" for i in range(100)]


def test_indices_in_any_order() -> None:
    assert decode_form("a[1]=y&a[0]=x") == {"a": ["x", "y"]}


@pytest.mark.parametrize(
    ("text", "param"),
    [
        ("a[1]=x", "a"),  # a gap: a[0] missing
        ("a=1&a=2", "a"),  # twice
        ("a=1&a[b]=2", "a"),  # value and hash
        ("a[b]=1&a=2", "a"),
        ("a[0]=x&a[b]=y", "a"),  # list and hash
        ("a[b=1", "a[b"),  # unbalanced
        ("a]=1", "a]"),
        ("a[b]x=1", "a[b]x"),
        ("[a]=1", "[a]"),
        ("a[01]=x", "a[01]"),  # leading zero
        ("a[]=x&a[0]=y", "a"),  # append mixed with indices
        ("a" + "[b]" * MAX_DEPTH + "=1", "a" + "[b]" * MAX_DEPTH),
    ],
)
def test_malformed_names_the_parameter(text: str, param: str) -> None:
    with pytest.raises(FormError) as info:
        decode_form(text)
    assert info.value.param == param
    assert param.split("[")[0] in info.value.message or "name" in info.value.message


def test_bytes_that_are_not_text() -> None:
    with pytest.raises(FormError, match="UTF-8"):
        decode_form("name=%FF%FE")
    with pytest.raises(FormError, match="ASCII"):
        decode_form("name=\xe9".encode("latin-1"))


keys = st.text(st.characters(codec="utf-8", exclude_characters="[]"), min_size=1, max_size=8)
leaves = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=12),
    st.integers(-(2**40), 2**40),
    st.booleans(),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4),
        st.dictionaries(keys, inner, min_size=1, max_size=4),
    ),
    max_leaves=12,
)


def _encodable(value: Any) -> bool:
    """stripe-python drops None and writes nested empty containers as nothing: skip those."""
    if isinstance(value, dict):
        return bool(value) and all(_encodable(v) for v in value.values())
    if isinstance(value, list):
        return bool(value) and all(_encodable(v) for v in value)
    return True


@given(st.dictionaries(keys, values, min_size=1, max_size=5))
def test_decodes_whatever_stripe_python_encodes(params: dict[str, Any]) -> None:
    if not _encodable(params) or any(k.isdigit() for k in _all_keys(params)):
        return
    assert decode_form(stripe_encode(params)) == as_strings(params)


def _all_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _all_keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _all_keys(v)]
    return []
