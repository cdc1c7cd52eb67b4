"""Store URLs: which backend a URL names, and how to show one without its password."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["REDIS_SCHEMES", "redact"]

#: URL schemes that select the Redis backend.
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"})


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for messages and logs. O(len(url)).

    >>> redact("redis://:s3cret@localhost:6379/0")
    'redis://:***@localhost:6379/0'
    >>> redact("redis://user:pw@host/1?password=pw")
    'redis://user:***@host/1?password=***'
    >>> redact("unix:///tmp/redis.sock?db=2")
    'unix:///tmp/redis.sock?db=2'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a malformed URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if sep else f"{user}@{hostport}"
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else f"{k}{eq}{v}"
        for k, eq, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    text = f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else url
    return text + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
