"""The "did you mean" of error messages: the closest known word to a misspelt one."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """'; did you mean 'rapyd'?' for the closest of `known` to `word`, or '' when none is close."""
    if close := difflib.get_close_matches(word, list(known), n=1):
        return f"; did you mean {close[0]!r}?"
    return ""
