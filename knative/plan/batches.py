"""The batches of a dealt segment, for every pod at once (numpy, no step per batch).

A segment is a matrix of k columns, one per pod, each column that pod's arrivals in order (rows
past a column's `filled` are padding). `done` is when the pod's bottleneck finishes each
request if it serves them one at a time, without pause, in arrival order: batching changes who
waits, not when the work is done. So each batch ends at the `done` of its last request, and the
batches follow from `done` alone:

- a request that arrives after the previous request's `done` finds the pod idle and runs at
  once, alone, ending at its own `done`;
- one that arrives by then (it is queued) waits; the first queued request opens a batch that
  starts at the previous request's `done` and takes every request that arrived by that start;
  the next batch opens at the first queued request after it; and so on.

Which queued requests open a batch is the orbit of the first one under "the first queued request
after the batch it opens" (a map that only moves forward), found by pointer doubling: after j
rounds the set holds the first 2^j steps of every orbit, and a round that adds nothing has
reached every end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentBatches:
    ends: np.ndarray  # (rows, k) each request's batch end, without the overlapping part (padding: its done)
    carried_end: np.ndarray  # (k,) end of the batch the pod's open requests (from before the segment) are in
    carried_open: np.ndarray  # (k,) that batch is still open
    open_from: np.ndarray  # (k,) the column's first request in the open batch (its length: none)
    batch_start: np.ndarray  # (k,) when the open batch starts; with none open, when the pod is free


def segment_batches(arrive: np.ndarray, done: np.ndarray, filled: np.ndarray, free_at: np.ndarray,
                    start: np.ndarray, carrying: np.ndarray) -> SegmentBatches:
    """Batch service down each column, from each pod's state: `carrying` pods hold an open batch
    that starts at `start` and ends at `free_at` so far (the requests that arrive by its start
    join it); the others are free from `free_at`."""
    rows, k = arrive.shape
    row, col = np.arange(rows)[:, None], np.arange(k)
    real = row < filled
    previous = np.vstack([free_at, done[:-1]])  # when the request before each one is done
    joined = np.sum(real & carrying & (arrive <= start), axis=0)
    queued = real & (arrive <= previous) & (row >= joined)
    queued_row, queued_col = np.nonzero(queued)
    # A batch opened by a queued request takes its column's requests up to (not including) `reach`.
    reach = _arrived_by(arrive, filled, queued_row, queued_col, previous[queued_row, queued_col])
    cover = np.zeros((rows, k), dtype=np.int64)
    cover[queued_row, queued_col] = reach
    next_queued = np.minimum.accumulate(np.where(queued, row, rows)[::-1], axis=0)[::-1]
    next_queued = np.vstack([next_queued, np.full(k, rows)])  # row `rows`: none left
    # Requests as nodes r * k + c; `none` (past the last) is where every orbit ends.
    none = rows * k
    jump = np.full(none + 1, none)
    after = next_queued[reach, queued_col]
    jump[queued_row * k + queued_col] = np.where(after < rows, after * k + queued_col, none)
    first = next_queued[joined, col]
    opener = _orbit(jump, (first * k + col)[first < rows]).reshape(rows, k)

    last_opener = np.maximum.accumulate(np.where(opener, row, -1), axis=0)
    batch_reach = cover[np.maximum(last_opener, 0), col]
    in_batch = (last_opener >= 0) & (row < batch_reach)
    ends = np.where(in_batch, done[np.maximum(batch_reach - 1, 0), col], done)
    carried_end = np.where(joined > 0, done[np.maximum(joined - 1, 0), col], free_at)
    ends = np.where(row < joined, carried_end, ends)

    last = last_opener[np.maximum(filled - 1, 0), col]  # the column's last batch opener (-1: none)
    opened = last >= 0
    still_open = np.where(opened, cover[np.maximum(last, 0), col], joined) >= filled  # its last request waits
    open_from = np.where(still_open, np.where(opened, last, 0), filled)
    batch_start = np.where(still_open, np.where(opened, previous[np.maximum(last, 0), col], start),
                           done[np.maximum(filled - 1, 0), col])
    return SegmentBatches(ends, carried_end, still_open & carrying & (joined == filled), open_from, batch_start)


def _arrived_by(arrive: np.ndarray, filled: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                times: np.ndarray) -> np.ndarray:
    """For each queued request (row, column) and time from its arrival on: how many of its
    column's requests arrived by then. A binary search down every column at once (exact: the
    times are only compared)."""
    low, high = rows + 1, filled[cols]  # the request itself arrived by then
    flat, k, last = arrive.reshape(-1), arrive.shape[1], arrive.shape[0] - 1
    searching = low < high
    while searching.any():
        middle = (low + high) // 2
        arrived = (flat[np.minimum(middle, last) * k + cols] <= times) & searching
        low = np.where(arrived, middle + 1, low)
        high = np.where(arrived | ~searching, high, middle)
        searching = low < high
    return low


def _orbit(jump: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Every node reached from `starts` by following `jump`, which only moves forward and ends at
    the last node (it jumps to itself), as a mask. Holds {jump^m(s) : m < 2^j} after j rounds:
    once a round adds nothing, every orbit has reached the end."""
    reached = np.zeros(jump.size, dtype=bool)
    reached[starts] = True
    reached[-1] = True
    count = int(reached.sum())
    while True:
        reached[jump[reached]] = True
        more = int(reached.sum())
        if more == count:
            return reached[:-1]
        count, jump = more, jump[jump]
