"""Namespaces: which slice of the store the current code sees.

A namespace is a ``str`` or a tuple of ``str``; internally it is always the
normalised tuple (``"a"`` and ``("a",)`` are the same namespace, and
``("a", "acct_1")`` is nested under ``("a",)``).

The current namespace is resolved, in order, from

1. :func:`use_namespace` blocks (a :mod:`contextvars` variable, so threads and
   asyncio tasks each keep their own, and tasks inherit their creator's);
2. the process default, set by :func:`set_default_namespace` (the pytest
   plugin uses it so that threads a test starts see the test's namespace) or,
   on first use, read from the ``PAPERTIGER_NAMESPACE`` environment variable,
   which is how a child process inherits its parent's namespace (a bad value
   fails that first use with a message naming the variable, never the
   import);
3. :data:`GLOBAL`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from collections.abc import Iterator

from . import env
from .errors import InvalidRequest

__all__ = [
    "ENV_NAMESPACE",
    "GLOBAL",
    "Namespace",
    "NamespaceLike",
    "current_namespace",
    "decode_namespace",
    "default_namespace",
    "encode_namespace",
    "format_namespace",
    "is_nested",
    "normalize_namespace",
    "set_default_namespace",
    "use_namespace",
]

Namespace = tuple[str, ...]
NamespaceLike = str | tuple[str, ...]

#: The namespace used when none is set. It is an ordinary namespace, named
#: like PaperTiger's ``:global`` atom; nothing else is nested under it.
GLOBAL: Namespace = (":global",)

#: Environment variable through which a child process inherits a namespace.
ENV_NAMESPACE = env.NAMESPACE

_MAX_PART = 200


def normalize_namespace(ns: object, *, param: str = "namespace") -> Namespace:
    """Return the canonical tuple form of ``ns``, or raise :class:`InvalidRequest`.

    O(len(ns)).

    >>> normalize_namespace("test-a")
    ('test-a',)
    >>> normalize_namespace(("test-a", "acct_1"))
    ('test-a', 'acct_1')
    """
    if isinstance(ns, str):
        parts: tuple[object, ...] = (ns,)
    elif isinstance(ns, (tuple, list)):
        parts = tuple(ns)
    else:
        raise InvalidRequest(
            f"Invalid {param}: expected a str or a tuple of str, got {type(ns).__name__}.",
            param=param,
        )
    if not parts:
        raise InvalidRequest(
            f"Invalid {param}: the tuple is empty; name at least one part.", param=param
        )
    for part in parts:
        if not isinstance(part, str) or not part:
            raise InvalidRequest(
                f"Invalid {param}: every part must be a non-empty str, got {part!r}.",
                param=param,
            )
        if len(part) > _MAX_PART:
            raise InvalidRequest(
                f"Invalid {param}: a part is {len(part)} characters long; the most is {_MAX_PART}.",
                param=param,
            )
    return parts  # type: ignore[return-value]


def is_nested(ns: Namespace, under: Namespace) -> bool:
    """True when ``ns`` is ``under`` itself or nested below it. O(len(under)).

    >>> is_nested(("a", "acct_1"), ("a",)), is_nested(("ab",), ("a",))
    (True, False)
    """
    return ns[: len(under)] == under


def format_namespace(ns: Namespace) -> str:
    """A namespace for messages: its parts joined by ``/``.

    >>> format_namespace(("test-a", "acct_1"))
    "'test-a/acct_1'"
    """
    return repr("/".join(ns))


def encode_namespace(ns: NamespaceLike) -> str:
    """The namespace as a string fit for an environment variable (JSON)."""
    return json.dumps(list(normalize_namespace(ns)))


def decode_namespace(text: str) -> Namespace:
    """Inverse of :func:`encode_namespace`; raises :class:`InvalidRequest` on garbage."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text  # a plain string names a one-part namespace
    try:
        return normalize_namespace(value, param=ENV_NAMESPACE)
    except InvalidRequest as exc:
        raise InvalidRequest(
            f"{exc.message} (read from the environment: {ENV_NAMESPACE}={text!r}). Set it to "
            'a namespace, such as "test-a" or ["test-a", "acct_1"], or unset it.',
            param=ENV_NAMESPACE,
        ) from None


_current: contextvars.ContextVar[Namespace | None] = contextvars.ContextVar(
    "papertiger_namespace", default=None
)


#: The process default; None until first read from the environment.
_default: Namespace | None = None


def default_namespace() -> Namespace:
    """The process default (see the module doc). O(1) once read."""
    global _default
    if _default is None:
        text = env.get(ENV_NAMESPACE)
        _default = decode_namespace(text) if text else GLOBAL
    return _default


def current_namespace() -> Namespace:
    """The namespace store calls made here use. O(1).

    >>> current_namespace() == GLOBAL
    True
    """
    ns = _current.get()
    if ns is not None:
        return ns
    return _default if _default is not None else default_namespace()


def set_default_namespace(ns: NamespaceLike | None, *, export: bool = False) -> Namespace:
    """Set the process-wide namespace seen outside any :func:`use_namespace` block.

    ``None`` restores :data:`GLOBAL`.  With ``export=True`` the namespace is also
    written to ``PAPERTIGER_NAMESPACE`` so child processes started afterwards
    inherit it.  Returns the previous default, so a caller can put it back.
    """
    global _default
    try:
        previous = default_namespace()
    except InvalidRequest:  # a bad PAPERTIGER_NAMESPACE: being replaced anyway
        previous = GLOBAL
    _default = GLOBAL if ns is None else normalize_namespace(ns)
    if export:
        if ns is None:
            os.environ.pop(ENV_NAMESPACE, None)
        else:
            os.environ[ENV_NAMESPACE] = encode_namespace(_default)
    return previous


@contextlib.contextmanager
def use_namespace(ns: NamespaceLike) -> Iterator[Namespace]:
    """Make ``ns`` current for the ``with`` block (this thread or task only).

    >>> with use_namespace("test-a") as ns:
    ...     current_namespace()
    ('test-a',)
    """
    normalized = normalize_namespace(ns)
    token = _current.set(normalized)
    try:
        yield normalized
    finally:
        _current.reset(token)
