"""Benchmark records: the 4 KB checkout session, varied per record, made fast.

:func:`checkout_sessions` yields exactly what
:func:`papertiger.fixtures.vary_checkout_session` returns for the same ``n``
(a test checks it), but shares the unchanged nested objects of one template
instead of deep-copying the fixture: about 3 µs a record instead of 60, which
is what makes seeding a million records affordable.  Nothing here mutates a
record, and every system packs or pickles what it stores, so the sharing is
invisible to the stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from ..fixtures import checkout_session

__all__ = ["checkout_sessions"]


@cache
def _template() -> dict[str, Any]:
    record = checkout_session()
    record.pop("id", None)
    record.pop("created", None)
    return record


def checkout_sessions(start: int, count: int, *, customers: int = 100) -> Iterator[dict[str, Any]]:
    """Records ``start .. start+count-1`` of the shape, without ``id``. O(1) each."""
    template = _template()
    details = template.get("customer_details")
    for n in range(start, start + count):
        record = dict(template)
        amount = 1000 + (n * 37) % 9000
        record["amount_subtotal"] = record["amount_total"] = amount
        record["customer"] = f"cus_{n % customers:014d}"
        if isinstance(details, dict):
            record["customer_details"] = {**details, "email": f"buyer{n}@example.com"}
        record["client_reference_id"] = f"order-{n}"
        record["metadata"] = {"order": str(n)}
        yield record
