"""``Idempotency-Key``: a POST sent again with the same key gets the first response.

Theory of operation
-------------------
The records live in the store itself, in the table ``idempotency_keys`` of
the request's namespace, so every process serving one store agrees (the
pytest run's HTTP server, a ``serve_http()`` in a test process, a daemon's
server), and clearing a test's namespace clears its keys too.  A record is
``{id: key, request: fingerprint, state, status, body}``; the fingerprint is
a hash of the method, the path and the decoded parameters.

1. Read the key (a replica read on shared memory: no round trip).
   Finished with the same fingerprint: replay its status and body
   (``Idempotent-Replayed: true``).  Another fingerprint: 400
   ``idempotency_error``, stripe-python's ``IdempotencyError``.  Still
   running: 409, which stripe-python retries after a pause.
2. Absent: claim it with a strict ``insert`` (one writer wins; a loser goes
   back to 1), run the request, then store the response (``patch``).
3. A request that fails (any error response) deletes its claim: like
   Stripe, only requests that succeeded are replayed, and a retry of a
   refused request runs again.

A claim older than :data:`STALE_SECONDS` whose request never finished (its
server died) is taken over.  Stripe scopes keys to an account; here to the
namespace (so a ``Stripe-Account`` header gets its own keys).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from ..errors import AlreadyExists, NotFound
from ..store.base import Store
from .errors import APIError

__all__ = ["STALE_SECONDS", "IdempotencyKeys", "fingerprint", "run_once"]

#: A claim this old whose request never finished is taken over.
STALE_SECONDS = 60
MAX_KEY_LENGTH = 255


class IdempotencyKeys(Store):
    """Responses of POST requests by ``Idempotency-Key``, per namespace."""

    table_name = "idempotency_keys"
    resource = "idempotency_key"
    object_name = "idempotency_key"
    prefix = "idem"
    url = "/v1/idempotency_keys"  # never served; the store requires one


def fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    """A digest of what makes two requests "the same" for Stripe. O(size of params)."""
    text = json.dumps([method, path, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _check_key(key: str) -> None:
    if len(key) > MAX_KEY_LENGTH:
        raise APIError(
            400,
            f"Invalid Idempotency-Key: {len(key)} characters long; the most is "
            f"{MAX_KEY_LENGTH}. Use a shorter key, such as a UUID.",
            param="Idempotency-Key",
        )


def _conflict(key: str) -> APIError:
    return APIError(
        400,
        "Keys for idempotent requests can only be used with the same parameters they were "
        f"first used with. Try using a key other than '{key}' if you meant to execute a "
        "different request.",
        type="idempotency_error",
    )


def _in_flight(key: str) -> APIError:
    return APIError(
        409,
        "There is currently another in-progress request using this Idempotent Key (that "
        "probably means you submitted twice, and the other request is still going through): "
        f"{key}. Please try again later.",
        type="idempotency_error",
        code="idempotency_key_in_use",
        retry=True,
    )


#: A handler's outcome: (status, JSON body text).
Outcome = tuple[int, str]


def run_once(key: str, digest: str, run: Callable[[], Outcome]) -> tuple[Outcome, bool]:
    """Run ``run()`` once for ``key`` in the current namespace, or replay its outcome.

    Returns ``(outcome, replayed)``.  Raises :class:`APIError` for a key
    reused with other parameters (400) or still in flight (409).  Costs a
    read, plus two writes when the request runs.
    """
    _check_key(key)
    for _ in range(3):
        try:
            record = IdempotencyKeys.get(key)
        except NotFound:
            record = None
        if record is not None:
            if record.get("request") != digest:
                raise _conflict(key)
            if record.get("state") == "done":
                return (int(record["status"]), str(record["body"])), True
            if time.time() - float(record.get("claimed", 0)) < STALE_SECONDS:
                raise _in_flight(key)
            try:  # a claim whose request never finished: take it over
                IdempotencyKeys.delete(key)
            except NotFound:
                pass
        try:
            IdempotencyKeys.insert(
                {"id": key, "request": digest, "state": "running", "claimed": time.time()}
            )
        except AlreadyExists:
            continue  # somebody claimed it between our read and our insert: look again
        break
    else:
        raise _in_flight(key)
    try:
        status, body = run()
    except BaseException:
        _release(key)
        raise
    if status >= 400:
        _release(key)
    else:
        IdempotencyKeys.patch(key, {"state": "done", "status": status, "body": body})
    return (status, body), False


def _release(key: str) -> None:
    try:
        IdempotencyKeys.delete(key)
    except NotFound:
        pass
