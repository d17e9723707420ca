"""THUMOS14-style detection: sliding windows, one snippet class head, ActivityNet-JSON annotations and output.

The THUMOS14 protocol as the field runs it (ActionFormer's and OpenTAD's ``thumos14.json``): annotations in the
ActivityNet JSON layout (subsets e.g. ``validation`` for training and ``test`` for evaluation), durations from
the annotation, per-class labels on the snippets of each window (background last), each proposal labelled
with its ``top_k`` pooled classes, evaluated with the ActivityNet rules at tIoU 0.3:0.1:0.7
(``evaluate --dataset activitynet --tiou 0.3 0.4 0.5 0.6 0.7``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch import nn

from localization.classify import SnippetClassifier, snippet_detections
from localization.data import VideoEntry, Window, snippet_classes
from localization.heads.base import Head
from localization.tasks.base import (
    Vocabulary,
    WindowOutput,
    activitynet_submission,
    label_vocabulary,
    unknown_label_counts,
)
from localization.tasks.windowed import SlidingWindowTask
from tal_common.annotations import AnnotationSet


class Thumos14Task(SlidingWindowTask):
    """``data.task: thumos14``."""

    name = "thumos14"
    default_top_k = 2

    def build_vocabulary(self, annotations: AnnotationSet) -> Vocabulary:
        return label_vocabulary(annotations)

    def build_classifier(self, feat_dim: int, vocab: Vocabulary) -> nn.Module:
        c = self.classifier_cfg
        return SnippetClassifier(feat_dim, {"label": len(vocab.labels)}, c.hidden_dim, c.dropout)

    def classifier_targets(self, entry: VideoEntry, window: Window, vocab: Vocabulary) -> dict[str, np.ndarray]:
        """Per-bin class index; background (and labels outside the vocabulary) = the number of classes."""
        index = {label: i for i, label in enumerate(vocab.labels)}
        background = len(vocab.labels)
        classes = [index.get(label, background) for label in entry.labels]
        return {"label": snippet_classes(entry, window, self.data.tscale, classes, background)}

    def unknown_labels(self, entries: Sequence[VideoEntry], vocab: Vocabulary) -> dict[str, int]:
        return unknown_label_counts(entries, vocab)

    def detections(self, entry: VideoEntry, outputs: Sequence[WindowOutput], head: Head, vocab: Vocabulary) -> list[dict]:
        proposals = self.proposals(entry, outputs, head)
        centers, probs = self.fused_classes(entry, outputs)
        return snippet_detections(proposals, probs["label"], centers, vocab.labels, self.top_k)

    def submission(self, results: dict[str, list[dict]], provenance: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        return activitynet_submission(results, provenance, self.data.train_subset)
