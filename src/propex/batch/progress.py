"""Progress display of a batch job: rich, else tqdm, else a log line every few seconds."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("propex.batch")


class Progress:
    """``advance(n)`` after each batch; samples/s and ETA are over the samples computed in this run."""

    def __init__(self, total: int, done: int, enabled: Any = True, description: str = "explaining"):
        self.total, self.done, self.start_done = total, done, done
        self.t0 = time.perf_counter()
        self._bar: Any = None
        self._kind = None
        if not enabled:
            return
        kind = enabled if isinstance(enabled, str) else "auto"
        if kind in ("auto", "rich"):
            try:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                           TimeRemainingColumn)
                self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                                         transient=False)
                self._task = self._bar.add_task(description, total=total, completed=done, rate="")
                self._bar.start()
                self._kind = "rich"
                return
            except ImportError:
                pass
        if kind in ("auto", "tqdm"):
            try:
                from tqdm import tqdm
                self._bar = tqdm(total=total, initial=done, desc=description, unit="samples", file=sys.stderr)
                self._kind = "tqdm"
                return
            except ImportError:
                pass
        self._kind = "log"
        self._last = self.t0

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    def advance(self, n: int) -> None:
        self.done += n
        if self._kind == "rich":
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate():.1f} samples/s")
        elif self._kind == "tqdm":
            self._bar.update(n)
        elif self._kind == "log":
            now = time.perf_counter()
            if now - self._last >= 5 or self.done >= self.total:
                self._last = now
                rate = self.rate()
                eta = (self.total - self.done) / rate if rate > 0 else float("nan")
                log.info("%d/%d samples, %.1f samples/s, ETA %.0f s", self.done, self.total, rate, eta)

    def close(self) -> None:
        if self._kind in ("rich", "tqdm"):
            self._bar.stop() if self._kind == "rich" else self._bar.close()
        self._kind = None
