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
   back to 1), run the request, then store the response (``patch``).  The
   server stores it right after sending the response (a background task),
   so the client does not wait for that write; a retry that comes in
   between sees the claim and is told to retry (409).
3. A request that fails (any error response) deletes its claim: like
   Stripe, only requests that succeeded are replayed, and a retry of a
   refused request runs again.

A claim older than :data:`STALE_SECONDS` whose request never finished (its
server died, or died between answering and storing the answer) is taken
over, and the request runs again.  Taking over is a conditional patch
(``expect`` the stale claim's ``state`` and ``claimed``), so of two requests
that find the same stale claim exactly one takes it; and a request stores
its answer only if its claim is still the one it made (a request that ran so
long that its claim was taken over leaves the answer to the one that took
it).  Stripe scopes keys to an account; here to the
namespace (so a ``Stripe-Account`` header gets its own keys).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import AlreadyExists, Conflict, NotFound
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


@dataclass(frozen=True)
class Claim:
    """This request holds ``key`` (since ``claimed``): it runs, then :meth:`finish` or
    :meth:`release`."""

    key: str
    claimed: float

    def held(self) -> dict[str, Any]:
        """What the stored claim holds while it is still this request's."""
        return {"state": "running", "claimed": self.claimed}

    def finish(self, outcome: Outcome) -> None:
        """Store the response, to be replayed to every later request with this key.

        Nothing is stored when the claim is no longer this request's (it went
        stale and another request took it over, or it was deleted).
        """
        status, body = outcome
        try:
            IdempotencyKeys.patch(
                self.key, {"state": "done", "status": status, "body": body}, expect=self.held()
            )
        except (Conflict, NotFound):
            pass

    def release(self) -> None:
        """Forget the claim (the request failed): a retry runs again."""
        try:
            IdempotencyKeys.delete(self.key)
        except NotFound:
            pass


def claim(key: str, digest: str) -> Claim | Outcome:
    """Claim ``key`` in the current namespace for a request, or the outcome to replay.

    Returns a :class:`Claim` when this request is to run, or the stored
    outcome of the first request with this key and these parameters.
    Raises :class:`APIError` for a key reused with other parameters (400) or
    still in flight (409).  Costs a read, plus a write when the request runs
    (and one more to :meth:`Claim.finish`).
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
                return int(record["status"]), str(record["body"])
            if time.time() - float(record.get("claimed", 0)) < STALE_SECONDS:
                raise _in_flight(key)
            taken = _take_over(key, record)
            if taken is None:
                continue  # another request took it over (or finished) first: look again
            return taken
        now = time.time()
        try:
            IdempotencyKeys.insert(
                {"id": key, "request": digest, "state": "running", "claimed": now}
            )
        except AlreadyExists:
            continue  # somebody claimed it between our read and our insert: look again
        return Claim(key, now)
    raise _in_flight(key)


def _take_over(key: str, stale: dict[str, Any]) -> Claim | None:
    """Claim ``key`` from a stale claim whose request never finished; None when another
    request changed it first (one conditional patch: of two takers, one wins)."""
    now = time.time()
    expect = {"state": stale.get("state"), "claimed": stale.get("claimed")}
    try:
        IdempotencyKeys.patch(key, {"state": "running", "claimed": now}, expect=expect)
    except (Conflict, NotFound):
        return None
    return Claim(key, now)


def run_once(key: str, digest: str, run: Callable[[], Outcome]) -> tuple[Outcome, bool]:
    """Run ``run()`` once for ``key``, or replay its outcome: ``(outcome, replayed)``.

    :func:`claim`, ``run()``, then :meth:`Claim.finish` (or
    :meth:`Claim.release` when it failed), in one call.
    """
    held = claim(key, digest)
    if not isinstance(held, Claim):
        return held, True
    try:
        outcome = run()
    except BaseException:
        held.release()
        raise
    if outcome[0] >= 400:
        held.release()
    else:
        held.finish(outcome)
    return outcome, False
