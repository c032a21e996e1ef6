"""One progress display for every long stage (diffusion training, residual PPO, augmentation).

    with progress_bar("diffusion", total=6000, completed=0, enabled=True) as bar:
        bar.update(50, info="loss 0.0312  9,800 samples/s")

On a terminal it is a rich progress bar. When the output goes to a file or a pipe (a run in the background,
`nohup ... > run.log`), rich would write nothing until the stage ends, so instead a plain line is printed when the
stage starts, at most every `log_every_s` seconds while it runs, and when it reaches `total`:

    [10:42:07] residual PPO 31/90 (34%) 27m12s elapsed, ~51m48s left  return 118.2  success 0.41 ...
"""

from __future__ import annotations

import time

from rich.console import Console

LOG_EVERY_S = 60.0
"""Seconds between plain progress lines when the output is not a terminal."""


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s"


class ProgressBar:
    """`update(completed, info=...)` advances the display; a context manager (`progress_bar`), or `start()` ... `close()`."""

    def __init__(self, title: str, total: int, completed: int = 0, *, enabled: bool = True, console: Console | None = None,
                 log_every_s: float = LOG_EVERY_S):
        self.title, self.total, self.completed, self.info = title, int(total), int(completed), ""
        self.enabled = enabled
        self.console = console or Console()
        self.log_every_s = log_every_s
        self.live = enabled and self.console.is_terminal
        self._bar = None
        self._t0 = self._start_completed = self._last_line = None

    def start(self) -> "ProgressBar":
        self._t0 = time.perf_counter()
        self._start_completed = self.completed
        if self.live:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._bar = Progress(TextColumn(f"[bold]{self.title}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)
            self._bar.start()
            self._task = self._bar.add_task(self.title, total=self.total, completed=self.completed, info="")
        elif self.enabled:
            self._line()
        return self

    def update(self, completed: int, info: str = "") -> None:
        self.completed, self.info = int(completed), info
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed, info=info)
        elif self.enabled:
            now = time.perf_counter()
            if self.completed >= self.total or now - self._last_line >= self.log_every_s:
                self._line()

    def _line(self) -> None:
        now = time.perf_counter()
        self._last_line = now
        elapsed = now - self._t0
        done = self.completed - self._start_completed
        left = (f", ~{_clock(elapsed / done * (self.total - self.completed))} left"
                if 0 < done and self.completed < self.total else "")
        pct = 100.0 * self.completed / self.total if self.total else 100.0
        self.console.print(f"[{time.strftime('%H:%M:%S')}] {self.title} {self.completed}/{self.total} ({pct:.0f}%) "
                           f"{_clock(elapsed)} elapsed{left}  {self.info}".rstrip(), highlight=False, markup=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> "ProgressBar":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


progress_bar = ProgressBar
"""`progress_bar(title, total, completed=0, *, enabled=True, console=None, log_every_s=LOG_EVERY_S)`."""


class ProgressCallback:
    """A `ProgressBar` driven by an `on_progress(done, total)` callback, for loops that learn their total inside
    (evaluation over topology groups and seeds, collection over batches): the bar starts at the first call and
    closes when `done` reaches `total`, or when the `with` block ends (an error part way)."""

    def __init__(self, title: str, *, enabled: bool = True, console: Console | None = None):
        self.title, self.enabled, self.console = title, enabled, console
        self._bar: ProgressBar | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = ProgressBar(self.title, total, enabled=self.enabled, console=self.console).start()
        self._bar.update(done)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "ProgressCallback":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["LOG_EVERY_S", "ProgressBar", "ProgressCallback", "progress_bar"]
