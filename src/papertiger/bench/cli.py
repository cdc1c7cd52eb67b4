"""``papertiger bench [--quick|--full] [--out DIR]``: the benchmark harness's command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

DESCRIPTION = """\
Measure papertiger against its physical floors and its peers
(multiprocessing.Manager().dict() and, when redis-server is installed, Redis),
from worker processes, on 4 KB Stripe checkout sessions. Every figure is a
median of interleaved samples taken in the same run; ratios compare figures
of the same run. Writes results.json, pyperf.json, table.txt, table.md and
chart.png under --out.

  --http-only  only Stripe's HTTP API through stripe-python: papertiger against
             localstripe and the HTTP floor (http.json, http.txt, http.md)
  --quick    about a minute on 2 cores (growth at 1k and 10k records)
  (default)  a few minutes (growth at 1k and 100k records)
  --full     adds the 1M-record growth run (about 20 GB of memory at its peak)

It also measures a new process's first read (from before the import to a
decoded record, at 1k and 100k records) and the memory of N reader processes
(python -m papertiger.bench.readers runs just those two).
"""


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1000,100000, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure papertiger against its floors and peers",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick", dest="preset", action="store_const", const="quick", help="a one-minute run"
    )
    preset.add_argument(
        "--full", dest="preset", action="store_const", const="full", help="add 1M records"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("papertiger-bench"),
        help="directory for the results (default ./papertiger-bench)",
    )
    knobs = parser.add_argument_group("knobs (override the preset)")
    knobs.add_argument("--records", type=int, help="records in the main namespace (10000)")
    knobs.add_argument("--sizes", type=_ints, help="growth namespace sizes, e.g. 1000,100000")
    knobs.add_argument("--repeats", type=int, help="timed samples per case")
    knobs.add_argument("--sample-ms", type=float, help="target duration of one sample (ms)")
    knobs.add_argument("--readers", type=_ints, help="reader-process counts, e.g. 1,2,4")
    knobs.add_argument("--writers", type=_ints, help="writer-process counts (1,2,4,8)")
    knobs.add_argument("--scaling-seconds", type=float, help="duration of one scaling round")
    knobs.add_argument("--batch", type=int, help="records per insert_many call (1000)")
    knobs.add_argument("--catchup-effects", type=int, help="effects per catch-up sample")
    knobs.add_argument(
        "--pin-cpu",
        type=int,
        metavar="N",
        help="run the worker and every server on CPU N while operations are timed",
    )
    knobs.add_argument(
        "--first-read-sizes",
        type=_ints,
        help="store sizes of the first-read figure, e.g. 1000,100000",
    )
    knobs.add_argument("--first-read-repeats", type=int, help="new processes per system and size")
    knobs.add_argument(
        "--reader-counts", type=_ints, help="N of the memory of N readers, e.g. 1,2,4,8"
    )
    knobs.add_argument("--no-redis", action="store_true", help="leave Redis out")
    knobs.add_argument(
        "--no-http", action="store_true", help="leave out Stripe's HTTP API (stripe-python)"
    )
    knobs.add_argument(
        "--http-only",
        action="store_true",
        help="measure only Stripe's HTTP API against localstripe and the HTTP floor",
    )
    knobs.add_argument("--http-requests", type=int, help="requests per HTTP client per sample")
    knobs.add_argument(
        "--http-customers", type=int, help="customers seeded before HTTP reads are timed"
    )
    knobs.add_argument("--no-chart", action="store_true", help="write no PNG")
    knobs.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    knobs.add_argument(
        "--profile",
        action="store_true",
        help="also write cProfile statistics of papertiger's operations to OUT/profile/",
    )
    parser.set_defaults(func=_main, preset="default")


def _main(args: argparse.Namespace) -> int:
    try:
        import pyperf  # noqa: F401
    except ImportError:
        print(
            "papertiger bench needs pyperf (and matplotlib for the chart, redis for the Redis "
            "peer): pip install 'papertiger[bench]'",
            file=sys.stderr,
        )
        return 2
    from .plan import PRESETS
    from .runner import run

    slow = None if args.repeats is None else max(2, min(args.repeats, 5))
    plan = PRESETS[args.preset].with_overrides(
        records=args.records,
        sizes=args.sizes,
        repeats=args.repeats,
        slow_repeats=slow,
        sample_seconds=None if args.sample_ms is None else args.sample_ms / 1000,
        readers=args.readers,
        writers=args.writers,
        scaling_seconds=args.scaling_seconds,
        scaling_repeats=None if args.repeats is None else max(1, min(args.repeats, 5)),
        batch=args.batch,
        catchup_effects=args.catchup_effects,
        redis=False if args.no_redis else None,
        chart=False if args.no_chart else None,
        profile=True if args.profile else None,
        pin_cpu=args.pin_cpu,
        http=False if args.no_http else None,
        http_requests=args.http_requests,
        http_repeats=args.repeats,
        http_customers=args.http_customers,
        first_read_sizes=args.first_read_sizes,
        first_read_repeats=args.first_read_repeats,
        reader_counts=args.reader_counts,
    )
    try:
        plan.check()
    except ValueError as exc:
        print(f"papertiger bench: {exc}", file=sys.stderr)
        return 2
    if args.http_only:
        from .stripe_api import run_standalone

        return run_standalone(
            args.out,
            requests=plan.http_requests,
            repeats=plan.http_repeats,
            customers=plan.http_customers,
            clients=plan.http_clients,
            budget=plan.http_budget,
            progress=not args.no_progress,
        )
    return run(plan, args.out, progress=not args.no_progress)
