"""``tal-annotations``: annotation files for your own data.

``tal-annotations from-csv labels.csv --durations D -o annotations.json`` turns a CSV with one row per action,
columns ``video,start,end,label`` (times in seconds or ``HH:MM:SS.ss``) and optionally ``subset``
(``training``/``validation``/``testing``) and ``duration`` (seconds), into the HACS/ActivityNet JSON that
``train-localizer``, ``localize`` and ``evaluate`` read. A video's duration comes from its ``duration`` column,
else from ``--durations``: a CSV ``video,duration`` or an HDF5 feature file (the decoded duration
``extract-features`` recorded per video). A row with empty ``start``, ``end`` and ``label`` lists a video
without actions. Other columns are ignored. Every bad row is reported with its line and field (the first
20 of them) and nothing is written then; the JSON written is read back by :func:`read_annotations`.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tal_common.annotations import AnnotationError, read_annotations
from tal_common.atomic import write_json_atomic
from tal_common.cli import HelpFormatter, entry_point, interrupted
from tal_common.h5 import FeatureFileError, FeatureReader

REQUIRED = ("video", "start", "end", "label")
SUBSETS = ("training", "validation", "testing")
LATE_END_S = 1.0  # an action may end this much after its video (rounding); later hints at a wrong time unit
SHOWN_ERRORS = 20
EXAMPLES = """\
examples:
  tal-annotations from-csv labels.csv --durations features.h5 -o annotations.json
  tal-annotations from-csv labels.csv --durations durations.csv --subset validation -o val.json
"""


class CsvAnnotationError(ValueError):
    """Bad rows in an annotation CSV; the message names the file, each line and the field."""


@dataclass(frozen=True)
class Row:
    """One CSV row: an action ``[start, end]`` in seconds with its label, or (all three ``None``) a bare video."""

    line: int
    video: str
    start: float | None
    end: float | None
    label: str | None
    subset: str | None
    duration: float | None


def parse_time(text: str) -> float:
    """Seconds from ``"12.5"`` or ``"HH:MM:SS.ss"`` / ``"MM:SS"``; ``ValueError`` if neither, negative or not finite."""
    parts = text.strip().split(":")
    if len(parts) > 3:
        raise ValueError(text)
    values = [float(part) for part in parts]  # ValueError for anything else
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(text)
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return seconds


def read_rows(path: Path, default_subset: str) -> list[Row]:
    """Parse every row of ``path``; all bad rows are collected into one :class:`CsvAnnotationError`."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise CsvAnnotationError(f"{path}: missing column(s) {', '.join(missing)}; the header must name "
                                         f"{','.join(REQUIRED)} (optional: subset, duration), got {','.join(header) or 'nothing'}")
            reader.fieldnames = header
            rows, errors = [], []
            for record in reader:
                try:
                    rows.append(_row(record, reader.line_num, default_subset))
                except ValueError as exc:
                    errors.append(f"line {reader.line_num}: {exc}")
    except FileNotFoundError:
        raise CsvAnnotationError(f"{path}: file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CsvAnnotationError(f"{path}: not a readable CSV ({exc})") from None
    _raise_errors(path, errors)
    if not rows:
        raise CsvAnnotationError(f"{path}: no rows under the header")
    return rows


def _row(record: dict[str, Any], line: int, default_subset: str) -> Row:
    """One CSV record as a :class:`Row`; ``ValueError`` naming the field when a value is bad."""
    if None in record:
        raise ValueError("more fields than the header names")
    value = {k: (v or "").strip() for k, v in record.items()}
    video = value["video"]
    if not video:
        raise ValueError("field 'video' is empty")
    subset = value.get("subset") or default_subset
    if subset not in SUBSETS:
        raise ValueError(f"video {video!r}: field 'subset' must be one of {', '.join(SUBSETS)}, got {subset!r}")
    duration = None
    if value.get("duration"):
        duration = _seconds(value["duration"], video, "duration")
        if duration <= 0:
            raise ValueError(f"video {video!r}: field 'duration' must be > 0, got {value['duration']!r}")
    if not (value["start"] or value["end"] or value["label"]):
        return Row(line, video, None, None, None, subset, duration)
    for key in ("start", "end", "label"):
        if not value[key]:
            raise ValueError(f"video {video!r}: field {key!r} is empty (leave start, end and label all empty "
                             "to list a video without actions)")
    start, end = _seconds(value["start"], video, "start"), _seconds(value["end"], video, "end")
    if end <= start:
        raise ValueError(f"video {video!r}: the action ends before it starts (start {start:g} s, end {end:g} s)")
    return Row(line, video, start, end, value["label"], subset, duration)


def _seconds(text: str, video: str, key: str) -> float:
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"video {video!r}: field {key!r} is not a time in seconds (or HH:MM:SS.ss) >= 0: "
                         f"{text!r}") from None


def read_durations(path: Path) -> dict[str, float]:
    """Video durations in seconds: from an HDF5 feature file (``.h5``/``.hdf5``) or a CSV ``video,duration``."""
    if path.suffix.lower() in (".h5", ".hdf5"):
        try:
            reader = FeatureReader(path)
        except FeatureFileError as exc:
            raise CsvAnnotationError(str(exc)) from None
        try:
            return {vid: round(float(reader.timing(vid).duration_s), 6) for vid in reader.video_ids()}  # float32 attrs
        finally:
            reader.close()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader_csv = csv.DictReader(f)
            header = [h.strip() for h in reader_csv.fieldnames or []]
            if "video" not in header or "duration" not in header:
                raise CsvAnnotationError(f"{path}: the header must name video,duration, got {','.join(header) or 'nothing'}")
            reader_csv.fieldnames = header
            durations, errors = {}, []
            for record in reader_csv:
                video, text = (record.get("video") or "").strip(), (record.get("duration") or "").strip()
                try:
                    seconds = parse_time(text)
                    if not video or seconds <= 0:
                        raise ValueError(text)
                    durations[video] = seconds
                except ValueError:
                    errors.append(f"line {reader_csv.line_num}: video {video!r}: field 'duration' must be a time > 0, got {text!r}")
    except FileNotFoundError:
        raise CsvAnnotationError(f"{path}: file not found") from None
    _raise_errors(path, errors)
    return durations


def csv_to_activitynet(path: Path, durations: dict[str, float] | None = None, durations_source: str = "",
                       default_subset: str = "training") -> dict[str, Any]:
    """The ActivityNet-style dict (``{"version", "taxonomy", "database": {video: {subset, duration, annotations}}}``)
    of the CSV ``path``; videos in order of first appearance, segments in row order."""
    rows = read_rows(path, default_subset)
    by_video: dict[str, list[Row]] = {}
    for row in rows:
        by_video.setdefault(row.video, []).append(row)
    database, errors = {}, []
    for video, video_rows in by_video.items():
        first = video_rows[0]
        clash = [r for r in video_rows if r.subset != first.subset]
        if clash:
            errors.append(f"line {clash[0].line}: video {video!r}: subset {clash[0].subset!r}, but {first.subset!r} on "
                          f"line {first.line} (one subset per video)")
            continue
        given = {r.duration for r in video_rows if r.duration is not None}
        if len(given) > 1:
            errors.append(f"line {first.line}: video {video!r}: rows give different durations {sorted(given)}")
            continue
        duration = given.pop() if given else (durations or {}).get(video)
        if duration is None:
            where = f"not in {durations_source}" if durations else "no duration column and no --durations"
            errors.append(f"line {first.line}: video {video!r}: no duration ({where})")
            continue
        segments = []
        for r in video_rows:
            if r.start is None:
                continue
            if r.start >= duration or r.end > duration + LATE_END_S:
                errors.append(f"line {r.line}: video {video!r}: the action [{r.start:g}, {r.end:g}] s lies past the "
                              f"video's end ({duration:g} s); are the times in seconds?")
            segments.append({"segment": [r.start, r.end], "label": r.label})
        database[video] = {"subset": first.subset, "duration": duration, "annotations": segments}
    _raise_errors(path, errors)
    return {"version": "tal-annotations from-csv", "taxonomy": [], "database": database}


def _raise_errors(path: Path, errors: list[str]) -> None:
    if errors:
        more = f"\n  ... and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
        raise CsvAnnotationError(f"{path}: {len(errors)} bad row(s):\n  " + "\n  ".join(errors[:SHOWN_ERRORS]) + more)


def build_parser() -> argparse.ArgumentParser:
    """``tal-annotations`` and its ``from-csv`` command."""
    parser = argparse.ArgumentParser(prog="tal-annotations", formatter_class=HelpFormatter, epilog=EXAMPLES,
                                     description="Annotation files for your own data (tal-annotations COMMAND --help).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do")
    p = commands.add_parser(
        "from-csv", formatter_class=HelpFormatter, epilog=EXAMPLES,
        help="a CSV of video,start,end,label[,subset][,duration] -> HACS/ActivityNet JSON",
        description="A CSV with one row per action, columns video,start,end,label (seconds or HH:MM:SS.ss),\n"
        "optionally subset (training/validation/testing) and duration (seconds) -> the HACS/ActivityNet JSON that\n"
        "train-localizer, localize and evaluate read. A row with empty start, end and label lists a video without\n"
        "actions; other columns are ignored; bad rows are reported with their line and nothing is written.")
    p.add_argument("csv", type=Path, help="the actions, one per row")
    p.add_argument("--durations", type=Path, default=None,
                   help="video durations for videos without a duration column: a CSV video,duration or the HDF5 "
                   "feature file extracted from the videos")
    p.add_argument("--subset", choices=SUBSETS, default="training", help="the subset of rows without a subset column")
    p.add_argument("-o", "--output", type=Path, required=True, help="the JSON to write")
    return parser


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 written, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        durations = read_durations(args.durations) if args.durations else None
        data = csv_to_activitynet(args.csv, durations, str(args.durations), args.subset)
        write_json_atomic(args.output, data)
        written = read_annotations(args.output)  # what every tool will see
    except (CsvAnnotationError, AnnotationError) as exc:
        print(f"tal-annotations: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted("tal-annotations", "nothing was written (rerun the same command)")
    subsets = Counter(v.subset for v in written.videos.values())
    segments = sum(len(v.segments) for v in written.videos.values())
    print(f"tal-annotations: wrote {args.output}: {len(written.videos)} videos "
          f"({', '.join(f'{n} {s}' for s, n in subsets.items())}), {segments} actions, {len(written.labels)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
