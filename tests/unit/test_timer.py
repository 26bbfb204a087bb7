"""The global timeout's pausable timer."""

from __future__ import annotations

import threading
import time

import pytest

from vmrig.driver.namespace import retry
from vmrig.errors import RequestedAssertionFailed
from vmrig.timeouts import GLOBAL_MARGIN, TimeoutScale
from vmrig.timer import PausableTimer


def _timer(seconds: float) -> tuple[PausableTimer, threading.Event]:
    fired = threading.Event()
    return PausableTimer(seconds, fired.set), fired


def test_fires_after_its_time() -> None:
    timer, fired = _timer(0.2)
    started = time.monotonic()
    timer.start()
    assert fired.wait(5)
    assert time.monotonic() - started >= 0.2


def test_cancel_prevents_firing() -> None:
    timer, fired = _timer(0.2)
    timer.start()
    timer.cancel()
    assert not fired.wait(0.5)


def test_paused_time_does_not_count() -> None:
    timer, fired = _timer(0.4)
    timer.start()
    time.sleep(0.1)
    timer.pause()
    assert timer.paused
    left = timer.remaining
    assert 0.2 < left <= 0.3 + 0.05
    time.sleep(0.8)  # twice the whole timeout, paused
    assert not fired.is_set()
    assert timer.remaining == left
    timer.resume()
    assert not timer.paused
    started = time.monotonic()
    assert fired.wait(5)
    assert time.monotonic() - started >= left - 0.05


def test_pauses_nest() -> None:
    # Long enough that the pause surely comes first, even on a loaded machine.
    timer, fired = _timer(1.0)
    timer.start()
    timer.pause()
    timer.pause()
    timer.resume()
    assert timer.paused
    assert not fired.wait(1.5)
    timer.resume()
    assert fired.wait(5)


def test_paused_before_start_and_extra_resume() -> None:
    timer, fired = _timer(0.1)
    timer.resume()  # nothing to resume: ignored
    timer.pause()
    timer.start()
    assert not fired.wait(0.4)
    timer.resume()
    assert fired.wait(5)


def test_cancel_says_whether_the_timer_had_fired() -> None:
    timer, fired = _timer(0.05)
    timer.start()
    assert fired.wait(5)
    assert timer.cancel() is False
    early, _ = _timer(5)
    early.start()
    assert early.cancel() is True


def test_scaled_timeouts_end_before_the_global_timeout() -> None:
    left: list[float | None] = [None]
    scale = TimeoutScale(5.0, "TCG", left=lambda: left[0])
    assert scale(900) == 4500
    assert scale.note(900, 4500) == "900, scaled x5 under TCG to 4500 s"
    left[0] = 600.0
    assert scale(900) == 600 - GLOBAL_MARGIN
    assert scale(10) == 50
    assert scale.note(900, 570) == "900, scaled x5 under TCG to 4500 s, cut to 570 s by the run's global timeout"
    # A wait that began with its whole scaled time is not reported cut once the
    # global timeout's time left has shrunk below it (during the wait).
    left[0] = 39.0
    assert scale(4) == 19.5
    assert scale.note(4, 20) == "4, scaled x5 under TCG to 20 s"
    left[0] = 20.0
    assert scale(900) == 10.0  # half the time left, when that is less than the margin
    assert scale(1) == 5.0


def test_seconds_left_of_the_timer() -> None:
    timer = PausableTimer(100, lambda: None)
    assert timer.seconds_left() is None
    timer.start()
    left = timer.seconds_left()
    assert left is not None and 99 < left <= 100
    timer.cancel()
    assert timer.seconds_left() is None


def test_a_timeout_message_names_the_time_the_wait_had() -> None:
    # The global timeout has 60 s left when the wait begins and 0.1 s at its end:
    # the wait had its whole scaled 0.1 s, so the message must not call it cut.
    left = [60.0]
    scale = TimeoutScale(5.0, "TCG", left=lambda: left[0])
    calls: list[bool] = []

    def never(last: bool) -> bool:
        calls.append(last)
        if len(calls) > 1:  # the wait begins after the first try
            left[0] = 0.1
        return False

    with pytest.raises(RequestedAssertionFailed) as failure:
        retry(never, timeout=0.02, scale=scale)
    assert str(failure.value).endswith("(timeout=0.02, scaled x5 under TCG to 0.1 s)"), failure.value
