"""papertiger: one fast, safe, shared store of Stripe-shaped data for parallel tests.

One manager process applies every write; every other process reads its own
replica of a log in shared memory, without asking anyone.  Data is
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

from .engine.server import Server, connect, disconnect, serve
from .errors import AlreadyExists, InvalidRequest, NotFound, StoreError, StoreUnavailable
from .namespace import GLOBAL, current_namespace, set_default_namespace, use_namespace
from .once import once
from .pagination import StripeList
from .store import Store

__all__ = [
    "GLOBAL",
    "AlreadyExists",
    "InvalidRequest",
    "NotFound",
    "Server",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StripeList",
    "__version__",
    "connect",
    "current_namespace",
    "disconnect",
    "once",
    "serve",
    "set_default_namespace",
    "use_namespace",
]
