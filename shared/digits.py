"""Numbers read from headers, paths and query strings: ASCII digits only.

`str.isdigit()` is also true of `²`, `¹` and other Unicode digits, which `int()` refuses (a
ValueError, so a 500) or reads as another number; every number a client or a server sends us is
checked with `is_ascii_digits` or read with `parse_uint` instead.
"""

from __future__ import annotations

__all__ = ["is_ascii_digits", "parse_uint"]


def is_ascii_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def parse_uint(value: str | None, max_digits: int = 18) -> int | None:
    """A non-negative integer written in ASCII digits (surrounding spaces allowed), else None."""
    if value is None:
        return None
    value = value.strip()
    if not is_ascii_digits(value) or len(value) > max_digits:
        return None
    return int(value)
