"""What the sliding-window tasks (EK100, THUMOS14) share: windows on a global bin grid, snippet classifiers
whose per-bin probabilities are averaged over overlapping windows, and proposals pooled across windows.

Windows are ``tscale`` bins of ``window_bin_s`` seconds, ``window_overlap`` apart; training keeps the windows
that wholly contain at least one segment. A segment counts in a window when at least ``min_segment_fraction``
of it lies inside (clipped to the window). Detections: every window's candidates on the video's timeline,
Soft-NMS on the video, ``max_proposals`` per started minute.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from localization.data import VideoEntry, Window, sliding_windows, window_segments
from localization.heads.base import Head
from localization.tasks.base import Purpose, Task, WindowOutput


class SlidingWindowTask(Task):
    """A task on fixed-length windows of a video's global bin grid (subclasses define the classes)."""

    def windows(self, entries: Sequence[VideoEntry], purpose: Purpose) -> list[Window]:
        d = self.data
        return sliding_windows(entries, d.tscale, d.window_bin_s, d.window_overlap, require_action=purpose == "train")

    def window_segments(self, entry: VideoEntry, window: Window) -> np.ndarray:
        return window_segments(entry, window, self.data.tscale, self.data.min_segment_fraction)

    def proposals(self, entry: VideoEntry, outputs: Sequence[WindowOutput], head: Head) -> np.ndarray:
        return self._soft_nms_in_video(entry, self._proposals_in_seconds(outputs, head), self._per_minute_budget(entry))

    def fused_classes(self, entry: VideoEntry, outputs: Sequence[WindowOutput]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Average the windows' per-bin class probabilities on the video's global bin grid.

        Windows start on multiples of the window step, so bin ``i`` of a window starting at ``start_s`` is global
        bin ``round(start_s / bin_s) + i``. Returns the centres ``(G,)`` of the bins inside the video and, per
        class set, probabilities ``(G, n + 1)``.
        """
        tscale, bin_s = self.data.tscale, self.data.window_bin_s
        offsets = [round(out.window.start_s / bin_s) for out in outputs]
        size = max(offsets) + tscale
        count = np.zeros(size)
        sums = {name: np.zeros((size, probs.shape[0])) for name, probs in outputs[0].classes.items()}
        for out, g in zip(outputs, offsets):
            for name, probs in out.classes.items():
                sums[name][g:g + tscale] += probs.T
            count[g:g + tscale] += 1
        centers = (np.arange(size) + 0.5) * bin_s
        keep = (centers <= entry.duration) & (count > 0)
        if not keep.any():  # a video shorter than half a bin: keep its first bin
            keep[0] = True
        c = count[keep][:, None]
        return centers[keep], {name: total[keep] / c for name, total in sums.items()}
