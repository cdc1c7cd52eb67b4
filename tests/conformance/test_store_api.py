"""The Store API's semantics, on every backend (``fresh_namespace`` takes ``backend``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import papertiger
from papertiger import AlreadyExists, InvalidRequest, NotFound, Store, StoreError
from papertiger.store import CheckoutSessions, Customers


class Invoices(Store):
    """A user-defined resource with its own indexes."""

    table_name = "test_invoices"
    resource = "invoice"
    prefix = "in"
    url = "/v1/invoices"
    indexes = ("customer", "subscription")


# -- strict writes -----------------------------------------------------------------------


def test_insert_of_an_existing_id_is_refused(fresh_namespace: str) -> None:
    s = CheckoutSessions.insert({"amount_total": 1})
    with pytest.raises(AlreadyExists) as info:
        CheckoutSessions.insert({"id": s["id"], "amount_total": 2})
    assert info.value.param == "id" and s["id"] in info.value.message
    assert "upsert" in info.value.message  # says what to do instead
    assert CheckoutSessions.get(s["id"])["amount_total"] == 1


def test_update_delete_patch_of_a_missing_id_are_not_found(fresh_namespace: str) -> None:
    calls: list[Callable[[], Any]] = [
        lambda: CheckoutSessions.update({"id": "cs_missing", "amount_total": 1}),
        lambda: CheckoutSessions.delete("cs_missing"),
        lambda: CheckoutSessions.patch("cs_missing", {"amount_total": 1}),
        lambda: CheckoutSessions.get("cs_missing"),
    ]
    for call in calls:
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.param == "id" and "cs_missing" in info.value.message
        assert isinstance(info.value, KeyError) and isinstance(info.value, StoreError)
        assert info.value.to_dict()["error"]["code"] == "resource_missing"
    assert CheckoutSessions.count() == 0


def test_update_replaces_the_whole_record(fresh_namespace: str) -> None:
    s = CheckoutSessions.insert({"amount_total": 1, "metadata": {"a": "1"}})
    new = CheckoutSessions.update({"id": s["id"], "created": s["created"], "currency": "eur"})
    got = CheckoutSessions.get(s["id"])
    assert got == new and "amount_total" not in got and "metadata" not in got


def test_upsert_inserts_then_replaces(fresh_namespace: str) -> None:
    first = CheckoutSessions.upsert({"id": "cs_up", "amount_total": 1})
    assert CheckoutSessions.get("cs_up") == first and CheckoutSessions.count() == 1
    second = CheckoutSessions.upsert({"id": "cs_up", "amount_total": 2})
    assert CheckoutSessions.get("cs_up") == second and CheckoutSessions.count() == 1
    generated = CheckoutSessions.upsert({"amount_total": 3})
    assert generated["id"].startswith("cs_") and CheckoutSessions.count() == 2


def test_replacing_keeps_the_insertion_rank(fresh_namespace: str) -> None:
    a = CheckoutSessions.insert({"created": 5})
    b = CheckoutSessions.insert({"created": 5})
    c = CheckoutSessions.insert({"created": 5})
    CheckoutSessions.update({"id": a["id"], "created": 5, "v": 1})
    CheckoutSessions.patch(b["id"], {"v": 2})
    assert [r["id"] for r in CheckoutSessions.list()] == [c["id"], b["id"], a["id"]]
    CheckoutSessions.patch(a["id"], {"created": 6})  # a new created moves it
    assert [r["id"] for r in CheckoutSessions.list()] == [a["id"], c["id"], b["id"]]


def test_delete_returns_the_stripe_stub(fresh_namespace: str) -> None:
    s = CheckoutSessions.insert({})
    assert CheckoutSessions.delete(s["id"]) == {
        "id": s["id"],
        "object": "checkout.session",
        "deleted": True,
    }
    with pytest.raises(NotFound):
        CheckoutSessions.get(s["id"])
    with pytest.raises(NotFound):
        CheckoutSessions.delete(s["id"])
    again = CheckoutSessions.insert({"id": s["id"]})  # the id is free again
    assert CheckoutSessions.get(s["id"]) == again


# -- patch ---------------------------------------------------------------------------------


def test_patch_merges_nested_dicts(fresh_namespace: str) -> None:
    s = CheckoutSessions.insert(
        {
            "amount_total": 1,
            "metadata": {"a": "1", "deep": {"x": 1, "y": 2}},
            "shipping": {"name": "A"},
            "items": [1, 2],
        }
    )
    merged = CheckoutSessions.patch(
        s["id"],
        {
            "metadata": {"b": "2", "deep": {"y": 3}},
            "shipping": None,
            "items": [3],
            "status": "complete",
        },
    )
    expected = {
        **s,
        "metadata": {"a": "1", "b": "2", "deep": {"x": 1, "y": 3}},
        "shipping": None,
        "items": [3],
        "status": "complete",
    }
    assert merged == expected
    assert CheckoutSessions.get(s["id"]) == expected
    # a dict replaces a non-dict value, and a value replaces a dict
    CheckoutSessions.patch(s["id"], {"items": {"k": 1}, "metadata": "flat"})
    got = CheckoutSessions.get(s["id"])
    assert got["items"] == {"k": 1} and got["metadata"] == "flat"


def test_patch_updates_the_indexes(fresh_namespace: str) -> None:
    s = CheckoutSessions.insert({"customer": "cus_old"})
    CheckoutSessions.patch(s["id"], {"customer": "cus_new"})
    assert CheckoutSessions.find_by_customer("cus_old") == []
    assert [r["id"] for r in CheckoutSessions.find_by_customer("cus_new")] == [s["id"]]
    CheckoutSessions.patch(s["id"], {"customer": None})
    assert CheckoutSessions.find_by_customer("cus_new") == []


def test_patch_with_the_same_id_is_allowed(fresh_namespace: str) -> None:
    s = CheckoutSessions.insert({})
    assert CheckoutSessions.patch(s["id"], {"id": s["id"], "v": 1})["v"] == 1


# -- fresh objects -------------------------------------------------------------------------


def test_every_read_returns_a_fresh_object(fresh_namespace: str) -> None:
    original = {"customer": "cus_1", "metadata": {"k": "v"}, "line_items": [{"p": 1}]}
    made = CheckoutSessions.insert(original)
    rid = made["id"]
    stored = CheckoutSessions.get(rid)
    reads: list[Any] = [
        made,
        original,
        CheckoutSessions.get(rid),
        CheckoutSessions.list().data[0],
        CheckoutSessions.list_namespace()[0],
        CheckoutSessions.find_by_customer("cus_1")[0],
        CheckoutSessions.patch(rid, {"x": 1}),
    ]
    stored["x"] = 1
    assert CheckoutSessions.get(rid) is not CheckoutSessions.get(rid)
    for record in reads:
        record["metadata"]["k"] = "changed"
        record["line_items"][0]["p"] = 99
        record["line_items"].append("junk")
        record["amount_total"] = -1
        record.pop("customer", None)
        assert CheckoutSessions.get(rid) == stored
    page = CheckoutSessions.list()
    page.data.clear()
    assert len(CheckoutSessions.list()) == 1


# -- find_by -------------------------------------------------------------------------------


def test_find_by_customer_is_scoped_to_the_namespace(fresh_namespace: str) -> None:
    mine = CheckoutSessions.insert({"customer": "cus_shared"})
    with papertiger.use_namespace(fresh_namespace + "-other"):
        theirs = CheckoutSessions.insert({"customer": "cus_shared"})
        assert [r["id"] for r in CheckoutSessions.find_by_customer("cus_shared")] == [theirs["id"]]
    with papertiger.use_namespace((fresh_namespace, "acct_1")):  # nested: still separate
        assert CheckoutSessions.find_by_customer("cus_shared") == []
    assert [r["id"] for r in CheckoutSessions.find_by_customer("cus_shared")] == [mine["id"]]
    assert CheckoutSessions.find_by_customer("cus_nobody") == []


def test_find_by_customer_with_expanded_objects(fresh_namespace: str) -> None:
    plain = CheckoutSessions.insert({"customer": "cus_1", "created": 1})
    expanded = CheckoutSessions.insert(
        {"customer": {"id": "cus_1", "object": "customer", "email": "a@b.c"}, "created": 2}
    )
    CheckoutSessions.insert({"customer": {"object": "customer"}, "created": 3})  # no id: unindexed
    CheckoutSessions.insert({"customer": "cus_2", "created": 4})
    want = [expanded["id"], plain["id"]]  # newest first
    assert [r["id"] for r in CheckoutSessions.find_by_customer("cus_1")] == want
    by_object = CheckoutSessions.find_by_customer({"id": "cus_1", "object": "customer"})
    assert [r["id"] for r in by_object] == want
    assert by_object[0]["customer"]["email"] == "a@b.c"


def test_find_by_unindexed_field_is_refused(fresh_namespace: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        CheckoutSessions.find_by("currency", "usd")
    assert info.value.param == "currency" and "customer" in info.value.message


def test_customers_find_by_email(fresh_namespace: str) -> None:
    c = Customers.insert({"email": "a@example.com"})
    Customers.insert({"email": "b@example.com"})
    assert c["id"].startswith("cus_") and c["object"] == "customer"
    assert [r["id"] for r in Customers.find_by_email("a@example.com")] == [c["id"]]


# -- user-defined stores -------------------------------------------------------------------


def test_user_defined_store_with_its_own_indexes(fresh_namespace: str) -> None:
    assert hasattr(Invoices, "find_by_subscription") and hasattr(Invoices, "find_by_customer")
    inv = Invoices.insert({"customer": "cus_1", "subscription": "sub_1"})
    assert inv["id"].startswith("in_") and inv["object"] == "invoice"
    Invoices.insert({"customer": "cus_1", "subscription": "sub_2"})
    assert [r["id"] for r in Invoices.find_by_subscription("sub_1")] == [inv["id"]]
    assert len(Invoices.find_by_customer("cus_1")) == 2
    assert Invoices.list().url == "/v1/invoices"
    # its table is its own
    assert CheckoutSessions.count() == 0 and Invoices.count() == 2
    Invoices.clear()
    assert Invoices.count() == 0


def test_store_declarations_are_checked() -> None:
    with pytest.raises(TypeError, match="must declare"):

        class Incomplete(Store):
            table_name = "incomplete"

    with pytest.raises(TypeError, match="reserved"):

        class Internal(Store):
            table_name = "_internal"
            resource = "internal"
            prefix = "int"
            url = "/v1/internal"

    with pytest.raises(TypeError, match="class methods"):
        Invoices()


def test_explicit_finder_is_not_replaced() -> None:
    class Plans(Store):
        table_name = "test_plans"
        resource = "plan"
        prefix = "plan"
        url = "/v1/plans"
        indexes: ClassVar[tuple[str, ...]] = ("product",)

        @classmethod
        def find_by_product(cls, product: Any) -> list[dict[str, Any]]:
            return [{"custom": product}]

    assert Plans.find_by_product("prod_1") == [{"custom": "prod_1"}]


# -- clear, count, list_namespace ---------------------------------------------------------------


def test_clear_removes_every_namespace_of_the_table_only(fresh_namespace: str) -> None:
    Invoices.insert({})
    CheckoutSessions.insert({})
    with papertiger.use_namespace(fresh_namespace + "-2"):
        Invoices.insert({})
    Invoices.clear()
    assert Invoices.count() == 0 and CheckoutSessions.count() == 1
    with papertiger.use_namespace(fresh_namespace + "-2"):
        assert Invoices.count() == 0


def test_list_namespace_returns_everything_newest_first(fresh_namespace: str) -> None:
    made = CheckoutSessions.insert_many([{"created": i % 3} for i in range(25)])
    order = sorted(range(25), key=lambda i: (i % 3, i), reverse=True)
    assert [r["id"] for r in CheckoutSessions.list_namespace()] == [made[i]["id"] for i in order]
    assert CheckoutSessions.list_namespace(fresh_namespace) == CheckoutSessions.list_namespace()
    assert CheckoutSessions.list_namespace(fresh_namespace + "-none") == []
    assert CheckoutSessions.count() == 25
