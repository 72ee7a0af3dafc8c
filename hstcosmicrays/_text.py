"""Wording shared by the messages of every module (it imports nothing of the package)."""

from __future__ import annotations


def plural(n: int, noun: str, plural_noun: str | None = None) -> str:
    """A count with its noun, singular for exactly one.

    Examples
    --------
    >>> plural(1, "month"), plural(0, "month"), plural(12, "CR"), plural(2, "try", "tries")
    ('1 month', '0 months', '12 CRs', '2 tries')
    """
    return f"{n} {noun if n == 1 else plural_noun or noun + 's'}"
