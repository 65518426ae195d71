"""Polling helpers: every wait in the harness is a poll with a deadline."""

from __future__ import annotations

import time
from typing import Callable, TypeVar, Union

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A polled condition did not become true in time (an AssertionError so pytest shows it plainly)."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: Union[str, Callable[[], str]] = "condition",
    interval: float = 0.02,
    max_interval: float = 0.25,
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    The poll interval starts at ``interval`` and doubles up to ``max_interval``.
    On timeout raise :class:`WaitTimeout`; ``what`` (a string, or a callable
    evaluated only on failure, for diagnostics) names what was awaited.
    """
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else what
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {desc}")
        time.sleep(delay)
        delay = min(delay * 2, max_interval)


class Stopwatch:
    """Tiny helper to measure how long things take (used to report timings)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start
