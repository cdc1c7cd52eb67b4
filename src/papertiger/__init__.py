"""papertiger: one fast, safe, shared store of Stripe-shaped data for parallel tests.

One manager process applies every write; every other process reads the
newest checkpoint in shared memory, in place, plus the log written since,
without asking anyone.  Data is
namespaced so parallel tests see only their own records.

>>> import papertiger
>>> from papertiger.store import CheckoutSessions
>>> with papertiger.serve():
...     s = CheckoutSessions.insert({"customer": "cus_1", "amount_total": 4998})
...     CheckoutSessions.get(s["id"])["amount_total"]
4998
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from .errors import (
    AlreadyExists,
    Conflict,
    InvalidRequest,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from .lazy import lazy_attributes
from .namespace import GLOBAL, current_namespace, set_default_namespace, use_namespace
from .once import once  # the function shadows its module's name, so it is bound eagerly

if TYPE_CHECKING:  # pragma: no cover - the lazy names below, for type checkers
    from .backends import connect, disconnect, serve
    from .backends.base import Backend
    from .core.pagination import StripeList
    from .engine.connection import Server
    from .http import api_key_for, serve_http
    from .store import Store

__all__ = [
    "GLOBAL",
    "AlreadyExists",
    "Backend",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "Server",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StripeList",
    "__version__",
    "api_key_for",
    "connect",
    "current_namespace",
    "disconnect",
    "once",
    "serve",
    "serve_http",
    "set_default_namespace",
    "use_namespace",
]

# Loaded on first use: ``import papertiger`` (and the pytest plugin) costs only
# what a process uses.
_LAZY = {
    "Backend": ".backends.base",
    "Server": ".engine.connection",
    "Store": ".store",
    "StripeList": ".core.pagination",
    "api_key_for": ".http",
    "connect": ".backends",
    "disconnect": ".backends",
    "serve": ".backends",
    "serve_http": ".http",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
