"""The error for invalid pool configuration, on its own so pool.py and selectors.py can both raise it."""

from __future__ import annotations


class PoolError(ValueError):
    """An IPAddressPool (or a part of one) is invalid.

    The message is meant for an operator: which entry, what is wrong, what would be right.
    `problems` holds the individual findings when several were collected into one error.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems else [message]
