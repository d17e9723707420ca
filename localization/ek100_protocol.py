"""The EK100 localization protocol of the TAdaConv repository, as pure functions (no I/O).

Reference: alibaba-mmai-research/TAdaConv, ``tadaconv/datasets/base/epickitchen100_feature.py`` (windows, labels,
window features), ``runs/test_epic_localization.py`` (window fusion), ``tadaconv/utils/tal_tools.py`` (proposal
parsing, scoring, Soft-NMS, proposal budget) with ``configs/projects/epic-kitchen-tal/bmn_epic.yaml``. Every default
below is that code's value; ``tests/test_ek100_protocol.py`` checks each function against outputs of that code.

Time grid. Feature row ``i`` of a video is centred at ``(clip_interval - 1 + clip_interval * i) / fps`` seconds
(``(7 + 8 i) / 60``: 60 fps, one clip every 8 frames, ``feature_stride_s = 0.13333333``). A window holds
``tscale = 200`` bins of ``stride_ratio * feature_stride_s = 0.26666666`` s (53.333332 s); windows start every
``dscale = 100`` bins (26.666666 s), so consecutive windows overlap by half. Inside a window the 400 feature rows
whose centres lie in ``[start, end]`` are linearly resampled to 200 bins. On the video timeline the BMN maps of the
windows are averaged on the grid of every other feature row (``rows[::2]``), and proposals are parsed once on that
fused grid: position ``j`` of a fused map of length ``L`` stands for ``j / L * duration`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from localization.postprocess import candidate_cells, soft_nms_select
from localization.targets import proposal_bounds, temporal_iou

__all__ = [
    "FEATURE_STRIDE_S",
    "ek100_windows",
    "reference_centres",
    "window_rows",
    "window_features",
    "window_segments",
    "WindowSegments",
    "window_targets",
    "fused_length",
    "fuse_window_maps",
    "EK100Proposals",
    "ek100_soft_nms",
    "ek100_proposals",
    "ek100_action_labels",
]

FEATURE_STRIDE_S = 0.13333333
"""Seconds between feature rows, as the reference writes it (8 frames at 60 fps, rounded to 8 decimals)."""


def ek100_windows(
    duration_s: float,
    tscale: int = 200,
    dscale: int = 100,
    feature_stride_s: float = FEATURE_STRIDE_S,
    stride_ratio: int = 2,
    min_tail_s: float = 0.2,
) -> np.ndarray:
    """Sliding windows of one video, ``(W, 2)`` float64 ``[start_s, end_s]`` (values are float32 numbers).

    With ``bin_s = stride_ratio * feature_stride_s``, windows start at ``torch.arange(0, duration_s, dscale * bin_s)``
    in float32 (the reference's call, so the last bit of each start is whatever torch's float32 arange gives) and end
    ``tscale * bin_s`` later (float32 sum). The last window is dropped when it starts less than ``min_tail_s`` before
    the end of the video (compared in float32). The last window usually runs past the video's end.
    """
    if not duration_s > 0:
        raise ValueError(f"ek100_windows: duration must be positive, got {duration_s}")
    bin_s = stride_ratio * feature_stride_s
    starts = torch.arange(0, duration_s, dscale * bin_s, dtype=torch.float32)
    if duration_s - starts[-1] < min_tail_s:
        starts = starts[:-1]
    ends = starts + tscale * bin_s
    return torch.stack([starts, ends], dim=1).double().numpy().reshape(-1, 2)


def reference_centres(num_rows: int, fps: float = 60.0, clip_interval: int = 8) -> np.ndarray:
    """The reference's time of feature row ``i``, ``(clip_interval - 1 + clip_interval * i) / fps``: float32 ``(N,)``."""
    frames = np.arange(num_rows, dtype=np.float64) * clip_interval + (clip_interval - 1)
    return frames.astype(np.float32) / np.float32(fps)


def window_rows(centres: np.ndarray, window: Sequence[float]) -> np.ndarray:
    """Bool ``(N,)``: the feature rows of a window, those with ``start <= centre <= end`` (``centres (N,)`` seconds).

    This is also the reference's ``feat_mask_in_global`` that places the window's maps on the video timeline.
    """
    c = np.asarray(centres)
    return (c >= window[0]) & (c <= window[1])


def window_features(
    features: np.ndarray | torch.Tensor,
    centres: np.ndarray,
    window: Sequence[float],
    tscale: int = 200,
    feature_stride_s: float = FEATURE_STRIDE_S,
) -> torch.Tensor:
    """BMN input of one window, float32 ``(C, tscale)``.

    Args:
        features: ``(N, C)`` feature rows of the video.
        centres: ``(N,)`` their times in seconds (``reference_centres`` for the reference's own features).
        window: ``[start_s, end_s]`` from ``ek100_windows``.

    The rows of ``window_rows`` are taken in order, cut or zero-padded at the end to
    ``round((end - start) / feature_stride_s)`` rows (400), and resampled to ``tscale`` positions by linear
    interpolation with ``align_corners=True``. A window with no row gives zeros.
    """
    feats = torch.as_tensor(features, dtype=torch.float32)
    if feats.ndim != 2 or feats.shape[0] != len(centres):
        raise ValueError(f"window_features: expected features (N, C) with N = {len(centres)}, got {tuple(feats.shape)}")
    index = np.flatnonzero(window_rows(centres, window))
    length = round((window[1] - window[0]) / feature_stride_s)
    count = min(len(index), length)
    if count == 0:
        return torch.zeros(feats.shape[1], tscale)
    if index[-1] - index[0] + 1 == len(index):  # the usual case: a run of rows, taken without a copy
        rows = feats[int(index[0]):int(index[0]) + count]
    else:
        rows = feats[torch.from_numpy(index[:count])]
    if count < length:
        rows = torch.cat([rows, rows.new_zeros(length - count, rows.shape[1])])
    # F.interpolate(mode="linear", align_corners=True) from `length` rows to `tscale`, done on the (rows, C) layout:
    # float32 source positions scale * i, the lower row and the weight of the upper one clamped as torch does.
    scale = np.float32((length - 1) / (tscale - 1)) if tscale > 1 else np.float32(0.0)
    src = torch.arange(tscale, dtype=torch.float32) * float(scale)
    lo = torch.clamp(torch.floor(src).long(), max=length - 1)
    hi = torch.clamp(lo + 1, max=length - 1)
    upper = torch.clamp(src - lo.float(), 0.0, 1.0)[:, None]
    out = rows.index_select(0, lo).mul_(1.0 - upper).add_(rows.index_select(0, hi).mul_(upper))
    return out.T.contiguous()


class WindowSegments(NamedTuple):
    """The ground truth of one window: which segments it keeps and where they lie in it."""

    index: np.ndarray
    """``(M,)`` int: positions of the kept segments in the video's segment list."""
    segments: np.ndarray
    """``(M, 2)`` float64: ``[start, end]`` normalised to the window, clipped to ``[0, 1]``."""


def window_segments(segments_s: np.ndarray, window: Sequence[float], min_ioa: float = 0.999) -> WindowSegments:
    """Segments of a video that a window keeps for training (the reference's label policy).

    A segment ``[a, b]`` (seconds) is kept when the fraction of it inside the window, ``|[a, b] ∩ window| / (b - a)``,
    exceeds ``min_ioa`` (0.999: only segments entirely inside; zero-length segments never). It is normalised as
    ``(t - start) / (end - start)`` and clipped to ``[0, 1]``. In training and validation the reference drops
    windows that keep no segment; at test time it keeps every window and builds no targets.

    Args:
        segments_s: ``(K, 2)`` ``[start, end]`` in seconds.
        window: ``[start_s, end_s]`` from ``ek100_windows``.
    """
    segs = np.asarray(segments_s, dtype=np.float64).reshape(-1, 2)
    w0, w1 = float(window[0]), float(window[1])
    inter = np.maximum(np.minimum(segs[:, 1], w1) - np.maximum(segs[:, 0], w0), 0.0)
    length = segs[:, 1] - segs[:, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ioa = inter / length
    index = np.flatnonzero(ioa > min_ioa)
    normalised = np.clip((segs[index] - w0) / (w1 - w0), 0.0, 1.0)
    return WindowSegments(index, normalised)


def window_targets(
    segments: np.ndarray, labels: np.ndarray, tscale: int = 200, dscale: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BMN targets of one window and the reference's per-proposal class labels, computed in float64 as the reference.

    Args:
        segments: ``(M, 2)`` normalised segments from ``window_segments``.
        labels: ``(M, L)`` int class labels of those segments (EK100: ``[verb, noun]``).

    Returns:
        ``(iou_map (D, T) float32, start (T,) float32, end (T,) float32, label_map (L, D, T) int64)``:
        ``iou_map[d, s]`` is the best IoU of proposal ``[s/T, (s+d+1)/T]`` with a segment (not masked);
        ``start[i]`` (``end[i]``) the best fraction of anchor ``[(i-0.5)/T, (i+1.5)/T]`` covered by a boundary region
        ``[b - 1.5/T, b + 1.5/T]`` around a segment start (end); ``label_map[:, d, s]`` the labels of the segment with
        the best IoU (the first on ties). With no segment every map is zero.
    """
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    labs = np.asarray(labels, dtype=np.int64)
    if labs.ndim != 2 or len(labs) != len(segs):
        raise ValueError(f"window_targets: expected labels (M, L) with M = {len(segs)}, got shape {labs.shape}")
    if len(segs) == 0:
        zeros_t = np.zeros(tscale, np.float32)
        label_map = np.zeros((labs.shape[1], dscale, tscale), np.int64)
        return np.zeros((dscale, tscale), np.float32), zeros_t, zeros_t.copy(), label_map
    tmin, tmax = proposal_bounds(tscale, dscale)
    ious = temporal_iou(tmin[None], tmax[None], segs[:, 0, None, None], segs[:, 1, None, None])
    gap = 1.0 / tscale
    idx = np.arange(tscale, dtype=np.float64)
    anchor_min, anchor_max = gap * (idx - 0.5), gap * (idx + 1 + 0.5)
    half = 3 / tscale / 2

    def coverage(bounds: np.ndarray) -> np.ndarray:
        inter = np.minimum(anchor_max[:, None], bounds + half) - np.maximum(anchor_min[:, None], bounds - half)
        return (np.maximum(inter, 0.0) / (anchor_max - anchor_min)[:, None]).max(axis=1).astype(np.float32)

    label_map = np.moveaxis(labs[ious.argmax(axis=0)], -1, 0)
    return ious.max(axis=0).astype(np.float32), coverage(segs[:, 0]), coverage(segs[:, 1]), label_map


def fused_length(num_rows: int, stride_ratio: int = 2) -> int:
    """Length of the fused timeline of a video with ``num_rows`` feature rows: ``len(rows[::stride_ratio])``."""
    return -(-num_rows // stride_ratio)


def fuse_window_maps(
    maps: Sequence[np.ndarray | torch.Tensor],
    row_masks: Sequence[np.ndarray],
    valid: np.ndarray | None = None,
    stride_ratio: int = 2,
) -> np.ndarray:
    """Average the maps of overlapping windows on the video's timeline (the reference's window fusion).

    Window ``w`` covers the fused positions ``flatnonzero(row_masks[w][::stride_ratio])`` (``k_w`` of them); its map
    columns ``0 .. k_w - 1`` are added there. Each position is divided by how many windows added to it (with
    ``valid``: how many valid cells, maps multiplied by ``valid`` first); positions nobody covers stay 0.
    Computed in float32, as the reference.

    Args:
        maps: per window ``(..., T)`` maps (start/end ``(T,)``, confidence ``(2, D, T)``, class maps ``(C, D, T)``).
        row_masks: per window bool ``(N,)`` over the video's feature rows (``window_rows``); all the same length.
        valid: optional ``(D, T)`` mask of real proposals (``valid_proposal_mask``), for the ``(D, T)`` maps.

    Returns:
        float32 ``(..., fused_length(N))``.
    """
    if len(maps) != len(row_masks) or not maps:
        raise ValueError(f"fuse_window_maps: need one row mask per map, got {len(maps)} maps, {len(row_masks)} masks")
    if len({len(m) for m in row_masks}) != 1:
        raise ValueError(f"fuse_window_maps: row masks differ in length: {sorted({len(m) for m in row_masks})}")
    arrays = [np.asarray(m.detach().cpu() if isinstance(m, torch.Tensor) else m, dtype=np.float32) for m in maps]
    length = fused_length(len(row_masks[0]), stride_ratio)
    total = np.zeros(arrays[0].shape[:-1] + (length,), np.float32)
    weight = np.ones(arrays[0].shape[-1:], np.float32) if valid is None else np.asarray(valid, np.float32)
    count = np.zeros(weight.shape[:-1] + (length,), np.float32)
    for arr, mask in zip(arrays, row_masks):
        cols = np.flatnonzero(np.asarray(mask, dtype=bool)[::stride_ratio])
        k = len(cols)
        if k > arr.shape[-1]:
            raise ValueError(f"fuse_window_maps: a window covers {k} positions but its maps have {arr.shape[-1]}")
        total[..., cols] += arr[..., :k] * weight[..., :k]
        count[..., cols] += weight[..., :k]
    count[count < 0.01] = 1.0
    return total / count


def _pandas_descending(score: np.ndarray) -> np.ndarray:
    """The order of ``DataFrame.sort_values(by="score", ascending=False)`` (pandas' default sort, ties included)."""
    idx = np.arange(len(score))[::-1]
    return idx[np.argsort(score[::-1])][::-1]


def ek100_soft_nms(
    proposals: np.ndarray,
    max_proposals: int,
    alpha: float = 0.4,
    low: float = 0.25,
    high: float = 0.9,
    iou_power: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference's Soft-NMS (``tal_tools.soft_nms``) and the re-sort that follows it.

    Proposals ordered by decreasing score (pandas ``sort_values``); ``soft_nms_select`` with IoU threshold
    ``low + (high - low) * width_of_best`` and decay ``exp(-IoU^iou_power / alpha)`` picks up to ``max_proposals``,
    stopping when one proposal is left (it is never picked); with fewer than two proposals nothing is suppressed.
    The picks are sorted by decreasing decayed score (pandas again).

    Args:
        proposals: ``(K, >=3)`` rows ``[start, end, ..., score]`` (score is the last column).

    Returns:
        ``(rows (M, 3) float64 [start, end, score], index (M,))``: ``index`` points into ``proposals``.
    """
    p = np.asarray(proposals, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 3:
        raise ValueError(f"ek100_soft_nms: expected (K, >=3) [start, end, ..., score], got shape {p.shape}")
    if len(p) > 1:
        order = _pandas_descending(p[:, -1])
        tstart, tend = p[order, 0], p[order, 1]
        picked, kept = soft_nms_select(
            tstart, tend, p[order, -1], max_proposals, alpha, low, high, iou_power, best_first_iou=False, min_left=1
        )
        index, rows = order[picked], np.stack([tstart[picked], tend[picked], kept], axis=1).reshape(-1, 3)
    else:
        index, rows = np.arange(len(p)), p[:, [0, 1, -1]]
    final = _pandas_descending(rows[:, 2])
    return rows[final], index[final]


class EK100Proposals(NamedTuple):
    """Proposals of one video by decreasing score."""

    segments: np.ndarray
    """``(K, 2)`` float64 ``[start_s, end_s]``."""
    scores: np.ndarray
    """``(K,)`` float64 decayed ``clr^clr_power * reg^reg_power``."""
    cells: np.ndarray
    """``(K, 2)`` int ``[d, s]``: the fused-map cell of each proposal (to read its class maps)."""


def ek100_proposals(
    conf: np.ndarray | torch.Tensor,
    start: np.ndarray | torch.Tensor,
    end: np.ndarray | torch.Tensor,
    duration_s: float,
    clr_power: float = 1.2,
    reg_power: float = 1.0,
    min_score: float = 0.0,
    alpha: float = 0.4,
    low: float = 0.25,
    high: float = 0.9,
    iou_power: float = 2.0,
    proposals_per_second: float = 1.0,
    peak_ratio: float = 0.5,
) -> EK100Proposals:
    """Proposals of one video from its fused maps (``parse_epic_bmn_proposals`` + ``epic_video_post_process``).

    Candidates are the cells of ``candidate_cells`` (start and end boundary candidates, ``e < L``) on the fused maps
    of length ``L``; cell ``(d, s)`` spans ``[s/L, (s+d+1)/L]``. Score = ``clr^clr_power * reg^reg_power`` in float64
    (the boundary probabilities only select candidates); candidates with score ``<= min_score`` go; ``ek100_soft_nms``
    keeps ``int(duration_s * proposals_per_second) + 1`` (the reference's ``int(duration / PROP_NUM_RATIO) + 1``).
    Segments are ``[max(0, s/L) * duration_s, min(1, (s+d+1)/L) * duration_s]``.

    Args:
        conf: fused ``(2, D, L)`` confidence map (channel 0 regression, 1 classification), from ``fuse_window_maps``.
        start, end: fused ``(L,)`` boundary probabilities.
        duration_s: the video's duration in seconds.
    """
    c = np.asarray(conf.detach().cpu() if isinstance(conf, torch.Tensor) else conf)
    d, s = candidate_cells(c, start, end, peak_ratio)
    length = c.shape[2]
    score = np.power(c[1, d, s].astype(np.float64), clr_power) * np.power(c[0, d, s].astype(np.float64), reg_power)
    keep = score > min_score
    d, s, score = d[keep], s[keep], score[keep]
    rows = np.stack([s / length, (s + d + 1) / length, score], axis=1).reshape(-1, 3)
    kept, index = ek100_soft_nms(rows, int(duration_s * proposals_per_second) + 1, alpha, low, high, iou_power)
    segments = np.stack([np.maximum(0.0, kept[:, 0]) * duration_s, np.minimum(1.0, kept[:, 1]) * duration_s], axis=1)
    return EK100Proposals(segments.reshape(-1, 2), kept[:, 2], np.stack([d[index], s[index]], axis=1).reshape(-1, 2))


def ek100_action_labels(
    verb_probs: np.ndarray | torch.Tensor,
    noun_probs: np.ndarray | torch.Tensor,
    top_verbs: int = 10,
    top_nouns: int = 30,
    top_k: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's action labels of one proposal (``fuse_verb_noun_map``; the post-processing keeps 5).

    The ``top_verbs`` best verbs and ``top_nouns`` best nouns are paired; a pair scores ``p(verb) * p(noun)``; the
    ``top_k`` best pairs are returned. A detection's score is the proposal score times its pair's score.

    Args:
        verb_probs: ``(V,)`` verb probabilities of the proposal (``V >= top_verbs``).
        noun_probs: ``(N,)`` noun probabilities (``N >= top_nouns``).

    Returns:
        ``(verbs (top_k,) int64, nouns (top_k,) int64, pair scores (top_k,) float32)``, best first.
    """
    verbs = torch.as_tensor(verb_probs, dtype=torch.float32)
    nouns = torch.as_tensor(noun_probs, dtype=torch.float32)
    if verbs.ndim != 1 or nouns.ndim != 1 or len(verbs) < top_verbs or len(nouns) < top_nouns:
        raise ValueError(
            f"ek100_action_labels: need (V >= {top_verbs},) verb and (N >= {top_nouns},) noun probabilities, "
            f"got {tuple(verbs.shape)} and {tuple(nouns.shape)}"
        )
    verb_order = (-verbs).argsort()[:top_verbs]
    noun_order = (-nouns).argsort()[:top_nouns]
    pairs = (verbs[verb_order][None, :] * nouns[noun_order][:, None]).reshape(-1)
    best = (-pairs).argsort()[:top_k]
    return (
        verb_order[best % top_verbs].numpy(),
        noun_order[torch.div(best, top_verbs, rounding_mode="floor")].numpy(),
        pairs[best].numpy(),
    )
