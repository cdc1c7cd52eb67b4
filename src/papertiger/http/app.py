"""The ASGI application: Stripe's v1 endpoints and the hosted checkout page.

Theory of operation
-------------------
A request goes through the same steps whatever the endpoint
(:func:`_serve_api`):

1. **Route**: Starlette matches the path; a method the path does not have,
   or a path papertiger does not serve, is Stripe's 404 "Unrecognized request
   URL".
2. **Authenticate**: ``Authorization: Bearer <key>`` (or Basic with the key
   as user name, as ``curl -u`` sends it) -> the namespace the key names
   (:mod:`.keys`); no key or a malformed one is a 401.  ``Stripe-Account:
   acct_X`` nests the namespace under ``acct_X``.
3. **Read the parameters**: the query string (GET, DELETE) or the
   form-encoded body (POST), at most :data:`MAX_BODY_BYTES`; decoded by
   :func:`~.forms.decode_form`, then checked against the endpoint's
   declaration (:mod:`.params`).  Nothing has touched the store yet, so any
   refusal so far changes nothing.
4. **Run** the handler with the namespace current, through
   :func:`~.idempotency.run_once` when an ``Idempotency-Key`` comes with a
   POST (stripe-python sends one with every POST).
5. **Answer** JSON, with ``Request-Id``, the ``Stripe-Version`` asked for,
   and on errors Stripe's body and ``Stripe-Should-Retry``.

Handlers call the store API synchronously on the event loop: a read is a
replica lookup (microseconds, no I/O on shared memory) and a write one
round trip to the store, far less than a thread hand-off would add to every
request.  A server process therefore serves one request at a time; run more
processes (each ``serve_http`` or ``papertiger serve --http``) to scale out:
they agree, because everything they keep is in the store.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..core.records import generate_id
from ..errors import NotFound, StoreError
from ..namespace import Namespace, use_namespace
from ..store import CheckoutSessions
from . import catalog, checkout, customers
from .endpoints import Call, Endpoint
from .errors import APIError, from_store_error
from .forms import FormError, decode_form
from .idempotency import Claim, claim, fingerprint
from .keys import BadKey, namespace_for_key, token_namespace
from .page import render_done, render_page, success_target

__all__ = ["ENDPOINTS", "MAX_BODY_BYTES", "build_app"]

log = logging.getLogger("papertiger.http")

#: Every Stripe endpoint papertiger serves, in the order the documentation lists them.
ENDPOINTS: list[Endpoint] = [*checkout.ENDPOINTS, *customers.ENDPOINTS, *catalog.ENDPOINTS]

#: Largest request body accepted (a 413 beyond it).  Stripe's own requests stay far below.
MAX_BODY_BYTES = 1024 * 1024

_ACCOUNT = re.compile(r"acct_[A-Za-z0-9]{1,64}\Z")
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"

_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). papertiger "
    "accepts any test key (sk_test_...); papertiger.api_key_for(namespace) makes one that "
    "reads and writes that namespace."
)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _request_id() -> str:
    return generate_id("req")[:18]


# -- steps -----------------------------------------------------------------------------


#: Namespaces of the keys seen lately (a key's namespace never changes).
_KEYS: dict[str, Namespace] = {}
_KEYS_MAX = 4096


def authenticate(authorization: str | None) -> Namespace:
    """The namespace of the request's key; :class:`APIError` 401 without a usable key.

    O(1) for a key seen lately (a small cache), else O(length of the key).
    """
    if not authorization:
        raise APIError(401, _NO_KEY)
    known = _KEYS.get(authorization)
    if known is not None:
        return known
    ns = _authenticate(authorization)
    if len(_KEYS) >= _KEYS_MAX:
        _KEYS.clear()
    _KEYS[authorization] = ns
    return ns


def _authenticate(authorization: str) -> Namespace:
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "basic":
        try:
            credentials = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            raise APIError(
                401, "Invalid Basic authorization: expected base64 of '<api key>:'."
            ) from None
    elif scheme.lower() != "bearer":
        raise APIError(
            401,
            f"Invalid Authorization header: expected 'Bearer <api key>', got a {scheme!r} scheme.",
        )
    if not credentials:
        raise APIError(401, _NO_KEY)
    try:
        return namespace_for_key(credentials)
    except BadKey as exc:
        raise APIError(401, str(exc)) from None


def nest_account(ns: Namespace, account: str | None) -> Namespace:
    """``Stripe-Account: acct_X`` -> ``(*ns, "acct_X")``; 400 for a malformed header."""
    if account is None:
        return ns
    account = account.strip()
    if not _ACCOUNT.match(account):
        raise APIError(
            400,
            f"Invalid Stripe-Account header {account[:80]!r}: expected a connected account id "
            "such as acct_1A2b3C.",
            param="Stripe-Account",
        )
    return (*ns, account)


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with a 413 past ``limit`` bytes (before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(400, f"Invalid Content-Length header: {declared[:40]!r}.")
        if int(declared) > limit:
            raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> APIError:
    return APIError(
        413,
        f"Request body too large: {size} bytes; papertiger accepts at most {limit}. Send fewer "
        "parameters per request.",
        code="request_too_large",
    )


async def read_params(request: Request) -> dict[str, Any]:
    """The request's parameters, decoded from its query string and (POST) its body."""
    query = request.scope.get("query_string", b"")
    try:
        if request.method != "POST":
            return decode_form(query)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await read_body(request)
        if body and content_type != _FORM:
            raise APIError(
                400,
                f"Invalid request: POST bodies must be {_FORM} (Stripe's v1 encoding, which "
                f"stripe-python sends); got {content_type or 'no Content-Type'}.",
            )
        if query:
            body = query + b"&" + body if body else query
        return decode_form(body)
    except FormError as exc:
        raise APIError(400, exc.message, param=exc.param) from None


def execute(endpoint: Endpoint, call: Call) -> tuple[int, str]:
    """Run a handler (namespace already current) -> ``(status, JSON body)``."""
    try:
        return 200, _json(endpoint.handler(call))
    except APIError as exc:
        return exc.status, _json(exc.body())
    except StoreError as exc:
        error = from_store_error(exc)
        return error.status, _json(error.body())


def _error_response(exc: APIError, headers: dict[str, str]) -> Response:
    headers["Stripe-Should-Retry"] = "true" if exc.retry else "false"
    return Response(_json(exc.body()), exc.status, headers, media_type=_JSON)


# -- the API ---------------------------------------------------------------------------


def _api_route(path: str, endpoints: list[Endpoint]) -> Route:
    by_method = {endpoint.method: endpoint for endpoint in endpoints}

    async def serve(request: Request) -> Response:
        endpoint = by_method.get(request.method)
        if endpoint is None:
            return _unrecognized(request)
        return await _serve_api(request, endpoint)

    return Route(path, serve, methods=["GET", "POST", "DELETE", "PUT", "PATCH"])


async def _serve_api(request: Request, endpoint: Endpoint) -> Response:
    headers = {"Request-Id": _request_id()}
    version = request.headers.get("stripe-version")
    if version:
        headers["Stripe-Version"] = version
    try:
        ns = authenticate(request.headers.get("authorization"))
        ns = nest_account(ns, request.headers.get("stripe-account"))
        raw = await read_params(request)
        params = endpoint.params.check_fields(raw)
        call = Call(
            params=params,
            path=request.path_params,
            base_url=_base_url(request),
            namespace=ns,
            now=int(time.time()),
        )
        key = request.headers.get("idempotency-key") if endpoint.method == "POST" else None
        background = None
        with use_namespace(ns):
            if key:
                headers["Idempotency-Key"] = key
                held = claim(key, fingerprint(endpoint.method, request.scope["path"], raw))
                if isinstance(held, Claim):
                    try:
                        status, body = execute(endpoint, call)
                    except BaseException:
                        held.release()
                        raise
                    if status >= 400:
                        held.release()
                    else:  # stored once the response is on its way: the client does not wait
                        background = BackgroundTask(_finish, held, ns, (status, body))
                else:
                    (status, body), headers["Idempotent-Replayed"] = held, "true"
            else:
                status, body = execute(endpoint, call)
    except APIError as exc:
        return _error_response(exc, headers)
    except StoreError as exc:
        return _error_response(from_store_error(exc), headers)
    except Exception as exc:  # a bug of ours: say so, keep serving
        log.exception("papertiger could not handle %s %s", request.method, request.url.path)
        error = APIError(
            500,
            f"papertiger could not handle this request ({type(exc).__name__}: {exc}); this is "
            "a papertiger bug, please report it.",
            type="api_error",
        )
        return _error_response(error, headers)
    if status >= 400:
        headers["Stripe-Should-Retry"] = "false"
    return Response(body, status, headers, media_type=_JSON, background=background)


async def _finish(held: Claim, ns: Namespace, outcome: tuple[int, str]) -> None:
    """Store an idempotent request's response (after sending it; on the event loop)."""
    try:
        with use_namespace(ns):
            held.finish(outcome)
    except StoreError as exc:  # the key stays claimed; it is taken over once stale
        log.warning("could not store the response of Idempotency-Key %r: %s", held.key, exc)


def _base_url(request: Request) -> str:
    """``scheme://host[:port]`` as the client reached us (for hosted-page URLs). O(1)."""
    scope = request.scope
    host = request.headers.get("host")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"


def _unrecognized(request: Request) -> Response:
    error = APIError(
        404,
        f"Unrecognized request URL ({request.method}: {request.url.path}). papertiger serves "
        "the endpoints listed in its README.",
    )
    return _error_response(error, {"Request-Id": _request_id()})


async def _fallback(request: Request) -> Response:
    return _unrecognized(request)


async def _health(request: Request) -> Response:
    return Response(_json({"object": "papertiger.health", "ok": True}), media_type=_JSON)


# -- the hosted page ----------------------------------------------------------------------


def _page_session(request: Request) -> tuple[Namespace, str]:
    try:
        ns = token_namespace(request.path_params["ns"])
    except ValueError:
        raise NotFound(
            "This checkout link is broken: its namespace part does not decode."
        ) from None
    return ns, request.path_params["session"]


def _wants_json(request: Request) -> bool:
    return _JSON in request.headers.get("accept", "")


def _page_error(request: Request, status: int, title: str, message: str) -> Response:
    if _wants_json(request):
        return Response(_json(APIError(status, message).body()), status, media_type=_JSON)
    return HTMLResponse(render_done(title, message), status)


def _closed_message(session: dict[str, Any]) -> tuple[str, str]:
    if session.get("status") == "complete":
        return "Already paid", "This Checkout Session is complete: it has been paid already."
    return "Session expired", "This Checkout Session has expired; start a new checkout."


async def _page(request: Request) -> Response:
    try:
        ns, session_id = _page_session(request)
        with use_namespace(ns):
            session = checkout.refresh_status(CheckoutSessions.get(session_id), int(time.time()))
    except NotFound:
        return _page_error(request, 404, "Not found", "No such Checkout Session.")
    if session.get("status") != "open":
        title, message = _closed_message(session)
        return HTMLResponse(render_done(title, message))
    return HTMLResponse(render_page(session, request.url.path))


async def _complete(request: Request) -> Response:
    try:
        ns, session_id = _page_session(request)
        body = await read_body(request, 64 * 1024)
        form = decode_form(body) if body else {}
    except NotFound:
        return _page_error(request, 404, "Not found", "No such Checkout Session.")
    except (APIError, FormError) as exc:
        return _page_error(request, 400, "Bad request", str(exc))
    email = form.get("email") if isinstance(form.get("email"), str) else None
    with use_namespace(ns):
        try:
            session = checkout.complete_session(session_id, int(time.time()), email or None)
        except NotFound:
            return _page_error(request, 404, "Not found", "No such Checkout Session.")
        except APIError:
            title, message = _closed_message(CheckoutSessions.get(session_id))
            return _page_error(request, 409, title, message)
    target = session.get("success_url")
    if isinstance(target, str) and target:
        return RedirectResponse(success_target(target, session_id), 303)
    return HTMLResponse(render_done("Payment complete", "Thank you: the session is complete."))


async def _cancel(request: Request) -> Response:
    try:
        ns, session_id = _page_session(request)
        with use_namespace(ns):
            session = CheckoutSessions.get(session_id)
    except NotFound:
        return _page_error(request, 404, "Not found", "No such Checkout Session.")
    target = session.get("cancel_url")
    if isinstance(target, str) and target:
        return RedirectResponse(target, 303)
    return HTMLResponse(render_done("Checkout cancelled", "The session has no cancel_url."))


# -- the application ------------------------------------------------------------------------


def _routes() -> list[Route]:
    by_path: dict[str, list[Endpoint]] = {}
    for endpoint in ENDPOINTS:
        by_path.setdefault(endpoint.path, []).append(endpoint)
    routes = [_api_route(path, endpoints) for path, endpoints in by_path.items()]
    page = "/c/pay/{ns}/{session}"
    routes += [
        Route(page, _page, methods=["GET"]),
        Route(page + "/complete", _complete, methods=["POST"]),
        Route(page + "/cancel", _cancel, methods=["POST"]),
        Route("/papertiger/health", _health, methods=["GET"]),
        Route("/{path:path}", _fallback, methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
    ]
    return routes


def build_app() -> Starlette:
    """A fresh ASGI application serving Stripe's API over the current process's store."""
    return Starlette(routes=_routes())
