"""The global timeout's clock: a one-shot timer that can be paused.

A test stopped at a debugger prompt is waiting for its user, not hanging, so
the debugger pauses this timer while its prompt is open and the remaining time
is what the script itself used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class PausableTimer:
    """Calls `action` on its own thread once `seconds` of unpaused time have passed."""

    def __init__(self, seconds: float, action: Callable[[], None]) -> None:
        self.seconds = seconds
        self.action = action
        self._cond = threading.Condition()
        self._remaining = seconds
        self._deadline: float | None = None  # None while not started or paused
        self._pauses = 0
        self._cancelled = False
        self._started = False
        self._fired = False
        self._thread = threading.Thread(target=self._run, name="global-timeout", daemon=True)

    def start(self) -> None:
        with self._cond:
            self._started = True
            if self._pauses == 0:
                self._deadline = time.monotonic() + self._remaining
        self._thread.start()

    def seconds_left(self) -> float | None:
        """`remaining` while the timer runs or is paused; None before start() and once cancelled or fired."""
        with self._cond:
            if not self._started or self._cancelled or self._fired:
                return None
        return self.remaining

    def cancel(self) -> bool:
        """Stops the timer; False if it had already fired (its action ran or is running)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()
            return not self._fired

    def pause(self) -> None:
        """Stops the clock; pauses nest, the clock runs again after the last resume()."""
        with self._cond:
            if self._pauses == 0 and self._deadline is not None:
                self._remaining = max(0.0, self._deadline - time.monotonic())
                self._deadline = None
            self._pauses += 1

    def resume(self) -> None:
        with self._cond:
            if self._pauses == 0:
                return
            self._pauses -= 1
            if self._pauses == 0 and self._started:
                self._deadline = time.monotonic() + self._remaining
            self._cond.notify_all()

    @property
    def remaining(self) -> float:
        """Seconds of unpaused time left."""
        with self._cond:
            if self._deadline is None:
                return self._remaining
            return max(0.0, self._deadline - time.monotonic())

    @property
    def paused(self) -> bool:
        with self._cond:
            return self._pauses > 0

    def _run(self) -> None:
        with self._cond:
            while not self._cancelled:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._cancelled:
                return
            self._cancelled = True  # fires once
            self._fired = True
        self.action()
