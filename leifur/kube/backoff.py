"""Exponential backoff, the one rule every retry in Leifur follows: initial, doubling, capped."""

from __future__ import annotations

import random


def delay(failures: int, initial: float, maximum: float) -> float:
    """The wait after `failures` consecutive failures (0 -> initial), without jitter."""
    # Cap the exponent first: 2**failures overflows a float after ~1000 failures.
    return min(initial * 2 ** min(failures, 64), maximum)


class Backoff:
    """One retrying loop's backoff; `jitter` spreads waits by +-that fraction.

    Jitter keeps many clients that lost the same API server from reconnecting in lockstep.
    """

    def __init__(self, initial: float, maximum: float, jitter: float = 0.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.failures = 0

    def next(self) -> float:
        """The delay to wait now; counts a failure."""
        d = delay(self.failures, self.initial, self.maximum)
        self.failures += 1
        return d * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else d

    def reset(self) -> None:
        self.failures = 0
