"""How predictions and ground truth meet before any tIoU is computed: by video and by class.

The official evaluators silently score what does not meet: a prediction on a video outside the evaluated set is a
false positive, a predicted label that is no class of the ground truth changes no AP (ActivityNet: a false
positive of an unscored class, EK100: dropped), a ground-truth class without predictions scores AP 0. These counts
make that visible: ``evaluate`` stores them under ``"matching"`` in report.json, lists them in report.md and on
stderr, warns when nothing matches (a wrong file, ``v_``-prefixed ids, another dataset's classes) and fails with
``--strict``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from eval.class_names import display_name
from eval.inputs import EK100_NUM_NOUNS, SegmentTable

LISTED = 5  # labels named in one stderr line


@dataclass(frozen=True)
class ClassMatching:
    """One labelling (``label``; EK100 ``verb``, ``noun``, ``action``) of predictions against ground truth."""

    unknown_labels: dict[str, int]  # predicted label that is no ground-truth class -> its predictions
    classes_without_predictions: dict[str, int]  # ground-truth class no prediction has -> its ground-truth segments
    predictions_on_ground_truth_video_and_class: int  # predictions sharing video and class with a ground truth

    def to_dict(self) -> dict[str, Any]:
        return {
            "predictions_unknown_label": sum(self.unknown_labels.values()),
            "classes_without_predictions": len(self.classes_without_predictions),
            "ground_truth_of_classes_without_predictions": sum(self.classes_without_predictions.values()),
            "predictions_on_ground_truth_video_and_class": self.predictions_on_ground_truth_video_and_class,
            "predictions_per_unknown_label": dict(self.unknown_labels),
            "ground_truth_per_class_without_predictions": dict(self.classes_without_predictions),
        }


@dataclass(frozen=True)
class Matching:
    """What found no counterpart, by video and (for detections) by class; ``by_class`` maps a labelling to it."""

    predictions: int
    predictions_outside_evaluated_videos: int
    prediction_videos_outside_evaluated_videos: int
    ground_truth: int
    ground_truth_videos: int
    ground_truth_videos_without_predictions: int
    ground_truth_on_videos_without_predictions: int
    by_class: dict[str, ClassMatching]
    example_prediction_video: str | None
    example_ground_truth_video: str | None

    def to_dict(self) -> dict[str, Any]:
        """The counts as report.json stores them (one name per count, as in the evaluators' ``counts``)."""
        out: dict[str, Any] = {
            "predictions": self.predictions,
            "predictions_outside_evaluated_videos": self.predictions_outside_evaluated_videos,
            "prediction_videos_outside_evaluated_videos": self.prediction_videos_outside_evaluated_videos,
            "ground_truth": self.ground_truth,
            "ground_truth_videos": self.ground_truth_videos,
            "ground_truth_videos_without_predictions": self.ground_truth_videos_without_predictions,
            "ground_truth_on_videos_without_predictions": self.ground_truth_on_videos_without_predictions,
        }
        if self.by_class:
            out["by_class"] = {task: m.to_dict() for task, m in self.by_class.items()}
        return out

    def nothing_matches(self) -> list[str]:
        """Why nothing can score: no predictions, none on an evaluated video, or (per labelling) none sharing a
        video and a class with the ground truth. Empty when something matches."""
        if not self.predictions:
            return ["the file holds no predictions"]
        if self.predictions_outside_evaluated_videos == self.predictions:
            return [f"none of the {self.prediction_videos_outside_evaluated_videos} prediction videos is a video of "
                    f"the ground truth (e.g. {self.example_prediction_video!r} vs {self.example_ground_truth_video!r}); "
                    "wrong file or id prefix?"]
        return [f"{_prefix(task)}no prediction shares a video and a class with the ground truth; wrong ground-truth "
                "file or class list?" for task, m in self.by_class.items() if not m.predictions_on_ground_truth_video_and_class]

    def summary(self, names: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
        """One line by video and one per labelling with something unmatched, for stderr; ``names`` maps a
        labelling's class keys to display names (EK100 class tables)."""
        parts = []
        if self.predictions_outside_evaluated_videos:
            parts.append(f"{self.predictions_outside_evaluated_videos} of {self.predictions} predictions are on "
                         f"{self.prediction_videos_outside_evaluated_videos} videos outside the ground truth")
        if self.ground_truth_videos_without_predictions:
            parts.append(f"{self.ground_truth_videos_without_predictions} of {self.ground_truth_videos} ground-truth "
                         f"videos ({self.ground_truth_on_videos_without_predictions} segments) have no prediction")
        lines = ["; ".join(parts) if parts else
                 f"all {self.predictions} predictions are on ground-truth videos, and every ground-truth video has predictions"]
        for task, m in self.by_class.items():
            shown = (names or {}).get(task, {})
            parts = []
            if m.unknown_labels:
                parts.append(f"{sum(m.unknown_labels.values())} predictions have labels that are no ground-truth class, "
                             f"not scored ({_listed(m.unknown_labels, shown)})")
            if m.classes_without_predictions:
                parts.append(f"{len(m.classes_without_predictions)} ground-truth classes "
                             f"({sum(m.classes_without_predictions.values())} segments) have no prediction, AP 0 "
                             f"({_listed(m.classes_without_predictions, shown)})")
            if parts:
                lines.append(_prefix(task) + "; ".join(parts))
        return lines


def match_counts(gt: SegmentTable, pred: SegmentTable) -> Matching:
    """Count what in ``pred`` and ``gt`` has no counterpart by video, and by class for each labelling both tables
    carry. The evaluated videos are ``gt.videos`` (else those of its rows)."""
    videos = pd.Index(gt.videos or list(dict.fromkeys(gt.video)), dtype=object)
    pred_video = pd.Index(pred.video, dtype=object)
    outside = ~pred_video.isin(videos)
    predicted_videos = pd.Index(pd.unique(pred.video), dtype=object)
    unpredicted = ~videos.isin(predicted_videos)
    by_class = {task: _class_matching(gt, pred, task) for task in gt.labels if task in pred.labels}
    return Matching(
        predictions=len(pred),
        predictions_outside_evaluated_videos=int(outside.sum()),
        prediction_videos_outside_evaluated_videos=int((~predicted_videos.isin(videos)).sum()),
        ground_truth=len(gt),
        ground_truth_videos=len(videos),
        ground_truth_videos_without_predictions=int(unpredicted.sum()),
        ground_truth_on_videos_without_predictions=int(pd.Index(gt.video, dtype=object).isin(videos[unpredicted]).sum()),
        by_class=by_class,
        example_prediction_video=str(pred.video[0]) if len(pred) else None,
        example_ground_truth_video=str(videos[0]) if len(videos) else None,
    )


def class_key(task: str, labels: np.ndarray) -> np.ndarray:
    """Class keys as the reports name them: the label, an EK100 verb/noun id, or ``"verb,noun"`` for an action."""
    if task == "action":
        verb, noun = np.divmod(labels.astype(np.int64), EK100_NUM_NOUNS)
        return np.array([f"{v},{n}" for v, n in zip(verb, noun)], dtype=object)
    return np.array([str(x) for x in labels], dtype=object)


def _class_matching(gt: SegmentTable, pred: SegmentTable, task: str) -> ClassMatching:
    gt_cls, pred_cls = class_key(task, gt.labels[task]), class_key(task, pred.labels[task])
    classes = pd.Index(pd.unique(gt_cls), dtype=object)
    unknown = ~pd.Index(pred_cls, dtype=object).isin(classes)
    absent = ~pd.Index(gt_cls, dtype=object).isin(pd.unique(pred_cls))
    pairs = pd.MultiIndex.from_arrays([gt.video, gt_cls])
    shared = pd.MultiIndex.from_arrays([pred.video, pred_cls]).isin(pairs)
    return ClassMatching(_by_count(pred_cls[unknown]), _by_count(gt_cls[absent]), int(shared.sum()))


def _by_count(keys: np.ndarray) -> dict[str, int]:
    """Occurrences of each key, most frequent first (ties by key)."""
    counts = pd.Series(keys, dtype=object).value_counts()
    return {str(k): int(n) for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def _listed(counts: Mapping[str, int], names: Mapping[str, str]) -> str:
    shown = [f"{display_name(k, names)!r} x{n}" for k, n in list(counts.items())[:LISTED]]
    return ", ".join(shown) + (", ..." if len(counts) > LISTED else "")


def _prefix(task: str) -> str:
    return "" if task == "label" else f"{task}: "
