"""Segment arithmetic shared by the detection and proposal evaluators, bit-for-bit as the official code.

Two primitives, both vectorised:

- :func:`tiou`: the official ``segment_iou`` formula, broadcast over any shapes. Like the official code it has
  no guard for an empty union: a zero-length segment against an identical one gives NaN (and the evaluators
  handle NaN the way the official comparisons do).
- :func:`descending_order`: rows grouped, and inside each group ordered exactly as the official
  ``scores.argsort()[::-1]`` orders them, so tied scores come out in the same order as in the official code
  run on the same numpy.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class CodedSegments(NamedTuple):
    """Segments with videos and classes as integer codes, arrays (N,); ``score`` for predictions."""

    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    cls: np.ndarray | None = None
    score: np.ndarray | None = None


def thresholds_array(values) -> np.ndarray:
    """tIoU thresholds as a (T,) float64 array; a clear error for an empty or nested list, or a value outside (0, 1]."""
    out = np.asarray(values, dtype=np.float64)
    if out.ndim != 1 or len(out) == 0 or not np.isfinite(out).all() or not ((out > 0) & (out <= 1)).all():
        raise ValueError(f"tIoU thresholds must be a non-empty list of numbers in (0, 1], got {values!r}")
    return out


def tiou(target_start: np.ndarray, target_end: np.ndarray, cand_start: np.ndarray, cand_end: np.ndarray) -> np.ndarray:
    """Temporal IoU of target segments against candidate segments (arrays broadcast together).

    Same operations in the same order as the official ``segment_iou(target, candidates)``:
    ``inter = clip(min(ends) - max(starts), 0)``, ``union = len_cand + len_target - inter``.
    """
    inter = (np.minimum(target_end, cand_end) - np.maximum(target_start, cand_start)).clip(0)
    union = (cand_end - cand_start) + (target_end - target_start) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def descending_order(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices of rows sorted by ``groups`` ascending, each group in the official descending-score order.

    groups: (N,) int; scores: (N,) float. Inside a group the order is ``scores[members].argsort()[::-1]``
    with ``members`` in row order, which is what the official evaluators compute on their per-class
    (detection) or per-video (proposals) frames. Rows are sorted in one pass on an integer key
    (group, score rank); groups holding tied scores then make the official call themselves, because numpy's
    default sort is unstable and orders ties in an implementation-defined way.
    """
    groups = np.asarray(groups, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(scores)] = np.arange(n)[::-1]  # 0: highest score
    order = np.argsort(groups * n + rank)
    g, s = groups[order], scores[order]
    tied = np.flatnonzero((s[1:] == s[:-1]) & (g[1:] == g[:-1]))
    for grp in np.unique(g[tied]):
        lo, hi = np.searchsorted(g, grp, "left"), np.searchsorted(g, grp, "right")
        members = np.sort(order[lo:hi])
        order[lo:hi] = members[scores[members].argsort()[::-1]]
    return order


def group_runs(sorted_keys: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(start, stop)`` row ranges, shapes (n_groups,), of each key 0..n_groups-1 in a sorted key array."""
    keys = np.arange(n_groups)
    return np.searchsorted(sorted_keys, keys, "left"), np.searchsorted(sorted_keys, keys, "right")
