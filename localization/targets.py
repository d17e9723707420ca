"""BMN training targets (mmaction2 / TAdaConv-repo / JJBOY-2019 conventions).

The boundary-matching map is indexed ``[d, s]``: proposal ``(d, s)`` spans ``[s/T, (s+d+1)/T]`` and exists only
when ``s + d < T``. Start/end targets use anchors ``[(i-0.5)/T, (i+1.5)/T]`` matched (intersection over anchor
length) against boundary regions of width ``3/T`` centred on each ground-truth start/end.
"""

from __future__ import annotations

import numpy as np

__all__ = ["valid_proposal_mask", "proposal_bounds", "bmn_targets", "temporal_iou"]


def valid_proposal_mask(tscale: int, dscale: int | None = None) -> np.ndarray:
    """Which cells of the ``(D, T)`` map are real proposals: ``mask[d, s] = s + d < T``.

    Returns a bool array ``(D, T)`` (mmaction2's ``bm_mask`` as bool).
    """
    dscale = tscale if dscale is None else dscale
    _check_scales(tscale, dscale)
    d = np.arange(dscale)[:, None]
    s = np.arange(tscale)[None, :]
    return (s + d) < tscale


def proposal_bounds(tscale: int, dscale: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised start and end of every cell of the ``(D, T)`` map, as two float64 arrays ``(D, T)``.

    ``start[d, s] = s/T`` and ``end[d, s] = s/T + (d+1)/T`` (computed exactly as mmaction2's ``_match_map``, so
    the IoU targets are bit-identical); cells with ``s + d >= T`` end beyond 1.
    """
    dscale = tscale if dscale is None else dscale
    _check_scales(tscale, dscale)
    gap = 1.0 / tscale
    start = gap * np.arange(tscale, dtype=np.float64)
    length = gap * np.arange(1, dscale + 1, dtype=np.float64)
    tmin = np.broadcast_to(start[None, :], (dscale, tscale))
    return tmin.copy(), tmin + length[:, None]


def temporal_iou(tmin: np.ndarray, tmax: np.ndarray, gt_min: np.ndarray, gt_max: np.ndarray) -> np.ndarray:
    """Broadcast IoU of intervals ``[tmin, tmax]`` with ``[gt_min, gt_max]`` (all float64, any broadcastable shapes)."""
    inter = np.maximum(np.minimum(tmax, gt_max) - np.maximum(tmin, gt_min), 0.0)
    union = (tmax - tmin) - inter + gt_max - gt_min
    return inter / union


def bmn_targets(
    segments: np.ndarray, tscale: int, dscale: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets for one video (bit-identical to mmaction2's ``BMN.generate_labels``).

    Args:
        segments: ``(K, 2)`` ground-truth ``[start, end]`` in normalised units ``[0, 1]`` (K >= 1). They are
            rounded to float32 first, as mmaction2 receives them as float32 tensors.
        tscale: T, the number of temporal positions.
        dscale: D, the number of durations (default T).

    Returns:
        ``(iou_map (D, T), start (T,), end (T,))`` float32. ``iou_map[d, s]`` is the best IoU of proposal
        ``[s/T, (s+d+1)/T]`` with any segment; like mmaction2 it is not masked here (cells with ``s + d >= T``
        are masked in the loss, see ``valid_proposal_mask``). ``start[i]`` / ``end[i]`` is the best overlap of
        anchor ``[(i-0.5)/T, (i+1.5)/T]`` with a boundary region ``[b - 1.5/T, b + 1.5/T]``, divided by the
        anchor length.
    """
    dscale = tscale if dscale is None else dscale
    segs = np.asarray(segments, dtype=np.float64)
    if segs.ndim != 2 or segs.shape[1] != 2 or segs.shape[0] == 0:
        raise ValueError(f"segments: expected a non-empty (K, 2) array, got shape {segs.shape}")
    if not np.all(np.isfinite(segs)) or np.any(segs[:, 1] < segs[:, 0]):
        raise ValueError(f"segments: every row must be finite with start <= end, got {segs.tolist()}")
    segs = segs.astype(np.float32)

    tmin, tmax = proposal_bounds(tscale, dscale)
    gt_min = segs[:, 0].astype(np.float64)[:, None, None]
    gt_max = segs[:, 1].astype(np.float64)[:, None, None]
    iou_map = temporal_iou(tmin[None], tmax[None], gt_min, gt_max).astype(np.float32).max(axis=0)

    gap = 1.0 / tscale
    idx = np.arange(tscale, dtype=np.float64)
    anchor_min, anchor_max = gap * (idx - 0.5), gap * (idx + 1.5)
    start = _boundary_overlap(anchor_min, anchor_max, segs[:, 0], 3 * gap)
    end = _boundary_overlap(anchor_min, anchor_max, segs[:, 1], 3 * gap)
    return iou_map, start, end


def _boundary_overlap(
    anchor_min: np.ndarray, anchor_max: np.ndarray, boundaries: np.ndarray, width: float
) -> np.ndarray:
    """``(T,)`` float32: max over boundaries of |anchor ∩ [b - width/2, b + width/2]| / |anchor|.

    The intersection is taken in float32 (boundaries are float32) and divided by the float64 anchor length,
    which is the arithmetic mmaction2 performs.
    """
    region_min = (boundaries - np.float32(width / 2))[None, :]
    region_max = (boundaries + np.float32(width / 2))[None, :]
    lo = np.maximum(anchor_min.astype(np.float32)[:, None], region_min)
    hi = np.minimum(anchor_max.astype(np.float32)[:, None], region_max)
    inter = np.maximum(hi - lo, np.float32(0.0))
    return (inter / (anchor_max - anchor_min)[:, None]).max(axis=1).astype(np.float32)


def _check_scales(tscale: int, dscale: int) -> None:
    if tscale < 1 or not 1 <= dscale <= tscale:
        raise ValueError(f"need tscale >= 1 and 1 <= dscale <= tscale, got tscale={tscale}, dscale={dscale}")
