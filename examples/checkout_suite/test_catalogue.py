from __future__ import annotations

from typing import Any

import pytest
from shop import PLANS, Prices, Products, catalogue_namespace

import papertiger


def test_the_catalogue_was_seeded_exactly_once(catalogue: dict[str, Any]) -> None:
    # made once for the whole run: a second seeding would double the counts
    with papertiger.use_namespace(catalogue_namespace()):
        assert Products.count() == len(PLANS)
        assert Prices.count() == len(PLANS)


def test_the_catalogue_is_not_in_the_test_namespace(catalogue: dict[str, Any]) -> None:
    assert Products.count() == 0
    with pytest.raises(papertiger.NotFound):
        Products.get(catalogue["products"][0]["id"])


@pytest.mark.parametrize("i", range(len(PLANS)))
def test_every_price_points_at_its_product(catalogue: dict[str, Any], i: int) -> None:
    price = catalogue["prices"][i]
    with papertiger.use_namespace(catalogue_namespace()):
        product = Products.get(price["product"])
        assert Prices.find_by_product(product["id"]) == [price]
    assert product["name"] == PLANS[i][0]
    assert price["unit_amount"] == PLANS[i][1]


def test_catalogue_lists_newest_first(catalogue: dict[str, Any]) -> None:
    with papertiger.use_namespace(catalogue_namespace()):
        page = Products.list(limit=3)
    assert [p["id"] for p in page.data] == [p["id"] for p in catalogue["products"][::-1][:3]]
    assert page.has_more
