"""Straightforward loop implementations of the official algorithms: the reference for tests and benchmarks.

These follow ``compute_average_precision_detection``, ``interpolated_prec_rec`` and
``average_recall_vs_avg_nr_proposals`` statement by statement (one prediction, one threshold, one ground truth
at a time), on the same coded inputs as the vectorised :mod:`eval.detection` and :mod:`eval.proposals`.
They exist to cross-check those and to measure their speed-up (``scripts/bench_eval.py``); the evaluators never
call them.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from eval.segments import CodedSegments, tiou


def average_precision(
    gt: CodedSegments, pred: CodedSegments, n_classes: int, tiou_thresholds: Sequence[float]
) -> np.ndarray:
    """(T, C) AP per class and threshold, one class at a time as the official wrapper does."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    ap = np.zeros((len(thresholds), n_classes))
    for c in range(n_classes):
        g = gt.cls == c
        p = pred.cls == c
        if p.any():
            ap[:, c] = _class_ap(
                gt.video[g], gt.start[g], gt.end[g],
                pred.video[p], pred.start[p], pred.end[p], pred.score[p], thresholds,
            )
    return ap


def _class_ap(gt_video, gt_start, gt_end, video, start, end, score, thresholds) -> np.ndarray:
    npos = float(len(gt_video))
    lock_gt = np.ones((len(thresholds), len(gt_video))) * -1
    sort_idx = score.argsort()[::-1]
    tp = np.zeros((len(thresholds), len(sort_idx)))
    fp = np.zeros((len(thresholds), len(sort_idx)))
    gt_of_video = defaultdict(list)
    for j, v in enumerate(gt_video):
        gt_of_video[v].append(j)
    for idx, i in enumerate(sort_idx):
        rows = gt_of_video.get(video[i])
        if rows is None:
            fp[:, idx] = 1
            continue
        rows = np.array(rows)
        tiou_arr = tiou(start[i], end[i], gt_start[rows], gt_end[rows])
        tiou_sorted_idx = tiou_arr.argsort()[::-1]
        for tidx, tiou_thr in enumerate(thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < tiou_thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, rows[jdx]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, rows[jdx]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_cumsum = np.cumsum(tp, axis=1)
    fp_cumsum = np.cumsum(fp, axis=1)
    recall_cumsum = tp_cumsum / npos
    precision_cumsum = tp_cumsum / (tp_cumsum + fp_cumsum)
    return np.array([interpolated_prec_rec(precision_cumsum[t], recall_cumsum[t]) for t in range(len(thresholds))])


def interpolated_prec_rec(prec: np.ndarray, rec: np.ndarray) -> float:
    """VOC2011 all-point interpolated AP of one precision/recall curve."""
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    for i in range(len(mprec) - 1)[::-1]:
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])


def recall_curve(
    gt: CodedSegments, proposals: CodedSegments, max_avg_nr_proposals: float | None, tiou_thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(recall (T, 100), avg_recall (100,), proposals_per_video (100,))``, video by video.

    ``gt.video`` codes are the ground-truth videos; proposals may carry other codes (videos without ground
    truth), which count in the total only.
    """
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    video_lst = list(dict.fromkeys(gt.video.tolist()))
    n_videos = len(video_lst)
    if not max_avg_nr_proposals:
        max_avg_nr_proposals = float(len(proposals.video)) / n_videos
    ratio = max_avg_nr_proposals * float(n_videos) / len(proposals.video)
    score_lst = []
    total_nr_proposals = 0
    for videoid in video_lst:
        g = gt.video == videoid
        p = np.flatnonzero(proposals.video == videoid)
        if len(p) == 0:
            score_lst.append(np.zeros((int(g.sum()), 1)))
            continue
        p = p[proposals.score[p].argsort()[::-1]]
        nr_proposals = np.minimum(int(len(p) * ratio), len(p))
        total_nr_proposals += nr_proposals
        p = p[:nr_proposals]
        overlap = np.empty((int(g.sum()), len(p)))
        for i, k in enumerate(p):
            overlap[:, i] = tiou(proposals.start[k], proposals.end[k], gt.start[g], gt.end[g])
        score_lst.append(overlap)
    pcn_lst = np.arange(1, 101) / 100.0 * (max_avg_nr_proposals * float(n_videos) / total_nr_proposals)
    matches = np.empty((n_videos, len(pcn_lst)))
    positives = np.empty(n_videos)
    recall = np.empty((len(thresholds), len(pcn_lst)))
    for ridx, thr in enumerate(thresholds):
        for i, score in enumerate(score_lst):
            positives[i] = score.shape[0]
            true_positives_tiou = score >= thr
            pcn_proposals = np.minimum((score.shape[1] * pcn_lst).astype(int), score.shape[1])
            for j, nr_proposals in enumerate(pcn_proposals):
                matches[i, j] = np.count_nonzero((true_positives_tiou[:, :nr_proposals]).sum(axis=1))
        recall[ridx, :] = matches.sum(axis=0) / positives.sum()
    avg_recall = recall.mean(axis=0)
    proposals_per_video = pcn_lst * (float(total_nr_proposals) / n_videos)
    return recall, avg_recall, proposals_per_video
