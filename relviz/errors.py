"""One family of errors: everything relviz raises on purpose derives from ``RelvizError``.

Surfaces (the CLI, the app) catch ``RelvizError`` in one place and show its message; any other
exception is a bug. Messages name the file, field or value at fault and what was expected; values
that come from users go through ``shorten`` so a 100k-character input is never echoed whole.
"""

from __future__ import annotations


class RelvizError(ValueError):
    """Bad input or an unusable resource, explained by the message (a ValueError for old callers)."""


class InputError(RelvizError):
    """An argument of a library function that cannot be used (shape, range, choice)."""


class InputTypeError(RelvizError, TypeError):
    """An argument of the wrong type (dtype, container)."""


class OutputError(RelvizError, OSError):
    """An output that cannot be written where it was asked for."""


class OutputExistsError(OutputError, FileExistsError):
    """An output path that already exists and would be overwritten."""


class NonFiniteError(RelvizError, FloatingPointError):
    """NaN or Inf where finite numbers are required (a diverged loss, broken weights or features)."""


def shorten(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters, saying how long the whole was."""
    text = value if isinstance(value, str) else repr(value)
    text = repr(text) if isinstance(value, str) else text
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(str(value)):,} characters)"
