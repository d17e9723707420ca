"""Detection mAP at tIoU thresholds, under the official ActivityNet/HACS and EPIC-Kitchens-100 rules.

The numbers equal the official evaluators' (``../shared/fixtures/eval/SPEC.md``; ActivityNet
``Evaluation/eval_detection.py`` @82304fa9, EK100 ``evaluate_detection_json_ek100.py`` @4835721e):

- predictions of a class are taken in descending score (the official ``argsort()[::-1]``, ties included);
- at each threshold a prediction walks its video's ground truth of its class in descending tIoU and takes
  the first one not yet taken at that threshold (falling through past taken ones), if its tIoU is
  ``>=`` the threshold (a NaN tIoU, zero-length against zero-length, counts as a match, as in the official
  code); otherwise it is a false positive;
- AP is the VOC2011 all-point interpolated area; mAP averages over the classes of the ground truth, a class
  without predictions scoring 0.

Vectorised, and bit-identical to the official code: tIoU for all (prediction, candidate ground truth) pairs
at once, the greedy walk for all classes, videos and thresholds together as rounds of proposals
(:func:`greedy_assign`), and the AP curves of all classes together (:func:`interpolated_ap`). Python loops
run over matching rounds, distinct group sizes and log2 passes, never over predictions or classes (except
classes holding tied scores, which make the official sort call). :mod:`eval.baseline` is the literal loop
port these are checked against (``scripts/bench_eval.py`` measures the speed-up).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, Union

import numpy as np
import pandas as pd

from eval.inputs import (
    EK100_NUM_NOUNS,
    EK100_NUM_VERBS,
    InputError,
    SegmentTable,
    activitynet_ground_truth,
    ek100_ground_truth,
    read_activitynet_predictions,
    read_ek100_predictions,
)
from eval.segments import CodedSegments, descending_order, group_runs, thresholds_array, tiou
from tal_common.annotations import AnnotationSet

ACTIVITYNET_TIOU = np.linspace(0.5, 0.95, 10)
EK100_TIOU = np.linspace(0.1, 0.5, 5)
EK100_TASKS = ("verb", "noun", "action")
UNKNOWN_LABEL_POLICIES = ("error", "false_positive")

GroundTruthSource = Union[str, Path, AnnotationSet, SegmentTable]
PredictionSource = Union[str, Path, Mapping, SegmentTable]
# (gt, pred, n_classes, thresholds) -> (T, C) AP: average_precision here, or eval.baseline's loop reference.
APFunction = Callable[[CodedSegments, CodedSegments, int, Sequence[float]], np.ndarray]


@dataclass(frozen=True)
class DetectionResult:
    """AP of each class at each threshold; ``classes`` in the official class-index order."""

    tiou_thresholds: np.ndarray  # (T,)
    classes: tuple[str, ...]  # (C,)
    ap: np.ndarray  # (T, C), fractions
    counts: dict[str, int]

    @property
    def mAP(self) -> np.ndarray:
        """(T,) mean AP over classes, as the official ``ap.mean(axis=1)``."""
        return self.ap.mean(axis=1)

    @property
    def average_mAP(self) -> float:
        return float(self.mAP.mean())

    def to_dict(self) -> dict:
        """The report numbers, in percent like the field's tables."""
        return {
            "tiou_thresholds": [round(float(t), 10) for t in self.tiou_thresholds],
            "mAP": [float(m) for m in self.mAP * 100],
            "average_mAP": self.average_mAP * 100,
            "per_class_AP": {c: [float(a) for a in self.ap[:, i] * 100] for i, c in enumerate(self.classes)},
            "counts": dict(self.counts),
        }


@dataclass(frozen=True)
class EK100DetectionResult:
    """The verb, noun and action tasks, each evaluated on its own."""

    tiou_thresholds: np.ndarray
    tasks: dict[str, DetectionResult]

    def to_dict(self) -> dict:
        out: dict = {"tiou_thresholds": [round(float(t), 10) for t in self.tiou_thresholds]}
        for name, result in self.tasks.items():
            task = result.to_dict()
            del task["tiou_thresholds"]
            out[name] = task
        return out


def evaluate_detection(
    ground_truth: GroundTruthSource,
    predictions: PredictionSource,
    *,
    dataset: str = "activitynet",
    subset: str = "validation",
    tiou_thresholds: Sequence[float] | None = None,
    unknown_labels: str = "error",
    blocked_videos: Iterable[str] = (),
) -> DetectionResult | EK100DetectionResult:
    """Evaluate a detection file (path or parsed dict) against ground truth (path or in memory).

    ``dataset``: ``"hacs"`` / ``"activitynet"`` (official ActivityNet rules; ``subset``, ``unknown_labels``
    and ``blocked_videos`` apply) or ``"ek100"`` (EK100 rules). Thresholds default to the dataset's official ones.
    """
    if dataset in ("hacs", "activitynet"):
        return evaluate_activitynet_detection(
            ground_truth, predictions, subset=subset, unknown_labels=unknown_labels,
            blocked_videos=blocked_videos,
            tiou_thresholds=ACTIVITYNET_TIOU if tiou_thresholds is None else tiou_thresholds,
        )
    if dataset == "ek100":
        return evaluate_ek100_detection(
            ground_truth, predictions, tiou_thresholds=EK100_TIOU if tiou_thresholds is None else tiou_thresholds
        )
    raise ValueError(f"unknown dataset {dataset!r}; expected 'hacs', 'activitynet' or 'ek100'")


def evaluate_activitynet_detection(
    ground_truth: GroundTruthSource,
    predictions: PredictionSource,
    *,
    subset: str = "validation",
    tiou_thresholds: Sequence[float] = ACTIVITYNET_TIOU,
    unknown_labels: str = "error",
    blocked_videos: Iterable[str] = (),
    ap_function: APFunction | None = None,
) -> DetectionResult:
    """Official ActivityNet (and HACS) detection mAP.

    Classes are the labels of the subset's ground truth, in order of first appearance. Predictions on videos
    outside the subset are kept and are false positives. A predicted label absent from the subset's ground
    truth crashes the official code; here it is an :class:`InputError` (``unknown_labels="error"``) or, with
    ``unknown_labels="false_positive"``, a false positive of a class that is not scored, so it changes no AP
    and is only counted. Predictions on ``blocked_videos`` are dropped, as the official ``check_status`` did.
    A :class:`SegmentTable` given as ground truth is taken as the evaluated set as it is.
    ``ap_function`` replaces the AP core (``eval.baseline.average_precision`` for cross-checks and benchmarks).
    """
    if unknown_labels not in UNKNOWN_LABEL_POLICIES:
        raise ValueError(f"unknown_labels must be one of {UNKNOWN_LABEL_POLICIES}, got {unknown_labels!r}")
    tiou_thresholds = thresholds_array(tiou_thresholds)
    blocked = set(blocked_videos)
    gt = ground_truth if isinstance(ground_truth, SegmentTable) else activitynet_ground_truth(ground_truth, subset, blocked)
    pred = predictions if isinstance(predictions, SegmentTable) else read_activitynet_predictions(predictions)
    if blocked:
        pred = _rows(pred, ~pd.Index(pred.video).isin(list(blocked)))
    # class index: order of first appearance in the ground truth; labels seen only in predictions come after
    codes, labels = pd.factorize(np.concatenate([gt.labels["label"], pred.labels["label"]]))
    gt_cls, pred_cls = codes[: len(gt)], codes[len(gt) :]
    classes = tuple(labels[: gt_cls.max(initial=-1) + 1])
    pred_labels = pred.labels["label"]
    unknown = pred_cls >= len(classes)
    if unknown.any() and unknown_labels == "error":
        first = int(np.flatnonzero(unknown)[0])
        names = sorted({str(x) for x in pred_labels[unknown]})
        raise InputError(
            f"{pred.source}: video {pred.video[first]!r}: field 'label' {pred_labels[first]!r} is not a class of the "
            f"{subset!r} ground truth ({int(unknown.sum())} predictions, labels {names[:5]}"
            f"{' ...' if len(names) > 5 else ''}); the official evaluator crashes here. Pass "
            "unknown_labels='false_positive' (--unknown-labels false_positive) to count them as false positives."
        )
    gt_video, pred_video, counts = _video_codes(gt, pred)
    keep = ~unknown
    counts.update(_class_counts(classes, pred_cls[keep]))
    counts["predictions_unknown_label"] = int(unknown.sum())  # false positives of unscored classes
    ap = (ap_function or average_precision)(
        CodedSegments(gt_video, gt.start, gt.end, gt_cls),
        CodedSegments(pred_video[keep], pred.start[keep], pred.end[keep], pred_cls[keep], pred.score[keep]),
        len(classes), tiou_thresholds,
    )
    return DetectionResult(tiou_thresholds, classes, ap, counts)


def evaluate_ek100_detection(
    ground_truth: GroundTruthSource,
    predictions: PredictionSource,
    *,
    tiou_thresholds: Sequence[float] = EK100_TIOU,
    num_verbs: int = EK100_NUM_VERBS,
    num_nouns: int = EK100_NUM_NOUNS,
    ap_function: APFunction | None = None,
) -> EK100DetectionResult:
    """Official EPIC-Kitchens-100 action detection mAP for verb, noun and action.

    Classes are the sorted labels of the ground truth (every CSV row). A prediction whose label (for that
    task) never occurs in the ground truth is dropped, not counted as a false positive; the drops are counted.
    """
    tiou_thresholds = thresholds_array(tiou_thresholds)
    gt = ground_truth if isinstance(ground_truth, SegmentTable) else ek100_ground_truth(ground_truth, num_nouns)
    pred = predictions if isinstance(predictions, SegmentTable) else read_ek100_predictions(predictions, num_verbs, num_nouns)
    gt_video, pred_video, common = _video_codes(gt, pred)
    tasks = {}
    for task in EK100_TASKS:
        labels = np.unique(gt.labels[task])  # sorted: the official class index
        pred_cls = _lookup(labels, pred.labels[task])
        known = pred_cls >= 0
        counts = {**common, **_class_counts(labels, pred_cls[known]), "predictions_unknown_label": int((~known).sum())}  # dropped
        ap = (ap_function or average_precision)(
            CodedSegments(gt_video, gt.start, gt.end, np.searchsorted(labels, gt.labels[task])),
            CodedSegments(pred_video[known], pred.start[known], pred.end[known], pred_cls[known], pred.score[known]),
            len(labels), tiou_thresholds,
        )
        names = [f"{v},{n}" for v, n in zip(*divmod(labels, num_nouns))] if task == "action" else labels
        tasks[task] = DetectionResult(tiou_thresholds, tuple(map(str, names)), ap, counts)
    return EK100DetectionResult(tiou_thresholds, tasks)


# --------------------------------------------------------------------------------------------------- core


def average_precision(
    gt: CodedSegments, pred: CodedSegments, n_classes: int, tiou_thresholds: Sequence[float]
) -> np.ndarray:
    """(T, C) average precision of each class at each threshold under the official matching."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    if len(pred.cls) == 0:
        return np.zeros((len(thresholds), n_classes))
    order = descending_order(pred.cls, pred.score)
    ranked = CodedSegments(pred.video[order], pred.start[order], pred.end[order], pred.cls[order])
    npos = np.bincount(gt.cls, minlength=n_classes)
    return interpolated_ap(match(gt, ranked, thresholds) >= 0, ranked.cls, npos)


def match(gt: CodedSegments, ranked: CodedSegments, thresholds: np.ndarray) -> np.ndarray:
    """(T, P) the ground-truth row each prediction takes (-1: none, a false positive); predictions ranked class
    by class in descending score.

    Each prediction's candidates are its video's ground truth of its class, in the official order
    (``tiou.argsort()[::-1]`` over those rows in file order); at threshold t its walk may use the leading
    candidates up to the first whose tIoU is ``< t``.
    """
    n_videos = int(max(gt.video.max(initial=-1), ranked.video.max(initial=-1))) + 1
    gt_key = gt.cls.astype(np.int64) * n_videos + gt.video
    gt_order = np.argsort(gt_key, kind="stable")
    gt_keys = gt_key[gt_order]
    key = ranked.cls.astype(np.int64) * n_videos + ranked.video
    first = np.searchsorted(gt_keys, key, "left")
    n_cand = np.searchsorted(gt_keys, key, "right") - first
    offset = np.cumsum(n_cand) - n_cand
    # Every (prediction, candidate) pair, prediction by prediction, candidates in file order.
    pair_pred = np.repeat(np.arange(len(key)), n_cand)
    pair_gt = gt_order[first[pair_pred] + np.arange(len(pair_pred)) - offset[pair_pred]]
    overlap = tiou(ranked.start[pair_pred], ranked.end[pair_pred], gt.start[pair_gt], gt.end[pair_gt])
    # Candidates in descending tIoU with the official call's tie order: one 2-D argsort per candidate count.
    for n in np.unique(n_cand[n_cand > 1]):
        pairs = offset[n_cand == n, None] + np.arange(n)
        rank = np.argsort(overlap[pairs], axis=1)[:, ::-1]
        pairs_sorted = np.take_along_axis(pairs, rank, axis=1)
        pair_gt[pairs], overlap[pairs] = pair_gt[pairs_sorted], overlap[pairs_sorted]
    # The walk stops at the first tIoU below the threshold (a prefix, as they are sorted); NaN sorts first
    # and `NaN < t` is False.
    n_usable = np.zeros((len(thresholds), len(key)), dtype=np.int64)
    if len(pair_pred):
        with_cand = n_cand > 0
        usable = ~(overlap[None] < thresholds[:, None])
        n_usable[:, with_cand] = np.add.reduceat(usable, offset[with_cand], axis=1, dtype=np.int64)
    return greedy_assign(pair_gt, offset, n_usable, len(gt.cls))


def greedy_assign(preference: np.ndarray, offset: np.ndarray, n_usable: np.ndarray, n_gt: int) -> np.ndarray:
    """(T, P) the ground-truth id each prediction ends up holding under the sequential greedy walk (-1: none).

    ``preference[offset[p] : offset[p] + n_usable[t, p]]`` are the ground-truth ids prediction p may take at
    threshold t, best first; a lower p is a higher-scored prediction. The official code walks predictions one by
    one, each taking its first free candidate. Every ground truth preferring the higher-scored prediction, the
    outcome is the unique stable matching, which this computes in parallel rounds (Gale-Shapley): each free
    prediction proposes to its next candidate, each (threshold, ground truth) keeps the best proposer, and a
    displaced holder proposes again from its next candidate. Rounds run until no free prediction has
    candidates left; each is vectorised over all thresholds, classes and videos.
    """
    n_thr, n_pred = n_usable.shape
    walk_key = np.flatnonzero(n_usable > 0)  # t * n_pred + p, sorted
    t, p = np.divmod(walk_key, n_pred)
    limit = n_usable.ravel()[walk_key]
    step = np.zeros(len(t), dtype=np.int64)
    holds = np.zeros(len(t), dtype=bool)
    holder = np.full(n_thr * n_gt, n_pred, dtype=np.int64)  # n_pred: free
    active = np.arange(len(t))
    while len(active):
        slot = t[active] * n_gt + preference[offset[p[active]] + step[active]]
        before = holder[slot]
        np.minimum.at(holder, slot, p[active])
        after = holder[slot]
        won = after == p[active]
        holds[active[won]] = True
        rejected = active[~won]
        beaten = (before != after) & (before != n_pred)
        displaced = np.unique(np.searchsorted(walk_key, t[active[beaten]] * n_pred + before[beaten]))
        holds[displaced] = False
        retry = np.concatenate([rejected, displaced])
        step[retry] += 1
        active = retry[step[retry] < limit[retry]]
    out = np.full((n_thr, n_pred), -1, dtype=np.int64)
    out[t[holds], p[holds]] = preference[offset[p[holds]] + step[holds]]
    return out


def interpolated_ap(tp: np.ndarray, cls: np.ndarray, npos: np.ndarray) -> np.ndarray:
    """(T, C) VOC2011 all-point interpolated AP from (T, P) true-positive flags of predictions ranked class by class.

    cls: (P,) sorted class of each prediction; npos: (C,) ground truths per class. Classes without predictions
    score 0. Per class and threshold this is the official ``interpolated_prec_rec`` on
    ``prec = tp_cum / (tp_cum + fp_cum)``, ``rec = tp_cum / npos``, bit for bit. Only true positives matter:
    recall changes exactly there, and the running maximum of precision from the right, taken at a true
    positive, is the maximum over the true positives from there on (precision falls between them). The final
    sum of each (threshold, class) curve adds the same elements in the same order as the official one (the
    true positives' ``(rec - rec_prev) * mprec``, then ``(1 - rec) * 0`` when recall ends below 1); curves of
    equal length are stacked and summed row-wise, which numpy does exactly as the 1-D sum of each row.
    """
    n_thr, n_pred = tp.shape
    n_cls = len(npos)
    starts, stops = group_runs(cls, n_cls)
    t, p = np.divmod(np.flatnonzero(tp), n_pred)  # row-major: grouped by (threshold, class), ranked inside
    c = cls[p]
    curve = t * n_cls + c
    first = np.searchsorted(curve, curve, "left")
    last = np.searchsorted(curve, curve, "right")
    tp_cum = np.arange(len(p)) - first + 1
    precision = tp_cum / (p - starts[c] + 1)  # tp_cum + fp_cum is the rank in the class
    # running max of precision from the right inside each curve, in log2(longest) exact passes
    step = 1
    while step < np.max(last - first, initial=0):
        ahead = np.arange(len(p)) + step
        ok = np.flatnonzero(ahead < last)
        precision[ok] = np.maximum(precision[ok], precision[ahead[ok]])
        step *= 2
    gain = (tp_cum / npos[c] - (tp_cum - 1) / npos[c]) * precision

    # Every (threshold, class with predictions) curve: its true positives, then the closing point if any.
    n_tp = np.bincount(curve, minlength=n_thr * n_cls)
    has_pred = np.tile(stops > starts, n_thr)
    length = np.where(has_pred, n_tp + (n_tp != np.tile(npos, n_thr)), 0)
    offset = np.cumsum(length) - length
    values = np.zeros(int(length.sum()))  # the closing points' gain, (1 - rec) * 0, is 0.0
    values[offset[curve] + tp_cum - 1] = gain
    sums = np.zeros(n_thr * n_cls)
    for n in np.unique(length[length > 0]):
        rows = np.flatnonzero(length == n)
        sums[rows] = values[offset[rows, None] + np.arange(n)].sum(axis=1)
    return sums.reshape(n_thr, n_cls)


# ---------------------------------------------------------------------------------------------- helpers


def _video_codes(gt: SegmentTable, pred: SegmentTable) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Video ids of both tables as shared integer codes, and the counts of segments and videos.

    The evaluated videos (``gt.videos``, else those of its rows) take codes 0..V-1; any code >= V is a video
    outside the evaluated set.
    """
    evaluated = np.array(gt.videos or list(dict.fromkeys(gt.video)), dtype=object)
    n = len(evaluated)
    codes = pd.factorize(np.concatenate([evaluated, gt.video, pred.video]))[0]
    pred_video = codes[n + len(gt) :]
    counts = {
        "ground_truth": len(gt),
        "ground_truth_videos": n,
        "predictions": len(pred),
        "predictions_outside_evaluated_videos": int((pred_video >= n).sum()),
    }
    return codes[n : n + len(gt)], pred_video, counts


def _class_counts(classes, kept_cls: np.ndarray) -> dict[str, int]:
    return {"classes": len(classes), "classes_without_predictions": len(classes) - len(np.unique(kept_cls))}


def _lookup(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in the sorted ``labels``, -1 where absent."""
    if len(labels) == 0:
        return np.full(len(values), -1)
    pos = np.searchsorted(labels, values).clip(max=len(labels) - 1)
    return np.where(labels[pos] == values, pos, -1)


def _rows(table: SegmentTable, keep: np.ndarray) -> SegmentTable:
    return SegmentTable(
        table.source, table.video[keep], table.start[keep], table.end[keep],
        {k: v[keep] for k, v in table.labels.items()}, None if table.score is None else table.score[keep], table.videos,
    )
