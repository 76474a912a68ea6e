"""Approximate-time matching of N message streams (color, depth, camera_info, ...); message_filters is not on PyPI.

Matching rule (the pivot rule). Each input has a queue sorted by stamp. While every queue is non-empty, the oldest
head of all queues is the pivot. Since every other head is at least as new as the pivot, each queue's head is its
nearest candidate, so the candidate set is simply the heads:
- if the spread of the heads (newest - oldest) is <= slop, the heads are emitted as one set;
- otherwise the pivot is dropped: a queue whose head is already more than `slop` newer cannot produce a partner.
A set is therefore emitted as soon as its last member arrives (no extra latency), sets come out strictly increasing
on every input, and each message is used at most once.

Assumptions, chosen for camera streams: the inputs run at about the same rate and `slop` is less than half the frame
period, so a frame's messages are closer to each other than to any other frame's. Arrival out of time order is
handled by inserting into the sorted queue: a late message still matches while its set is undecided, and is dropped
(and counted) when a set at or after its stamp was already emitted. A second message with a stamp already queued on
the same input is a duplicate and is dropped. Queues are bounded by `queue_size` (oldest dropped first).
"""
from __future__ import annotations

import bisect
import operator
from typing import Any


class ApproximateTimeSynchronizer:
    """Groups items of `num_inputs` streams whose stamps lie within `slop_ns` of each other."""

    def __init__(self, num_inputs: int, slop_ns: int, queue_size: int) -> None:
        if num_inputs < 1:
            raise ValueError(f'num_inputs must be >= 1, got {num_inputs}')
        if slop_ns < 0:
            raise ValueError(f'slop_ns must be >= 0, got {slop_ns}')
        if queue_size < 1:
            raise ValueError(f'queue_size must be >= 1, got {queue_size}')
        self._slop_ns = int(slop_ns)
        self._queue_size = int(queue_size)
        self._stamps: list[list[int]] = [[] for _ in range(num_inputs)]
        self._items: list[list[Any]] = [[] for _ in range(num_inputs)]
        self._last_emitted: list[int | None] = [None] * num_inputs
        self._dropped = 0

    @property
    def dropped(self) -> int:
        """Messages discarded so far (unmatched, late, duplicate or queue overflow), for diagnostics."""
        return self._dropped

    @property
    def queued(self) -> int:
        """Messages waiting for partners."""
        return sum(len(s) for s in self._stamps)

    def add(self, index: int, stamp_ns: int, item: Any) -> list[tuple]:
        """Queue one message; returns the sets (one item per input, in input order) this arrival completed."""
        if not 0 <= index < len(self._stamps):
            raise IndexError(f'input index {index} out of range for {len(self._stamps)} inputs')
        stamp_ns = operator.index(stamp_ns)
        stamps, items = self._stamps[index], self._items[index]
        last = self._last_emitted[index]
        if last is not None and stamp_ns <= last:
            self._dropped += 1  # older than a set already emitted: using it would break time order
            return []
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            self._dropped += 1
            return []
        stamps.insert(i, stamp_ns)
        items.insert(i, item)
        if len(stamps) > self._queue_size:
            del stamps[0], items[0]
            self._dropped += 1
        return self._match()

    def _match(self) -> list[tuple]:
        matched = []
        while all(self._stamps):
            heads = [s[0] for s in self._stamps]
            pivot = min(range(len(heads)), key=heads.__getitem__)
            if max(heads) - heads[pivot] <= self._slop_ns:
                matched.append(tuple(items.pop(0) for items in self._items))
                for q, stamps in enumerate(self._stamps):
                    self._last_emitted[q] = stamps.pop(0)
            else:
                del self._stamps[pivot][0], self._items[pivot][0]
                self._dropped += 1
        return matched
