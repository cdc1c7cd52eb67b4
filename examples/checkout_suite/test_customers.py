from __future__ import annotations

import pytest
from shop import new_customer

import papertiger
from papertiger.store import Customers

N = 20


@pytest.mark.parametrize("n", range(N))
def test_create_and_get(n: int) -> None:
    # every test uses the same ids; namespaces keep parallel tests apart
    created = new_customer(n)
    assert Customers.get(created["id"]) == created
    assert Customers.count() == 1


@pytest.mark.parametrize("n", range(N))
def test_same_id_twice_is_refused(n: int) -> None:
    new_customer(n)
    with pytest.raises(papertiger.AlreadyExists):
        new_customer(n)


@pytest.mark.parametrize("n", range(N))
def test_find_by_email(n: int) -> None:
    new_customer(n)
    new_customer(n + 1000, email=f"reader{n}@example.com")
    found = Customers.find_by_email(f"reader{n}@example.com")
    assert [c["id"] for c in found] == [f"cus_shop{n + 1000:04d}", f"cus_shop{n:04d}"]


@pytest.mark.parametrize("n", range(N))
def test_patch_metadata_merges(n: int) -> None:
    new_customer(n, metadata={"tier": "gold"})
    merged = Customers.patch(f"cus_shop{n:04d}", {"metadata": {"visits": str(n)}})
    assert merged["metadata"] == {"tier": "gold", "visits": str(n)}


@pytest.mark.parametrize("n", range(N))
def test_delete(n: int) -> None:
    new_customer(n)
    assert Customers.delete(f"cus_shop{n:04d}")["deleted"] is True
    with pytest.raises(papertiger.NotFound):
        Customers.get(f"cus_shop{n:04d}")
    assert Customers.count() == 0
