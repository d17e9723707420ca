"""One-line notices for choices that change the features without an error.

``weights_notice``: weights other than the preset's bring their own preprocessing (``--weights random`` on the
``hacs`` preset crops 224 instead of 256, with nominal frame spacing); ``low_fps_notice``: videos whose frame
rate is below ``sampling.sample_fps`` have their frames repeated on the sampling timeline. The caller prints
each notice once (rank 0).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from feature_extraction.config import ExtractConfig, preset_path, resolve_config
from feature_extraction.video import VideoInfo
from tal_common.config import ConfigError, load_config

# The resolved keys that follow the weights when the preset leaves them open.
WEIGHTS_KEYS = (
    ("sampling", "clip_len"), ("sampling", "frame_interval"), ("sampling", "rule"),
    ("preprocess", "short_side"), ("preprocess", "crop_size"), ("preprocess", "mean"), ("preprocess", "std"),
    ("preprocess", "resize"),
)
SHOWN_VIDEOS = 3
# A source this close below sample_fps (29.97 fps sampled at 30) is the same rate, not an upsampling.
FPS_TOLERANCE = 0.01


def weights_notice(preset: str, given: ExtractConfig, cuda: bool) -> str | None:
    """What ``given`` (a loaded, unresolved config) resolves to differently from the preset's own weights.

    ``None`` when ``given`` keeps the preset's weights or nothing in :data:`WEIGHTS_KEYS` differs.
    """
    preset_weights = load_config(ExtractConfig, None, [], base=preset_path(preset)).model.weights
    if given.model.weights == preset_weights:
        return None
    try:
        ours = resolve_config(given, cuda)
        theirs = resolve_config(replace(given, model=replace(given.model, weights=preset_weights, base_width=None)), cuda)
    except ConfigError:
        return None  # the config is reported by the caller's own resolve; nothing to compare with
    changes = [
        f"{section}.{key} {getattr(getattr(theirs, section), key)} -> {getattr(getattr(ours, section), key)}"
        for section, key in WEIGHTS_KEYS
        if getattr(getattr(theirs, section), key) != getattr(getattr(ours, section), key)
    ]
    if not changes:
        return None
    return (f"weights {given.model.weights!r} come with their own preprocessing, not that of preset {preset!r} "
            f"(weights {preset_weights!r}): {', '.join(changes)} (set a key with --set to keep the preset's value)")


def low_fps_notice(infos: Mapping[str, VideoInfo], sample_fps: float) -> str | None:
    """A warning naming the videos (count and the first few) whose fps is below ``sample_fps``, or ``None``.

    Rates within :data:`FPS_TOLERANCE` of ``sample_fps`` (NTSC 29.97 at 30) do not count.
    """
    slow = [(vid, info.fps) for vid, info in sorted(infos.items()) if info.fps * (1 + FPS_TOLERANCE) < sample_fps]
    if not slow:
        return None
    shown = ", ".join(f"{vid} ({fps:.4g} fps)" for vid, fps in slow[:SHOWN_VIDEOS])
    more = f" and {len(slow) - SHOWN_VIDEOS} more" if len(slow) > SHOWN_VIDEOS else ""
    return (f"warning: {len(slow)} of {len(infos)} videos have fewer frames per second than sampling.sample_fps="
            f"{sample_fps:g}, so their frames repeat on the sampling timeline: {shown}{more}")
