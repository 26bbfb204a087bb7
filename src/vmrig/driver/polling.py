"""Polling conditions: checks that must keep holding while a script runs (`polling_condition`)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Protocol

from vmrig.errors import PollingConditionError, RequestedAssertionFailed
from vmrig.log import Logger
from vmrig.timeouts import Duration, TimeoutScale, seconds


class PollingCondition:
    """A check that must keep holding while active (`with cond:`)."""

    def __init__(
        self,
        condition: Callable[[], Any],
        logger: Logger,
        seconds_interval: Duration = 2.0,
        description: str | None = None,
    ) -> None:
        self.condition = condition
        self.logger = logger
        self.seconds_interval = seconds(seconds_interval)
        self.description = description or condition.__doc__ or condition.__name__
        self.last_called = float("-inf")
        self.entered = False
        self.active: list[PollingCondition] | None = None

    def check(self, force: bool = False) -> bool:
        if (self.entered or not self.overdue) and not force:
            return True
        with self, self.logger.nested(self.nested_message):
            self.last_called = time.monotonic()
            try:
                result = self.condition()
            except Exception as error:
                self.logger.log(f"polling condition raised: {error}")
                result = False
            passed = result is None or bool(result)
            self.logger.log("Polling condition " + ("passed" if passed else "failed"))
            return passed

    def maybe_raise(self) -> None:
        if not self.check():
            raise PollingConditionError(f"Polling condition failed: {self.description}")

    def wait(self, timeout: Duration = 900, scale: TimeoutScale | None = None) -> None:
        scale = scale or TimeoutScale()
        started = time.monotonic()
        limit = scale(timeout)
        deadline = started + limit
        with self.logger.nested(f"waiting for {self.description}"):
            while not self.check(force=True):
                if time.monotonic() > deadline:
                    raise RequestedAssertionFailed(
                        f"action timed out after {time.monotonic() - started:.2f} seconds "
                        f"(timeout={scale.note(timeout, limit)}) waiting for {self.description}"
                    )
                time.sleep(self.seconds_interval)

    @property
    def nested_message(self) -> str:
        return f"checking polling condition {self.description!r}"

    @property
    def overdue(self) -> bool:
        return self.last_called + self.seconds_interval < time.monotonic()

    def __enter__(self) -> PollingCondition:
        self.entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.entered = False


class Conditions(Protocol):
    """Where active conditions are kept and checked (the Driver, before each machine command)."""

    logger: Logger
    polling_conditions: list[PollingCondition]

    @property
    def timeout_scale(self) -> TimeoutScale: ...


class Poll:
    """What `@polling_condition` makes of a function: `with cond:` keeps it checked; cond() calls it."""

    def __init__(
        self,
        fun: Callable[[], Any],
        owner: Conditions,
        *,
        seconds_interval: Duration = 2.0,
        description: str | None = None,
    ) -> None:
        self.owner = owner
        self.condition = PollingCondition(fun, owner.logger, seconds_interval, description)

    def __enter__(self) -> None:
        self.owner.polling_conditions.append(self.condition)

    def __exit__(self, *exc: object) -> None:
        self.owner.polling_conditions.remove(self.condition)

    def __call__(self) -> Any:
        return self.condition.condition()

    def wait(self, timeout: Duration = 900) -> None:
        self.condition.wait(timeout, self.owner.timeout_scale)


def polling_condition(
    owner: Conditions,
    fun_: Callable[[], Any] | None = None,
    *,
    seconds_interval: Duration = 2.0,
    description: str | None = None,
) -> Any:
    """The script's `polling_condition`, as a decorator with or without arguments."""
    if fun_ is None:
        return functools.partial(Poll, owner=owner, seconds_interval=seconds_interval, description=description)
    return Poll(fun_, owner, seconds_interval=seconds_interval, description=description)
