"""The interface of a dataset protocol (a *task*): everything that differs between HACS, EK100, THUMOS14, ...

A task owns how annotations are read and which duration a video has, which windows a video yields and
which ground-truth segments count in a window, the classifier and its vocabulary and targets, how a video's
window outputs become labelled detections (fusion, proposal budget, labelling) and the submission format.
Training (``localization.train``) and inference (``localization.infer``) only ask the task, so a new dataset
protocol is one module implementing :class:`Task` plus an entry in ``localization.tasks.TASKS``.

Tasks hold only their config sections, so they pickle into DataLoader workers.
"""
from __future__ import annotations

import math
from collections import Counter
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, Sequence

import numpy as np
from torch import nn

from localization.config import ClassifierConfig, DataConfig, LocalizeConfig, PostprocessConfig
from localization.data import VideoEntry, Window, bin_centers, interpolated_window
from localization.heads.base import Head
from localization.postprocess import soft_nms
from tal_common.annotations import AnnotationError, AnnotationSet, VideoAnnotation, read_annotations
from tal_common.h5 import ClipTiming, FeatureReader

Purpose = Literal["train", "validate", "infer"]


@dataclass(frozen=True)
class Vocabulary:
    """What the classifier predicts: class names (``labels``), or EK100 verb/noun counts (background excluded)."""

    labels: tuple[str, ...] = ()
    num_verbs: int = 0
    num_nouns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "num_verbs": self.num_verbs, "num_nouns": self.num_nouns}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Vocabulary":
        return cls(tuple(data["labels"]), int(data["num_verbs"]), int(data["num_nouns"]))


class WindowOutput(NamedTuple):
    """One window's outputs at inference: head outputs and classifier probabilities (batch axis removed; None
    without a classifier)."""

    window: Window
    head: dict[str, np.ndarray]
    classes: Any


class Task(ABC):
    """A dataset protocol. ``name`` is its ``data.task`` value; ``default_top_k`` labels per proposal."""

    name: ClassVar[str]
    default_top_k: ClassVar[int]

    def __init__(self, cfg: LocalizeConfig) -> None:
        self.data: DataConfig = cfg.data
        self.classifier_cfg: ClassifierConfig = cfg.classifier
        self.postprocess: PostprocessConfig = cfg.postprocess

    @property
    def top_k(self) -> int:
        """Labels per proposal: ``classifier.top_k`` or the task's default."""
        return self.classifier_cfg.top_k if self.classifier_cfg.top_k is not None else self.default_top_k

    # -- annotations ------------------------------------------------------------------------------------------
    def read_split(self, path: Path, subset: str, video_info: Path | None, required: bool = True) -> AnnotationSet | None:
        """The videos of ``subset`` in an ActivityNet-style JSON (``None`` when absent and not ``required``)."""
        annotations = read_annotations(path)
        try:
            return annotations.subset(subset)
        except AnnotationError:
            if required:
                raise
            return None

    def validation_source(self, annotations: Path, val_annotations: Path | None) -> Path | None:
        """Where validation annotations come from: the given file, else the training file's other subset."""
        return val_annotations if val_annotations is not None else annotations

    def duration(self, annotation: VideoAnnotation, timing: ClipTiming) -> float:
        """The duration the segments refer to: the annotation's, else the decoded one stored with the features."""
        return annotation.duration if annotation.duration > 0 else timing.duration_s

    # -- windows and labels -----------------------------------------------------------------------------------
    @abstractmethod
    def windows(self, entries: Sequence[VideoEntry], purpose: Purpose) -> list[Window]:
        """The windows of ``entries`` for training, validation or inference (protocols differ on which to keep)."""

    def window_features(self, reader: FeatureReader, entry: VideoEntry, window: Window) -> np.ndarray:
        """The window's input ``(C, tscale)`` before normalisation: by default the clip features linearly
        interpolated at the bin centres, from the rows around them only."""
        return interpolated_window(reader, entry, bin_centers(window, self.data.tscale))

    @abstractmethod
    def window_segments(self, entry: VideoEntry, window: Window) -> np.ndarray:
        """The ground-truth segments that count in ``window``, ``(K, 2)`` in window units ``[0, 1]``."""

    # -- classifier -------------------------------------------------------------------------------------------
    @abstractmethod
    def build_vocabulary(self, annotations: AnnotationSet) -> Vocabulary:
        """The classes the classifier learns, from the training annotations."""

    @abstractmethod
    def build_classifier(self, feat_dim: int, vocab: Vocabulary) -> nn.Module:
        """The classifier on window features ``(B, C, T)`` (with ``loss(out, batch)`` and ``probabilities(out)``)."""

    @abstractmethod
    def classifier_targets(self, entry: VideoEntry, window: Window, vocab: Vocabulary) -> dict[str, np.ndarray]:
        """The classifier's numpy targets for one window, keyed by batch name."""

    @abstractmethod
    def unknown_labels(self, entries: Sequence[VideoEntry], vocab: Vocabulary) -> dict[str, int]:
        """Segments whose label ``vocab`` does not know, counted per label (their bins/videos train as background)."""

    # -- inference --------------------------------------------------------------------------------------------
    @abstractmethod
    def proposals(self, entry: VideoEntry, outputs: Sequence[WindowOutput], head: Head) -> np.ndarray:
        """One video's class-agnostic proposals ``(K, 3)`` ``[start_s, end_s, score]``, by decreasing score."""

    @abstractmethod
    def detections(self, entry: VideoEntry, outputs: Sequence[WindowOutput], head: Head, vocab: Vocabulary) -> list[dict]:
        """One video's labelled detections (result dicts of the submission format), by decreasing score."""

    @abstractmethod
    def submission(self, results: dict[str, list[dict]], provenance: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
        """The submission dict around ``results``; ``provenance``: the feature file's attributes."""

    def check_submission_options(self, options: dict[str, Any]) -> None:
        """Validate ``options`` for :meth:`submission` before any work is done."""

    # -- shared helpers ---------------------------------------------------------------------------------------
    def _proposals_in_seconds(self, outputs: Sequence[WindowOutput], head: Head) -> np.ndarray:
        """Every window's decoded candidates on the video's timeline, ``(K, 3)`` ``[start_s, end_s, score]``."""
        rows = []
        for out in outputs:
            props = np.asarray(head.decode(out.head, peak_ratio=self.postprocess.peak_ratio), np.float64).reshape(-1, 3)
            length = self.data.tscale * out.window.bin_s
            props[:, :2] = out.window.start_s + props[:, :2] * length
            rows.append(props)
        return np.concatenate(rows, axis=0)

    def _soft_nms_in_video(self, entry: VideoEntry, candidates: np.ndarray, top: int) -> np.ndarray:
        """Clip ``candidates`` to the video, Soft-NMS in units of its duration (the width-adaptive threshold expects
        normalised widths), keep the ``top`` best. Returns ``(K, 3)`` ``[start_s, end_s, score]``."""
        pooled = candidates.copy()
        pooled[:, :2] = np.clip(pooled[:, :2], 0.0, entry.duration)
        pooled = pooled[pooled[:, 1] > pooled[:, 0]]
        pp = self.postprocess
        pooled[:, :2] /= entry.duration
        kept = soft_nms(pooled, alpha=pp.soft_nms_alpha, low=pp.soft_nms_low, high=pp.soft_nms_high, top_k=top)
        kept[:, :2] *= entry.duration
        return kept

    def _per_minute_budget(self, entry: VideoEntry) -> int:
        """``max_proposals`` per started minute of video (at least 1)."""
        return max(1, math.ceil(self.postprocess.max_proposals * entry.duration / 60.0))


def label_vocabulary(annotations: AnnotationSet) -> Vocabulary:
    """The sorted labels of the training segments (an error naming the file when there are none)."""
    labels = tuple(sorted({s.label for v in annotations.videos.values() for s in v.segments}))
    if not labels:
        raise AnnotationError(f"{annotations.source}: the training videos have no segments")
    return Vocabulary(labels=labels)


def unknown_label_counts(entries: Sequence[VideoEntry], vocab: Vocabulary) -> dict[str, int]:
    """Segments whose label is not in ``vocab.labels``, counted per label."""
    known = set(vocab.labels)
    return dict(Counter(label for e in entries for label in e.labels if label not in known))


def proposal_submission(results: dict[str, np.ndarray], provenance: dict[str, Any]) -> dict[str, Any]:
    """The ActivityNet proposal JSON (what mmaction2's BMN writes and ``evaluate --task proposals`` reads):
    ``results[video] = [{"segment": [start_s, end_s], "score": s}, ...]`` from ``(K, 3)`` proposal arrays."""
    return {
        "version": "VERSION 1.3",
        "results": {vid: [{"segment": [float(p[0]), float(p[1])], "score": float(p[2])} for p in props]
                    for vid, props in results.items()},
        "external_data": external_data(provenance, ""),
    }


def activitynet_submission(results: dict[str, list[dict]], provenance: dict[str, Any], trained_on: str) -> dict[str, Any]:
    """The ActivityNet / HACS detection JSON."""
    return {"version": "VERSION 1.3", "results": results, "external_data": external_data(provenance, f"; trained on {trained_on}")}


def external_data(provenance: dict[str, Any], details: str) -> dict[str, Any]:
    """The submission's ``external_data``: ``used`` is false for features from random weights; ``details`` is appended
    to the description of the features."""
    weights = str(provenance.get("weights", "unknown"))
    used = not (weights.startswith("random") or weights in ("", "unknown"))
    return {"used": used, "details": f"features: {provenance.get('backbone', 'unknown')} (weights: {weights}){details}"}
