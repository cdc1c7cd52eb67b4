"""Run the benchmark harness with its results under benchmarks/results/.

    python benchmarks/run.py            # the default run (a few minutes)
    python benchmarks/run.py --quick    # about a minute
    python benchmarks/run.py --full     # adds the 1M-record growth run

The same as ``papertiger bench ... --out benchmarks/results``; any other
option of ``papertiger bench`` passes through.
"""

from __future__ import annotations

import sys
from pathlib import Path

from papertiger.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(Path(__file__).resolve().parent / "results")]
    sys.exit(main(["bench", *args]))
