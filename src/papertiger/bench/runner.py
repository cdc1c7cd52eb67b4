"""The harness's main process: start the systems, run the worker and the readers, report.

Theory of operation
-------------------
:func:`run` owns everything a run starts, on one :class:`contextlib.ExitStack`:

1. a private papertiger manager (:func:`papertiger.serve`, which exports its
   address to the processes spawned below), a ``multiprocessing.Manager()``
   with two dicts, and, when it can, a private ``redis-server``
   (:class:`~.peers.RedisServer`); all of their files live in one private
   temporary directory;
2. the measuring worker (:func:`~.workloads.worker_main`, spawned), whose
   progress messages drive the progress bar and whose last message is the
   samples;
3. the reader pool of the scaling runs (:func:`~.scaling.run_scaling`);
4. the writer pool of the write scaling runs (:func:`~.writers.run_writer_scaling`).

Then it stops them all and writes the outputs (:mod:`.report`,
:mod:`.chart`).  On Ctrl-C every process of the run receives SIGINT; the
workers exit quietly, the papertiger manager stops and removes its shared
memory, and this process unwinds the stack with SIGINT ignored, so a second
Ctrl-C cannot interrupt the clean-up.  SIGTERM is handled the same way.
Nothing is left in /dev/shm or /tmp.
"""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from .machine import describe
from .plan import Plan
from .progress import ProgressBar

__all__ = ["run"]

OUTPUTS = {
    "json": "results.json",
    "pyperf": "pyperf.json",
    "table": "table.txt",
    "markdown": "table.md",
    "chart": "chart.png",
}


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while the run is on (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _shielded(stack: contextlib.ExitStack) -> Iterator[contextlib.ExitStack]:
    """Unwind ``stack`` with SIGINT and SIGTERM ignored, however the block ends."""
    try:
        yield stack
    finally:
        main = threading.current_thread() is threading.main_thread()
        old = {}
        if main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            stack.close()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def _pin(pids: list[int | None], cpus: set[int]) -> None:
    """Every thread of every process in ``pids`` on ``cpus``."""
    for pid in pids:
        if not pid:
            continue
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _reap(proc: Any) -> None:
    proc.join(5)
    if proc.is_alive():
        proc.terminate()
        proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _shutdown_manager(manager: Any) -> None:
    with contextlib.suppress(Exception):
        manager.shutdown()


def _run_worker(
    ctx: Any,
    stack: contextlib.ExitStack,
    bar: ProgressBar,
    plan: Plan,
    mdicts: tuple[Any, Any] | None,
    redis_socket: str | None,
    pids: dict[str, Any],
    out: Path,
) -> dict[str, Any]:
    from .workloads import worker_main

    ours, theirs = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=worker_main,
        args=(theirs, plan, mdicts, redis_socket, pids, str(out)),
        name="papertiger-bench-worker",
    )
    proc.start()
    stack.callback(_reap, proc)
    theirs.close()
    while True:
        if not ours.poll(0.5):
            if not proc.is_alive() and not ours.poll(0):
                raise RuntimeError(
                    f"the measuring worker exited (code {proc.exitcode}) without results; "
                    "its error is on stderr above."
                )
            continue
        try:
            msg = ours.recv()
        except EOFError:
            raise RuntimeError("the measuring worker closed its pipe without results.") from None
        if msg[0] == "progress":
            bar.update(*msg[1:])
        elif msg[0] == "result":
            ours.close()
            return dict(msg[1])
        else:
            raise RuntimeError(f"the measuring worker failed:\n{msg[1]}")


def _measure(plan: Plan, out: Path, bar: ProgressBar) -> dict[str, Any]:
    import papertiger

    from .peers import RedisServer, redis_unavailable, start_manager
    from .scaling import run_scaling
    from .writers import run_writer_scaling

    ctx = multiprocessing.get_context("spawn")
    raw: dict[str, Any] = {"systems": {}, "notes": []}
    systems = raw["systems"]
    with _shielded(contextlib.ExitStack()) as stack:
        workdir = tempfile.mkdtemp(prefix="ptg-bench-")
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        server = stack.enter_context(papertiger.serve())
        prefix = server.control[:-2]
        systems["papertiger"] = {
            "available": True,
            "version": papertiger.__version__,
            "manager_pid": server.pid,
            "prefix": prefix,
            "workdir": workdir,
        }
        manager, manager_pid = start_manager(ctx)
        stack.callback(_shutdown_manager, manager)
        mdicts = (manager.dict(), manager.dict())
        systems["manager"] = {"available": True, "pid": manager_pid}
        why = redis_unavailable() if plan.redis else "turned off (--no-redis)"
        redis_socket = None
        if why is None:
            try:
                redis = RedisServer(workdir=workdir)
            except RuntimeError as exc:
                why = f"redis-server did not start: {exc}"
            else:
                stack.callback(redis.stop)
                redis_socket = redis.socket
                import redis as redis_py

                systems["redis"] = {
                    "available": True,
                    "version": redis.version,
                    "pid": redis.pid,
                    "client": f"redis-py {redis_py.__version__}",
                }
        if why is not None:
            systems["redis"] = {"available": False, "reason": why}
            raw["notes"].append(f"Redis peer skipped: {why}.")
        bar.message(_systems_line(systems))
        pids = {
            "papertiger_manager": server.pid,
            "papertiger_prefix": prefix,
            "manager": manager_pid,
            "redis": systems["redis"].get("pid"),
            "workdir": workdir,
        }
        servers = [server.pid, manager_pid, systems["redis"].get("pid")]
        if plan.pin_cpu is not None:
            everywhere = os.sched_getaffinity(0)
            _pin(servers, {plan.pin_cpu})
            raw["notes"].append(
                f"the worker and every server ran on CPU {plan.pin_cpu} while operations were "
                "timed (--pin-cpu): every round trip is a switch on one core."
            )
        result = _run_worker(ctx, stack, bar, plan, mdicts, redis_socket, pids, out)
        if plan.pin_cpu is not None:
            _pin(servers, everywhere)  # the scaling readers and the servers run anywhere
        raw.update(result)
        raw["scaling"] = run_scaling(
            ctx,
            plan.readers,
            plan.scaling_seconds,
            plan.scaling_repeats,
            result["main_ns"],
            result.pop("main_ids"),
            mdicts[0],
            redis_socket,
            bar.update,
        )
        raw.pop("main_ids", None)
        raw["writers"] = run_writer_scaling(
            ctx,
            plan.writers,
            plan.scaling_seconds,
            plan.scaling_repeats,
            mdicts[1],
            redis_socket,
            bar.update,
        )
        del mdicts
        if redis_socket is not None:  # papertiger on Redis against the raw commands it sends
            from .on_redis import measure as measure_on_redis

            raw["on_redis"] = measure_on_redis(ctx, redis_socket, plan, bar.update)
        else:
            raw["on_redis"] = {"available": False, "reason": why}
        if plan.http:
            from .stripe_api import measure as measure_http

            raw["http"] = measure_http(
                store_env=dict(server.environ()),
                workdir=workdir,
                requests=plan.http_requests,
                repeats=plan.http_repeats,
                customers=plan.http_customers,
                clients=plan.http_clients,
                budget=plan.http_budget,
                progress=bar.message,
            )
        from .readers import measure as measure_new_processes

        raw["new_processes"] = measure_new_processes(
            plan, workdir, bool(systems["redis"].get("available")), bar.update
        )
    return raw


def _systems_line(systems: dict[str, Any]) -> str:
    pt = systems["papertiger"]
    parts = [
        f"papertiger manager pid {pt['manager_pid']} (segments {pt['prefix']}_*)",
        f"files in {pt['workdir']}",
    ]
    m = systems["manager"]
    parts.append(f"multiprocessing.Manager pid {m.get('pid')}")
    r = systems["redis"]
    if r.get("available"):
        parts.append(f"redis-server {r['version']} pid {r['pid']}")
    else:
        parts.append(f"no Redis: {r['reason']}")
    return "bench systems: " + "; ".join(parts)


def run(plan: Plan, out: Path, stdout: TextIO | None = None, progress: bool = True) -> int:
    """Run the benchmarks of ``plan``; write every output under ``out``. Returns an exit code."""
    from . import report

    stdout = stdout if stdout is not None else sys.stdout
    plan.check()
    out.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar(enabled=progress)
    started = time.time()
    load_before = _load()
    try:
        with _signals_as_interrupt():
            raw = _measure(plan, out, bar)
    except KeyboardInterrupt:
        bar.close()
        print(
            "papertiger bench: interrupted; every process it started has stopped and its "
            "files are removed.",
            file=sys.stderr,
        )
        return 130
    finally:
        bar.close()
    raw["plan"] = plan.to_dict()
    raw["machine"] = describe()
    raw["machine"]["load_before"] = load_before
    cores = raw["machine"].get("cores") or 1
    if load_before is not None and load_before > cores / 2:
        note = f"machine busy when the run started (load {load_before:.1f} on {cores} cores)"
        raw["machine"]["load_note"] = note
        raw["notes"].append(
            f"{note}: absolute figures are inflated and noisier; ratios, measured "
            "interleaved, hold up better."
        )
    raw["started"] = started
    raw["date"] = datetime.date.today().isoformat()
    raw["duration_s"] = time.time() - started
    report.analyse(raw)
    files = {key: out / name for key, name in OUTPUTS.items()}
    if plan.chart:
        try:
            from .chart import draw

            draw(raw, files["chart"])
        except ImportError:
            raw["notes"].append(
                "no chart: matplotlib is not installed (pip install 'papertiger[bench]')."
            )
            files.pop("chart")
    else:
        files.pop("chart")
    report.write_pyperf(raw, files["pyperf"])
    text = report.terminal_tables(raw)
    markdown = report.markdown_tables(raw)
    if "http" in raw:
        from .stripe_api import markdown_table, terminal_table

        text += terminal_table(raw["http"])
        markdown += markdown_table(raw["http"])
    files["table"].write_text(text, encoding="utf-8")
    files["markdown"].write_text(markdown, encoding="utf-8")
    raw["outputs"] = {key: str(path) for key, path in files.items()}
    report.write_json(raw, files["json"])
    stdout.write(text)
    stdout.write(
        f"\nwritten in {raw['duration_s']:.0f} s: "
        + ", ".join(str(p) for p in files.values())
        + "\n"
    )
    stdout.flush()
    return 0
