"""Evaluation inputs as flat arrays: ground truth (read by ``tal_common.annotations``) and prediction files.

Everything the evaluators consume is a :class:`SegmentTable`: one row per segment, parallel arrays.
Ground truth comes from the project's one reader per format (:mod:`tal_common.annotations`) or an
:class:`~tal_common.annotations.AnnotationSet` already in memory; predictions come from the official
submission JSON (a path or the parsed dict).

Malformed predictions raise :class:`InputError` naming the file, the video, the entry index and the field.
Reading is vectorised where the checks allow: each field is pulled out with one comprehension and checked
with numpy; only when that fails does a slow pass look for the exact entry to name.
"""
from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np

from tal_common.annotations import AnnotationSet, DuplicateKeyError, read_activitynet_json, read_ek100_csv, unique_keys

PathLike = Union[str, Path]
ACTIVITYNET_PREDICTION_KEYS = ("results", "version", "external_data")
EK100_SUBMISSION_KEYS = ("version", "challenge", "sls_pt", "sls_tl", "sls_td", "results")
EK100_NUM_VERBS = 97
EK100_NUM_NOUNS = 300


class InputError(ValueError):
    """A malformed evaluation input; the message names the file, the video and the field."""


@dataclass(frozen=True)
class SegmentTable:
    """Segments as parallel (N,) arrays.

    ``labels`` maps a task to its per-row labels: ``"label"`` (str) for HACS/ActivityNet, ``"verb"``,
    ``"noun"``, ``"action"`` (int) for EK100, nothing for proposals. ``score`` is set for predictions.
    ``videos`` lists, for ground truth, every video of the evaluated set (with or without segments), and
    ``duration`` gives each ground-truth row its video's duration in seconds (for the diagnosis's coverage).
    """

    source: str
    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    labels: Mapping[str, np.ndarray] = field(default_factory=dict)
    score: np.ndarray | None = None
    videos: tuple[str, ...] = ()
    duration: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.video)


# ---------------------------------------------------------------------------------------------- ground truth


def activitynet_ground_truth(
    source: PathLike | AnnotationSet, subset: str = "validation", blocked_videos: Iterable[str] = ()
) -> SegmentTable:
    """HACS/ActivityNet ground truth of one subset, rows in file order, labels as strings.

    The class order of the official evaluator (first appearance in the subset) is the order of first
    appearance in ``labels``. ``blocked_videos`` are left out, as the official ``check_status`` did.
    """
    annotations = source if isinstance(source, AnnotationSet) else read_activitynet_json(source)
    blocked = set(blocked_videos)
    videos = [v for vid, v in annotations.subset(subset).videos.items() if vid not in blocked]
    segments = [(v.video_id, s) for v in videos for s in v.segments]
    _require_segments(segments, annotations.source, f"subset {subset!r}")
    negative = next(((vid, s) for vid, s in segments if s.start < 0), None)
    if negative is not None:
        raise InputError(f"{annotations.source}: video {negative[0]!r}: field 'segment' starts before 0 s: "
                         f"[{negative[1].start}, {negative[1].end}]")
    return SegmentTable(
        source=annotations.source,
        video=np.array([vid for vid, _ in segments], dtype=object),
        start=np.array([s.start for _, s in segments], dtype=np.float64),
        end=np.array([s.end for _, s in segments], dtype=np.float64),
        labels={"label": np.array([s.label for _, s in segments], dtype=object)},
        videos=tuple(v.video_id for v in videos),
        duration=np.array([v.duration for v in videos for _ in v.segments], dtype=np.float64),
    )


def ek100_ground_truth(
    source: PathLike | AnnotationSet, num_nouns: int = EK100_NUM_NOUNS, num_verbs: int = EK100_NUM_VERBS
) -> SegmentTable:
    """EPIC-Kitchens-100 ground truth from the annotation CSV timestamps; every row counts (no subsets).

    Labels: ``verb`` = verb_class, ``noun`` = noun_class, ``action`` = verb_class * num_nouns + noun_class.
    Class ids must lie in the class tables' ranges (the official code assumes 97 verbs and 300 nouns: a noun
    id >= 300 would collide with another action id).
    """
    annotations = source if isinstance(source, AnnotationSet) else read_ek100_csv(source)
    segments = [(v.video_id, s) for v in annotations.videos.values() for s in v.segments]
    _require_segments(segments, annotations.source, "the file")
    missing = next(((vid, s) for vid, s in segments if s.verb is None or s.noun is None), None)
    if missing is not None:
        raise InputError(f"{annotations.source}: video {missing[0]!r}: segment without EK100 verb/noun classes")
    for key, bound in (("verb", num_verbs), ("noun", num_nouns)):
        bad = next(((vid, s) for vid, s in segments if not 0 <= getattr(s, key) < bound), None)
        if bad is not None:
            raise InputError(f"{annotations.source}: video {bad[0]!r}, segment [{bad[1].start}, {bad[1].end}]: field "
                             f"'{key}_class' must be in 0..{bound - 1}, got {getattr(bad[1], key)}")
    verb = np.array([s.verb for _, s in segments], dtype=np.int64)
    noun = np.array([s.noun for _, s in segments], dtype=np.int64)
    return SegmentTable(
        source=annotations.source,
        video=np.array([vid for vid, _ in segments], dtype=object),
        start=np.array([s.start for _, s in segments], dtype=np.float64),
        end=np.array([s.end for _, s in segments], dtype=np.float64),
        labels={"verb": verb, "noun": noun, "action": verb * num_nouns + noun},
        videos=tuple(annotations.videos),
        duration=np.array([v.duration for v in annotations.videos.values() for _ in v.segments], dtype=np.float64),
    )


def _require_segments(segments: list, source: str, where: str) -> None:
    if not segments:
        raise InputError(f"{source}: no ground-truth segments in {where}; nothing to evaluate against")


# ----------------------------------------------------------------------------------------------- predictions


def read_activitynet_predictions(source: PathLike | Mapping, with_labels: bool = True) -> SegmentTable:
    """An official HACS/ActivityNet detection or proposal JSON (``with_labels=False``: labels ignored).

    Required top-level keys, as in the official evaluator: ``results``, ``version``, ``external_data``.
    Entries: ``{"label": str, "score": float, "segment": [t0, t1]}``.
    """
    data, name = _load_json(source)
    _require_keys(data, ACTIVITYNET_PREDICTION_KEYS, name)
    entries = _Entries(data["results"], name)
    labels = {"label": entries.str_column("label")} if with_labels else {}
    return entries.table(labels)


def read_ek100_predictions(
    source: PathLike | Mapping, num_verbs: int = EK100_NUM_VERBS, num_nouns: int = EK100_NUM_NOUNS
) -> SegmentTable:
    """An EK100 action-detection submission (``version`` "0.2", ``challenge``, ``sls_*``, ``results``).

    Entries: ``{"verb": int, "noun": int, "action": "v,n", "score": float, "segment": [t0, t1]}``. As in the
    official evaluator the verb and noun tasks use the ``verb``/``noun`` fields and the action task parses the
    ``action`` string (``v * num_nouns + n``); the two are not required to agree.
    """
    data, name = _load_json(source)
    _require_keys(data, EK100_SUBMISSION_KEYS, name)
    if data["version"] != "0.2":
        raise InputError(f"{name}: field 'version' must be \"0.2\", got {data['version']!r}")
    if data["challenge"] != "action_detection":
        raise InputError(f"{name}: field 'challenge' must be \"action_detection\", got {data['challenge']!r}")
    for key in ("sls_pt", "sls_tl", "sls_td"):
        value = data[key]
        if not _is_int(value) or not 0 <= value <= 5:
            raise InputError(f"{name}: field {key!r} must be an integer in 0..5, got {value!r}")
    entries = _Entries(data["results"], name)
    verb = entries.int_column("verb", num_verbs)
    noun = entries.int_column("noun", num_nouns)
    action_verb, action_noun = entries.action_column(num_verbs, num_nouns)
    return entries.table({"verb": verb, "noun": noun, "action": action_verb * num_nouns + action_noun})


class _Entries:
    """The ``results`` mapping of a submission flattened to one list of entries, with checked column access."""

    def __init__(self, results: Any, name: str):
        if not isinstance(results, dict):
            raise InputError(f"{name}: field 'results' must map video ids to lists of predictions")
        self.name = name
        self.entries: list = []
        counts = []
        for vid, preds in results.items():
            if not isinstance(preds, list):
                raise InputError(f"{name}: video {vid!r}: field 'results[{vid!r}]' must be a list of predictions")
            self.entries.extend(preds)
            counts.append(len(preds))
        sizes = np.array(counts, dtype=np.int64)
        self.video = np.repeat(np.array(list(results), dtype=object), sizes)
        self.index = np.arange(len(self.entries)) - np.repeat(np.cumsum(sizes) - sizes, sizes)

    def where(self, i: int) -> str:
        return f"{self.name}: video {self.video[i]!r}, prediction {self.index[i]}"

    def column(self, key: str) -> list:
        try:
            return [e[key] for e in self.entries]
        except (KeyError, TypeError):
            for i, e in enumerate(self.entries):
                if not isinstance(e, dict):
                    raise InputError(f"{self.where(i)}: must be a mapping, got {e!r}") from None
                if key not in e:
                    raise InputError(f"{self.where(i)}: missing field '{key}'") from None
            raise

    def str_column(self, key: str) -> np.ndarray:
        values = self.column(key)
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise InputError(f"{self.where(bad)}: field '{key}' must be a string, got {values[bad]!r}")
        return np.array(values, dtype=object)

    def float_column(self, key: str) -> np.ndarray:
        values = self.column(key)
        flag = next((i for i, v in enumerate(values) if isinstance(v, bool)), None)
        if flag is not None:
            raise InputError(f"{self.where(flag)}: field '{key}' must be a number, got {values[flag]!r}")
        out = self._numbers(values, (), key, _is_number, "a number")
        bad = np.flatnonzero(~np.isfinite(out))
        if len(bad):
            raise InputError(f"{self.where(bad[0])}: field '{key}' must be finite, got {values[bad[0]]!r}")
        return out

    def segments(self) -> tuple[np.ndarray, np.ndarray]:
        values = self.column("segment")
        out = self._numbers(values, (2,), "segment", _is_segment, "[start, end] numbers")
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        if len(bad):
            raise InputError(f"{self.where(bad[0])}: field 'segment' must be finite, got {values[bad[0]]!r}")
        bad = np.flatnonzero(out[:, 1] < out[:, 0])
        if len(bad):
            raise InputError(f"{self.where(bad[0])}: field 'segment' ends before it starts: {values[bad[0]]!r}")
        return out[:, 0].copy(), out[:, 1].copy()

    def _numbers(self, values: list, tail: tuple, key: str, valid, expected: str) -> np.ndarray:
        """``values`` as a float64 array of shape (N, *tail); an error naming the first invalid entry."""
        if not values:
            return np.zeros((0, *tail))
        try:
            out = np.array(values)
        except ValueError:  # ragged nesting
            out = None
        if out is None or out.dtype.kind not in "fiu" or out.shape != (len(values), *tail):
            i = next(i for i, v in enumerate(values) if not valid(v))
            raise InputError(f"{self.where(i)}: field '{key}' must be {expected}, got {values[i]!r}")
        return out.astype(np.float64)

    def int_column(self, key: str, bound: int) -> np.ndarray:
        values = self.column(key)
        try:
            out = np.array(values) if values else np.zeros(0, dtype=np.int64)
        except ValueError:  # ragged nesting
            out = np.zeros(0, dtype=object)
        if out.dtype.kind not in "iu" or out.shape != (len(values),):
            i = next(i for i, v in enumerate(values) if not _is_int(v))
            raise InputError(f"{self.where(i)}: field '{key}' must be an integer, got {values[i]!r}")
        bad = np.flatnonzero((out < 0) | (out >= bound))
        if len(bad):
            raise InputError(f"{self.where(bad[0])}: field '{key}' must be in 0..{bound - 1}, got {values[bad[0]]!r}")
        return out.astype(np.int64)

    def action_column(self, num_verbs: int, num_nouns: int) -> tuple[np.ndarray, np.ndarray]:
        values = self.column("action")
        pairs = []
        for i, text in enumerate(values):
            parts = text.split(",") if isinstance(text, str) else ()
            try:
                verb, noun = (int(p) for p in parts)
            except ValueError:
                raise InputError(f"{self.where(i)}: field 'action' must be a \"verb,noun\" string, got {text!r}") from None
            if not (0 <= verb < num_verbs and 0 <= noun < num_nouns):
                raise InputError(
                    f"{self.where(i)}: field 'action' {text!r} out of range (verbs 0..{num_verbs - 1}, nouns 0..{num_nouns - 1})"
                )
            pairs.append((verb, noun))
        arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def table(self, labels: Mapping[str, np.ndarray]) -> SegmentTable:
        start, end = self.segments()
        return SegmentTable(self.name, self.video, start, end, labels, self.float_column("score"))


def _load_json(source: PathLike | Mapping) -> tuple[Any, str]:
    if isinstance(source, Mapping):
        return source, "<predictions in memory>"
    path = Path(source)
    try:
        with path.open() as f:
            return json.load(f, object_pairs_hook=unique_keys), str(path)
    except DuplicateKeyError as exc:
        raise InputError(f"{path}: key {exc.args[0]!r} appears twice in one JSON object (a video listed twice?)") from None
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: a folder, not a prediction file") from None
    except RecursionError:
        raise InputError(f"{path}: JSON nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text file ({exc})") from None


def _require_keys(data: Any, keys: Iterable[str], name: str) -> None:
    if not isinstance(data, dict):
        raise InputError(f"{name}: top level must be a JSON object with keys {list(keys)}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise InputError(f"{name}: missing top-level field(s) {missing}; the official format has {list(keys)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_segment(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value)

