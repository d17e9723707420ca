"""Synthetic demo dataset: small H.264 videos with annotated actions, in HACS and EK100 formats.

Each video is a moving, low-contrast textured background with per-frame noise. Actions are large,
saturated objects that appear and vanish on exact frames. The *noun* of an action is the object
(shape and colour), the *verb* is how it moves, and every verb also changes how the object looks
from frame to frame, so that even globally pooled features of a random-weight network separate them:

==========  ==============================================  =========================
verb        motion                                          appearance
==========  ==============================================  =========================
``slide``   swings left and right                           solid, with a motion trail
``spin``    rotates in place                                four sectors, coloured and white
``pulse``   grows and shrinks in place                      fine concentric rings, coloured and dark
==========  ==============================================  =========================

Nouns: ``ball`` (red disc), ``box`` (blue square), ``sign`` (green triangle). The HACS label of an
action is ``"<verb> <noun>"`` (9 classes); EK100 rows carry the verb and noun ids of the same action.

Like HACS and ActivityNet, every video shows one action class, repeated 2-4 times (fewer when the
video is too short) with background-only time between actions and at both ends. One class per video
keeps the HACS recipe (proposals labelled by a video-level classifier) learnable from ~32 training
videos; classes are dealt to the videos of each subset in shuffled rounds so all of them occur.

All boundaries (segment start/stop and video length) lie on frames whose time is a whole number
of hundredths of a second, so the HACS floats, the EK100 ``HH:MM:SS.ss`` timestamps and the
decoded frames agree exactly. An action ``[start, stop)`` in seconds is visible on frames
``round(start * fps) .. round(stop * fps) - 1``; the EK100 ``start_frame``/``stop_frame`` columns
are those frames counted from 1.

Layout written under the output folder::

    videos/<video_id>.mp4                    H.264, yuv420p, constant fps
    annotations/hacs.json                    HACS Segments / ActivityNet JSON (training + validation)
    annotations/ek100/EPIC_100_train.csv     EK100 narrations of the training videos
    annotations/ek100/EPIC_100_validation.csv
    annotations/ek100/EPIC_100_verb_classes.csv, EPIC_100_noun_classes.csv, EPIC_100_video_info.csv

Video ids look like EK100 ids (``P01_101``); the same ids are used by both formats. Output is fully
determined by :class:`DemoConfig` (seed included): annotation files are byte-identical across runs
and videos decode to identical frames.
"""
from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Iterator, NamedTuple

import av
import decord
import numpy as np
from tqdm import tqdm

from tal_common.annotations import (
    EK100_COLUMNS,
    AnnotationSet,
    VideoAnnotation,
    read_activitynet_json,
    read_ek100_classes,
    read_ek100_csv,
)

HACS_SUBSETS = {"training": "train", "validation": "validation"}
"""HACS subset name -> EK100 file tag (``EPIC_100_<tag>.csv``)."""


class Verb(NamedTuple):
    """A motion pattern; ``category`` fills the EK100 class table."""

    name: str
    category: str


class Noun(NamedTuple):
    """An object: ``sides`` 0 is a disc, 3 a triangle, 4 a square; ``colour`` is RGB 0-255."""

    name: str
    category: str
    sides: int
    colour: tuple[int, int, int]


VERBS: tuple[Verb, ...] = (
    Verb("slide", "translate"),
    Verb("spin", "rotate"),
    Verb("pulse", "scale"),
)
NOUNS: tuple[Noun, ...] = (
    Noun("ball", "round", 0, (225, 30, 30)),
    Noun("box", "angular", 4, (40, 70, 235)),
    Noun("sign", "angular", 3, (30, 200, 60)),
)


def action_label(verb: int, noun: int) -> str:
    """The HACS label of a (verb id, noun id) action, e.g. ``"spin box"``."""
    return f"{VERBS[verb].name} {NOUNS[noun].name}"


class DemoDatasetError(RuntimeError):
    """A demo dataset that does not match its annotations; the message names the video."""


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines a generated dataset.

    Durations are in seconds; ``duration_range`` bounds the video length, ``action_range`` the
    length of one action, ``min_gap`` the background time before, between and after actions.
    """

    train_videos: int = 32
    val_videos: int = 12
    seed: int = 0
    duration_range: tuple[float, float] = (20.0, 60.0)
    action_range: tuple[float, float] = (2.0, 15.0)
    min_gap: float = 1.0
    max_actions: int = 4
    fps: int = 15
    width: int = 160
    height: int = 120
    crf: int = 23

    def __post_init__(self) -> None:
        if self.train_videos < 1 or self.val_videos < 1:
            raise ValueError("train_videos and val_videos must be >= 1")
        for name in ("duration_range", "action_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {(lo, hi)}")
        if self.min_gap <= 0 or self.max_actions < 1 or self.fps < 1:
            raise ValueError("min_gap must be > 0, max_actions and fps >= 1")
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even and >= 32 (yuv420p), got {self.width}x{self.height}")

    @property
    def tick(self) -> int:
        """Frames per boundary step: the fewest frames whose duration is a whole number of 1/100 s."""
        return self.fps // math.gcd(self.fps, 100)


@dataclass(frozen=True)
class VideoPlan:
    """One video to render: its class, length and action frames ``[start, stop)``."""

    index: int
    video_id: str
    participant_id: str
    subset: str
    num_frames: int
    verb: int
    noun: int
    segments: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class DemoDatasetSummary:
    """What :func:`validate_demo_dataset` found: counts per subset, seconds of video and of action."""

    videos: dict[str, int]
    segments: int
    frames: int
    duration_s: float
    action_s: float
    labels: tuple[str, ...]

    def __str__(self) -> str:
        subsets = ", ".join(f"{n} {name}" for name, n in self.videos.items())
        return (
            f"{sum(self.videos.values())} videos ({subsets}), {self.frames} frames, "
            f"{self.duration_s:.1f} s, {self.segments} actions covering {self.action_s:.1f} s "
            f"({100 * self.action_s / self.duration_s:.0f} %), {len(self.labels)} classes"
        )


def video_path(root: str | Path, video_id: str) -> Path:
    """Where the video ``video_id`` of the dataset in ``root`` lives."""
    return Path(root) / "videos" / f"{video_id}.mp4"


def hacs_path(root: str | Path) -> Path:
    """The HACS / ActivityNet JSON of the dataset in ``root``."""
    return Path(root) / "annotations" / "hacs.json"


def ek100_dir(root: str | Path) -> Path:
    """The folder of the EK100 CSVs of the dataset in ``root``."""
    return Path(root) / "annotations" / "ek100"


# ----------------------------------------------------------------------------------------------
# Planning: which video shows what, when


def plan_dataset(config: DemoConfig) -> list[VideoPlan]:
    """Draw every video's length, class and action frames (training videos first)."""
    rng = np.random.default_rng(config.seed)
    plans: list[VideoPlan] = []
    for subset, count in (("training", config.train_videos), ("validation", config.val_videos)):
        for cls in _deal_classes(rng, count):
            index = len(plans)
            participant = f"P{index % 4 + 1:02d}"
            num_frames = _ticks(rng.uniform(*config.duration_range), config) * config.tick
            verb, noun = divmod(int(cls), len(NOUNS))
            plans.append(VideoPlan(
                index=index,
                video_id=f"{participant}_{101 + index}",
                participant_id=participant,
                subset=subset,
                num_frames=num_frames,
                verb=verb,
                noun=noun,
                segments=_plan_segments(rng, num_frames, config),
            ))
    return plans


def _deal_classes(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` class ids: shuffled rounds over all verb x noun classes."""
    num_classes = len(VERBS) * len(NOUNS)
    rounds = [rng.permutation(num_classes) for _ in range(-(-count // num_classes))]
    return np.concatenate(rounds)[:count]


def _ticks(seconds: float, config: DemoConfig) -> int:
    """Seconds to a whole number of boundary steps (at least one)."""
    return max(1, round(seconds * config.fps / config.tick))


def _plan_segments(rng: np.random.Generator, num_frames: int, config: DemoConfig) -> tuple[tuple[int, int], ...]:
    """Non-overlapping action frames ``[start, stop)`` with at least ``min_gap`` of background around each."""
    total = num_frames // config.tick
    gap = math.ceil(config.min_gap * config.fps / config.tick)
    shortest = math.ceil(config.action_range[0] * config.fps / config.tick)
    longest = max(shortest, math.floor(config.action_range[1] * config.fps / config.tick))

    def room(n: int) -> int:
        return (total - (n + 1) * gap) // n

    fitting = [n for n in range(1, config.max_actions + 1) if room(n) >= shortest]
    if not fitting:
        raise ValueError(
            f"a {num_frames / config.fps:.2f} s video cannot hold one {config.action_range[0]} s action "
            f"with {config.min_gap} s of background on both sides; lengthen duration_range"
        )
    most = max(fitting)
    n = int(rng.integers(min(2, most), most + 1))
    lengths = rng.integers(shortest, min(longest, room(n)) + 1, size=n)
    spare = total - int(lengths.sum()) - (n + 1) * gap
    cuts = np.sort(rng.integers(0, spare + 1, size=n))
    extra = np.diff(np.concatenate(([0], cuts, [spare])))
    segments = []
    position = gap + int(extra[0])
    for length, after in zip(lengths, extra[1:]):
        segments.append((position * config.tick, (position + int(length)) * config.tick))
        position += int(length) + gap + int(after)
    return tuple(segments)


# ----------------------------------------------------------------------------------------------
# Rendering: frames of one video


class _Stage(NamedTuple):
    """Fixed parameters of one action on screen."""

    start: int
    stop: int
    centre: tuple[float, float]
    phase: float
    direction: float


_SIZE = 0.30          # disc radius as a fraction of the frame height (other shapes: _INRADIUS)
_SWING = 0.19         # slide amplitude as a fraction of the frame width
_DARK = 0.3           # brightness of the dark rings of a pulsing object, relative to its colour
_NOISE_STD = 6.0      # per-frame noise, in 0-255 units
_TEXTURE = 256        # side of the periodic background texture (larger than a frame)
_INRADIUS = {0: 1.0, 3: 0.6, 4: 0.85}  # per number of sides, so every shape reaches <= 1.2 _SIZE


def render_frames(plan: VideoPlan, config: DemoConfig) -> Iterator[np.ndarray]:
    """Yield the ``(H, W, 3)`` uint8 RGB frames of ``plan``, drawn from its own seeded generator."""
    rng = np.random.default_rng([config.seed, plan.index])
    background = _Background(rng, config)
    stages = [_stage(rng, start, stop, plan.verb, config) for start, stop in plan.segments]
    yy, xx = np.mgrid[0:config.height, 0:config.width].astype(np.float32)
    colour = np.asarray(NOUNS[plan.noun].colour, dtype=np.float32)
    active = iter(stages)
    stage = next(active, None)
    for index in range(plan.num_frames):
        frame = background.frame(index)
        if stage is not None and index >= stage.stop:
            stage = next(active, None)
        if stage is not None and stage.start <= index:
            seconds = (index - stage.start) / config.fps
            _draw_action(frame, xx, yy, seconds, stage, plan.verb, NOUNS[plan.noun].sides, colour, config)
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * _NOISE_STD
        yield np.clip(frame, 0, 255).astype(np.uint8)


class _Background:
    """Two periodic smooth-noise layers drifting in different directions, grey with a slight tint."""

    def __init__(self, rng: np.random.Generator, config: DemoConfig) -> None:
        self.coarse = _periodic_texture(rng, cutoff=0.015)
        self.fine = _periodic_texture(rng, cutoff=0.08)
        angles = rng.uniform(0, 2 * np.pi, size=2)
        speeds = np.array([0.6, 1.4])  # pixels per frame
        self.velocity = np.stack([np.sin(angles), np.cos(angles)], axis=1) * speeds[:, None]
        self.tint = rng.uniform(105, 145) * (1 + rng.uniform(-0.08, 0.08, size=3)).astype(np.float32)
        self.rows = np.arange(config.height)
        self.cols = np.arange(config.width)

    def frame(self, index: int) -> np.ndarray:
        """The ``(H, W, 3)`` float32 background of frame ``index``."""
        layers = []
        for texture, (vy, vx) in zip((self.coarse, self.fine), self.velocity):
            rows = (self.rows + round(vy * index)) % _TEXTURE
            cols = (self.cols + round(vx * index)) % _TEXTURE
            layers.append(texture[np.ix_(rows, cols)])
        luminance = 1 + 0.12 * layers[0] + 0.06 * layers[1]
        return luminance[:, :, None] * self.tint


def _periodic_texture(rng: np.random.Generator, cutoff: float) -> np.ndarray:
    """Unit-variance Gaussian-low-passed white noise that tiles (``cutoff`` in cycles per pixel)."""
    freq = np.fft.fftfreq(_TEXTURE)
    radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
    spectrum = np.fft.fft2(rng.standard_normal((_TEXTURE, _TEXTURE))) * np.exp(-radius2 / (2 * cutoff**2))
    texture = np.fft.ifft2(spectrum).real
    return ((texture - texture.mean()) / texture.std()).astype(np.float32)


def _stage(rng: np.random.Generator, start: int, stop: int, verb: int, config: DemoConfig) -> _Stage:
    """Where the object of one action sits, so that it stays fully inside the frame throughout."""
    extent = 1.2 * _SIZE * config.height  # circumradius of the triangle, the widest shape
    swing = _SWING * config.width if VERBS[verb].name == "slide" else 0.0
    cx = rng.uniform(extent + swing, max(extent + swing, config.width - extent - swing))
    cy = rng.uniform(extent, max(extent, config.height - extent))
    return _Stage(start, stop, (cx, cy), rng.uniform(0, 2 * np.pi), float(rng.choice([-1.0, 1.0])))


def _draw_action(
    frame: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
    seconds: float,
    stage: _Stage,
    verb: int,
    sides: int,
    colour: np.ndarray,
    config: DemoConfig,
) -> None:
    """Paint the object ``seconds`` into its action onto ``frame`` (in place)."""
    radius = _SIZE * config.height
    cx, cy = stage.centre
    name = VERBS[verb].name
    if name == "slide":
        # The trail: the object where it was over the last frames, fading out.
        for lag, alpha in ((3, 0.2), (2, 0.35), (1, 0.55), (0, 1.0)):
            t = seconds - lag * 0.7 / config.fps
            x = cx + _SWING * config.width * np.sin(2 * np.pi * 0.8 * t + stage.phase)
            mask = _shape_mask(xx - x, yy - cy, radius, sides).astype(np.float32)[:, :, None] * alpha
            frame *= 1 - mask
            frame += mask * colour
        return
    if name == "spin":
        angle = stage.direction * 2 * np.pi * 0.75 * seconds + stage.phase
        scale = 1.0
    else:
        angle = stage.phase
        scale = 0.85 + 0.15 * np.sin(2 * np.pi * 1.0 * seconds + stage.phase)
    cos, sin = np.cos(angle), np.sin(angle)
    u = (cos * (xx - cx) + sin * (yy - cy)) / scale
    v = (-sin * (xx - cx) + cos * (yy - cy)) / scale
    mask = _shape_mask(u, v, radius, sides)
    if name == "spin":
        coloured = np.sin(2 * np.arctan2(v, u)) >= 0
        other = np.full(3, 255, dtype=np.float32)
    else:
        coloured = np.cos(2 * np.pi * np.hypot(u, v) / (0.28 * radius)) >= 0
        other = _DARK * colour
    frame[mask] = np.where(coloured[mask][:, None], colour, other)


def _shape_mask(u: np.ndarray, v: np.ndarray, radius: float, sides: int) -> np.ndarray:
    """Pixels inside a disc (``sides`` 0) or a regular polygon, centred at 0, scaled by ``radius``."""
    if sides == 0:
        return u * u + v * v <= radius * radius
    inside = np.ones(u.shape, dtype=bool)
    for k in range(sides):
        normal = np.pi / 2 + 2 * np.pi * k / sides  # first edge at the bottom (image y points down)
        inside &= u * np.cos(normal) + v * np.sin(normal) <= radius * _INRADIUS[sides]
    return inside


# ----------------------------------------------------------------------------------------------
# Writing


def write_video(path: Path, frames: Iterator[np.ndarray], config: DemoConfig) -> None:
    """Encode RGB frames as H.264 (yuv420p, constant fps, one thread for reproducible output).

    Written to ``<path>.partial`` first and renamed, so ``path`` is never a half-written video.
    """
    partial_path = path.with_name(path.name + ".partial")
    with av.open(str(partial_path), mode="w", format="mp4") as container:
        stream = container.add_stream(
            "libx264", rate=Fraction(config.fps), options={"crf": str(config.crf), "preset": "ultrafast"}
        )
        stream.width = config.width
        stream.height = config.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = 2 * config.fps
        stream.codec_context.thread_count = 1
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, config.fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(partial_path, path)


def _render_and_write(plan: VideoPlan, config: DemoConfig, root: Path) -> str:
    write_video(video_path(root, plan.video_id), render_frames(plan, config), config)
    return plan.video_id


def make_demo_dataset(out: str | Path, config: DemoConfig = DemoConfig(), workers: int = 2) -> DemoDatasetSummary:
    """Render and encode every video, write both annotation formats, validate, return the summary.

    Rerunning into the same folder overwrites the files it writes; any other ``.mp4`` already in
    ``out/videos`` is an error, since later stages would take it for part of the dataset.
    """
    root = Path(out)
    plans = plan_dataset(config)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    expected = {video_path(root, p.video_id).name for p in plans}
    strangers = sorted(p.name for p in videos.glob("*.mp4") if p.name not in expected)
    if strangers:
        raise DemoDatasetError(f"{videos}: holds videos that are not part of this dataset: {strangers[:5]}")
    job = partial(_render_and_write, config=config, root=root)
    with tqdm(total=len(plans), desc="render demo videos", unit="video", leave=False, dynamic_ncols=True) as bar:
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for _ in pool.imap_unordered(job, plans):
                    bar.update()
        else:
            for plan in plans:
                job(plan)
                bar.update()
    ek100_dir(root).mkdir(parents=True, exist_ok=True)
    hacs_path(root).write_text(hacs_json(plans, config))
    for name, text in ek100_csvs(plans, config).items():
        (ek100_dir(root) / name).write_text(text)
    return validate_demo_dataset(root)


def _seconds(frame: int, config: DemoConfig) -> float:
    """A boundary frame's time; exact to 1/100 s because boundaries lie on ``config.tick``."""
    return round(frame / config.fps, 2)


def hacs_json(plans: list[VideoPlan], config: DemoConfig) -> str:
    """The HACS Segments JSON text: string durations, an ActivityNet-style taxonomy tree.

    The taxonomy has the root, one node per verb and the ``"<verb> <noun>"`` classes as leaves.
    """
    taxonomy = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None}]
    for v, verb in enumerate(VERBS):
        taxonomy.append({"nodeId": 1 + v, "nodeName": verb.name, "parentId": 0, "parentName": "Root"})
    for v, verb in enumerate(VERBS):
        for n in range(len(NOUNS)):
            taxonomy.append({
                "nodeId": len(taxonomy), "nodeName": action_label(v, n),
                "parentId": 1 + v, "parentName": verb.name,
            })
    database = {
        p.video_id: {
            "subset": p.subset,
            "url": f"videos/{p.video_id}.mp4",
            "duration": f"{_seconds(p.num_frames, config):.2f}",
            "annotations": [
                {"label": action_label(p.verb, p.noun), "segment": [_seconds(a, config), _seconds(b, config)]}
                for a, b in p.segments
            ],
        }
        for p in plans
    }
    data = {"version": "HACS Segments v1.1.1 (synthetic demo)", "taxonomy": taxonomy, "database": database}
    return json.dumps(data) + "\n"


def ek100_csvs(plans: list[VideoPlan], config: DemoConfig) -> dict[str, str]:
    """The EK100 CSV texts by file name: train/validation narrations, class tables, video info."""
    files = {}
    for subset, tag in HACS_SUBSETS.items():
        rows = [_ek100_row(p, i, a, b, config) for p in plans if p.subset == subset for i, (a, b) in enumerate(p.segments)]
        files[f"EPIC_100_{tag}.csv"] = _csv_text(EK100_COLUMNS, rows)
    files["EPIC_100_verb_classes.csv"] = _csv_text(
        ("id", "key", "instances", "category"),
        [(i, v.name, str([v.name]), v.category) for i, v in enumerate(VERBS)],
    )
    files["EPIC_100_noun_classes.csv"] = _csv_text(
        ("id", "key", "instances", "category"),
        [(i, n.name, str([n.name]), n.category) for i, n in enumerate(NOUNS)],
    )
    files["EPIC_100_video_info.csv"] = _csv_text(
        ("video_id", "duration", "fps", "resolution"),
        [(p.video_id, f"{_seconds(p.num_frames, config):.6f}", float(config.fps), f"{config.width}x{config.height}")
         for p in plans],
    )
    return files


def _ek100_row(plan: VideoPlan, number: int, start: int, stop: int, config: DemoConfig) -> tuple:
    verb, noun = VERBS[plan.verb].name, NOUNS[plan.noun].name
    return (
        f"{plan.video_id}_{number}", plan.participant_id, plan.video_id,
        _timestamp(_seconds(start, config), 3), _timestamp(_seconds(start, config), 2),
        _timestamp(_seconds(stop, config), 2), start + 1, stop,
        f"{verb} {noun}", verb, plan.verb, noun, plan.noun, str([noun]), str([plan.noun]),
    )


def _timestamp(seconds: float, decimals: int) -> str:
    """``HH:MM:SS.ss`` (``decimals`` digits after the point), as in the EK100 files."""
    units = round(seconds * 10**decimals)
    whole, fraction = divmod(units, 10**decimals)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{fraction:0{decimals}d}"


def _csv_text(header: tuple[str, ...], rows: list[tuple]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Validation


def validate_demo_dataset(root: str | Path) -> DemoDatasetSummary:
    """Check a demo dataset end to end and summarise it.

    Reads both annotation formats back through :mod:`tal_common.annotations`, checks that they hold
    the same videos, durations, segments and classes, that every segment lies inside its video, and
    that decord opens every video with the annotated frame count and fps and decodes its first and
    last frames. Raises :class:`DemoDatasetError` naming the video (or ``AnnotationError`` naming
    the file) on the first problem.
    """
    root = Path(root)
    hacs = read_activitynet_json(hacs_path(root))
    ek_dir = ek100_dir(root)
    verbs = read_ek100_classes(ek_dir / "EPIC_100_verb_classes.csv")
    nouns = read_ek100_classes(ek_dir / "EPIC_100_noun_classes.csv")
    ek_videos: dict[str, VideoAnnotation] = {}
    for subset, tag in HACS_SUBSETS.items():
        ek = read_ek100_csv(ek_dir / f"EPIC_100_{tag}.csv", video_info=ek_dir / "EPIC_100_video_info.csv")
        ek_videos.update({vid: _with_subset(video, subset) for vid, video in ek.videos.items()})
    if set(ek_videos) != set(hacs.videos):
        only = sorted(set(ek_videos) ^ set(hacs.videos))
        raise DemoDatasetError(f"{root}: videos {only[:5]} are in only one of the HACS and EK100 annotations")
    frames = 0
    for vid, video in hacs.videos.items():
        _check_formats_agree(video, ek_videos[vid], verbs, nouns)
        _check_segments_inside(video)
        frames += _check_video_file(video_path(root, vid), video, ek_videos[vid].fps)
    return _summarise(hacs, frames)


def _with_subset(video: VideoAnnotation, subset: str) -> VideoAnnotation:
    return VideoAnnotation(video.video_id, video.duration, subset, video.segments, video.fps)


def _check_formats_agree(hacs: VideoAnnotation, ek: VideoAnnotation, verbs: list[str], nouns: list[str]) -> None:
    where = f"video {hacs.video_id!r}"
    if hacs.subset != ek.subset:
        raise DemoDatasetError(f"{where}: subset {hacs.subset!r} in HACS but {ek.subset!r} in EK100")
    if not math.isclose(hacs.duration, ek.duration, abs_tol=1e-6):
        raise DemoDatasetError(f"{where}: duration {hacs.duration} s in HACS but {ek.duration} s in EK100")
    if len(hacs.segments) != len(ek.segments):
        raise DemoDatasetError(f"{where}: {len(hacs.segments)} HACS segments but {len(ek.segments)} EK100 rows")
    for h, e in zip(hacs.segments, ek.segments):
        same_span = math.isclose(h.start, e.start, abs_tol=1e-6) and math.isclose(h.end, e.end, abs_tol=1e-6)
        if not same_span or h.label != f"{verbs[e.verb]} {nouns[e.noun]}":
            raise DemoDatasetError(f"{where}: HACS segment {h} does not match EK100 row {e}")


def _check_segments_inside(video: VideoAnnotation) -> None:
    for seg in video.segments:
        if not 0 <= seg.start < seg.end <= video.duration:
            raise DemoDatasetError(
                f"video {video.video_id!r}: segment [{seg.start}, {seg.end}] is not inside [0, {video.duration}]"
            )


def _check_video_file(path: Path, video: VideoAnnotation, fps: float | None) -> int:
    """Open ``path`` with decord, compare its frame count and fps with the annotations; the frame count."""
    where = f"video {video.video_id!r} ({path})"
    if fps is None:
        raise DemoDatasetError(f"{where}: no fps in EPIC_100_video_info.csv")
    if not path.is_file():
        raise DemoDatasetError(f"{where}: file not found")
    expected = round(video.duration * fps)
    try:
        reader = decord.VideoReader(str(path))
        frames = len(reader)
        actual_fps = reader.get_avg_fps()
        reader.get_batch([0, frames - 1])
    except (decord.DECORDError, RuntimeError) as exc:  # decord raises both
        raise DemoDatasetError(f"{where}: cannot be decoded: {exc}") from exc
    if frames != expected:
        raise DemoDatasetError(f"{where}: {frames} frames, expected {expected} ({video.duration} s at {fps} fps)")
    if not math.isclose(actual_fps, fps, rel_tol=1e-3):
        raise DemoDatasetError(f"{where}: {actual_fps} fps, expected {fps}")
    return frames


def _summarise(hacs: AnnotationSet, frames: int) -> DemoDatasetSummary:
    videos = list(hacs.videos.values())
    counts: dict[str, int] = {}
    for video in videos:
        counts[video.subset] = counts.get(video.subset, 0) + 1
    return DemoDatasetSummary(
        videos=counts,
        segments=sum(len(v.segments) for v in videos),
        frames=frames,
        duration_s=sum(v.duration for v in videos),
        action_s=sum(s.end - s.start for v in videos for s in v.segments),
        labels=tuple(sorted(hacs.labels)),
    )
