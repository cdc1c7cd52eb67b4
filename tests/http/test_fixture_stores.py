"""``papertiger_stripe`` over a store the run does not own (a manager given by address)."""

from __future__ import annotations

import textwrap

import pytest

import papertiger
from papertiger.store import Customers
from stripe_support import http_servers_of
from support import wait_dead

pytest_plugins = ["pytester"]

INNER = textwrap.dedent(
    """
    import stripe
    from papertiger.store import Customers

    def test_one(papertiger_stripe):
        made = papertiger_stripe.client.v1.customers.create({"email": "one@example.com"})
        assert Customers.get(made.id)["email"] == "one@example.com"

    def test_two(papertiger_stripe):
        assert stripe.Customer.list().data == []
        stripe.Customer.create(email="two@example.com")
    """
)


def test_fixture_with_a_given_manager(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PAPERTIGER_ADDRESS", "PAPERTIGER_AUTHKEY", "PAPERTIGER_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_inner=INNER)
    with papertiger.serve() as server:
        result = pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            "--papertiger-address",
            server.address,
            "--papertiger-authkey",
            server.authkey.hex(),
            timeout=180,
        )
        result.assert_outcomes(passed=2)
        # the run cleared what its tests wrote (keys included), and its HTTP server is gone
        tables = server.stats()["tables"]
        left = {
            name: [ns for ns in info["namespaces"] if "pytest-" in ns]
            for name, info in tables.items()
        }
        assert not any(left.values()), left
        for pid in http_servers_of(server.address):
            wait_dead(pid)
        assert not http_servers_of(server.address)
        assert Customers.count() == 0
