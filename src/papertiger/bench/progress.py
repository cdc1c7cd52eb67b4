"""A one-line progress bar on stderr (a line per phase when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]

WIDTH = 28


class ProgressBar:
    """``update(phase, done, total, label)``; redraws at most 10 times a second."""

    def __init__(self, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.start = time.monotonic()
        self.phase: str | None = None
        self.last = 0.0
        self.drawn = False

    def update(self, phase: str, done: int, total: int, label: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        new_phase = phase != self.phase
        if not new_phase and now - self.last < 0.1 and done < total:
            return
        self.last = now
        elapsed = now - self.start
        if not self.tty:
            if new_phase:
                self.stream.write(f"bench: {phase} ({elapsed:.0f} s)\n")
                self.stream.flush()
            self.phase = phase
            return
        self.phase = phase
        frac = min(1.0, done / total) if total > 0 else 0.0
        filled = int(frac * WIDTH)
        bar = "█" * filled + "·" * (WIDTH - filled)
        text = f"{phase:<11} {bar} {frac * 100:3.0f}%  {elapsed:4.0f} s  {label}"
        self.stream.write("\r\x1b[K" + text[:110])
        self.stream.flush()
        self.drawn = True

    def message(self, text: str) -> None:
        """A line of its own, above the bar."""
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        self.stream.flush()
        self.phase = None

    def close(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
        self.drawn = False
