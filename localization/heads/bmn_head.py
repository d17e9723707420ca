"""BMN as a :class:`~localization.heads.base.Head`: the network, its targets, loss, window fusion and proposal parsing.

Outputs: ``conf (B, 2, D, T)`` (channel 0 IoU regression, 1 classification; cell ``[d, s]`` is the proposal
``[s, s + d + 1]`` bins), ``start (B, T)``, ``end (B, T)``. The parameters are those of
:class:`~localization.bmn.BMN` under the prefix ``bmn.``, so an mmaction2 checkpoint loads into ``head.bmn``.

``reference`` picks whose arithmetic is reproduced: ``mmaction2`` (its ``BMN.generate_labels``, ``BMNLoss`` and
proposal score ``start x end x clr x reg``) or ``tadaconv`` (the TAdaConv EK100 code: float64 targets, loss eps 1e-6
without ratio clamp, score ``clr^1.2 x reg``); both are pinned by fixtures of that code.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from localization import ek100_protocol
from localization.bmn import BMN, load_bmn_checkpoint
from localization.heads.base import Head, HeadOutputs, TargetBuilder
from localization.losses import bmn_loss, tadaconv_bmn_loss
from localization.postprocess import candidate_cells, proposals_from_maps
from localization.targets import bmn_targets, valid_proposal_mask

REFERENCES = ("mmaction2", "tadaconv")
TADACONV_CLR_POWER = 1.2


def bmn_window_targets(segments: np.ndarray, tscale: int, dscale: int, reference: str = "mmaction2") -> dict[str, np.ndarray]:
    """BMN targets of one window: ``iou_map (D, T)``, ``start (T,)``, ``end (T,)`` (all zero without segments)."""
    if len(segments) == 0:
        return {"iou_map": np.zeros((dscale, tscale), np.float32), "start": np.zeros(tscale, np.float32),
                "end": np.zeros(tscale, np.float32)}
    if reference == "tadaconv":
        no_labels = np.zeros((len(segments), 1), np.int64)
        iou_map, start, end, _ = ek100_protocol.window_targets(segments, no_labels, tscale, dscale)
    else:
        iou_map, start, end = bmn_targets(segments, tscale, dscale)
    return {"iou_map": iou_map, "start": start, "end": end}


class BMNHead(Head):
    """Boundary-Matching Network head for ``feat_dim``-channel windows of ``tscale`` bins and ``dscale`` durations."""

    loss_keys = ("loss", "tem", "pem_reg", "pem_cls")

    def __init__(self, feat_dim: int, tscale: int, dscale: int, reference: str = "mmaction2", **bmn_options: float) -> None:
        super().__init__()
        if reference not in REFERENCES:
            raise ValueError(f"BMNHead: reference must be one of {REFERENCES}, got {reference!r}")
        self.tscale, self.dscale, self.reference = tscale, dscale, reference
        self.bmn = BMN(feat_dim, tscale, dscale, **bmn_options)

    def forward(self, x: torch.Tensor) -> HeadOutputs:
        conf, start, end = self.bmn(x)
        return {"conf": conf, "start": start, "end": end}

    @classmethod
    def reference_feat_dim(cls, weights: Mapping[str, torch.Tensor], source: Path) -> int:
        """The ``feat_dim`` of an mmaction2 BMN state dict (its first base-module conv, ``(hidden, feat_dim, 3)``)."""
        first = weights.get("x_1d_b.0.weight")
        if first is None or first.ndim != 3:
            raise ValueError(f"{source}: not an mmaction2 BMN state dict (no 'x_1d_b.0.weight' of shape (hidden, feat_dim, 3); "
                             f"keys start {sorted(weights)[:3]})")
        return int(first.shape[1]) * 4  # the base module's convs are grouped by 4

    def load_reference(self, weights: Mapping[str, torch.Tensor], source: Path) -> None:
        load_bmn_checkpoint(self.bmn, dict(weights), source=str(source))

    def target_builder(self) -> TargetBuilder:
        return partial(bmn_window_targets, tscale=self.tscale, dscale=self.dscale, reference=self.reference)

    def loss(self, outputs: HeadOutputs, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = tadaconv_bmn_loss if self.reference == "tadaconv" else bmn_loss
        parts = loss(outputs["conf"], outputs["start"], outputs["end"], batch["iou_map"], batch["start"], batch["end"])
        return dict(zip(self.loss_keys, parts))

    def fuse(
        self, outputs: Sequence[dict[str, np.ndarray]], placements: Sequence[tuple[int, int]], size: int
    ) -> dict[str, np.ndarray]:
        """Mean of the windows' maps on a grid of ``size`` bins, in float32 (the TAdaConv fusion).

        Window ``k`` with placement ``(offset, count)`` adds its columns ``0 .. count - 1`` at grid bins
        ``offset .. offset + count - 1``. A cell of the confidence map is divided by the number of windows in which it
        is a real proposal (``s + d < T``), a boundary bin by the number of windows covering it; uncovered cells are 0.
        """
        valid = valid_proposal_mask(self.tscale, self.dscale).astype(np.float32)
        conf = np.zeros((2, self.dscale, size), np.float32)
        conf_n = np.zeros((self.dscale, size), np.float32)
        bounds = {"start": np.zeros(size, np.float32), "end": np.zeros(size, np.float32)}
        bound_n = np.zeros(size, np.float32)
        for out, (offset, count) in zip(outputs, placements):
            cols = slice(offset, offset + count)
            conf[:, :, cols] += np.asarray(out["conf"], np.float32)[:, :, :count] * valid[:, :count]
            conf_n[:, cols] += valid[:, :count]
            for name, total in bounds.items():
                total[cols] += np.asarray(out[name], np.float32)[:count]
            bound_n[cols] += 1.0
        conf_n[conf_n < 0.01] = 1.0
        bound_n[bound_n < 0.01] = 1.0
        return {"conf": conf / conf_n, "start": bounds["start"] / bound_n, "end": bounds["end"] / bound_n}

    def decode(self, outputs: dict[str, np.ndarray], **options: float) -> np.ndarray:
        """Candidates ``(K, 3)`` ``[s/T, (s+d+1)/T, score]`` in ``(d, s)`` row-major order, of the cells whose start
        and end are boundary candidates (``options``: ``peak_ratio``). Score: mmaction2 ``start[s] end[e] clr reg``;
        tadaconv ``clr^1.2 reg`` (float64)."""
        conf, start, end = outputs["conf"], outputs["start"], outputs["end"]
        if self.reference == "mmaction2":
            return proposals_from_maps(conf, start, end, **options)
        d, s = candidate_cells(conf, start, end, **options)
        length = conf.shape[2]
        score = np.power(conf[1, d, s].astype(np.float64), TADACONV_CLR_POWER) * conf[0, d, s].astype(np.float64)
        return np.stack([s / length, (s + d + 1) / length, score], axis=1).reshape(-1, 3)
