"""Namespaces: normalisation, nesting, the current namespace, and isolation in the store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from papertiger import GLOBAL, InvalidRequest
from papertiger.namespace import (
    ENV_NAMESPACE,
    current_namespace,
    decode_namespace,
    encode_namespace,
    is_nested,
    normalize_namespace,
    set_default_namespace,
    use_namespace,
)


@pytest.fixture
def default_restored() -> Iterator[None]:
    """Whatever the test does to the process default, put it back."""
    before = current_namespace()
    env = os.environ.get(ENV_NAMESPACE)
    try:
        yield
    finally:
        set_default_namespace(before)
        if env is None:
            os.environ.pop(ENV_NAMESPACE, None)
        else:
            os.environ[ENV_NAMESPACE] = env


# -- the pure functions ----------------------------------------------------------------------


def test_normalize() -> None:
    assert normalize_namespace("a") == ("a",) == normalize_namespace(("a",))
    assert normalize_namespace(["a", "acct_1"]) == ("a", "acct_1")


@pytest.mark.parametrize("bad", [(), [], "", ("a", ""), ("a", 1), 5, None, b"a", "x" * 201])
def test_normalize_rejects(bad: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        normalize_namespace(bad)
    assert info.value.param == "namespace"
    with pytest.raises(InvalidRequest), use_namespace(bad):
        pass


def test_nesting_is_by_parts_not_by_prefix() -> None:
    assert is_nested(("a", "acct_1"), ("a",)) and is_nested(("a",), ("a",))
    assert not is_nested(("ab",), ("a",)) and not is_nested(("a",), ("a", "acct_1"))
    assert not is_nested(("b", "a"), ("a",))


def test_encode_decode() -> None:
    samples: list[str | tuple[str, ...]] = ["a", ("a", "b/c"), ('quo"te',)]
    for ns in samples:
        assert decode_namespace(encode_namespace(ns)) == normalize_namespace(ns)
    assert decode_namespace("plain") == ("plain",)
    with pytest.raises(InvalidRequest):
        decode_namespace("[]")


def test_use_namespace_nests_and_restores() -> None:
    outer = current_namespace()
    with use_namespace("x") as ns:
        assert ns == ("x",) == current_namespace()
        with use_namespace(("x", "acct")):
            assert current_namespace() == ("x", "acct")
        assert current_namespace() == ("x",)
    assert current_namespace() == outer


def test_threads_and_tasks_keep_their_own(default_restored: None) -> None:
    set_default_namespace("proc-default")
    seen: dict[str, Any] = {}

    def in_thread(name: str) -> None:
        seen[name + "-start"] = current_namespace()  # threads start from the default
        with use_namespace(name):
            barrier.wait()
            seen[name] = current_namespace()

    barrier = threading.Barrier(2)
    with use_namespace("main-block"):
        threads = [threading.Thread(target=in_thread, args=(n,)) for n in ("t1", "t2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert current_namespace() == ("main-block",)
    assert seen == {
        "t1-start": ("proc-default",),
        "t2-start": ("proc-default",),
        "t1": ("t1",),
        "t2": ("t2",),
    }

    async def task(name: str) -> tuple[Any, Any]:
        inherited = current_namespace()
        with use_namespace(name):
            await asyncio.sleep(0)
            return inherited, current_namespace()

    async def main() -> list[tuple[Any, Any]]:
        with use_namespace("creator"):
            return list(await asyncio.gather(task("a1"), task("a2")))

    assert asyncio.run(main()) == [(("creator",), ("a1",)), (("creator",), ("a2",))]


def test_default_is_global(default_restored: None) -> None:
    set_default_namespace(None)
    assert current_namespace() == GLOBAL == (":global",)


def test_exported_default_reaches_child_processes(default_restored: None) -> None:
    set_default_namespace(("exported", "acct_9"), export=True)
    code = "import papertiger; print('/'.join(papertiger.current_namespace()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "exported/acct_9"
    set_default_namespace(None, export=True)
    assert ENV_NAMESPACE not in os.environ
