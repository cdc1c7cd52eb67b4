"""API keys and the namespaces they address. Pure.

``api_key_for(ns)`` writes the namespace into the key itself
(``sk_test_ptg_`` + base64url of its JSON form), so every process that serves
a store reads the same namespace from the same key with no shared table, and
the key is sent by stripe-python on every request, next pages of
``auto_paging_iter`` included.  Any other well-formed test key
(``sk_test_...``, ``rk_test_...``) addresses :data:`~papertiger.GLOBAL`.

>>> key = api_key_for(("test-a", "acct_1"))
>>> key.startswith("sk_test_ptg_"), namespace_for_key(key)
(True, ('test-a', 'acct_1'))
>>> namespace_for_key("sk_test_4eC39HqLyjWDarjtT1zdp7dc")
(':global',)
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from ..errors import InvalidRequest
from ..namespace import GLOBAL, Namespace, NamespaceLike, normalize_namespace

__all__ = [
    "KEY_PREFIX",
    "BadKey",
    "api_key_for",
    "namespace_for_key",
    "namespace_token",
    "token_namespace",
]

#: Keys that name a namespace start with this.
KEY_PREFIX = "sk_test_ptg_"
_WELL_FORMED = re.compile(r"(sk|rk)_test_[A-Za-z0-9_\-]+\Z")


class BadKey(ValueError):
    """An API key papertiger does not accept; the message says why (sent with a 401)."""


def namespace_token(ns: NamespaceLike) -> str:
    """The namespace as a URL-safe token (base64url of its JSON form, unpadded). O(len)."""
    text = json.dumps(list(normalize_namespace(ns)), separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def token_namespace(token: str) -> Namespace:
    """Inverse of :func:`namespace_token`; :class:`ValueError` for a token that is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw.decode())
        return normalize_namespace(value)
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidRequest) as exc:
        raise ValueError(f"not a papertiger namespace token ({exc})") from None


def api_key_for(namespace: NamespaceLike) -> str:
    """A test secret key whose requests read and write exactly ``namespace``.

    Raises :class:`~papertiger.InvalidRequest` for a malformed namespace.
    """
    return KEY_PREFIX + namespace_token(namespace)


def namespace_for_key(key: str) -> Namespace:
    """The namespace a key addresses; :class:`BadKey` for a key papertiger refuses. O(len)."""
    if not _WELL_FORMED.match(key):
        shown = key[:12] + "*" * max(0, min(len(key) - 12, 20))
        raise BadKey(
            f"Invalid API Key provided: {shown}. papertiger accepts test keys "
            "(sk_test_... or rk_test_...); papertiger.api_key_for(namespace) makes one for a "
            "namespace."
        )
    if key.startswith(KEY_PREFIX):
        try:
            return token_namespace(key[len(KEY_PREFIX) :])
        except ValueError:
            raise BadKey(
                f"Invalid API Key provided: {key[:20]}...: it starts like a key from "
                "papertiger.api_key_for() but does not decode to a namespace. Make it again "
                "with papertiger.api_key_for(namespace)."
            ) from None
    return GLOBAL
