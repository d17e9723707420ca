"""BMN post-processing: boundary candidates, proposal scoring, Gaussian Soft-NMS (the BMN/BSN rules).

Proposal ``(d, s)`` of the ``(D, T)`` map starts at ``s/T`` and ends at ``e/T`` with ``e = s + d + 1``. It is kept as a
candidate when ``s`` is a start candidate, ``e`` an end candidate and ``e < T`` (as in mmaction2 / JJBOY's BMN).
A position is a start (end) candidate when its probability is a strict local peak or exceeds ``peak_ratio`` times
the maximum; position 0 is always a start candidate and ``T-1`` always an end candidate.
Score = start[s] * end[e] * cls[d, s] * reg[d, s].

Soft-NMS follows mmaction2's ``soft_nms`` + ``post_processing`` to the tie: proposals are ordered by
``argsort(score)[::-1]`` (numpy's default sort, reversed), each step takes the first maximum in that order,
``top_k + 1`` proposals are selected, and the result is ordered again by ``argsort(score)[::-1]`` and cut to
``top_k``.

``proposals_from_maps_loop`` and ``soft_nms_loop`` are the literal per-proposal algorithms, kept as the executable
specification that the vectorised versions are tested and benchmarked against.
"""

from __future__ import annotations

import numpy as np
import torch

from localization.targets import temporal_iou

__all__ = [
    "boundary_candidates",
    "candidate_cells",
    "proposals_from_maps",
    "soft_nms_select",
    "soft_nms",
    "bmn_proposals",
    "proposals_from_maps_loop",
    "soft_nms_loop",
]

ArrayLike = np.ndarray | torch.Tensor


def _numpy(x: ArrayLike, name: str, ndim: int) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    return arr


def _check_maps(conf: np.ndarray, start: np.ndarray, end: np.ndarray) -> None:
    if conf.shape[0] != 2 or start.shape != (conf.shape[2],) or end.shape != (conf.shape[2],):
        raise ValueError(
            f"expected conf (2, D, T), start (T,), end (T,); got {conf.shape}, {start.shape}, {end.shape}"
        )


def boundary_candidates(scores: ArrayLike, is_start: bool, peak_ratio: float = 0.5) -> np.ndarray:
    """Bool ``(T,)``: strict local peaks of ``scores (T,)`` or values above ``peak_ratio * max``.

    Only interior positions are tested; the first position is always a start candidate (``is_start``) and the last
    always an end candidate.
    """
    p = _numpy(scores, "scores", 1)
    keep = np.zeros(len(p), dtype=bool)
    mid = p[1:-1]
    keep[1:-1] = ((mid > p[2:]) & (mid > p[:-2])) | (mid > peak_ratio * p.max())
    keep[0 if is_start else -1] = True
    return keep


def candidate_cells(
    conf: ArrayLike, start: ArrayLike, end: ArrayLike, peak_ratio: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Map cells ``(d, s)`` that are candidate proposals, as two int arrays ``(K,)`` in ``(d, s)`` row-major order.

    Args:
        conf: ``(2, D, T)`` confidence map (only its shape is used).
        start, end: ``(T,)`` boundary probabilities.
        peak_ratio: boundary candidate threshold as a fraction of the maximum.
    """
    c, s_prob, e_prob = _numpy(conf, "conf", 3), _numpy(start, "start", 1), _numpy(end, "end", 1)
    _check_maps(c, s_prob, e_prob)
    dscale, tscale = c.shape[1:]
    d, s = np.meshgrid(np.arange(dscale), np.arange(tscale), indexing="ij")
    e = s + d + 1
    keep = (e < tscale) & boundary_candidates(s_prob, True, peak_ratio)[s]
    keep &= boundary_candidates(e_prob, False, peak_ratio)[np.minimum(e, tscale - 1)]
    return d[keep], s[keep]


def proposals_from_maps(
    conf: ArrayLike, start: ArrayLike, end: ArrayLike, peak_ratio: float = 0.5
) -> np.ndarray:
    """Candidate proposals of one video.

    Args:
        conf: ``(2, D, T)`` confidence map (channel 0 regression, 1 classification).
        start, end: ``(T,)`` boundary probabilities.
        peak_ratio: boundary candidate threshold as a fraction of the maximum.

    Returns:
        float64 ``(K, 3)`` rows ``[start, end, score]`` in normalised units, in ``(d, s)`` row-major order.
    """
    c, s_prob, e_prob = _numpy(conf, "conf", 3), _numpy(start, "start", 1), _numpy(end, "end", 1)
    d, s = candidate_cells(c, s_prob, e_prob, peak_ratio)
    tscale = c.shape[2]
    e = s + d + 1
    score = s_prob[s] * e_prob[e] * c[1, d, s] * c[0, d, s]
    return np.stack([s / tscale, e / tscale, score.astype(np.float64)], axis=1).reshape(-1, 3)


def soft_nms_select(
    tstart: np.ndarray,
    tend: np.ndarray,
    score: np.ndarray,
    count: int,
    alpha: float,
    low: float,
    high: float,
    iou_power: float = 2.0,
    best_first_iou: bool = True,
    min_left: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The sequential core of Gaussian Soft-NMS (BSN/BMN), on proposals already in their tie-breaking order.

    Repeatedly takes the first proposal (in the given order) with the highest remaining score; every other remaining
    proposal whose IoU with it exceeds ``low + (high - low) * width_of_best`` has its score multiplied by
    ``exp(-IoU^iou_power / alpha)``. It stops after ``count`` picks or when only ``min_left`` proposals remain.

    Args:
        tstart, tend, score: ``(K,)`` float64 columns (not modified).
        best_first_iou: IoU as ``temporal_iou(best, others)`` (mmaction2) or ``temporal_iou(others, best)``
            (TAdaConv's ``iou_with_anchors``); the two differ only in the last bit of the union.

    Returns:
        ``(index (M,), decayed score (M,))``: picked positions into the given columns and their scores, in pick order.
    """
    score = np.array(score, dtype=np.float64)
    alive = np.ones(len(score), dtype=bool)
    picked, kept = [], []
    for _ in range(max(min(count, len(score) - min_left), 0)):
        best = int(np.argmax(np.where(alive, score, -np.inf)))
        alive[best] = False
        picked.append(best)
        kept.append(score[best])
        if best_first_iou:
            iou = temporal_iou(tstart[best], tend[best], tstart, tend)
        else:
            iou = temporal_iou(tstart, tend, tstart[best], tend[best])
        hit = alive & (iou > low + (high - low) * (tend[best] - tstart[best]))
        score[hit] *= np.exp(-np.power(iou[hit], iou_power) / alpha)
    return np.asarray(picked, dtype=np.int64), np.asarray(kept, dtype=np.float64)


def soft_nms(
    proposals: np.ndarray, alpha: float = 0.4, low: float = 0.5, high: float = 0.9, top_k: int = 100
) -> np.ndarray:
    """Gaussian Soft-NMS with a width-adaptive threshold, as mmaction2's ``soft_nms`` then ``post_processing``.

    Proposals are ordered by ``argsort(score)[::-1]``; ``soft_nms_select`` (IoU threshold
    ``low + (high - low) * width_of_best``, decay ``exp(-IoU^2 / alpha)``) picks ``top_k + 1`` of them; the picks are
    ordered again by ``argsort(score)[::-1]`` and cut to ``top_k``. Exact score ties therefore come out in the
    order mmaction2 gives them.

    Args:
        proposals: ``(K, >=3)`` rows ``[start, end, ..., score]`` (score is the last column).
        top_k: how many proposals to keep.

    Returns:
        float64 ``(min(K, top_k), 3)`` rows ``[start, end, decayed score]``, by decreasing score.
    """
    tstart, tend, score = _sorted_columns(proposals)
    index, kept = soft_nms_select(tstart, tend, score, top_k + 1, alpha, low, high)
    rows = np.stack([tstart[index], tend[index], kept], axis=1).reshape(-1, 3)
    return rows[np.argsort(rows[:, 2])[::-1]][:top_k]


def bmn_proposals(
    conf: ArrayLike,
    start: ArrayLike,
    end: ArrayLike,
    peak_ratio: float = 0.5,
    alpha: float = 0.4,
    low: float = 0.5,
    high: float = 0.9,
    top_k: int = 100,
) -> np.ndarray:
    """``proposals_from_maps`` then ``soft_nms``: the final ``(<= top_k, 3)`` ``[start, end, score]`` of one video."""
    return soft_nms(proposals_from_maps(conf, start, end, peak_ratio), alpha, low, high, top_k)


def _sorted_columns(proposals: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, end and score columns (float64 copies) in mmaction2's order ``argsort(score)[::-1]``."""
    p = np.asarray(proposals, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(f"proposals: expected (K, >=3) [start, end, ..., score], got shape {p.shape}")
    order = np.argsort(p[:, -1])[::-1]
    return p[order, 0].copy(), p[order, 1].copy(), p[order, -1].copy()


def proposals_from_maps_loop(
    conf: ArrayLike, start: ArrayLike, end: ArrayLike, peak_ratio: float = 0.5
) -> np.ndarray:
    """Per-proposal reference for ``proposals_from_maps`` (same output, Python loops)."""
    c, s_prob, e_prob = _numpy(conf, "conf", 3), _numpy(start, "start", 1), _numpy(end, "end", 1)
    _check_maps(c, s_prob, e_prob)
    dscale, tscale = c.shape[1:]
    start_bins = [idx == 0 for idx in range(tscale)]
    end_bins = [idx == tscale - 1 for idx in range(tscale)]
    for idx in range(1, tscale - 1):
        for bins, p in ((start_bins, s_prob), (end_bins, e_prob)):
            if (p[idx] > p[idx + 1] and p[idx] > p[idx - 1]) or p[idx] > peak_ratio * p.max():
                bins[idx] = True
    rows = []
    for d in range(dscale):
        for s in range(tscale):
            e = s + d + 1
            if e < tscale and start_bins[s] and end_bins[e]:
                rows.append([s / tscale, e / tscale, float(s_prob[s] * e_prob[e] * c[1, d, s] * c[0, d, s])])
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def soft_nms_loop(
    proposals: np.ndarray, alpha: float = 0.4, low: float = 0.5, high: float = 0.9, top_k: int = 100
) -> np.ndarray:
    """Per-proposal reference for ``soft_nms`` (list-based, as in mmaction2's ``soft_nms`` + ``post_processing``)."""
    tstart, tend, score = (list(col) for col in _sorted_columns(proposals))
    kept = []
    while score and len(kept) <= top_k:
        best = int(np.argmax(score))
        width = tend[best] - tstart[best]
        for i in range(len(score)):
            if i == best:
                continue
            inter = max(min(tend[best], tend[i]) - max(tstart[best], tstart[i]), 0.0)
            iou = inter / (width - inter + tend[i] - tstart[i])
            if iou > low + (high - low) * width:
                score[i] *= float(np.exp(-np.square(iou) / alpha))
        kept.append((tstart.pop(best), tend.pop(best), score.pop(best)))
    rows = np.asarray(kept, dtype=np.float64).reshape(-1, 3)
    return rows[np.argsort(rows[:, 2])[::-1]][:top_k]
