"""Durations a script passes (seconds or `timedelta`) and how they are scaled under emulation.

NixOS's newest driver takes a `datetime.timedelta` wherever it takes a
duration, and a number of seconds everywhere older scripts pass one; vmrig
takes both. Scripts are written for KVM: under TCG every exec in the guest
costs about 60 ms and whole tests run several times slower, so the timeouts
a script passes are multiplied by a factor there (`TimeoutScale`), which the
driver picks once per run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

Duration = float | int | timedelta

# Whole NixOS tests run about 2.5 times slower under TCG than under KVM
# (nix-bitcoin #272); twice that, because a 2-core host also runs several
# emulated guests at once, each on a core of its own.
TCG_FACTOR = 5.0
# A scaled timeout ends this long (at most half the time left) before the run's
# global timeout would: the script's wait or command then fails with its own
# message, not the run's.
GLOBAL_MARGIN = 30.0


def seconds(value: Duration) -> float:
    """`value` in seconds: a number as it is, a timedelta converted.

    Raises TypeError (with the value) for anything else, and ValueError for a
    negative duration.
    """
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"a duration must be a number of seconds or a datetime.timedelta, not {value!r}")
    if result < 0 or math.isnan(result):
        raise ValueError(f"a duration must not be negative: {value!r}")
    return result


def describe(value: Duration) -> str:
    """The duration as the script wrote it, for messages: `30` or `0:00:30`."""
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class TimeoutScale:
    """Multiplies the timeouts a script passes; 1 under KVM.

    `reason` says where the factor came from, for the one log line a run
    prints about it.
    """

    factor: float = 1.0
    reason: str = "KVM"
    # Seconds left on the run's global timeout (None: none runs); set by the driver.
    left: Callable[[], float | None] | None = field(default=None, compare=False)

    def __call__(self, value: Duration) -> float:
        """`value` in seconds, scaled, and cut to end GLOBAL_MARGIN before the global timeout."""
        scaled = seconds(value) * self.factor
        limit = self._limit()
        return scaled if limit is None else min(scaled, limit)

    def _limit(self) -> float | None:
        """How long a timeout may last now: GLOBAL_MARGIN (at most half the time left) short of the global timeout."""
        remaining = self.left() if self.left is not None else None
        return None if remaining is None else remaining - min(GLOBAL_MARGIN, remaining / 2)

    def note(self, value: Duration, applied: float) -> str:
        """How a timeout message names the timeout: as given, and scaled or cut when it was.

        `applied`: the seconds the wait used, what this scale returned for
        `value` when the wait began (the time left on the global timeout is
        less by the time the message is written).
        """
        scaled = seconds(value) * self.factor
        text = describe(value)
        if self.factor != 1:
            text += f", scaled x{self.factor:g} under {self.reason} to {scaled:g} s"
        if applied < scaled:
            text += f", cut to {applied:.0f} s by the run's global timeout"
        return text

    @classmethod
    def choose(cls, accel: str, override: str | None) -> TimeoutScale:
        """The scale for a run under `accel`; `override` is VMRIG_TIMEOUT_FACTOR's value, if set.

        Raises ValueError for an override that is not a positive number.
        """
        if override:
            try:
                factor = float(override)
            except ValueError:
                factor = -1.0
            if not factor > 0:
                raise ValueError(f"VMRIG_TIMEOUT_FACTOR={override!r}: expected a positive number")
            return cls(factor, "VMRIG_TIMEOUT_FACTOR")
        if accel == "tcg":
            return cls(TCG_FACTOR, "TCG")
        return cls(1.0, accel.upper())
