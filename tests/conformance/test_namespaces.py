"""Namespaces in the store, on every backend: isolation, nesting, clearing a tree."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import papertiger
from papertiger import GLOBAL, InvalidRequest
from papertiger.namespace import set_default_namespace, use_namespace
from papertiger.store import CheckoutSessions
from support import BackendUnderTest


def test_str_and_one_tuple_name_the_same_namespace(fresh_namespace: str) -> None:
    with use_namespace("same"):
        s = CheckoutSessions.insert({})
    with use_namespace(("same",)):
        assert CheckoutSessions.get(s["id"]) == s
    assert CheckoutSessions.list_namespace(("same",)) == CheckoutSessions.list_namespace("same")
    CheckoutSessions.clear_namespace("same")


def test_nested_namespaces_are_separate_and_cleared_together(fresh_namespace: str) -> None:
    a = f"{fresh_namespace}-a"
    places: list[Any] = [a, (a, "acct_1"), (a, "acct_1", "deeper"), f"{a}b", ("x", a)]
    made = {}
    for ns in places:
        with use_namespace(ns):
            made[ns] = CheckoutSessions.insert({"customer": "cus_1"})
    for ns in places:  # each sees only its own record
        with use_namespace(ns):
            assert CheckoutSessions.list_namespace() == [made[ns]]
            assert CheckoutSessions.find_by_customer("cus_1") == [made[ns]]
    CheckoutSessions.clear_namespace(a)
    for ns in places[:3]:
        with use_namespace(ns):
            assert CheckoutSessions.count() == 0
    for ns in places[3:]:  # "ab" is not nested under "a"; ("x", "a") neither
        with use_namespace(ns):
            assert CheckoutSessions.count() == 1


def test_clear_namespace_of_a_nested_one_leaves_the_parent(fresh_namespace: str) -> None:
    parent = CheckoutSessions.insert({})
    with use_namespace((fresh_namespace, "acct_1")):
        CheckoutSessions.insert({})
    CheckoutSessions.clear_namespace((fresh_namespace, "acct_1"))
    assert CheckoutSessions.list_namespace() == [parent]
    assert CheckoutSessions.list_namespace((fresh_namespace, "acct_1")) == []
    CheckoutSessions.clear_namespace()  # the current one by default
    assert CheckoutSessions.count() == 0


def test_global_is_the_default_namespace(backend: BackendUnderTest) -> None:
    def body() -> None:  # a new thread: no use_namespace block, so the process default counts
        before = set_default_namespace(None)
        s = CheckoutSessions.insert({"id": "cs_global_default"})
        try:
            with use_namespace(GLOBAL):
                assert CheckoutSessions.get(s["id"]) == s
            assert CheckoutSessions.list_namespace(GLOBAL) == [s]
            with use_namespace("elsewhere"), pytest.raises(papertiger.NotFound):
                CheckoutSessions.get(s["id"])
        finally:
            CheckoutSessions.delete(s["id"])
            set_default_namespace(before)

    failures: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if failures:
        raise failures[0]


def test_invalid_namespace_arguments(fresh_namespace: str) -> None:
    for bad in [(), "", 5]:
        with pytest.raises(InvalidRequest):
            CheckoutSessions.clear_namespace(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest):
            CheckoutSessions.list_namespace(bad)  # type: ignore[arg-type]
