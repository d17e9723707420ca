"""Frames -> model input on the model's device: the official TAdaConv test transform.

The official test path (``ToTensorVideo`` -> ``KineticsResizedCrop`` -> ``NormalizeVideo``) is, for RGB
uint8 frames of ``W x H``:

1. ``x = frames / 255`` as float32;
2. short side to ``short_side`` with ``F.interpolate(mode="bilinear", align_corners=False)`` and no
   antialias; the long side is ``int(long / short * short_side)`` (truncated, computed as written in
   float64: a 176x144 frame becomes 312x256, not 313x256);
3. ``crop`` squares: one at ``(x_max // 2, y_max // 2)``, or three along the long side: left/centre/right
   (``x = 0, x_max // 2, x_max``) for landscape frames, top/centre/bottom for portrait and square ones
   (the official test is "resized width equals short side");
4. ``(x - mean) / std`` per channel.

:func:`resized_size` and :func:`crop_offsets` are steps 2 and 3 as numbers; :class:`ClipTransform`
runs the whole chain on a chunk of clips (step 2 is skipped for frames the decoder already resized).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` with the short side at ``short_side``, the long side truncated as the official code does."""
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    if height < width:
        return int(width / height * short_side), int(short_side)
    return int(short_side), int(height / width * short_side)


def crop_offsets(width: int, height: int, short_side: int, crop_size: int, crops: int) -> list[tuple[int, int]]:
    """``(top, left)`` of each crop in a frame already resized to ``width x height`` (short side ``short_side``)."""
    if min(width, height) < crop_size:
        raise ValueError(f"crop {crop_size} is larger than the resized frames ({width}x{height})")
    y_max, x_max = height - crop_size, width - crop_size
    centre = (y_max // 2, x_max // 2)
    if crops == 1:
        return [centre]
    if crops != 3:
        raise ValueError(f"crops must be 1 or 3, got {crops}")
    if width == short_side:  # portrait or square: along the height
        return [(0, x_max // 2), centre, (y_max, x_max // 2)]
    return [(y_max // 2, 0), centre, (y_max // 2, x_max)]


class ClipTransform:
    """uint8 RGB frames ``(N, T, H, W, 3)`` of one video -> normalised float ``(N * crops, 3, T, S, S)``.

    Rows ``n * crops + k`` hold crop ``k`` of clip ``n``. With ``resize=False`` frames whose short side
    is already ``short_side`` (resized by the decoder) are only cropped; others are still resized.
    """

    def __init__(self, *, short_side: int, crop_size: int, crops: int, mean: Sequence[float], std: Sequence[float],
                 resize: bool, device: torch.device) -> None:
        if crop_size > short_side:
            raise ValueError(f"crop_size {crop_size} exceeds short_side {short_side}")
        self.short_side, self.crop_size, self.crops, self.resize = short_side, crop_size, crops, resize
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1, 1)
        self.device = device

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        n, t, height, width, _ = frames.shape
        frames = frames.to(self.device, non_blocking=True)
        resize = self.resize or min(width, height) != self.short_side
        new_w, new_h = resized_size(width, height, self.short_side) if resize else (width, height)
        offsets = crop_offsets(new_w, new_h, self.short_side, self.crop_size, self.crops)
        size = self.crop_size
        out = torch.empty((n, self.crops, 3, t, size, size), dtype=torch.float32, device=self.device)
        for i in range(n):  # one clip at a time: full 1080p frames in float are large
            x = frames[i].permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
            if resize:
                x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
            for k, (top, left) in enumerate(offsets):
                out[i, k] = x[:, :, top : top + size, left : left + size].transpose(0, 1)
        out = out.reshape(n * self.crops, 3, t, size, size)
        return (out - self.mean) / self.std
