"""Epic-Kitchens-100 action detection: the TAdaConv EK100 protocol (``ek100``) or today's sliding windows
(``ek100_sliding``), verb and noun snippet classifiers, the EK100 submission.

``ek100`` follows the TAdaConv repository's EK100 localization code exactly (``localization.ek100_protocol``, pinned
by fixtures of that code): windows of ``tscale`` bins of ``window_bin_s`` (53.3 s for 200 x 0.26666666) every
``tscale * (1 - window_overlap)`` bins, the last dropped when it starts within 0.2 s of the end; window input = the
feature rows whose centres lie in the window, cut or zero-padded to the window's row count and resampled to
``tscale`` (``align_corners=True``); a segment counts in a window only when more than 99.9 % of it lies inside,
and training and validation keep only windows holding one; the windows' BMN maps are averaged on the grid of every
``window_bin_s / feature stride``-th feature row and parsed once, scored ``clr^1.2 x reg`` (with
``model.reference: tadaconv``), Soft-NMS (``postprocess.soft_nms_*``; the reference uses low 0.25) keeping
``int(duration) + 1`` proposals. Each proposal's verb and noun probabilities are the snippet classifier's pooled
inside it; the best 5 of the top-10 verb x top-30 noun pairs label it (score = proposal x p_verb x p_noun).
``ek100_sliding`` is the earlier protocol (``localization.tasks.windowed``), kept as a named option.

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

from localization import ek100_protocol
from localization.classify import SnippetClassifier, ek100_detections, pool_in_segments
from localization.data import VideoEntry, Window, snippet_classes
from localization.heads.base import Head
from localization.tasks.base import Purpose, Vocabulary, WindowOutput
from localization.tasks.windowed import SlidingWindowTask
from tal_common.annotations import AnnotationError, AnnotationSet, VideoAnnotation, read_annotations
from tal_common.h5 import ClipTiming, FeatureReader

EK100_VERSION = "0.2"
SLS_NAMES = ("sls_pt", "sls_tl", "sls_td")


class Ek100SlidingTask(SlidingWindowTask):
    """``data.task: ek100_sliding``: EK100 classes and submission on the sliding windows of ``windowed``."""

    name = "ek100_sliding"
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
        proposals = self.proposals(entry, outputs, head)
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


class Ek100Task(Ek100SlidingTask):
    """``data.task: ek100``: the TAdaConv EK100 localization protocol (see the module docstring)."""

    name = "ek100"
    min_tail_s = 0.2
    min_ioa = 0.999
    pair_candidates = (10, 30)  # top verbs x top nouns paired per proposal

    def _grid(self, entry: VideoEntry) -> tuple[int, float]:
        """``(stride_ratio, feature_stride_s)``: feature rows per bin and the row stride the windows are laid on."""
        ratio = self.data.window_bin_s / entry.timing.stride_s
        if round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-3:
            raise ValueError(f"video {entry.video_id!r}: data.window_bin_s {self.data.window_bin_s} is not a whole number "
                             f"of feature strides ({entry.timing.stride_s:.6g} s): the ek100 protocol needs one")
        return round(ratio), self.data.window_bin_s / round(ratio)

    def _spans(self, entry: VideoEntry) -> np.ndarray:
        ratio, stride_s = self._grid(entry)
        step = max(1, round(self.data.tscale * (1.0 - self.data.window_overlap)))
        return ek100_protocol.ek100_windows(entry.duration, self.data.tscale, step, stride_s, ratio, self.min_tail_s)

    def windows(self, entries: Sequence[VideoEntry], purpose: Purpose) -> list[Window]:
        out = []
        for v, entry in enumerate(entries):
            for start, end in self._spans(entry):
                if purpose != "infer" and not len(ek100_protocol.window_segments(entry.segments, (start, end), self.min_ioa).index):
                    continue
                out.append(Window(v, float(start), float(end - start) / self.data.tscale))
        return out

    def window_segments(self, entry: VideoEntry, window: Window) -> np.ndarray:
        return ek100_protocol.window_segments(entry.segments, _span(window, self.data.tscale), self.min_ioa).segments

    def window_features(self, reader: FeatureReader, entry: VideoEntry, window: Window) -> np.ndarray:
        _, stride_s = self._grid(entry)
        centres = entry.timing.centers(entry.num_clips)
        rows = np.flatnonzero(ek100_protocol.window_rows(centres, _span(window, self.data.tscale)))
        if len(rows) == 0:
            return np.zeros((entry.feat_dim, self.data.tscale), np.float32)
        feats = reader.read_rows(entry.feature_id, int(rows[0]), int(rows[-1]) + 1)
        window_s = _span(window, self.data.tscale)
        return ek100_protocol.window_features(feats, centres[rows[0]:rows[-1] + 1], window_s, self.data.tscale, stride_s).numpy()

    def proposals(self, entry: VideoEntry, outputs: Sequence[WindowOutput], head: Head) -> np.ndarray:
        """The windows' maps averaged on the video's grid, parsed once, Soft-NMS with the reference budget."""
        ratio, _ = self._grid(entry)
        centres = entry.timing.centers(entry.num_clips)
        size = ek100_protocol.fused_length(entry.num_clips, ratio)
        placements = []
        for out in outputs:
            cols = np.flatnonzero(ek100_protocol.window_rows(centres, _span(out.window, self.data.tscale))[::ratio])
            placements.append((int(cols[0]) if len(cols) else 0, len(cols)))
        fused = head.fuse([out.head for out in outputs], placements, size)
        candidates = head.decode(fused, peak_ratio=self.postprocess.peak_ratio)
        candidates = candidates[candidates[:, 2] > 0]
        pp = self.postprocess
        kept, _ = ek100_protocol.ek100_soft_nms(candidates, int(entry.duration) + 1, pp.soft_nms_alpha, pp.soft_nms_low,
                                                pp.soft_nms_high)
        segments = np.stack([np.maximum(0.0, kept[:, 0]), np.minimum(1.0, kept[:, 1])], axis=1) * entry.duration
        return np.concatenate([segments, kept[:, 2:3]], axis=1).reshape(-1, 3)

    def detections(self, entry: VideoEntry, outputs: Sequence[WindowOutput], head: Head, vocab: Vocabulary) -> list[dict]:
        proposals = self.proposals(entry, outputs, head)
        centers, probs = self.fused_classes(entry, outputs)
        return self._label(proposals[:, :2], proposals[:, 2], centers, probs)

    def _label(self, segments: np.ndarray, scores: np.ndarray, centers: np.ndarray, probs: dict[str, np.ndarray]) -> list[dict]:
        """Each proposal's best verb x noun pairs from the foreground probabilities pooled inside it."""
        if len(segments) == 0:
            return []
        verbs = pool_in_segments(probs["verb"][:, :-1], centers, segments)
        nouns = pool_in_segments(probs["noun"][:, :-1], centers, segments)
        top_v, top_n = min(self.pair_candidates[0], verbs.shape[1]), min(self.pair_candidates[1], nouns.shape[1])
        top_k = min(self.top_k, top_v * top_n)
        out = []
        for i in range(len(segments)):
            v, n, pair = ek100_protocol.ek100_action_labels(verbs[i], nouns[i], top_v, top_n, top_k)
            out += [{"verb": int(a), "noun": int(b), "action": f"{int(a)},{int(b)}", "score": float(scores[i] * p),
                     "segment": [float(segments[i, 0]), float(segments[i, 1])]} for a, b, p in zip(v, n, pair)]
        out.sort(key=lambda d: -d["score"])
        return out


def _span(window: Window, tscale: int) -> tuple[float, float]:
    """A window's ``[start_s, end_s]``."""
    return window.start_s, window.start_s + tscale * window.bin_s
