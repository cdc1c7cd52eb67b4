"""Stripe's list rules (DESIGN.md) on the pure functions.

The same rules through the Store API, on every backend: ``tests/conformance/test_list.py``.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from papertiger.core.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ListQuery,
    check_page_params,
)
from papertiger.core.pagination import select_page as select_query
from papertiger.core.state import PUT, State
from papertiger.errors import InvalidRequest, NotFound


def select_page(
    part: Any,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    resource: str = "object",
) -> tuple[list[bytes], bool]:
    return select_query(part, ListQuery(limit, starting_after, ending_before), resource)


BAD_LIMITS: list[Any] = [0, -1, 101, "10", True, False, None, 10.0, 1.5]


# -- the pure functions -------------------------------------------------------------------


def partition_of(n: int) -> Any:
    s = State()
    for i in range(n):
        s.apply([PUT, "t", ["ns"], f"id_{i}", i // 3, msgpack.packb({"id": f"id_{i}"}), None])
    return s.partition("t", ("ns",))


def ids(packed: list[bytes]) -> list[str]:
    return [msgpack.unpackb(p)["id"] for p in packed]


@pytest.mark.parametrize("limit", BAD_LIMITS)
def test_check_page_params_rejects_bad_limits(limit: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_page_params(limit, None, None)
    assert info.value.param == "limit"
    assert "1 to 100" in info.value.message and repr(limit) in info.value.message


@pytest.mark.parametrize("limit", [1, DEFAULT_LIMIT, MAX_LIMIT])
def test_check_page_params_accepts_1_to_100(limit: int) -> None:
    check_page_params(limit, None, None)


def test_both_cursors_are_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        check_page_params(10, "a", "b")
    assert "starting_after" in info.value.message and "ending_before" in info.value.message


@pytest.mark.parametrize("name", ["starting_after", "ending_before"])
@pytest.mark.parametrize("cursor", ["", 5, b"id_1"])
def test_malformed_cursor_names_itself(name: str, cursor: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_page_params(10, **{"starting_after": None, "ending_before": None, name: cursor})
    assert info.value.param == name


def test_pages_from_the_top_and_next_to_a_cursor() -> None:
    part = partition_of(7)  # created 0,0,0,1,1,1,2: ties broken by later insert first
    order = ["id_6", "id_5", "id_4", "id_3", "id_2", "id_1", "id_0"]
    assert select_page(part, 3, None, None) == (
        [part.records[i].packed for i in order[:3]],
        True,
    )
    assert ids(select_page(part, 7, None, None)[0]) == order
    assert select_page(part, 7, None, None)[1] is False
    assert ids(select_page(part, 2, "id_4", None)[0]) == ["id_3", "id_2"]
    assert select_page(part, 2, "id_4", None)[1] is True
    assert select_page(part, 2, "id_1", None) == ([part.records["id_0"].packed], False)
    assert select_page(part, 2, "id_0", None) == ([], False)
    # ending_before: the page just newer than the cursor, still newest first
    assert ids(select_page(part, 2, None, "id_1")[0]) == ["id_3", "id_2"]
    assert select_page(part, 2, None, "id_1")[1] is True
    assert select_page(part, 2, None, "id_4") == (
        [part.records["id_6"].packed, part.records["id_5"].packed],
        False,
    )
    assert select_page(part, 2, None, "id_6") == ([], False)


@pytest.mark.parametrize("name", ["starting_after", "ending_before"])
@pytest.mark.parametrize("size", [0, 3])
def test_unknown_cursor_is_not_found_naming_the_cursor(name: str, size: int) -> None:
    part = partition_of(size) if size else None
    kwargs = {"starting_after": None, "ending_before": None, name: "cs_nope"}
    with pytest.raises(NotFound) as info:
        select_page(part, 10, resource="checkout.session", **kwargs)
    assert info.value.param == name
    assert "cs_nope" in info.value.message and "checkout.session" in info.value.message
