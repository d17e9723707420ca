"""Proposal evaluation: average recall vs average number of proposals (AR@AN) and its AUC, as the official
ActivityNet ``Evaluation/eval_proposal.py`` (@82304fa9) with ``max_avg_nr_proposals=100``.

The official quirks kept (``../shared/fixtures/eval/SPEC.md``):

- ``ratio = max_avg_nr_proposals * n_gt_videos / total_proposals``; the total counts every proposal of the
  file, also those on videos without ground truth; each ground-truth video keeps its top
  ``int(n_video * ratio)`` proposals (descending score, the official ``argsort()[::-1]``);
- the AN grid is a share of each video's own kept proposals: at grid point j a video uses its first
  ``min(int(n_kept * pcn[j]), n_kept)``, ``pcn = arange(1, 101) / 100 * max_avg * n_videos / total_kept``;
- a ground truth is recalled at threshold t when one of those has tIoU ``>= t`` (a NaN tIoU never is);
  a ground-truth video without proposals recalls nothing;
- ``AUC = 100 * trapezoid(avg_recall, proposals_per_video) / proposals_per_video[-1]``; AR@k is the average
  recall at grid point k (as BMN reports AR@1/5/10/100).

Vectorised over all (ground truth, kept proposal) pairs of a video; loops run over thresholds only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from eval.inputs import InputError, SegmentTable, activitynet_ground_truth, ek100_ground_truth, read_activitynet_predictions
from eval.segments import CodedSegments, descending_order, group_runs, thresholds_array, tiou
from tal_common.annotations import AnnotationSet

DEFAULT_TIOU = np.linspace(0.5, 0.95, 10)
AR_AT = (1, 5, 10, 50, 100)
_trapezoid = np.trapezoid if hasattr(np, "trapezoid") else np.trapz


@dataclass(frozen=True)
class ProposalResult:
    """Recall at each tIoU threshold and AN grid point; fractions."""

    tiou_thresholds: np.ndarray  # (T,)
    recall: np.ndarray  # (T, 100)
    avg_recall: np.ndarray  # (100,)
    proposals_per_video: np.ndarray  # (100,) the AN grid
    counts: dict[str, int]

    @property
    def auc(self) -> float:
        """Area under the AR-AN curve in percent of the full area, as the official evaluator prints it."""
        area = _trapezoid(self.avg_recall, self.proposals_per_video)
        return float(100.0 * float(area) / self.proposals_per_video[-1])

    def recall_at(self, grid_point: int) -> float:
        """Average recall (fraction) at AN grid point ``grid_point`` (1..100)."""
        return float(self.avg_recall[grid_point - 1])

    def to_dict(self) -> dict:
        out = {"AUC": self.auc}
        out.update({f"AR@{k}": self.recall_at(k) * 100 for k in AR_AT})
        out["tiou_thresholds"] = [round(float(t), 10) for t in self.tiou_thresholds]
        out["curve"] = {
            "average_proposals_per_video": [float(x) for x in self.proposals_per_video],
            "average_recall": [float(r) for r in self.avg_recall * 100],
            "recall_per_tiou": [[float(r) for r in row] for row in self.recall * 100],
        }
        out["counts"] = dict(self.counts)
        return out


def evaluate_proposals(
    ground_truth: Union[str, Path, AnnotationSet, SegmentTable],
    proposals: Union[str, Path, Mapping, SegmentTable],
    *,
    dataset: str = "activitynet",
    subset: str = "validation",
    tiou_thresholds: Sequence[float] | None = None,
    max_avg_nr_proposals: float | None = 100,
    blocked_videos: Iterable[str] = (),
    recall_function: Callable | None = None,
) -> ProposalResult:
    """AR@AN and AUC of a proposal file (official ActivityNet JSON; labels ignored; path or parsed dict).

    Ground truth: HACS/ActivityNet JSON (``subset`` applies) or, with ``dataset="ek100"``, an EK100 CSV
    (all rows). ``max_avg_nr_proposals=None`` uses the file's own average, as the official default does.
    ``recall_function`` replaces the core :func:`recall_curve` (``eval.baseline.recall_curve`` for cross-checks).
    """
    blocked = set(blocked_videos)
    if isinstance(ground_truth, SegmentTable):
        gt = ground_truth
    elif dataset in ("hacs", "activitynet"):
        gt = activitynet_ground_truth(ground_truth, subset, blocked)
    elif dataset == "ek100":
        gt = ek100_ground_truth(ground_truth)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected 'hacs', 'activitynet' or 'ek100'")
    props = proposals if isinstance(proposals, SegmentTable) else read_activitynet_predictions(proposals, with_labels=False)
    keep = ~pd.Index(props.video).isin(list(blocked))
    if len(gt) == 0:
        raise InputError(f"{gt.source}: no ground-truth segments to recall")
    if not keep.any():
        raise InputError(f"{props.source}: no proposals")
    gt_videos, gt_codes = np.unique(gt.video, return_inverse=True)
    prop_codes = pd.Index(gt_videos, dtype=object).get_indexer(props.video[keep])
    prop_codes[prop_codes < 0] = len(gt_videos)  # one code for every video without ground truth
    gt_coded = CodedSegments(gt_codes, gt.start, gt.end)
    prop_coded = CodedSegments(prop_codes, props.start[keep], props.end[keep], score=props.score[keep])
    thresholds = thresholds_array(DEFAULT_TIOU if tiou_thresholds is None else tiou_thresholds)
    recall, avg_recall, per_video = (recall_function or recall_curve)(gt_coded, prop_coded, max_avg_nr_proposals, thresholds)
    evaluated = pd.Index(gt.videos or gt_videos, dtype=object)  # the names of eval.matching's counts
    kept_videos = pd.Index(props.video[keep], dtype=object)
    counts = {
        "ground_truth": len(gt),
        "ground_truth_videos": len(evaluated),
        "predictions": int(keep.sum()),
        "predictions_outside_evaluated_videos": int((~kept_videos.isin(evaluated)).sum()),
        "ground_truth_videos_without_predictions": int((~evaluated.isin(kept_videos)).sum()),
    }
    return ProposalResult(thresholds, recall, avg_recall, per_video, counts)


def recall_curve(
    gt: CodedSegments, proposals: CodedSegments, max_avg_nr_proposals: float | None, tiou_thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(recall (T, 100), avg_recall (100,), proposals_per_video (100,))`` as the official function.

    ``gt.video``: codes 0..V-1 of the ground-truth videos; proposal codes outside that range are videos without
    ground truth (counted in the total only).
    """
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    n_videos = int(gt.video.max()) + 1
    total = len(proposals.video)
    if not max_avg_nr_proposals:
        max_avg_nr_proposals = float(total) / n_videos
    ratio = max_avg_nr_proposals * float(n_videos) / total

    on_gt = proposals.video < n_videos
    rows = np.flatnonzero(on_gt)[descending_order(proposals.video[on_gt], proposals.score[on_gt])]
    video = proposals.video[rows]
    first, stop = group_runs(video, n_videos)
    n_props = stop - first
    kept = np.minimum((n_props * ratio).astype(np.int64), n_props)
    total_kept = int(kept.sum())
    if total_kept == 0:
        raise InputError(f"no proposal is kept: {total} proposals for {n_videos} ground-truth videos at "
                         f"{max_avg_nr_proposals} per video keep none (the official code divides by zero here)")
    # A video without proposals is, officially, one proposal of tIoU 0: it never recalls (unless a threshold <= 0).
    width = np.where(n_props > 0, kept, 1)

    # Every (ground truth, kept proposal of its video) pair, ground truth by ground truth, proposals by rank.
    gt_rows = np.argsort(gt.video, kind="stable")
    gt_video = gt.video[gt_rows]
    per_gt = kept[gt_video]
    pair_gt = np.repeat(gt_rows, per_gt)
    pair_start = np.cumsum(per_gt) - per_gt
    pair_rank = np.arange(int(per_gt.sum())) - np.repeat(pair_start, per_gt)
    pair_prop = rows[first[gt_video].repeat(per_gt) + pair_rank]
    overlap = tiou(proposals.start[pair_prop], proposals.end[pair_prop], gt.start[pair_gt], gt.end[pair_gt])

    pcn = np.arange(1, 101) / 100.0 * (max_avg_nr_proposals * float(n_videos) / total_kept)
    usable = np.minimum((width[:, None] * pcn).astype(np.int64), width[:, None])[gt_video]  # (G, 100)
    has_pairs = per_gt > 0
    recall = np.empty((len(thresholds), len(pcn)))
    for t, thr in enumerate(thresholds):
        first_hit = np.full(len(gt_rows), np.iinfo(np.int64).max)
        if has_pairs.any():
            hit_rank = np.where(overlap >= thr, pair_rank, np.iinfo(np.int64).max)
            first_hit[has_pairs] = np.minimum.reduceat(hit_rank, pair_start[has_pairs])
        first_hit[(n_props[gt_video] == 0) & (0.0 >= thr)] = 0
        recall[t] = (first_hit[:, None] < usable).sum(axis=0) / len(gt_rows)
    avg_recall = recall.mean(axis=0)
    proposals_per_video = pcn * (float(total_kept) / n_videos)
    return recall, avg_recall, proposals_per_video
