"""The one error type users see: it names the input and says how to fix it."""

from __future__ import annotations


class SlidegridError(Exception):
    """A user-facing failure tied to one input (a slide, a file, a URI, an option)."""

    def __init__(self, input_name: str, reason: str) -> None:
        self.input = str(input_name)
        self.reason = reason
        super().__init__(f"{self.input}: {reason}")

    def __reduce__(self):
        # Errors raised in Ray workers travel pickled; the default reduce would call __init__ with one argument.
        return type(self), (self.input, self.reason)


class SlideError(SlidegridError):
    """A slide that cannot be opened, has no usable resolution, or fails to read."""


class ConfigError(SlidegridError):
    """An option, config file or cohort table that is missing or invalid."""


def error_text(exc: BaseException) -> str:
    """The one-line error a manifest records for a failed slide (a user-facing reason when there is one)."""
    return (exc.reason if isinstance(exc, SlidegridError) else f"{type(exc).__name__}: {exc}")[:500]
