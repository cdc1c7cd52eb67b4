"""The first thing a user tries, on every backend."""

from __future__ import annotations

import papertiger
from papertiger.store import CheckoutSessions


def test_insert_get_roundtrip(fresh_namespace: str) -> None:
    s = CheckoutSessions.insert({"customer": "cus_1", "amount_total": 4998})
    assert s["id"].startswith("cs_")
    assert CheckoutSessions.get(s["id"]) == s
    assert CheckoutSessions.count() == 1
    with papertiger.use_namespace("elsewhere"):
        assert CheckoutSessions.count() == 0
