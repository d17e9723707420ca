"""BMN as a :class:`~localization.heads.base.Head`: mmaction2's network, targets, loss and proposal parsing.

Outputs: ``conf (B, 2, D, T)`` (channel 0 IoU regression, 1 classification; cell ``[d, s]`` is the proposal
``[s, s + d + 1]`` bins), ``start (B, T)``, ``end (B, T)``. The parameters are those of
:class:`~localization.bmn.BMN` under the prefix ``bmn.``, so an mmaction2 checkpoint loads into ``head.bmn``.
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import numpy as np
import torch

from localization.bmn import BMN
from localization.heads.base import Head, HeadOutputs, TargetBuilder
from localization.losses import bmn_loss
from localization.postprocess import proposals_from_maps
from localization.targets import bmn_targets, valid_proposal_mask


def bmn_window_targets(segments: np.ndarray, tscale: int, dscale: int) -> dict[str, np.ndarray]:
    """BMN targets of one window: ``iou_map (D, T)``, ``start (T,)``, ``end (T,)`` (all zero without segments)."""
    if len(segments):
        iou_map, start, end = bmn_targets(segments, tscale, dscale)
    else:
        iou_map = np.zeros((dscale, tscale), np.float32)
        start = np.zeros(tscale, np.float32)
        end = np.zeros(tscale, np.float32)
    return {"iou_map": iou_map, "start": start, "end": end}


class BMNHead(Head):
    """Boundary-Matching Network head for ``feat_dim``-channel windows of ``tscale`` bins and ``dscale`` durations.

    ``loss_weights``: ``(tem, pem_reg, pem_cls)``; ``loss_eps`` / ``loss_ratio_clamp``: the balanced-BCE
    epsilon and ratio clamp (mmaction2: 1e-5 and (1.05, 21); ``None`` disables the clamp).
    """

    loss_keys = ("loss", "tem", "pem_reg", "pem_cls")

    def __init__(self, feat_dim: int, tscale: int, dscale: int, **bmn_options: float) -> None:
        super().__init__()
        self.tscale, self.dscale = tscale, dscale
        self.bmn = BMN(feat_dim, tscale, dscale, **bmn_options)

    def forward(self, x: torch.Tensor) -> HeadOutputs:
        conf, start, end = self.bmn(x)
        return {"conf": conf, "start": start, "end": end}

    def target_builder(self) -> TargetBuilder:
        return partial(bmn_window_targets, tscale=self.tscale, dscale=self.dscale)

    def loss(self, outputs: HeadOutputs, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = bmn_loss(outputs["conf"], outputs["start"], outputs["end"], batch["iou_map"], batch["start"], batch["end"])
        return dict(zip(self.loss_keys, parts))

    def fuse(self, outputs: Sequence[dict[str, np.ndarray]], offsets: Sequence[int], size: int) -> dict[str, np.ndarray]:
        """Mean of the windows' maps over the windows covering each grid cell.

        A window contributes its valid proposals only (``s + d < T``): cell ``[d, g]`` of the grid averages the
        windows in which the proposal starting at grid bin ``g`` with duration ``d`` lies entirely inside.
        Cells no window covers are 0.
        """
        conf = np.zeros((2, self.dscale, size), np.float64)
        conf_n = np.zeros((self.dscale, size), np.float64)
        start = np.zeros(size, np.float64)
        end = np.zeros(size, np.float64)
        bound_n = np.zeros(size, np.float64)
        valid = valid_proposal_mask(self.tscale, self.dscale)
        for out, g in zip(outputs, offsets):
            conf[:, :, g:g + self.tscale] += out["conf"] * valid
            conf_n[:, g:g + self.tscale] += valid
            start[g:g + self.tscale] += out["start"]
            end[g:g + self.tscale] += out["end"]
            bound_n[g:g + self.tscale] += 1
        return {
            "conf": (conf / np.maximum(conf_n, 1)).astype(np.float32),
            "start": (start / np.maximum(bound_n, 1)).astype(np.float32),
            "end": (end / np.maximum(bound_n, 1)).astype(np.float32),
        }

    def decode(self, outputs: dict[str, np.ndarray], **options: float) -> np.ndarray:
        """BMN candidates (see :func:`~localization.postprocess.proposals_from_maps`); ``options``: ``peak_ratio``."""
        return proposals_from_maps(outputs["conf"], outputs["start"], outputs["end"], **options)
