"""The participant flow's one error type."""

from __future__ import annotations


class FlowError(Exception):
    """A request the participant flow refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, reason: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # machine-readable for the pages: 'no_work' | 'not_open' | None
