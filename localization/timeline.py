"""A picture of one video's detections: time axis in seconds, a strip of frame thumbnails along the top, one
lane per top label with its segments shaded by score, and optionally a lane of ground-truth segments.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tal_common.atomic import write_atomic

MAX_LANES = 6
THUMBNAILS = 10


def thumbnails(video: Path, times: Sequence[float], height: int = 72) -> list[np.ndarray]:
    """RGB frames ``(height, w, 3)`` uint8 nearest each of ``times`` (seconds), decoded with PyAV by seeking.

    A time past the last frame takes the last frame decoded; an unreadable video gives an empty list.
    """
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            base = stream.time_base
            for t in times:
                container.seek(int(max(t, 0.0) / base), stream=stream, backward=True, any_frame=False)
                picked = None
                for frame in container.decode(stream):
                    picked = frame
                    if frame.pts is not None and frame.pts * base >= t:
                        break
                if picked is None:
                    break
                width = max(1, round(picked.width * height / picked.height))
                frames.append(picked.to_ndarray(format="rgb24", width=width, height=height))
    except (av.error.FFmpegError, IndexError, OSError):
        return frames
    return frames


def lanes(detections: Sequence[dict], label_of) -> list[tuple[str, list[dict]]]:
    """The labels of the best ``MAX_LANES`` detections, in order of their best score, each with its detections."""
    by_label: dict[str, list[dict]] = {}
    for d in sorted(detections, key=lambda d: -d["score"]):
        by_label.setdefault(label_of(d), []).append(d)
    return list(by_label.items())[:MAX_LANES]


def draw_timeline(
    out: Path,
    video_id: str,
    duration: float,
    detections: Sequence[dict],
    label_of,
    frames: Sequence[np.ndarray] = (),
    ground_truth: Sequence[tuple[float, float, str]] = (),
    per_lane: int = 4,
) -> tuple[int, int]:
    """Write the PNG at ``out`` (atomically) and return its ``(width, height)`` in pixels.

    ``label_of(detection)`` names a detection's lane; each lane shows its ``per_lane`` best segments, one thin
    row each (best on top), with opacity = score / best score. ``ground_truth``: ``(start_s, end_s, label)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = lanes(detections, label_of)
    n_lanes = len(rows) + (1 if ground_truth else 0)
    fig_h = 1.6 + 0.5 * max(n_lanes, 1)
    fig = plt.figure(figsize=(12, fig_h), dpi=100)
    strip = fig.add_axes((0.16, 1 - 1.2 / fig_h, 0.8, 0.85 / fig_h))
    ax = fig.add_axes((0.16, 0.5 / fig_h, 0.8, 1 - 1.8 / fig_h), sharex=strip)
    if frames:
        step = duration / len(frames)
        for i, image in enumerate(frames):
            strip.imshow(image, extent=(i * step, (i + 1) * step, 0, 1), aspect="auto")
    strip.set_xlim(0, duration)
    strip.set_ylim(0, 1)
    strip.set_yticks([])
    strip.tick_params(labelbottom=False)
    strip.set_title(f"{video_id}: top detections ({duration:.1f} s)", fontsize=10, loc="left")
    names = []
    top = max((d["score"] for d in detections), default=1.0) or 1.0
    for lane, (label, dets) in enumerate(rows):
        shown = dets[:per_lane]
        height = 0.8 / len(shown)
        for k, d in enumerate(shown):
            start, end = d["segment"]
            alpha = float(np.clip(d["score"] / top, 0.1, 1.0))
            ax.broken_barh([(start, end - start)], (lane + 0.1 + k * height, 0.9 * height),
                           facecolors=(0.12, 0.35, 0.75, alpha), edgecolor=(0.12, 0.35, 0.75, 1.0), linewidth=0.5)
        names.append(f"{label[:22]} ({dets[0]['score']:.2f})")
    if ground_truth:
        lane = len(rows)
        for start, end, _ in ground_truth:
            ax.broken_barh([(start, end - start)], (lane + 0.1, 0.8), facecolors=(0.1, 0.6, 0.2, 0.85), edgecolor="none")
        names.append("ground truth")
    ax.set_yticks(np.arange(len(names)) + 0.5)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_ylim(len(names), 0)
    ax.set_xlim(0, duration)
    ax.set_xlabel(f"time (s); each lane: its {per_lane} best segments, opacity = score relative to the best detection",
                  fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    width, height = fig.canvas.get_width_height()
    write_atomic(out, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return width, height
