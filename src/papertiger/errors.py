"""The error family.

Every error the store raises is a :class:`StoreError`.  The subclasses also
derive from the builtin a caller would naturally catch (``NotFound`` is a
``KeyError``, ``InvalidRequest`` a ``ValueError``, ``StoreUnavailable`` a
``ConnectionError``), and carry Stripe's ``param`` and ``code`` where Stripe
would set them, so an error can be rendered as Stripe's error body.
``Conflict`` (a conditional write that found the record changed) is an
``InvalidRequest``.

Errors cross the process boundary as ``[kind, message, param]`` (see
:func:`error_to_wire` / :func:`error_from_wire`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExists",
    "Conflict",
    "DaemonRunning",
    "DataFileError",
    "InvalidRequest",
    "NoDaemon",
    "NotFound",
    "StoreError",
    "StoreUnavailable",
    "error_from_wire",
    "error_to_wire",
]


class StoreError(Exception):
    """Base class of every papertiger error.

    ``param`` names the request parameter or record field at fault (or is
    ``None``); ``code`` is Stripe's error code where one applies.
    """

    code: str | None = None
    http_status: int = 400

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __str__(self) -> str:  # KeyError would quote the message; we never want that.
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self).__name__, self.message, self.param))

    def to_dict(self) -> dict[str, Any]:
        """Stripe's error body: ``{"error": {"type", "message", "param", "code"}}``."""
        body: dict[str, Any] = {"type": "invalid_request_error", "message": self.message}
        if self.param is not None:
            body["param"] = self.param
        if self.code is not None:
            body["code"] = self.code
        return {"error": body}


class NotFound(StoreError, KeyError):
    """No record with that id in the current namespace (Stripe's ``resource_missing``)."""

    code = "resource_missing"
    http_status = 404


class AlreadyExists(StoreError):
    """``insert`` of an id that is already stored (use ``upsert`` or ``update``)."""

    code = "resource_already_exists"


class InvalidRequest(StoreError, ValueError):
    """The call's arguments are malformed; ``param`` names the one at fault."""

    code: str | None = "parameter_invalid"


class Conflict(InvalidRequest):
    """A conditional ``patch`` (``expect=``) found the record changed: nothing was written.

    ``param`` names the first expected field whose current value differs; the
    message names the record, that field, the expected and the current value.
    Re-read the record, decide again, and retry (or give up).
    """

    code = None
    http_status = 409


class StoreUnavailable(StoreError, ConnectionError):
    """The manager cannot be reached (stopped, killed, or never started)."""

    code = None
    http_status = 503


class DataFileError(StoreError):
    """A daemon's data file that cannot be loaded (truncated, corrupt, foreign, too new)."""


class DaemonRunning(StoreError):
    """A daemon is already running for this state directory; ``info`` describes it."""

    def __init__(self, message: str, info: Any = None) -> None:
        super().__init__(message)
        self.info = info


class NoDaemon(StoreError):
    """No daemon is running for this state directory."""


_KINDS: dict[str, type[StoreError]] = {
    cls.__name__: cls
    for cls in (StoreError, NotFound, AlreadyExists, InvalidRequest, Conflict, StoreUnavailable)
}


def _rebuild(kind: str, message: str, param: str | None) -> StoreError:
    return _KINDS.get(kind, StoreError)(message, param=param)


def error_to_wire(error: StoreError) -> list[Any]:
    """``[kind, message, param]``: how an error travels from the manager to a client."""
    return [type(error).__name__, error.message, error.param]


def error_from_wire(wire: list[Any]) -> StoreError:
    """Rebuild the error a manager sent; an unknown kind becomes a plain :class:`StoreError`."""
    kind, message, param = wire
    return _rebuild(str(kind), str(message), param if isinstance(param, str) else None)
