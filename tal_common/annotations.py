"""Annotation readers: HACS / ActivityNet JSON, mmaction2's ActivityNet JSON and Epic-Kitchens-100 CSV into one typed form.

All formats become an :class:`AnnotationSet` of :class:`VideoAnnotation` with segments in seconds.
Segments are kept exactly as the files give them (zero-length segments and segments that end after
the video's duration occur in the real files and the official evaluators keep them); consumers clip
where their algorithm needs it.

The two JSON layouts are told apart by content: the official file has a top-level ``database``; mmaction2's
``anet_anno_{train,val,test,full}.json`` (written by its ``tools/data/activitynet/process_annotations.py``) maps
video ids straight to entries with ``duration_second``, ``duration_frame``, ``feature_frame`` and
``annotations``. It has no subset field: the subset comes from the file name (``train`` -> ``training``,
``val`` -> ``validation``, ``test`` -> ``testing``, else ``full``).

EK100 segments come from ``start_timestamp``/``stop_timestamp`` (``HH:MM:SS.ss``); the frame
columns index 50/60 fps frame dumps, not the videos, and are not used. ``narration_timestamp`` is
empty in some real rows and is not needed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

EK100_COLUMNS = (
    "narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
    "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
    "noun_class", "all_nouns", "all_noun_classes",
)
EK100_REQUIRED = ("video_id", "start_timestamp", "stop_timestamp")
EK100_CLASS_COLUMNS = ("verb_class", "noun_class")


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file, the video and the field."""


@dataclass(frozen=True)
class Segment:
    """One annotated action: ``[start, end]`` in seconds, its label, and EK100 verb/noun ids."""

    start: float
    end: float
    label: str
    verb: int | None = None
    noun: int | None = None


@dataclass(frozen=True)
class VideoAnnotation:
    """All segments of one video; ``duration`` in seconds (for EK100 without video info: last stop)."""

    video_id: str
    duration: float
    subset: str
    segments: tuple[Segment, ...]
    fps: float | None = None


@dataclass(frozen=True)
class AnnotationSet:
    """Videos by id, the label vocabulary (order of first appearance), and the file they came from."""

    videos: dict[str, VideoAnnotation]
    labels: tuple[str, ...]
    source: str
    extra: dict[str, Any] = field(default_factory=dict)

    def subset(self, name: str) -> "AnnotationSet":
        """The videos whose subset is ``name`` (error naming the known subsets if there are none)."""
        videos = {vid: v for vid, v in self.videos.items() if v.subset == name}
        if not videos:
            known = sorted({v.subset for v in self.videos.values()})
            raise AnnotationError(f"{self.source}: no videos in subset {name!r}; subsets present: {known}")
        return AnnotationSet(videos, _labels_in(videos.values()), self.source, self.extra)


def read_annotations(path: str | Path, video_info: str | Path | None = None) -> AnnotationSet:
    """Read a HACS/ActivityNet or mmaction2 ``.json`` or an EK100 ``.csv`` (``video_info`` applies to EK100 only)."""
    path = Path(path)
    if path.is_dir():
        raise AnnotationError(f"{path}: a folder, not an annotation file")
    if path.suffix.lower() == ".json":
        return read_activitynet_json(path)
    if path.suffix.lower() == ".csv":
        return read_ek100_csv(path, video_info=video_info)
    raise AnnotationError(f"{path}: unknown annotation format (expected .json or .csv)")


def read_activitynet_json(path: str | Path) -> AnnotationSet:
    """Read HACS Segments / ActivityNet ground truth: the official layout (``database`` of videos with
    ``annotations``; ``duration`` a string (HACS) or a number (ActivityNet)) or mmaction2's, told apart by content.
    """
    path = Path(path)
    data = _load_json(path)
    if isinstance(data, dict) and "database" not in data and _looks_like_mmaction(data):
        return _parse_mmaction_json(data, path)
    return _parse_official_json(data, path)


def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=unique_keys)
    except DuplicateKeyError as exc:
        raise AnnotationError(f"{path}: key {exc.args[0]!r} appears twice in one JSON object (a video listed twice?)") from None
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: a folder, not an annotation file") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not a UTF-8 text file ({exc})") from None


class DuplicateKeyError(ValueError):
    """A JSON object that names the same key twice (raised by :func:`unique_keys`; the key is ``args[0]``)."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A ``json`` ``object_pairs_hook`` that refuses a key given twice (plain ``json`` keeps the last one silently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        raise DuplicateKeyError(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _parse_official_json(data: Any, path: Path) -> AnnotationSet:
    """The official HACS/ActivityNet layout, already parsed from ``path`` (named in errors)."""
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise AnnotationError(f"{path}: missing the top-level 'database' mapping")
    videos: dict[str, VideoAnnotation] = {}
    for vid, entry in data["database"].items():
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: entry must be a mapping")
        for key in ("subset", "annotations"):
            if key not in entry:
                raise AnnotationError(f"{where}: missing field '{key}'")
        duration = _number(entry.get("duration", "nan"), f"{where}, field 'duration'")
        segments = tuple(_anet_segment(ann, f"{where}, annotation {i}") for i, ann in enumerate(entry["annotations"]))
        if math.isnan(duration):
            duration = max((s.end for s in segments), default=0.0)
        videos[vid] = VideoAnnotation(vid, duration, str(entry["subset"]), segments)
    return AnnotationSet(videos, _labels_in(videos.values()), str(path))


def _looks_like_mmaction(data: dict) -> bool:
    """An mmaction2 ``anet_anno_*.json``: every entry is a mapping with ``duration_second`` (checked on the first)."""
    first = next(iter(data.values()), None)
    return isinstance(first, dict) and "duration_second" in first


def _parse_mmaction_json(data: dict, path: Path) -> AnnotationSet:
    """mmaction2's ActivityNet layout ``{video: {duration_second, duration_frame, feature_frame, annotations, ...}}``.

    ``duration`` is ``duration_second``; ``fps`` is ``duration_frame / duration_second`` (the frame rate the
    frame counts use). ``feature_frame`` (the frames the features cover) is kept in ``extra["feature_frame"]``.
    """
    subset = _mmaction_subset(path.name)
    videos: dict[str, VideoAnnotation] = {}
    feature_frames: dict[str, int] = {}
    for vid, entry in data.items():
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: entry must be a mapping")
        for key in ("duration_second", "duration_frame", "annotations"):
            if key not in entry:
                raise AnnotationError(f"{where}: missing field '{key}' (mmaction2 ActivityNet annotation layout)")
        duration = _number(entry["duration_second"], f"{where}, field 'duration_second'")
        frames = _number(entry["duration_frame"], f"{where}, field 'duration_frame'")
        if not duration > 0 or not frames > 0:
            raise AnnotationError(f"{where}: fields 'duration_second' and 'duration_frame' must be > 0, got {duration}, {frames}")
        if "feature_frame" in entry:
            feature_frames[vid] = int(_number(entry["feature_frame"], f"{where}, field 'feature_frame'"))
        segments = tuple(_anet_segment(ann, f"{where}, annotation {i}") for i, ann in enumerate(entry["annotations"]))
        videos[vid] = VideoAnnotation(vid, duration, subset, segments, fps=frames / duration)
    return AnnotationSet(videos, _labels_in(videos.values()), str(path), {"feature_frame": feature_frames})


def _mmaction_subset(name: str) -> str:
    lowered = name.lower()
    for key, subset in (("train", "training"), ("val", "validation"), ("test", "testing")):
        if key in lowered:
            return subset
    return "full"


def _anet_segment(ann: Any, where: str) -> Segment:
    if not isinstance(ann, dict):
        raise AnnotationError(f"{where}: must be a mapping with 'label' and 'segment'")
    for key in ("label", "segment"):
        if key not in ann:
            raise AnnotationError(f"{where}: missing field '{key}'")
    seg = ann["segment"]
    if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        raise AnnotationError(f"{where}: field 'segment' must be [start, end], got {seg!r}")
    start = _number(seg[0], f"{where}, field 'segment'")
    end = _number(seg[1], f"{where}, field 'segment'")
    _check_span(start, end, where)
    label = ann["label"]
    if isinstance(label, bool) or not isinstance(label, (str, int)) or not str(label).strip():
        raise AnnotationError(f"{where}: field 'label' must be a non-empty class name, got {label!r}")
    return Segment(start, end, str(label))


def read_ek100_csv(path: str | Path, video_info: str | Path | None = None) -> AnnotationSet:
    """Read an EPIC-Kitchens-100 annotation CSV (train or validation layout, or the unlabelled test timestamps).

    Labels are ``"verb_class,noun_class"`` strings (the action label of the official JSON format). A file with
    neither class column (``EPIC_100_test_timestamps.csv``) gives unlabelled segments (label ``""``, verb and
    noun ``None``): enough to localize the test videos, refused for training and evaluation.
    The subset is ``"validation"`` when the file name contains ``validation``, else ``"train"``
    (``"test"`` for test files). Durations and fps come from ``video_info``
    (``video_id,duration,fps,resolution``) when given, else the last stop time.
    """
    path = Path(path)
    table = _read_csv(path)
    classes = [c for c in EK100_CLASS_COLUMNS if c in table.columns]
    missing = [c for c in EK100_REQUIRED if c not in table.columns]
    if len(classes) == 1:
        missing.append(next(c for c in EK100_CLASS_COLUMNS if c not in classes))
    if missing:
        raise AnnotationError(f"{path}: missing column(s) {missing}; expected the EK100 columns {list(EK100_COLUMNS)}")
    info = read_video_info(video_info) if video_info is not None else {}
    subset = _ek100_subset(path.name)
    per_video: dict[str, list[Segment]] = {}
    for row in table.itertuples(index=False):
        vid = str(row.video_id)
        where = f"{path}: video {vid!r}, narration {getattr(row, 'narration_id', '?')!r}"
        start = _timestamp(row.start_timestamp, f"{where}, field 'start_timestamp'")
        end = _timestamp(row.stop_timestamp, f"{where}, field 'stop_timestamp'")
        _check_span(start, end, where)
        if classes:
            verb = _int(row.verb_class, f"{where}, field 'verb_class'")
            noun = _int(row.noun_class, f"{where}, field 'noun_class'")
            segment = Segment(start, end, f"{verb},{noun}", verb, noun)
        else:
            segment = Segment(start, end, "")
        per_video.setdefault(vid, []).append(segment)
    videos = {}
    for vid, segs in per_video.items():
        if info and vid not in info:
            raise AnnotationError(f"{video_info}: video {vid!r} (from {path}) has no row")
        duration, fps = info.get(vid, (max(s.end for s in segs), None))
        videos[vid] = VideoAnnotation(vid, duration, subset, tuple(segs), fps)
    return AnnotationSet(videos, _labels_in(videos.values()), str(path))


def read_ek100_classes(path: str | Path) -> list[str]:
    """The ``key`` column of ``EPIC_100_verb_classes.csv`` / ``EPIC_100_noun_classes.csv``, indexed by id."""
    path = Path(path)
    table = _read_csv(path)
    for col in ("id", "key"):
        if col not in table.columns:
            raise AnnotationError(f"{path}: missing column '{col}'")
    ids = [_int(v, f"{path}: field 'id'") for v in table["id"]]
    if ids != list(range(len(ids))):
        raise AnnotationError(f"{path}: field 'id' must run 0..{len(ids) - 1} in order")
    return [str(k) for k in table["key"]]


def read_video_info(path: str | Path) -> dict[str, tuple[float, float]]:
    """``EPIC_100_video_info.csv`` (``video_id,duration,fps,...``): video id -> (duration in seconds, fps)."""
    path = Path(path)
    table = _read_csv(path)
    for col in ("video_id", "duration", "fps"):
        if col not in table.columns:
            raise AnnotationError(f"{path}: missing column '{col}'")
    out = {}
    for row in table.itertuples(index=False):
        where = f"{path}: video {row.video_id!r}"
        if str(row.video_id) in out:
            raise AnnotationError(f"{where}: listed twice")
        out[str(row.video_id)] = (
            _number(row.duration, f"{where}, field 'duration'"),
            _number(row.fps, f"{where}, field 'fps'"),
        )
    return out


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: a folder, not a CSV file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not a readable CSV ({exc})") from exc


def _ek100_subset(name: str) -> str:
    lowered = name.lower()
    if "validation" in lowered:
        return "validation"
    if "test" in lowered:
        return "test"
    return "train"


def _timestamp(value: Any, where: str) -> float:
    """``HH:MM:SS.ss`` (or ``MM:SS.ss`` / plain seconds) to seconds."""
    text = str(value).strip()
    parts = text.split(":")
    try:
        if not text or len(parts) > 3:
            raise ValueError(text)
        numbers = [float(part) for part in parts]
    except ValueError:
        raise AnnotationError(f"{where}: not a HH:MM:SS.ss timestamp: {value!r}") from None
    if any(part.strip().startswith("-") for part in parts) or not all(math.isfinite(n) and n >= 0 for n in numbers):
        raise AnnotationError(f"{where}: timestamp must be finite and >= 0, got {value!r}")
    if any(n >= 60 for n in numbers[1:]):
        raise AnnotationError(f"{where}: minutes and seconds of a HH:MM:SS.ss timestamp must be below 60, got {value!r}")
    seconds = 0.0
    for number in numbers:
        seconds = seconds * 60 + number
    return seconds


def _number(value: Any, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: not a number: {value!r}") from None
    if math.isinf(out):
        raise AnnotationError(f"{where}: must be finite, got {value!r}")
    return out


def _int(value: Any, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise AnnotationError(f"{where}: not an integer: {value!r}") from None


def _check_span(start: float, end: float, where: str) -> None:
    if math.isnan(start) or math.isnan(end):
        raise AnnotationError(f"{where}: segment bounds must not be NaN, got [{start}, {end}]")
    if end < start:
        raise AnnotationError(f"{where}: segment ends before it starts: [{start}, {end}]")


def _labels_in(videos: Any) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for video in videos:
        for seg in video.segments:
            seen.setdefault(seg.label, None)
    return tuple(seen)
