"""The interface every proposal head implements.

A head sees window features ``(B, C, T)`` and owns everything specific to it: the targets it learns from the
ground-truth segments of a window, its loss, how its outputs of overlapping windows are fused on a video's bin
grid, and how outputs decode to scored proposals. Training and inference only call these methods, so an
ActionFormer-style head is one new module implementing them plus an entry in ``localization.heads.HEADS``.

Outputs are a dict of named tensors ``(B, ...)`` whose last axis is the window's ``T`` bins, so that one
item's outputs (``{name: array[j]}``) can be placed on a longer grid by bin offset.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

HeadOutputs = dict[str, torch.Tensor]
TargetBuilder = Callable[[np.ndarray], dict[str, np.ndarray]]


class Head(nn.Module, ABC):
    """A proposal head on window features ``(B, C, T)``.

    ``loss_keys``: the names of the scalars :meth:`loss` returns, the first being the head's total.
    """

    loss_keys: tuple[str, ...] = ("loss",)

    @abstractmethod
    def forward(self, x: torch.Tensor) -> HeadOutputs:
        """``x (B, C, T)`` -> named outputs, each ``(B, ..., T)``."""

    @abstractmethod
    def target_builder(self) -> TargetBuilder:
        """A picklable function (it runs in DataLoader workers): window segments ``(K, 2)`` in window units
        ``[0, 1]`` (``K`` may be 0) -> the numpy targets of one window, keyed by batch name."""

    @abstractmethod
    def loss(self, outputs: HeadOutputs, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scalar losses keyed by ``loss_keys`` for a batch holding the targets of :meth:`target_builder`."""

    @abstractmethod
    def fuse(
        self, outputs: Sequence[dict[str, np.ndarray]], placements: Sequence[tuple[int, int]], size: int
    ) -> dict[str, np.ndarray]:
        """Average one video's window outputs (one item each, batch axis removed) on a grid of ``size`` bins; window
        ``k`` placed at ``(offset, count)`` contributes its first ``count`` bins at grid bins ``offset ..``. The result
        decodes like one window of ``size`` bins."""

    @abstractmethod
    def decode(self, outputs: dict[str, np.ndarray], **options: float) -> np.ndarray:
        """One item's outputs -> candidate proposals ``(K, 3)`` ``[start, end, score]`` in units of its grid length."""

    @classmethod
    @abstractmethod
    def reference_feat_dim(cls, weights: Mapping[str, torch.Tensor], source: Path) -> int:
        """The input width of the head's reference-toolkit weights (e.g. an mmaction2 BMN state dict); a
        :class:`ValueError` naming ``source`` when they are not this head's."""

    @abstractmethod
    def load_reference(self, weights: Mapping[str, torch.Tensor], source: Path) -> None:
        """Load the reference toolkit's weights strictly (a :class:`ValueError` naming ``source`` on any mismatch)."""
