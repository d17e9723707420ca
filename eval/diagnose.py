"""DETAD-style diagnosis of a detection result: the false-positive profile, the average-mAP_N gain from removing
each error type, and the sensitivity of average-mAP_N and of the false-negative rate to ground-truth
characteristics.

The rules are those of DETAD (Alwassel et al., "Diagnosing Error in Temporal Action Detectors", ECCV 2018;
HumamAlwassel/DETAD @24f7d95, ``src/action_detector_diagnosis.py``, ``false_positive_analysis.py``,
``sensitivity_analysis.py``, ``false_negative_analysis.py``), pinned by ``tests/data/detad/``:

- **Ground truth**: zero-length segments and segments whose coverage exceeds 1 are left out (and counted).
  Classes are those of the remaining ground truth; ``N_bar`` = ground truths / classes.
- **Predictions**: of each class with ``n_c`` ground truths only the ``limit_factor * n_c`` (10 n_c) best-scored
  are kept; labels that are no class of the ground truth are left out (DETAD stops on them; counted).
- **Matching** at each tIoU threshold is the official ActivityNet greedy walk (:func:`eval.detection.match`).
- **Normalised AP** (AP_N): the VOC interpolated AP of ``precision_N = recall * N_bar / (recall * N_bar + FP)``,
  which is the precision a class would have with ``N_bar`` ground truths; average-mAP_N averages it over
  classes and thresholds.
- **Error type** of a prediction at threshold t: *true positive* when matched; otherwise take the ground truth
  of its video, any class, with the highest tIoU (the first in file order on ties): tIoU >= t is a *double
  detection* (same label) or a *wrong label*; ``min_tiou`` (0.1) <= tIoU < t a *localization* error (same label)
  or a *confusion*; below that, or no ground truth in the video, *background*.
- **False-positive profile**: the predictions ranked ``[(k-1) n_c, k n_c)`` in their class form the group
  "kG" (k = 1..limit_factor); each bar is the share of each type in the group, averaged over thresholds.
- **Removing an error type**: AP_N recomputed at each threshold without the predictions of that type there,
  averaged over classes and thresholds, minus the base average-mAP_N.
- **Characteristics** of a ground truth: *coverage* = length / video duration, *length* in seconds, *number
  of instances* = ground truths of its class in its video. Bins are ``(lo, hi]``, the first also closed at
  ``lo`` (``pandas.cut(include_lowest=True)``), with DETAD's edges: ActivityNet's for HACS/ActivityNet,
  THUMOS14's (short segments, long videos) for EK100.
- **Sensitivity** of a bin: each class's AP_N against its ground truth in the bin, leaving out predictions
  matched (at any threshold) to ground truth outside the bin; averaged over thresholds, then over the classes
  that have ground truth in the bin (a bin without ground truth has none).
- **False-negative rate** of a bin: the share of its ground truth that no prediction matches, averaged over
  thresholds.

Where DETAD has a bug this follows its evident intent: its error typing reuses the previous video's ground
truth for the second prediction on a video without ground truth; here every such prediction is background.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from eval.detection import match
from eval.inputs import InputError, SegmentTable
from eval.segments import CodedSegments, descending_order, group_runs, thresholds_array, tiou

ERROR_TYPES = ("true_positive", "double_detection", "wrong_label", "localization", "confusion", "background")
ERROR_NAMES = {
    "true_positive": "True positive",
    "double_detection": "Double detection",
    "wrong_label": "Wrong label",
    "localization": "Localization",
    "confusion": "Confusion",
    "background": "Background",
}
LIMIT_FACTOR = 10
MIN_TIOU = 0.1


@dataclass(frozen=True)
class Characteristic:
    """A ground-truth characteristic and its bins ``(edges[i], edges[i+1]]`` named ``bins[i]``."""

    name: str
    title: str
    edges: tuple[float, ...]
    bins: tuple[str, ...]

    def assign(self, values: np.ndarray) -> np.ndarray:
        """(N,) bin index of each value (-1 outside every bin), as ``pandas.cut(right=True, include_lowest=True)``."""
        edges = np.asarray(self.edges, dtype=np.float64)
        index = np.searchsorted(edges, values, side="left") - 1
        index[values == edges[0]] = 0
        index[(values < edges[0]) | (values > edges[-1]) | np.isnan(values)] = -1
        return index

    def bin_edges_text(self) -> list[str]:
        """Each bin as ``(lo, hi]`` text for tables."""
        return [f"({_num(lo)}, {_num(hi)}]" for lo, hi in zip(self.edges[:-1], self.edges[1:])]

    def bin_short_text(self) -> list[str]:
        """Each bin as short text for plot ticks: ``<=hi``, ``lo-hi``, ``>lo``."""
        pairs = list(zip(self.edges[:-1], self.edges[1:]))
        return [f"<={_num(hi)}" if i == 0 else f">{_num(lo)}" if np.isinf(hi) else f"{_num(lo)}-{_num(hi)}"
                for i, (lo, hi) in enumerate(pairs)]


def _num(x: float) -> str:
    return "inf" if np.isinf(x) else f"{x:g}"


_SIZES = ("XS", "S", "M", "L", "XL")
ACTIVITYNET_CHARACTERISTICS = (
    Characteristic("coverage", "Coverage", tuple(np.linspace(0, 1.0, 6)), _SIZES),
    Characteristic("length", "Length (s)", (0, 30, 60, 120, 180, np.inf), _SIZES),
    Characteristic("num_instances", "# instances", (-1, 1, 4, 8, np.inf), _SIZES[:4]),
)
THUMOS14_CHARACTERISTICS = (
    Characteristic("coverage", "Coverage", (0, 0.02, 0.04, 0.06, 0.08, 1), _SIZES),
    Characteristic("length", "Length (s)", (0, 3, 6, 12, 18, np.inf), _SIZES),
    Characteristic("num_instances", "# instances", (-1, 1, 40, 80, np.inf), _SIZES[:4]),
)


@dataclass(frozen=True)
class Diagnosis:
    """The diagnosis of one detection task; fractions (``to_dict`` gives percent). ``nan``: nothing to measure."""

    tiou_thresholds: np.ndarray  # (T,)
    average_mAP_N: float
    fp_profile: np.ndarray  # (limit_factor, 6): share of each ERROR_TYPES entry among the kG predictions
    fp_group_sizes: np.ndarray  # (limit_factor,) predictions in each kG group
    mAP_N_gain: dict[str, float]  # error type (not true_positive) -> average-mAP_N gain from removing it
    characteristics: tuple[Characteristic, ...]
    ground_truth_per_bin: dict[str, np.ndarray]  # characteristic -> (B,) counts
    sensitivity: dict[str, np.ndarray]  # characteristic -> (B,) average-mAP_N of the bin
    false_negative_rate: dict[str, np.ndarray]  # characteristic -> (B,)
    counts: dict[str, int]
    diagnosed_rows: np.ndarray  # (P,) row in the prediction table of each diagnosed prediction, ranked
    error_type: np.ndarray  # (T, P) index into ERROR_TYPES of each diagnosed prediction at each threshold

    def to_dict(self) -> dict:
        """JSON-ready numbers in percent; ``None`` where there is nothing to measure."""
        groups = [f"{k + 1}G" for k in range(len(self.fp_group_sizes))]
        return {
            "definitions": "DETAD (Alwassel et al., ECCV 2018); see report.md and eval/diagnose.py",
            "tiou_thresholds": [round(float(t), 10) for t in self.tiou_thresholds],
            "average_mAP_N": _pct(self.average_mAP_N),
            "false_positive_profile": {
                g: {"predictions": int(n), **{e: _pct(v) for e, v in zip(ERROR_TYPES, row)}}
                for g, n, row in zip(groups, self.fp_group_sizes, self.fp_profile)
            },
            "average_mAP_N_gain_removing": {e: _pct(v) for e, v in self.mAP_N_gain.items()},
            "sensitivity": {
                c.name: {
                    b: {"edges": text, "ground_truth": int(n), "average_mAP_N": _pct(m), "false_negative_rate": _pct(f)}
                    for b, text, n, m, f in zip(c.bins, c.bin_edges_text(), self.ground_truth_per_bin[c.name],
                                                self.sensitivity[c.name], self.false_negative_rate[c.name])
                }
                for c in self.characteristics
            },
            "counts": dict(self.counts),
        }


def _pct(x: float) -> float | None:
    return None if np.isnan(x) else float(x) * 100


def diagnose(
    gt: SegmentTable,
    pred: SegmentTable,
    label: str,
    tiou_thresholds: Sequence[float],
    characteristics: Sequence[Characteristic] = ACTIVITYNET_CHARACTERISTICS,
    *,
    limit_factor: int = LIMIT_FACTOR,
    min_tiou: float = MIN_TIOU,
) -> Diagnosis:
    """Diagnose ``pred`` against ``gt`` on the labels ``labels[label]`` of both tables (module docstring).

    ``gt`` needs ``duration`` (per row, seconds); ``pred`` needs ``score``.
    """
    thresholds = thresholds_array(tiou_thresholds)
    if gt.duration is None:
        raise ValueError("diagnose needs the ground truth's video durations (SegmentTable.duration)")
    length = gt.end - gt.start
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = length / gt.duration
    instances = pd.DataFrame({"v": gt.video, "c": gt.labels[label]}).groupby(["v", "c"], sort=False)["v"].transform("size")
    values = {"coverage": coverage, "length": length, "num_instances": instances.to_numpy(np.float64)}
    zero_length = ~(gt.start < gt.end)
    keep_gt = ~zero_length & (coverage <= 1.0)
    if not keep_gt.any():
        raise InputError(f"{gt.source}: no ground-truth segment of positive length to diagnose")
    gt_cls, classes = pd.factorize(gt.labels[label][keep_gt])
    n_cls = len(classes)
    pred_cls = pd.Index(classes).get_indexer(pred.labels[label])
    known = pred_cls >= 0
    videos = pd.factorize(np.concatenate([gt.video[keep_gt], pred.video[known]]))[0]
    gt_video, pred_video = videos[: len(gt_cls)], videos[len(gt_cls):]
    npos = np.bincount(gt_cls, minlength=n_cls)

    # of each class, the limit_factor * n_c best-scored predictions, ranked class by class
    order = descending_order(pred_cls[known], pred.score[known])
    ranked_cls = pred_cls[known][order]
    starts, _ = group_runs(ranked_cls, n_cls)
    rank = np.arange(len(order)) - starts[ranked_cls]
    top = rank < limit_factor * npos[ranked_cls]
    order, rank, cls = order[top], rank[top], ranked_cls[top]
    start, end = pred.start[known][order], pred.end[known][order]
    ranked = CodedSegments(pred_video[order], start, end, cls)
    gt_coded = CodedSegments(gt_video, gt.start[keep_gt], gt.end[keep_gt], gt_cls)
    matched = match(gt_coded, ranked, thresholds)
    types = error_types(gt_coded, ranked, matched, thresholds, min_tiou)

    n_bar = len(gt_cls) / n_cls
    tp = matched >= 0
    base = float(normalized_ap(tp, cls, npos, n_bar).mean())
    group = rank // npos[cls]
    sizes = np.bincount(group, minlength=limit_factor)
    profile = np.full((limit_factor, len(ERROR_TYPES)), np.nan)
    for k in np.flatnonzero(sizes):
        in_group = types[:, group == k]
        profile[k] = [(in_group == e).sum(axis=1).mean() / sizes[k] for e in range(len(ERROR_TYPES))]
    gain = {}
    for e, name in enumerate(ERROR_TYPES[1:], start=1):
        kept = types != e
        gain[name] = float(normalized_ap(tp & kept, cls, npos, n_bar, kept).mean()) - base

    per_bin, sensitivity, fn_rate = {}, {}, {}
    for char in characteristics:
        bin_of = char.assign(values[char.name][keep_gt])
        n_bins = len(char.bins)
        per_bin[char.name] = np.bincount(bin_of[bin_of >= 0], minlength=n_bins)
        sensitivity[char.name] = np.array([
            _bin_sensitivity(bin_of == b, gt_cls, matched, cls, n_cls, n_bar) for b in range(n_bins)
        ])
        missed = np.ones((len(thresholds), len(gt_cls)), dtype=bool)
        t_idx, p_idx = np.nonzero(tp)
        missed[t_idx, matched[t_idx, p_idx]] = False
        with np.errstate(invalid="ignore"):
            fn_rate[char.name] = np.array([
                missed[:, bin_of == b].sum(axis=1).mean() / per_bin[char.name][b] if per_bin[char.name][b] else np.nan
                for b in range(n_bins)
            ])
    counts = {
        "ground_truth": len(gt),
        "ground_truth_left_out_zero_length": int(zero_length.sum()),
        "ground_truth_left_out_coverage_above_1": int((~zero_length & ~keep_gt).sum()),
        "classes": n_cls,
        "predictions": len(pred),
        "predictions_left_out_unknown_label": int((~known).sum()),
        "predictions_diagnosed": len(cls),
    }
    rows = np.flatnonzero(known)[order]
    return Diagnosis(
        thresholds, base, profile, sizes, gain, tuple(characteristics), per_bin, sensitivity, fn_rate, counts, rows, types
    )


def error_types(
    gt: CodedSegments, ranked: CodedSegments, matched: np.ndarray, thresholds: np.ndarray, min_tiou: float = MIN_TIOU
) -> np.ndarray:
    """(T, P) index into :data:`ERROR_TYPES` of each ranked prediction at each threshold.

    ``matched``: (T, P) ground-truth row taken by each prediction (-1: none), from :func:`eval.detection.match`.
    An unmatched prediction is typed by the highest-tIoU ground truth of its video over all classes (the first
    in row order on ties).
    """
    gt_order = np.argsort(gt.video, kind="stable")
    first = np.searchsorted(gt.video[gt_order], ranked.video, "left")
    n_cand = np.searchsorted(gt.video[gt_order], ranked.video, "right") - first
    offset = np.cumsum(n_cand) - n_cand
    pair_pred = np.repeat(np.arange(len(n_cand)), n_cand)
    pair_gt = gt_order[first[pair_pred] + np.arange(len(pair_pred)) - offset[pair_pred]]
    overlap = tiou(ranked.start[pair_pred], ranked.end[pair_pred], gt.start[pair_gt], gt.end[pair_gt])
    best = np.full(len(n_cand), -np.inf)
    same_label = np.zeros(len(n_cand), dtype=bool)
    has = n_cand > 0
    if len(pair_pred):
        best[has] = np.maximum.reduceat(overlap, offset[has])
        is_best = overlap == best[pair_pred]
        pair_index = np.where(is_best, np.arange(len(pair_pred)), len(pair_pred))
        arg = np.minimum.reduceat(pair_index, offset[has])
        same_label[has] = gt.cls[pair_gt[arg]] == ranked.cls[has]
    above = best[None] >= thresholds[:, None]
    near = best >= min_tiou
    fp_type = np.where(above, np.where(same_label, 1, 2), np.where(near, np.where(same_label, 3, 4), 5))
    return np.where(matched >= 0, 0, fp_type)


def normalized_ap(
    tp: np.ndarray, cls: np.ndarray, npos: np.ndarray, n_bar: float, keep: np.ndarray | None = None
) -> np.ndarray:
    """(T, C) DETAD's normalised AP of predictions ranked class by class, using only the ``keep`` ones.

    tp, keep: (T, P) or (P,) flags; cls: (P,) sorted class of each prediction; npos: (C,) ground truths per class
    (0: AP nan). Precision is ``rec * n_bar / (rec * n_bar + fp)``, then DETAD's (VOC 2011) interpolated AP.
    """
    n_cls = len(npos)
    keep = np.ones(np.shape(tp), dtype=bool) if keep is None else keep
    tp, keep = np.broadcast_arrays(np.atleast_2d(tp), np.atleast_2d(keep))
    n_thr, n_pred = tp.shape
    tp = tp & keep
    fp = ~tp & keep
    starts, stops = group_runs(cls, n_cls)
    start = starts[cls]

    def in_class_cumsum(flags: np.ndarray) -> np.ndarray:
        total = np.cumsum(flags, axis=1)
        before = np.where(start > 0, total[:, (start - 1).clip(0)], 0)
        return total - before

    tp_cum, fp_cum = in_class_cumsum(tp), in_class_cumsum(fp)
    pos = npos[cls].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp_cum / pos
        precision = np.where(keep & (tp_cum + fp_cum > 0), rec * n_bar / (rec * n_bar + fp_cum), 0.0)
        step_gain = tp_cum / pos - (tp_cum - 1) / pos
    # running maximum from the right inside each class, in log2 exact passes
    step = 1
    stop = stops[cls]
    while step < max(int((stops - starts).max(initial=0)), 1):
        ahead = np.arange(n_pred) + step
        ok = np.flatnonzero(ahead < stop)
        precision[:, ok] = np.maximum(precision[:, ok], precision[:, ahead[ok]])
        step *= 2
    t_idx, p_idx = np.nonzero(tp)
    out = np.zeros(n_thr * n_cls)
    np.add.at(out, t_idx * n_cls + cls[p_idx], step_gain[t_idx, p_idx] * precision[t_idx, p_idx])
    out = out.reshape(n_thr, n_cls)
    out[:, npos == 0] = np.nan
    return out


def _bin_sensitivity(
    in_bin: np.ndarray, gt_cls: np.ndarray, matched: np.ndarray, cls: np.ndarray, n_cls: int, n_bar: float
) -> float:
    """Average-mAP_N against the ground truth in one bin (module docstring); nan when the bin is empty."""
    npos = np.bincount(gt_cls[in_bin], minlength=n_cls)
    if not npos.any():
        return np.nan
    keep = ((matched < 0) | in_bin[matched.clip(0)]).all(axis=0)
    ap = normalized_ap(matched >= 0, cls, npos, n_bar, keep)
    return float(ap[:, npos > 0].mean(axis=0).mean())
