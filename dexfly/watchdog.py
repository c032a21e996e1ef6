"""A watchdog for long stages: a stage that makes no progress for `timeout_s` stops with an error naming it.

Why: XLA:CPU has hung inside jitted, vmapped MJX rollouts (0% CPU, every thread parked; see BENCHMARKS.md,
"XLA:CPU hangs"). A hung XLA call cannot be interrupted from Python, so a long run would wait forever.

    with watchdog.stage("evaluate grasp", timeout_s=600):
        for batch in batches:
            run(batch)
            watchdog.beat(f"batch {i}")        # progress: restarts the clock, names the current batch

Library code calls `watchdog.beat(...)` after each unit of work; with no active stage it does nothing. A stage
has stalled when no beat came for `timeout_s` AND the process used almost no CPU over the last minute (the
wedge's signature: every thread parked; a long compile or a slow batch keeps the CPU busy and is not a stall),
or when no beat came for `hard_timeout_s` whatever the CPU did. Time the whole process spends suspended (Ctrl-Z,
SIGSTOP) does not count: the clock restarts when it continues. On a
stall the watchdog prints the error (stage, last batch, seconds) and the Python stacks to stderr, then
raises `StageStalled` in the main thread. If the main thread is stuck in native code (a wedged XLA call)
and cannot take the exception within `grace_s`, the process exits with code `STALL_EXIT_CODE` (75,
EX_TEMPFAIL: rerun the same command; resumable runs continue from their last completed work).

The default timeout is `DEXFLY_STALL_TIMEOUT` seconds (600 unless set; 0 disables the watchdog).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time

STALL_EXIT_CODE = 75
DEFAULT_TIMEOUT_S = 600.0


class StageStalled(RuntimeError):
    """A stage made no progress within its watchdog timeout."""


def default_timeout() -> float:
    value = os.environ.get("DEXFLY_STALL_TIMEOUT", "")
    try:
        return float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"DEXFLY_STALL_TIMEOUT must be a number of seconds, got {value!r}") from None


class _Monitor:
    """The active stage's clock and the thread that watches it (one per process)."""

    def __init__(self, name: str, timeout_s: float, grace_s: float, hard_timeout_s: float):
        self.name, self.timeout_s, self.grace_s, self.hard_timeout_s = name, timeout_s, grace_s, hard_timeout_s
        self.last = time.monotonic()
        self.idle_window = min(timeout_s, 60.0)
        self.cpu_samples: list[tuple[float, float]] = []  # (monotonic time, process CPU seconds), the last window
        self.what = "start"
        self.message: str | None = None
        self._stop = threading.Event()
        self._main = threading.main_thread().ident
        self._thread = threading.Thread(target=self._watch, name=f"dexfly-watchdog[{name}]", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self, what: str | None) -> None:
        self.last = time.monotonic()
        if what is not None:
            self.what = what

    def _cpu_idle(self, now: float) -> bool:
        """Whether the process used under 2% of one core over the last idle window (all its threads)."""
        self.cpu_samples.append((now, time.process_time()))
        while len(self.cpu_samples) > 1 and self.cpu_samples[1][0] <= now - self.idle_window:
            self.cpu_samples.pop(0)
        t0, c0 = self.cpu_samples[0]
        return now - t0 >= 0.9 * self.idle_window and self.cpu_samples[-1][1] - c0 < 0.02 * (now - t0)

    def _watch(self) -> None:
        poll = min(1.0, self.timeout_s / 10)
        suspended_after = max(10 * poll, 5.0)
        previous = time.monotonic()
        while not self._stop.wait(poll):
            now = time.monotonic()
            if now - previous > suspended_after:
                # This thread slept far past its poll: the whole process was suspended (Ctrl-Z, SIGSTOP, the machine
                # asleep), not wedged. The clock restarts, or the first poll after `fg` would end a healthy stage.
                self.last = now
                self.cpu_samples.clear()
            previous = now
            idle = now - self.last
            cpu_idle = self._cpu_idle(now)
            if not ((idle >= self.timeout_s and cpu_idle) or idle >= self.hard_timeout_s):
                continue
            why = "with the CPU idle: XLA:CPU is likely wedged" if cpu_idle else f"(hard timeout {self.hard_timeout_s:g} s)"
            self.message = (f"stage {self.name!r} made no progress for {idle:.0f} s {why} (watchdog timeout {self.timeout_s:g} s); "
                            f"last progress: {self.what}. Rerun the same command to resume from the last completed work.")
            print(f"\ndexfly watchdog: {self.message}", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            signal.pthread_kill(self._main, signal.SIGUSR1)  # raises StageStalled if the main thread runs Python
            if self._stop.wait(self.grace_s):
                return
            print(f"dexfly watchdog: the main thread is stuck in native code; exiting with code {STALL_EXIT_CODE}",
                  file=sys.stderr, flush=True)
            os._exit(STALL_EXIT_CODE)


_active: _Monitor | None = None


def beat(what: str | None = None) -> None:
    """Report progress to the active stage's watchdog (no-op without one); `what` names the finished unit."""
    if _active is not None:
        _active.beat(what)


@contextlib.contextmanager
def stage(name: str, timeout_s: float | None = None, grace_s: float = 10.0, hard_timeout_s: float | None = None):
    """Watch a stage: StageStalled (or exit code 75) when `beat` is not called for `timeout_s` seconds while the
    process idles, or for `hard_timeout_s` seconds (default 6 x timeout_s) whatever it does.

    Nested stages keep the outer watchdog (the outermost stage's name and timeout apply); `timeout_s=0`
    disables it. Must be entered from the main thread (it installs a SIGUSR1 handler there).
    """
    global _active
    timeout_s = default_timeout() if timeout_s is None else float(timeout_s)
    if _active is not None or timeout_s <= 0:
        beat(f"{name}: start")
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("watchdog.stage must be entered from the main thread")
    monitor = _Monitor(name, timeout_s, grace_s, 6 * timeout_s if hard_timeout_s is None else float(hard_timeout_s))

    def _raise(signum, frame):
        raise StageStalled(monitor.message or f"stage {name!r} stalled")

    previous = signal.signal(signal.SIGUSR1, _raise)
    _active = monitor
    monitor.start()
    try:
        yield monitor
    finally:
        _active = None
        monitor.stop()
        signal.signal(signal.SIGUSR1, previous)


__all__ = ["STALL_EXIT_CODE", "StageStalled", "beat", "default_timeout", "stage"]
