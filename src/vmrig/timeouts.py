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
from dataclasses import dataclass
from datetime import timedelta

Duration = float | int | timedelta

# Whole NixOS tests run about 2.5 times slower under TCG than under KVM
# (nix-bitcoin #272); twice that, because a 2-core host also runs several
# emulated guests at once, each on a core of its own.
TCG_FACTOR = 5.0


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

    def __call__(self, value: Duration) -> float:
        """`value` in seconds, scaled."""
        return seconds(value) * self.factor

    def note(self, value: Duration) -> str:
        """How a timeout message names the timeout: as given, and scaled when it was."""
        if self.factor == 1:
            return describe(value)
        return f"{describe(value)}, scaled x{self.factor:g} under {self.reason} to {self(value):g} s"

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
