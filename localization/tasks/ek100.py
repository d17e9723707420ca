"""Epic-Kitchens-100 action detection: sliding windows, verb and noun snippet classifiers, EK100 submission.

Annotations: one EK100 CSV per split (``EPIC_100_train.csv``, ``EPIC_100_validation.csv``), durations from
``EPIC_100_video_info.csv`` when given, else the decoded duration stored with the features. The vocabulary is
the verb and noun counts (``classifier.num_verbs``/``num_nouns``, default the largest id + 1). Each proposal gets
its ``top_k`` verb x noun pairs from the probabilities pooled inside it. Submission: the EK100 action detection
JSON with the supervision levels ``sls`` (pre-training, training labels, training data), each 0..5.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch import nn

from localization.classify import SnippetClassifier, ek100_detections
from localization.data import VideoEntry, Window, snippet_classes
from localization.heads.base import Head
from localization.tasks.base import Vocabulary, WindowOutput
from localization.tasks.windowed import SlidingWindowTask
from tal_common.annotations import AnnotationError, AnnotationSet, VideoAnnotation, read_annotations
from tal_common.h5 import ClipTiming

EK100_VERSION = "0.2"
SLS_NAMES = ("sls_pt", "sls_tl", "sls_td")


class Ek100Task(SlidingWindowTask):
    """``data.task: ek100``."""

    name = "ek100"
    default_top_k = 5

    def read_split(self, path: Path, subset: str, video_info: Path | None, required: bool = True) -> AnnotationSet | None:
        """An EK100 CSV is one split: ``subset`` is not used."""
        return read_annotations(path, video_info=video_info)

    def validation_source(self, annotations: Path, val_annotations: Path | None) -> Path | None:
        return val_annotations

    def duration(self, annotation: VideoAnnotation, timing: ClipTiming) -> float:
        """From the video-info file when it was given (``fps`` known), else the decoded duration."""
        if annotation.fps is not None and annotation.duration > 0:
            return annotation.duration
        return timing.duration_s

    def build_vocabulary(self, annotations: AnnotationSet) -> Vocabulary:
        segs = [s for v in annotations.videos.values() for s in v.segments]
        if any(s.verb is None or s.noun is None for s in segs):
            raise AnnotationError(f"{annotations.source}: EK100 needs verb_class/noun_class on every segment")
        max_verb = max((s.verb for s in segs), default=-1)
        max_noun = max((s.noun for s in segs), default=-1)
        num_verbs = self.classifier_cfg.num_verbs or max_verb + 1
        num_nouns = self.classifier_cfg.num_nouns or max_noun + 1
        if max_verb >= num_verbs or max_noun >= num_nouns:
            raise AnnotationError(
                f"{annotations.source}: verb/noun ids up to {max_verb}/{max_noun} exceed classifier.num_verbs/num_nouns "
                f"= {num_verbs}/{num_nouns}"
            )
        return Vocabulary(num_verbs=num_verbs, num_nouns=num_nouns)

    def build_classifier(self, feat_dim: int, vocab: Vocabulary) -> nn.Module:
        c = self.classifier_cfg
        return SnippetClassifier(feat_dim, {"verb": vocab.num_verbs, "noun": vocab.num_nouns}, c.hidden_dim, c.dropout)

    def classifier_targets(self, entry: VideoEntry, window: Window, vocab: Vocabulary) -> dict[str, np.ndarray]:
        """Per-bin verb and noun ids; background (and ids outside the vocabulary) = ``num_verbs``/``num_nouns``."""
        verbs = [v if 0 <= v < vocab.num_verbs else vocab.num_verbs for v in entry.verbs]
        nouns = [n if 0 <= n < vocab.num_nouns else vocab.num_nouns for n in entry.nouns]
        return {
            "verb": snippet_classes(entry, window, self.data.tscale, verbs, vocab.num_verbs),
            "noun": snippet_classes(entry, window, self.data.tscale, nouns, vocab.num_nouns),
        }

    def unknown_labels(self, entries: Sequence[VideoEntry], vocab: Vocabulary) -> dict[str, int]:
        unknown: Counter[str] = Counter()
        for e in entries:
            unknown.update(f"verb {v}" for v in e.verbs if not 0 <= v < vocab.num_verbs)
            unknown.update(f"noun {n}" for n in e.nouns if not 0 <= n < vocab.num_nouns)
        return dict(unknown)

    def detections(self, entry: VideoEntry, outputs: Sequence[WindowOutput], head: Head, vocab: Vocabulary) -> list[dict]:
        proposals = self.video_proposals(entry, outputs, head)
        centers, probs = self.fused_classes(entry, outputs)
        return ek100_detections(proposals, probs["verb"], probs["noun"], centers, self.top_k)

    def check_submission_options(self, options: dict[str, Any]) -> None:
        for name, level in zip(SLS_NAMES, options.get("sls", (2, 3, 4))):
            if not 0 <= level <= 5:
                raise ValueError(f"{name} must be in 0..5, got {level}")

    def submission(self, results: dict[str, list[dict]], provenance: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        self.check_submission_options(options)
        sls = options.get("sls", (2, 3, 4))
        return {"version": EK100_VERSION, "challenge": "action_detection", **dict(zip(SLS_NAMES, sls)), "results": results}
