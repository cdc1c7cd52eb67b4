"""Shared set-up of the sample suite: the catalogue, made once for the whole run."""

from __future__ import annotations

from typing import Any

from shop import catalogue_namespace, seed_catalogue

from papertiger.pytest_plugin import once_fixture


@once_fixture(namespace=catalogue_namespace)
def catalogue() -> dict[str, Any]:
    """Products and prices, seeded by the first worker that needs them; others wait."""
    return seed_catalogue()
