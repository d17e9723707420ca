"""HACS Segments / ActivityNet: each video rescaled to ``tscale`` bins, a video-level classifier, top-k labels.

Annotations: the ActivityNet-style JSON (``database`` with subsets); durations from the annotation. A segment
counts in the (whole-video) window when at least ``min_segment_fraction`` of it lies inside ``[0, duration]``.
Detections: the window's BMN candidates, Soft-NMS on the video, the best ``max_proposals`` per video, each with
the video's ``top_k`` classes (score = proposal score x class probability). Submission: ActivityNet JSON.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch import nn

from localization.classify import VideoClassifier, hacs_detections
from localization.data import VideoEntry, Window, whole_video_windows, window_segments
from localization.heads.base import Head
from localization.tasks.base import (
    Purpose,
    Task,
    Vocabulary,
    WindowOutput,
    activitynet_submission,
    label_vocabulary,
    unknown_label_counts,
)
from tal_common.annotations import AnnotationSet


class ActivityNetTask(Task):
    """``data.task: hacs``."""

    name = "hacs"
    default_top_k = 2

    def windows(self, entries: Sequence[VideoEntry], purpose: Purpose) -> list[Window]:
        return whole_video_windows(entries, self.data.tscale)

    def window_segments(self, entry: VideoEntry, window: Window) -> np.ndarray:
        return window_segments(entry, window, self.data.tscale, self.data.min_segment_fraction)

    def build_vocabulary(self, annotations: AnnotationSet) -> Vocabulary:
        return label_vocabulary(annotations)

    def build_classifier(self, feat_dim: int, vocab: Vocabulary) -> nn.Module:
        c = self.classifier_cfg
        return VideoClassifier(feat_dim, len(vocab.labels), c.hidden_dim, c.dropout)

    def classifier_targets(self, entry: VideoEntry, window: Window, vocab: Vocabulary) -> dict[str, np.ndarray]:
        return {"video_label": video_label_distribution(entry, {label: i for i, label in enumerate(vocab.labels)})}

    def unknown_labels(self, entries: Sequence[VideoEntry], vocab: Vocabulary) -> dict[str, int]:
        return unknown_label_counts(entries, vocab)

    def proposals(self, entry: VideoEntry, outputs: Sequence[WindowOutput], head: Head) -> np.ndarray:
        return self._soft_nms_in_video(entry, self._proposals_in_seconds(outputs, head), self.postprocess.max_proposals)

    def detections(self, entry: VideoEntry, outputs: Sequence[WindowOutput], head: Head, vocab: Vocabulary) -> list[dict]:
        proposals = self.proposals(entry, outputs, head)
        class_probs = np.mean([out.classes for out in outputs], axis=0)
        return hacs_detections(proposals, class_probs, vocab.labels, self.top_k)

    def submission(self, results: dict[str, list[dict]], provenance: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        return activitynet_submission(results, provenance, self.data.train_subset)


def video_label_distribution(entry: VideoEntry, class_index: dict[str, int]) -> np.ndarray:
    """``(num_classes,)`` float32: each known label's share of the video's annotated time (uniform over segments
    when all have zero length); labels outside ``class_index`` are left out (all zero when none is known)."""
    out = np.zeros(len(class_index), dtype=np.float32)
    spans = entry.segments[:, 1] - entry.segments[:, 0]
    weights = spans if spans.sum() > 0 else np.ones_like(spans)
    for label, w in zip(entry.labels, weights):
        if label in class_index:
            out[class_index[label]] += w
    total = out.sum()
    return out / total if total > 0 else out
