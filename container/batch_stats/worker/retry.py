"""How long a failed run waits before its message is received again (growing visibility delays).

A run that fails (PostgreSQL down, S3 throttling, a crash) keeps its message; the worker hides it
for a delay that doubles with each receive, from ``first`` seconds up to ``CAP_FACTOR * first``.
The runs queue moves a message to its DLQ when it is received more than its maxReceiveCount, so
the longest outage ridden out without the DLQ is the sum of the delays after the first
``max_receives - 1`` receives (:func:`outage_ridden_out`): with the container's 30 s and the
queue's 8 receives, 30 + 60 + 120 + 240 + 300 + 300 + 300 s = 22.5 minutes, more than the
15 minutes of an RDS reboot or Multi-AZ failover. A message that cannot be parsed is never
retried with a delay: it reaches the DLQ after those receives at once.
"""

from __future__ import annotations

__all__ = ["CAP_FACTOR", "RETRY_DELAY_SECONDS", "backoff_delay", "outage_ridden_out"]

#: The container's first delay after a failed run.
RETRY_DELAY_SECONDS = 30
#: The longest delay, as a multiple of the first (30 s -> 5 minutes).
CAP_FACTOR = 10


def backoff_delay(first: int, receive_count: int) -> int:
    """Seconds to hide a message after its ``receive_count``-th receive failed.

    ``first * 2 ** (receive_count - 1)``, at most ``CAP_FACTOR * first`` (0 stays 0).
    """
    if first < 0:
        raise ValueError(f"the first retry delay must be at least 0 seconds, got {first}")
    doublings = min(max(receive_count, 1) - 1, CAP_FACTOR.bit_length())
    return min(first << doublings, first * CAP_FACTOR)


def outage_ridden_out(first: int, max_receives: int) -> int:
    """The longest outage (seconds) during which every attempt fails and the message stays out
    of the DLQ: the delays after receives ``1 .. max_receives - 1`` (processing time not counted,
    which only lengthens it)."""
    return sum(backoff_delay(first, receive) for receive in range(1, max_receives))
