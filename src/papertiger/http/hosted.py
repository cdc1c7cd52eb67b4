"""The hosted checkout page's buttons, pressed without a browser.

A test that drives a shop's checkout needs the customer's part too: open the
session's ``url``, press Pay (or Cancel), follow the redirect.
:func:`pay_checkout` and :func:`cancel_checkout` send exactly the request the
page's buttons send (``POST <url>/complete``, ``POST <url>/cancel``) and
return where the page would redirect the browser, without following it::

    session = client.v1.checkout.sessions.create(params)
    target = papertiger.http.pay_checkout(session)      # the success_url, id filled in
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..errors import InvalidRequest, NotFound

__all__ = ["cancel_checkout", "pay_checkout"]

TIMEOUT = 30.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def _page_url(session: Any) -> str:
    url = session if isinstance(session, str) else session["url"]
    if not isinstance(url, str) or "/c/pay/" not in url:
        raise InvalidRequest(
            f"Invalid session: expected a papertiger checkout session (or its url), whose url "
            f"is papertiger's hosted page; got url {url!r}. A session that is no longer open "
            "has no url: retrieve it again to see its status.",
            param="url",
        )
    return url


def _press(session: Any, action: str, form: dict[str, str]) -> str:
    url = _page_url(session)
    request = urllib.request.Request(
        f"{url}/{action}",
        data=urllib.parse.urlencode(form).encode(),
        method="POST",
        headers={"Accept": "application/json"},
    )
    try:
        with _opener.open(request, timeout=TIMEOUT) as response:
            response.read()
            return url  # 200: the page itself answered (no success_url / cancel_url)
    except urllib.error.HTTPError as exc:
        if exc.code in (302, 303):
            return str(exc.headers.get("Location", ""))
        text = exc.read().decode(errors="replace")
        try:
            message = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = text[:200]
        if exc.code == 404:
            raise NotFound(message, param="url") from None
        raise InvalidRequest(message, param="url") from None


def pay_checkout(session: Any, email: str | None = None) -> str:
    """Press Pay on a session's hosted page; return the redirect target.

    ``session`` is the session (a dict or stripe-python object with ``url``)
    or its ``url``.  The session becomes ``complete`` / ``paid``.  Returns the
    ``success_url`` with ``{CHECKOUT_SESSION_ID}`` replaced (the page's own
    URL when the session has no ``success_url``).  Raises
    :class:`~papertiger.InvalidRequest` when the session is not open (complete
    or expired), :class:`~papertiger.NotFound` when it does not exist.
    """
    return _press(session, "complete", {"email": email} if email else {})


def cancel_checkout(session: Any) -> str:
    """Press Cancel on a session's hosted page; return the ``cancel_url`` it redirects to.

    As on Stripe, the session stays open.
    """
    return _press(session, "cancel", {})
