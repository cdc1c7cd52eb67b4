"""What the ``papertiger_stripe`` fixture gives a test: stripe-python pointed at papertiger.

:func:`stripe_for` makes a :class:`StripeAPI` for a namespace and a server,
and, while its ``with`` block runs, points stripe-python's module-level
configuration (``stripe.api_key``, ``stripe.api_base``) at it too, so an
application that calls ``stripe.checkout.Session.create(...)`` reaches
papertiger.  The previous configuration comes back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..namespace import Namespace
from .hosted import cancel_checkout, pay_checkout
from .keys import api_key_for

__all__ = ["StripeAPI", "stripe_for"]


@dataclass
class StripeAPI:
    """papertiger's Stripe API for one namespace.

    ``url`` is the server (``stripe.api_base``), ``api_key`` the key that
    reads and writes ``namespace``, ``client`` a ``stripe.StripeClient`` using
    both.  :meth:`pay` and :meth:`cancel` press the hosted checkout page's
    buttons (:func:`papertiger.http.pay_checkout`).
    """

    url: str
    api_key: str
    namespace: Namespace
    client: Any  # stripe.StripeClient (stripe is imported only when used)

    def pay(self, session: Any, email: str | None = None) -> str:
        """Pay ``session`` (or its url) on its hosted page; the success redirect target."""
        return pay_checkout(session, email)

    def cancel(self, session: Any) -> str:
        """Cancel on ``session``'s hosted page; the cancel redirect target."""
        return cancel_checkout(session)

    def __repr__(self) -> str:
        return f"<papertiger StripeAPI {self.url} namespace={self.namespace!r}>"


@contextlib.contextmanager
def stripe_for(url: str, namespace: Namespace) -> Iterator[StripeAPI]:
    """A :class:`StripeAPI` for ``namespace`` at ``url``; stripe's globals point there meanwhile."""
    try:
        import stripe
    except ImportError:
        raise ImportError(
            "the papertiger_stripe fixture needs stripe-python: pip install stripe"
        ) from None
    key = api_key_for(namespace)
    client = stripe.StripeClient(key, base_addresses={"api": url})
    saved = (stripe.api_key, stripe.api_base)
    stripe.api_key, stripe.api_base = key, url
    try:
        yield StripeAPI(url=url, api_key=key, namespace=namespace, client=client)
    finally:
        stripe.api_key, stripe.api_base = saved
