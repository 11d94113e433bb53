"""Is a configured secret strong enough? A rule cloud and cabinet apply to their own secrets.

A secret's entropy cannot be read off the string, only bounded. Two bounds must both reach
128 bits: the alphabet bound (length × log2 of the character classes used: 16 for hex,
10/26/26/33 for digits, lower, upper and other characters) and the observed one (length × the
Shannon entropy of the string's own character frequencies), so ``aaaa…``, ``abab…`` or a short
string is refused while ``secrets.token_urlsafe(32)`` or 32 random hex digits pass. A string
made of one piece repeated (``abcdabcd…``) is refused as well. This catches placeholders and
short or monotonous values, not every weak secret: a long, varied phrase or a secret copied
from a public page passes, as no look at the string alone can tell those from random.
"""

import math
from collections import Counter

MIN_BITS = 128
# The observed bound is lower than the alphabet bound for a truly random string of that
# length: 32 random hex digits show ~3.75 bits a character, not 4, and the lowest of 100,000
# draws showed 92 bits in all. 80 refuses no random secret and still every placeholder.
_MIN_OBSERVED_BITS = 80
_HEX = frozenset("0123456789abcdefABCDEF")


def alphabet_bits(value: str) -> float:
    if value and set(value) <= _HEX:
        return len(value) * 4.0
    pool = 0
    pool += 10 if any(c.isdigit() for c in value) else 0
    pool += 26 if any(c.islower() for c in value) else 0
    pool += 26 if any(c.isupper() for c in value) else 0
    pool += 33 if any(not c.isalnum() for c in value) else 0
    return len(value) * math.log2(pool) if pool else 0.0


def observed_bits(value: str) -> float:
    n = len(value)
    if n == 0:
        return 0.0
    counts = Counter(value).values()
    return -sum(c * math.log2(c / n) for c in counts)


def _repeats(value: str) -> bool:
    """True if ``value`` is mostly one shorter piece written out again and again.

    In a random string nearly every run of three characters is new; in ``password-password-
    password`` most are seen before. Fewer than 3/4 new runs of three is a repeat."""
    n = len(value)
    if n < 4:
        return len(set(value)) < n
    runs = {value[i : i + 3] for i in range(n - 2)}
    return len(runs) < 0.75 * (n - 2)


def weakness(value: str) -> str | None:
    """Why ``value`` is not a strong secret, or None if it passes."""
    if not value:
        return "it is empty"
    if _repeats(value):
        return "it is one piece repeated"
    if alphabet_bits(value) < MIN_BITS:
        return f"it is too short for {MIN_BITS} bits of entropy ({len(value)} characters)"
    if observed_bits(value) < _MIN_OBSERVED_BITS:
        return "it has too little variety (too few different characters)"
    return None
