"""``auto_paging_iter`` over 1,000 sessions with one ``created``; writers in 4 processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest
import stripe

from papertiger.store import CheckoutSessions, Customers

CREATED = 1_767_312_000


@pytest.fixture
def thousand(papertiger_stripe: Any) -> list[str]:
    """1,000 sessions with equal ``created``, seeded through the store; ids newest first."""
    seeded = CheckoutSessions.insert_many(
        {"created": CREATED, "status": "open", "customer": f"cus_{i % 3}", "n": i}
        for i in range(1000)
    )
    return [record["id"] for record in reversed(seeded)]  # later insert first, as Stripe lists


@pytest.mark.parametrize("limit", [100, 7])
def test_forward_every_session_once_in_order(client: Any, thousand: list[str], limit: int) -> None:
    first = client.v1.checkout.sessions.list({"limit": limit})
    seen = [s.id for s in first.auto_paging_iter()]
    assert len(seen) == len(set(seen)) == 1000
    assert seen == thousand


@pytest.mark.parametrize("limit", [100, 7])
def test_backward_every_session_once_in_order(client: Any, thousand: list[str], limit: int) -> None:
    oldest = thousand[-1]
    first = client.v1.checkout.sessions.list({"limit": limit, "ending_before": oldest})
    seen = [s.id for s in first.auto_paging_iter()]
    assert seen == list(reversed(thousand[:-1]))  # oldest to newest, each once


def test_paging_with_a_filter_and_the_global_api(
    papertiger_stripe: Any, thousand: list[str]
) -> None:
    expected = [sid for sid, n in zip(thousand, range(999, -1, -1), strict=True) if n % 3 == 1]
    listed = stripe.checkout.Session.list(customer="cus_1", limit=10)
    assert [s.id for s in listed.auto_paging_iter()] == expected
    created = stripe.checkout.Session.list(created={"gte": CREATED, "lte": CREATED}, limit=50)
    assert sum(1 for _ in created.auto_paging_iter()) == 1000
    assert stripe.checkout.Session.list(created={"gt": CREATED}).data == []


WRITER = textwrap.dedent(
    """
    import json, sys, stripe
    url, key, n, idem = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    client = stripe.StripeClient(key, base_addresses={"api": url}, max_network_retries=10)
    ids = []
    for i in range(n):
        options = {"idempotency_key": idem} if idem else {}
        session = client.v1.checkout.sessions.create(
            {
                "mode": "payment",
                "line_items": [
                    {"price_data": {"currency": "usd", "unit_amount": 100 + i,
                                    "product_data": {"name": f"item {i}"}}, "quantity": 1}
                ],
                # one key, one request: the same parameters from every writer
                "metadata": {"writer": "any" if idem else sys.argv[5], "i": str(i)},
            },
            options,
        )
        ids.append(session.id)
    print(json.dumps(ids))
    """
)


def _writers(api: Any, count: int, per_writer: int, idem: str = "") -> list[list[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, api.url, api.api_key, str(per_writer), idem, str(w)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(count)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def test_four_processes_create_sessions_none_lost(papertiger_stripe: Any) -> None:
    results = _writers(papertiger_stripe, 4, 25)
    made = [sid for ids in results for sid in ids]
    assert len(made) == len(set(made)) == 100
    listed = [s.id for s in papertiger_stripe.client.v1.checkout.sessions.list().auto_paging_iter()]
    assert sorted(listed) == sorted(made)
    assert CheckoutSessions.count() == 100
    for w, ids in enumerate(results):  # each writer's sessions are its own, in its order
        got = [CheckoutSessions.get(sid)["metadata"] for sid in ids]
        assert got == [{"writer": str(w), "i": str(i)} for i in range(25)]


def test_one_idempotency_key_from_four_processes_creates_one_session(
    papertiger_stripe: Any,
) -> None:
    results = _writers(papertiger_stripe, 4, 1, idem=str(uuid.uuid4()))
    assert len({ids[0] for ids in results}) == 1
    assert CheckoutSessions.count() == 1


def test_concurrent_updates_of_one_customer_keep_every_key(papertiger_stripe: Any) -> None:
    customer = papertiger_stripe.client.v1.customers.create({"email": "c@example.com"})
    code = textwrap.dedent(
        """
        import sys, stripe
        url, key, cid, w = sys.argv[1:5]
        client = stripe.StripeClient(key, base_addresses={"api": url})
        for i in range(20):
            client.v1.customers.update(cid, {"metadata": {f"w{w}_{i}": "x"}})
        """
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                papertiger_stripe.url,
                papertiger_stripe.api_key,
                customer.id,
                str(w),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(Customers.get(customer.id)["metadata"]) == 80
