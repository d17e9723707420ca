"""Turning class-agnostic BMN proposals into labelled detections.

- HACS / ActivityNet (``VideoClassifier``): one label distribution per video from mean+max pooled features;
  each proposal gets the video's top-k classes, score = proposal score x class probability.
- EK100 (``SnippetClassifier`` with verb and noun sets): probabilities per bin (background is the last class of
  each set); each proposal pools the foreground probabilities of the bins inside it and gets the top-k
  verb x noun pairs, score = proposal score x p_verb x p_noun.
- THUMOS14 (``SnippetClassifier`` with one class set): each proposal gets the top-k pooled classes,
  score = proposal score x p_class.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class VideoClassifier(nn.Module):
    """``(B, C, T)`` window features -> ``(B, num_classes)`` logits via [mean, max] over T and a 2-layer MLP."""

    def __init__(self, feat_dim: int, num_classes: int, hidden_dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"VideoClassifier: need at least one class, got {num_classes}")
        self.mlp = nn.Sequential(
            nn.Linear(2 * feat_dim, hidden_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, T)`` -> logits ``(B, num_classes)``."""
        return self.mlp(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))

    @staticmethod
    def loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy against the soft target ``batch["video_label"] (B, num_classes)`` (rows summing to 1;
        videos without segments have all-zero rows and contribute nothing)."""
        target = batch["video_label"].to(logits.dtype)
        per_video = -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
        return per_video.sum() / target.sum(dim=1).gt(0).sum().clamp(min=1)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        """``(B, num_classes)`` softmax probabilities."""
        return logits.softmax(dim=1)


class SnippetClassifier(nn.Module):
    """``(B, C, T)`` -> per-bin logits ``(B, n + 1, T)`` for each named class set (index ``n`` is background).

    Two temporal convolutions (kernel 3) shared by one 1x1 head per class set, e.g. ``{"verb": 97, "noun": 300}``
    for EK100 or ``{"label": 20}`` for THUMOS14. The batch holds each set's per-bin targets under its name.
    """

    def __init__(self, feat_dim: int, class_sets: dict[str, int], hidden_dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        if not class_sets or any(n < 1 for n in class_sets.values()):
            raise ValueError(f"SnippetClassifier: every class set needs at least one class, got {class_sets}")
        self.trunk = nn.Sequential(
            nn.Conv1d(feat_dim, hidden_dim, kernel_size=3, padding=1), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Conv1d(hidden_dim, hidden_dim, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        )
        self.heads = nn.ModuleDict({name: nn.Conv1d(hidden_dim, n + 1, kernel_size=1) for name, n in class_sets.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x (B, C, T)`` -> ``{name: logits (B, n + 1, T)}``."""
        h = self.trunk(x)
        return {name: head(h) for name, head in self.heads.items()}

    @staticmethod
    def loss(logits: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean over class sets of the cross-entropy over the bins inside the video (``batch["valid"]``)."""
        valid = batch["valid"]
        losses = [F.cross_entropy(out.transpose(1, 2)[valid], batch[name][valid]) for name, out in logits.items()]
        return torch.stack(losses).mean()

    @staticmethod
    def probabilities(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Softmax over classes: ``{name: (B, n + 1, T)}``."""
        return {name: out.softmax(dim=1) for name, out in logits.items()}


def hacs_detections(
    proposals: np.ndarray, class_probs: np.ndarray, labels: Sequence[str], top_k: int
) -> list[dict]:
    """Label proposals with the video's ``top_k`` classes.

    Args:
        proposals: ``(K, 3)`` ``[start_s, end_s, score]``.
        class_probs: ``(num_classes,)`` the video's class probabilities.
        labels: class names, indexed like ``class_probs``.

    Returns:
        ``K * top_k`` ActivityNet result dicts ``{"label", "score", "segment"}``, by decreasing score.
    """
    k = min(top_k, len(labels))
    top = np.argsort(-class_probs, kind="stable")[:k]
    scores = proposals[:, 2:3] * class_probs[top][None, :]  # (K, k)
    out = [
        {"label": labels[c], "score": float(scores[i, j]), "segment": [float(proposals[i, 0]), float(proposals[i, 1])]}
        for i in range(len(proposals))
        for j, c in enumerate(top)
    ]
    out.sort(key=lambda d: -d["score"])
    return out


def pool_in_segments(probs: np.ndarray, centers: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Mean of per-bin probabilities over the bins whose centre lies in each segment.

    Args:
        probs: ``(G, C)`` probabilities on a grid of bins.
        centers: ``(G,)`` increasing bin centre times (seconds).
        segments: ``(K, 2)`` ``[start, end]`` seconds; a segment containing no centre takes the bin nearest
            its midpoint.

    Returns:
        ``(K, C)``.
    """
    csum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    lo = np.searchsorted(centers, segments[:, 0], side="left")
    hi = np.searchsorted(centers, segments[:, 1], side="right")
    empty = hi <= lo
    mid = 0.5 * (segments[:, 0] + segments[:, 1])
    nearest = np.clip(np.searchsorted(centers, mid), 1, len(centers) - 1)
    nearest = np.where(np.abs(centers[nearest - 1] - mid) <= np.abs(centers[nearest] - mid), nearest - 1, nearest)
    nearest = np.minimum(nearest, len(centers) - 1)
    lo = np.where(empty, nearest, lo)
    hi = np.where(empty, nearest + 1, hi)
    return (csum[hi] - csum[lo]) / (hi - lo)[:, None]


def ek100_detections(
    proposals: np.ndarray,
    verb_probs: np.ndarray,
    noun_probs: np.ndarray,
    centers: np.ndarray,
    top_k: int,
) -> list[dict]:
    """Label proposals with their ``top_k`` verb x noun pairs.

    Args:
        proposals: ``(K, 3)`` ``[start_s, end_s, score]``.
        verb_probs: ``(G, V+1)`` per-bin verb probabilities, background last.
        noun_probs: ``(G, N+1)`` per-bin noun probabilities, background last.
        centers: ``(G,)`` bin centre times (seconds).

    Returns:
        ``K * top_k`` EK100 result dicts ``{"verb", "noun", "action", "score", "segment"}``, by decreasing score.
        Pooled foreground probabilities are renormalised (the background share is what the proposal score
        already judges).
    """
    if len(proposals) == 0:
        return []
    pv = pool_in_segments(verb_probs[:, :-1], centers, proposals[:, :2])
    pn = pool_in_segments(noun_probs[:, :-1], centers, proposals[:, :2])
    pv /= np.maximum(pv.sum(axis=1, keepdims=True), 1e-12)
    pn /= np.maximum(pn.sum(axis=1, keepdims=True), 1e-12)
    kv, kn = min(top_k, pv.shape[1]), min(top_k, pn.shape[1])
    top_v = np.argsort(-pv, axis=1, kind="stable")[:, :kv]  # (K, kv)
    top_n = np.argsort(-pn, axis=1, kind="stable")[:, :kn]
    rows = np.arange(len(proposals))[:, None]
    pair = np.take_along_axis(pv, top_v, 1)[:, :, None] * np.take_along_axis(pn, top_n, 1)[:, None, :]
    flat = pair.reshape(len(proposals), -1)
    best = np.argsort(-flat, axis=1, kind="stable")[:, :top_k]  # (K, top_k) into kv*kn
    verbs = top_v[rows, best // kn]
    nouns = top_n[rows, best % kn]
    scores = proposals[:, 2:3] * flat[rows, best]
    out = [
        {
            "verb": int(verbs[i, j]), "noun": int(nouns[i, j]), "action": f"{verbs[i, j]},{nouns[i, j]}",
            "score": float(scores[i, j]), "segment": [float(proposals[i, 0]), float(proposals[i, 1])],
        }
        for i in range(len(proposals))
        for j in range(best.shape[1])
    ]
    out.sort(key=lambda d: -d["score"])
    return out


def snippet_detections(
    proposals: np.ndarray, probs: np.ndarray, centers: np.ndarray, labels: Sequence[str], top_k: int
) -> list[dict]:
    """Label proposals with the ``top_k`` classes of the per-bin probabilities pooled inside each.

    Args:
        proposals: ``(K, 3)`` ``[start_s, end_s, score]``.
        probs: ``(G, C+1)`` per-bin class probabilities, background last.
        centers: ``(G,)`` bin centre times (seconds).
        labels: the ``C`` class names.

    Returns:
        ``K * top_k`` ActivityNet result dicts ``{"label", "score", "segment"}``, by decreasing score; pooled
        foreground probabilities are renormalised, as for EK100.
    """
    if len(proposals) == 0:
        return []
    pooled = pool_in_segments(probs[:, :-1], centers, proposals[:, :2])
    pooled /= np.maximum(pooled.sum(axis=1, keepdims=True), 1e-12)
    k = min(top_k, pooled.shape[1])
    top = np.argsort(-pooled, axis=1, kind="stable")[:, :k]
    scores = proposals[:, 2:3] * np.take_along_axis(pooled, top, 1)
    out = [
        {"label": labels[top[i, j]], "score": float(scores[i, j]), "segment": [float(proposals[i, 0]), float(proposals[i, 1])]}
        for i in range(len(proposals))
        for j in range(k)
    ]
    out.sort(key=lambda d: -d["score"])
    return out
