"""Retry delays shared by the outboxes (SMS, webhooks): exponential, capped, jittered."""

import random


def backoff_delay(base: float, cap: float, exponent: int) -> float:
    """``base * 2**exponent`` seconds (exponent clamped to 0..30), at most ``cap``, times a
    jitter of ±10 %, so the messages or events that failed together during an outage do
    not all come back in the same second."""
    delay = min(cap, base * 2 ** max(0, min(exponent, 30)))
    return delay * random.uniform(0.9, 1.1)
