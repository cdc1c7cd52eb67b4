"""Stripe's error responses: the body, the status, and how papertiger's errors map to them.

Stripe answers every failure with ``{"error": {"type", "message", "param",
"code", "doc_url"}}`` (absent members are left out) and a status that
stripe-python turns into an exception class:

======  ==========================  ==============================================
status  type                        stripe-python raises
======  ==========================  ==============================================
400     ``invalid_request_error``   ``InvalidRequestError`` (``param``, ``code``)
400     ``idempotency_error``       ``IdempotencyError``
401     ``invalid_request_error``   ``AuthenticationError``
404     ``invalid_request_error``   ``InvalidRequestError`` (``resource_missing``)
409     ``idempotency_error``       retried, then ``APIError`` (request in flight)
413     ``invalid_request_error``   ``APIError`` (body too large)
5xx     ``api_error``               ``APIError``
======  ==========================  ==============================================
"""

from __future__ import annotations

from typing import Any

from ..errors import AlreadyExists, InvalidRequest, NotFound, StoreError, StoreUnavailable

__all__ = [
    "APIError",
    "from_store_error",
    "invalid",
    "missing",
    "not_found",
    "unknown",
]

DOC_BASE = "https://stripe.com/docs/error-codes/"

#: Parameters whose missing object Stripe reports with 400, not 404 (cursors, references).
_PATH_PARAMS = frozenset({"id", "session", "customer_id", "price_id", "product_id"})


class APIError(Exception):
    """One Stripe error response: status, type, message, and optionally param and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        #: sent as ``Stripe-Should-Retry``: stripe-python retries only when True
        self.retry = retry

    def body(self) -> dict[str, Any]:
        """Stripe's JSON body, members in Stripe's order."""
        error: dict[str, Any] = {}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = DOC_BASE + self.code.replace("_", "-")
        error["message"] = self.message
        if self.param is not None:
            error["param"] = self.param
        error["type"] = self.type
        return {"error": error}

    def __repr__(self) -> str:
        return f"APIError({self.status}, {self.message!r}, param={self.param!r})"


def invalid(message: str, param: str | None, code: str | None = None) -> APIError:
    """A 400 ``invalid_request_error`` for a parameter."""
    return APIError(400, message, code=code, param=param)


def missing(param: str) -> APIError:
    """Stripe's ``parameter_missing``."""
    return APIError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def unknown(param: str, accepted: tuple[str, ...] = ()) -> APIError:
    """Stripe's ``parameter_unknown``, listing what this endpoint accepts."""
    hint = f" papertiger accepts here: {', '.join(accepted)}." if accepted else ""
    return APIError(
        400,
        f"Received unknown parameter: {param}.{hint}",
        code="parameter_unknown",
        param=param,
    )


def not_found(object_name: str, object_id: str, param: str, status: int = 404) -> APIError:
    """Stripe's ``resource_missing``: 404 for the object of the path, 400 for a parameter."""
    return APIError(
        status, f"No such {object_name}: '{object_id}'", code="resource_missing", param=param
    )


def from_store_error(exc: StoreError) -> APIError:
    """The response for an error the store raised (it already carries ``param``)."""
    if isinstance(exc, NotFound):
        # the object of the URL is a 404; a missing cursor or referenced object is a 400
        status = 404 if exc.param in _PATH_PARAMS else 400
        return APIError(status, exc.message, code="resource_missing", param=exc.param)
    if isinstance(exc, AlreadyExists):
        return APIError(400, exc.message, code="resource_already_exists", param=exc.param or "id")
    if isinstance(exc, InvalidRequest):
        code = "parameter_invalid_integer" if exc.param == "limit" else None
        return APIError(400, exc.message, code=code, param=exc.param)
    if isinstance(exc, StoreUnavailable):
        return APIError(
            503, f"papertiger's store is unavailable: {exc.message}", type="api_error", retry=False
        )
    return APIError(500, f"papertiger's store failed: {exc.message}", type="api_error")
